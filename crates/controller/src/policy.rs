//! NetworkPolicy: pure translation into OVN port groups, address sets and ACLs, and the
//! IO-free index of what policies select (upstream's network policy controller).
//!
//! Layout in NB:
//! * per policy a port group (`a<fnv(ns_name)>`) holding the selected pods' ports, with one
//!   `allow-related` ACL per rule and peer kind: `to-lport` `outport == @pg` for ingress,
//!   `from-lport` `inport == @pg` applied after load balancing for egress (so allowing a
//!   backend allows reaching it through its service);
//! * per namespace, once a policy there isolates a direction, `<hash(ns)>_ingressDefaultDeny`
//!   / `_egressDefaultDeny` port groups with a `drop` ACL and an ARP/ND allow (ingress
//!   also allows the hairpin SNAT source: a pod reaching itself through a service);
//! * per peer selector (namespaceSelector × podSelector) one address set per family, shared
//!   by every policy that uses the same selector;
//! * priorities: default deny 1000, allows 1001 — the band [1000, 1001] for NetworkPolicy,
//!   leaving [1002, 32767) for AdminNetworkPolicy above and [1, 1000) for
//!   BaselineAdminNetworkPolicy below (OVN 23.03 has no ACL tiers, so bands stand in);
//! * a pod's port joins its port groups in the transaction that creates it, so a new pod is
//!   never reachable before its isolation applies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipam::Family;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ovsdb::Value;

use crate::desired::{ACL, ADDRESS_SET, METER, METER_BAND, PORT_GROUP};
use crate::index::Problem;
use crate::rows::{
    hash_for_ovn, s, smap, DesiredRow, NetworkInfo, Owner, OwnerKind, RowBuilder, RowKey,
    IP_FAMILY_KEY,
};
use crate::services::Proto;

pub const DEFAULT_DENY_PRIORITY: i64 = 1000;
pub const ALLOW_PRIORITY: i64 = 1001;
/// The meter that rate-limits ACL logging (upstream's name and default rate).
pub const ACL_LOGGING_METER: &str = "acl-logging";
pub const ACL_LOGGING_RATE: i64 = 20;
/// Namespace annotation: `{"allow":"notice","deny":"alert"}`.
pub const ACL_LOGGING_ANNOTATION: &str = "k8s.ovn.org/acl-logging";
const SEVERITIES: &[&str] = &["alert", "warning", "notice", "info", "debug"];

// ------------------------------------------------------------------ selectors

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector. The empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    exprs: Vec<(String, Op)>,
    /// Canonical text (for sharing address sets between identical selectors).
    canon: String,
}

impl Selector {
    pub fn everything() -> Self {
        Selector {
            labels: BTreeMap::new(),
            exprs: Vec::new(),
            canon: "{}".into(),
        }
    }

    pub fn parse(sel: &LabelSelector) -> Result<Self, String> {
        let labels: BTreeMap<String, String> = sel.match_labels.clone().unwrap_or_default();
        let mut exprs = Vec::new();
        let mut canon_exprs = Vec::new();
        for e in sel.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "selector key {:?}: operator {} needs values",
                        e.key, e.operator
                    ))
                }
                "In" => Op::In(values.clone()),
                "NotIn" => Op::NotIn(values.clone()),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "selector key {:?}: unknown operator {other:?}",
                        e.key
                    ))
                }
            };
            canon_exprs.push(format!("{} {} {:?}", e.key, e.operator, values));
            exprs.push((e.key.clone(), op));
        }
        canon_exprs.sort();
        let canon = format!("{labels:?}{canon_exprs:?}");
        Ok(Selector {
            labels,
            exprs,
            canon,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| match op {
                Op::In(vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Op::NotIn(vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Op::Exists => labels.contains_key(k),
                Op::DoesNotExist => !labels.contains_key(k),
            })
    }
}

// ------------------------------------------------------------------ the policy

/// Which pods a peer with selectors means: `namespace` is the policy's namespace when the
/// peer has no namespaceSelector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    pub namespace: Option<String>,
    pub ns_selector: Option<Selector>,
    pub pod_selector: Option<Selector>,
}

impl PeerKey {
    /// The owner name of the peer's address sets: equal selectors share them.
    pub fn name(&self) -> String {
        format!(
            "{}|{}|{}",
            self.namespace.as_deref().unwrap_or("*"),
            self.ns_selector.as_ref().map_or("-", |s| s.canon.as_str()),
            self.pod_selector.as_ref().map_or("-", |s| s.canon.as_str())
        )
    }

    fn matches(&self, ns: &str, ns_labels: &BTreeMap<String, String>, pod: &PodMeta) -> bool {
        let ns_ok = match (&self.namespace, &self.ns_selector) {
            (Some(n), _) => n == ns,
            (None, Some(sel)) => sel.matches(ns_labels),
            (None, None) => true,
        };
        ns_ok
            && self
                .pod_selector
                .as_ref()
                .is_none_or(|s| s.matches(&pod.labels))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Pods(PeerKey),
    Block { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A protocol, all ports.
    Any(Proto),
    Range(Proto, u16, u16),
    Named(Proto, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Empty: every source (ingress) or destination (egress).
    pub peers: Vec<Peer>,
    /// Empty: every port.
    pub ports: Vec<PortSpec>,
}

impl Rule {
    /// Whether a port of the rule is named (resolved per pod).
    pub fn has_named_port(&self) -> bool {
        self.ports.iter().any(|x| matches!(x, PortSpec::Named(..)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
    /// Some when the policy isolates ingress (its rules, possibly none).
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl PolicyInfo {
    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.ingress
            .iter()
            .flatten()
            .chain(self.egress.iter().flatten())
    }
    pub fn peers(&self) -> impl Iterator<Item = &PeerKey> {
        self.rules().flat_map(|r| {
            r.peers.iter().filter_map(|p| match p {
                Peer::Pods(k) => Some(k),
                Peer::Block { .. } => None,
            })
        })
    }
}

/// A rule as the API has it: its peers (`from` or `to`) and ports.
type RawRule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn bad(ns: &str, name: &str, msg: impl std::fmt::Display) -> Problem {
    Problem {
        reason: "InvalidNetworkPolicy",
        message: format!("networkpolicy {ns}/{name}: {msg}"),
    }
}

fn parse_peer(ns: &str, p: &NetworkPolicyPeer) -> Result<Peer, String> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err("a peer with ipBlock may not have selectors".into());
        }
        let cidr: IpNet = b
            .cidr
            .parse()
            .map_err(|_| format!("ipBlock cidr {:?} is not a CIDR", b.cidr))?;
        let mut except = Vec::new();
        for e in b.except.iter().flatten() {
            let n: IpNet = e
                .parse()
                .map_err(|_| format!("ipBlock except {e:?} is not a CIDR"))?;
            except.push(n.trunc());
        }
        return Ok(Peer::Block {
            cidr: cidr.trunc(),
            except,
        });
    }
    let pod_selector = p.pod_selector.as_ref().map(Selector::parse).transpose()?;
    let ns_selector = p
        .namespace_selector
        .as_ref()
        .map(Selector::parse)
        .transpose()?;
    if pod_selector.is_none() && ns_selector.is_none() {
        return Err("a peer needs podSelector, namespaceSelector or ipBlock".into());
    }
    Ok(Peer::Pods(PeerKey {
        namespace: ns_selector.is_none().then(|| ns.to_string()),
        ns_selector,
        pod_selector,
    }))
}

fn parse_port(p: &NetworkPolicyPort) -> Result<PortSpec, String> {
    let proto = Proto::parse(p.protocol.as_deref())
        .ok_or_else(|| format!("unknown protocol {:?}", p.protocol))?;
    Ok(match &p.port {
        None => PortSpec::Any(proto),
        Some(IntOrString::String(name)) => {
            if p.end_port.is_some() {
                return Err(format!("endPort with the named port {name:?}"));
            }
            PortSpec::Named(proto, name.clone())
        }
        Some(IntOrString::Int(n)) => {
            let start = u16::try_from(*n)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("port {n} out of range"))?;
            let end = match p.end_port {
                None => start,
                Some(e) => u16::try_from(e)
                    .ok()
                    .filter(|v| *v >= start)
                    .ok_or_else(|| format!("endPort {e} below port {n} or out of range"))?,
            };
            PortSpec::Range(proto, start, end)
        }
    })
}

/// Reads a NetworkPolicy; a problem names the policy and what is wrong.
pub fn parse_policy(pol: &NetworkPolicy) -> Result<PolicyInfo, Problem> {
    let ns = pol.metadata.namespace.clone().unwrap_or_default();
    let name = pol.metadata.name.clone().unwrap_or_default();
    let err = |m: String| bad(&ns, &name, m);
    let Some(spec) = pol.spec.as_ref() else {
        return Err(err("no spec".into()));
    };
    let selector = match &spec.pod_selector {
        Some(sel) => Selector::parse(sel).map_err(|e| err(format!("podSelector: {e}")))?,
        None => Selector::everything(),
    };
    let types: Vec<&str> = match &spec.policy_types {
        Some(t) if !t.is_empty() => t.iter().map(|s| s.as_str()).collect(),
        // Implied: Ingress always, Egress when there are egress rules.
        _ => {
            let mut t = vec!["Ingress"];
            if spec.egress.is_some() {
                t.push("Egress");
            }
            t
        }
    };
    for t in &types {
        if *t != "Ingress" && *t != "Egress" {
            return Err(err(format!("unknown policyType {t:?}")));
        }
    }
    // Ingress rules list `from` peers, egress rules `to` peers; the rest is the same.
    let rules = |gress: &str, raw: Vec<RawRule<'_>>| -> Result<Vec<Rule>, Problem> {
        raw.into_iter()
            .enumerate()
            .map(|(i, (peers, ports))| {
                let at = |e: String| err(format!("{gress} rule {i}: {e}"));
                let peers = peers
                    .into_iter()
                    .flatten()
                    .map(|p| parse_peer(&ns, p))
                    .collect::<Result<_, _>>()
                    .map_err(at)?;
                let ports = ports
                    .into_iter()
                    .flatten()
                    .map(parse_port)
                    .collect::<Result<_, _>>()
                    .map_err(at)?;
                Ok(Rule { peers, ports })
            })
            .collect()
    };
    let ingress = match types.contains(&"Ingress") {
        true => Some(rules(
            "ingress",
            spec.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
        )?),
        false => None,
    };
    let egress = match types.contains(&"Egress") {
        true => Some(rules(
            "egress",
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        )?),
        false => None,
    };
    Ok(PolicyInfo {
        namespace: ns,
        name,
        selector,
        ingress,
        egress,
    })
}

/// The namespace's `k8s.ovn.org/acl-logging`: severities for allowed and denied traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclLogging {
    pub allow: Option<String>,
    pub deny: Option<String>,
}

pub fn parse_acl_logging(ns: &str, text: &str) -> Result<AclLogging, Problem> {
    let err = |m: String| Problem {
        reason: "InvalidAclLogging",
        message: format!("namespace {ns}: {ACL_LOGGING_ANNOTATION}: {m}"),
    };
    let m: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| err(format!("{e} in {text:?}")))?;
    let mut out = AclLogging::default();
    for (k, v) in m {
        if !SEVERITIES.contains(&v.as_str()) {
            return Err(err(format!(
                "unknown severity {v:?} (use one of {SEVERITIES:?})"
            )));
        }
        match k.as_str() {
            "allow" => out.allow = Some(v),
            "deny" => out.deny = Some(v),
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ the index

/// What policies need of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// containerPorts with a name: (name, protocol, number).
    pub ports: Vec<(String, Proto, u16)>,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default)]
struct NsMeta {
    labels: BTreeMap<String, String>,
    logging: AclLogging,
}

/// Policies, the pods and namespaces they select, and the shared peer selectors.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    policies: HashMap<String, PolicyInfo>,
    by_ns: HashMap<String, BTreeSet<String>>,
    pods: HashMap<String, PodMeta>,
    namespaces: HashMap<String, NsMeta>,
    /// Peer selectors in use: name → (key, number of policies using it).
    peers: HashMap<String, (PeerKey, usize)>,
    /// Peer names bound to one namespace (no namespaceSelector), by namespace; the others
    /// (with a namespaceSelector) may hold pods of any namespace.
    peers_by_ns: HashMap<String, BTreeSet<String>>,
    global_peers: BTreeSet<String>,
    /// Pod keys by namespace.
    ns_pods: HashMap<String, BTreeSet<String>>,
    /// Policies with named ports, by the namespace whose pods resolve them (their own for
    /// ingress, a namespace-bound peer's for egress); `named_any`: those whose egress
    /// destinations may be in any namespace.
    named_by_ns: HashMap<String, BTreeSet<String>>,
    named_any: BTreeSet<String>,
}

/// Where a policy's named ports are resolved: namespaces, and whether any namespace.
fn named_scope(p: &PolicyInfo) -> (BTreeSet<String>, bool) {
    let mut nss = BTreeSet::new();
    let mut any = false;
    if p.ingress.iter().flatten().any(Rule::has_named_port) {
        nss.insert(p.namespace.clone());
    }
    for r in p.egress.iter().flatten().filter(|r| r.has_named_port()) {
        if r.peers.is_empty() {
            any = true;
        }
        for x in &r.peers {
            if let Peer::Pods(k) = x {
                match &k.namespace {
                    Some(ns) => {
                        nss.insert(ns.clone());
                    }
                    None => any = true,
                }
            }
        }
    }
    (nss, any)
}

fn policy_key(ns: &str, name: &str) -> String {
    format!("{ns}:{name}")
}

fn peer_owner(name: &str) -> Owner {
    Owner {
        kind: OwnerKind::PeerSelector,
        name: name.to_string(),
    }
}

impl PolicyIndex {
    fn ns_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces.get(ns).map_or(&NONE, |n| &n.labels)
    }

    /// Owners that depend on `pod` as it is now: peer sets holding it, policies selecting
    /// it, and policies with named ports (resolved per pod).
    fn pod_dependents(&self, pod: &PodMeta, dirty: &mut Vec<Owner>) {
        let labels = self.ns_labels(&pod.namespace);
        let candidates = self
            .peers_by_ns
            .get(&pod.namespace)
            .into_iter()
            .flatten()
            .chain(self.global_peers.iter());
        for name in candidates {
            if let Some((k, _)) = self.peers.get(name) {
                if k.matches(&pod.namespace, labels, pod) {
                    dirty.push(peer_owner(name));
                }
            }
        }
        // Named ports are resolved per pod: against the selected pods for ingress, the
        // destination pods for egress.
        let named = self
            .named_by_ns
            .get(&pod.namespace)
            .into_iter()
            .flatten()
            .chain(self.named_any.iter())
            .filter_map(|k| self.policies.get(k));
        for p in named {
            let selects = p.namespace == pod.namespace && p.selector.matches(&pod.labels);
            let ingress = selects && p.ingress.iter().flatten().any(Rule::has_named_port);
            let egress = p
                .egress
                .iter()
                .flatten()
                .filter(|r| r.has_named_port())
                .any(|r| {
                    r.peers.is_empty()
                        || r.peers.iter().any(|x| match x {
                            Peer::Pods(k) => k.matches(&pod.namespace, labels, pod),
                            Peer::Block { .. } => false,
                        })
                });
            if ingress || egress {
                dirty.push(Owner::policy(&p.namespace, &p.name));
            }
        }
    }

    /// A pod's labels, named ports or addresses changed (or it is new).
    pub fn set_pod(&mut self, key: &str, meta: PodMeta, dirty: &mut Vec<Owner>) {
        if self.pods.get(key) == Some(&meta) {
            return;
        }
        if let Some(old) = self.pods.get(key) {
            self.pod_dependents(old, dirty);
        }
        self.pod_dependents(&meta, dirty);
        if let Some(old) = self.pods.get(key).map(|m| m.namespace.clone()) {
            self.unlist(&old, key);
        }
        self.ns_pods
            .entry(meta.namespace.clone())
            .or_default()
            .insert(key.to_string());
        self.pods.insert(key.to_string(), meta);
    }

    fn unlist(&mut self, ns: &str, key: &str) {
        if let Some(s) = self.ns_pods.get_mut(ns) {
            s.remove(key);
            if s.is_empty() {
                self.ns_pods.remove(ns);
            }
        }
    }

    /// The pods of namespace `ns`: (key, meta).
    fn pods_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = (&'a String, &'a PodMeta)> {
        self.ns_pods
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).map(|m| (k, m)))
    }

    pub fn pod_meta(&self, key: &str) -> Option<&PodMeta> {
        self.pods.get(key)
    }

    pub fn remove_pod(&mut self, key: &str, dirty: &mut Vec<Owner>) {
        if let Some(old) = self.pods.remove(key) {
            self.pod_dependents(&old, dirty);
            self.unlist(&old.namespace, key);
        }
    }

    /// A namespace's labels or logging changed.
    pub fn set_namespace(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
        logging: AclLogging,
        dirty: &mut Vec<Owner>,
    ) {
        let old = self.namespaces.get(name).cloned().unwrap_or_default();
        if old.labels != labels {
            for pn in &self.global_peers {
                dirty.push(peer_owner(pn));
            }
        }
        if old.logging != logging {
            dirty.push(Owner::namespace(name));
            for p in self.by_ns.get(name).into_iter().flatten() {
                dirty.push(Owner {
                    kind: OwnerKind::NetworkPolicy,
                    name: p.clone(),
                });
            }
        }
        self.namespaces
            .insert(name.to_string(), NsMeta { labels, logging });
    }

    pub fn remove_namespace(&mut self, name: &str, dirty: &mut Vec<Owner>) {
        self.set_namespace(name, BTreeMap::new(), AclLogging::default(), dirty);
        self.namespaces.remove(name);
    }

    fn selected_keys(&self, p: &PolicyInfo) -> Vec<String> {
        self.pods_in(&p.namespace)
            .filter(|(_, m)| p.selector.matches(&m.labels))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Everything that depends on `p` being there: its pods, its namespace, its peers.
    fn policy_dependents(&self, p: &PolicyInfo, dirty: &mut Vec<Owner>) {
        dirty.push(Owner::policy(&p.namespace, &p.name));
        dirty.push(Owner::namespace(&p.namespace));
        for k in self.selected_keys(p) {
            dirty.push(Owner {
                kind: OwnerKind::Pod,
                name: k,
            });
        }
        for peer in p.peers() {
            dirty.push(peer_owner(&peer.name()));
        }
    }

    fn unref_peers(&mut self, p: &PolicyInfo) {
        for peer in p.peers() {
            let n = peer.name();
            if let Some(e) = self.peers.get_mut(&n) {
                e.1 -= 1;
                if e.1 == 0 {
                    self.peers.remove(&n);
                    self.global_peers.remove(&n);
                    if let Some(ns) = &peer.namespace {
                        if let Some(set) = self.peers_by_ns.get_mut(ns) {
                            set.remove(&n);
                            if set.is_empty() {
                                self.peers_by_ns.remove(ns);
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn apply(&mut self, pol: &NetworkPolicy, dirty: &mut Vec<Owner>) -> Result<(), Problem> {
        let info = parse_policy(pol)?;
        let key = policy_key(&info.namespace, &info.name);
        if self.policies.get(&key) == Some(&info) {
            return Ok(());
        }
        self.delete(&info.namespace.clone(), &info.name.clone(), dirty);
        for peer in info.peers() {
            let n = peer.name();
            match &peer.namespace {
                Some(ns) => {
                    self.peers_by_ns
                        .entry(ns.clone())
                        .or_default()
                        .insert(n.clone());
                }
                None => {
                    self.global_peers.insert(n.clone());
                }
            }
            self.peers.entry(n).or_insert_with(|| (peer.clone(), 0)).1 += 1;
        }
        self.policy_dependents(&info, dirty);
        self.by_ns
            .entry(info.namespace.clone())
            .or_default()
            .insert(key.clone());
        let (nss, any) = named_scope(&info);
        for ns in nss {
            self.named_by_ns.entry(ns).or_default().insert(key.clone());
        }
        if any {
            self.named_any.insert(key.clone());
        }
        self.policies.insert(key, info);
        Ok(())
    }

    pub fn delete(&mut self, ns: &str, name: &str, dirty: &mut Vec<Owner>) {
        let key = policy_key(ns, name);
        let Some(old) = self.policies.remove(&key) else {
            return;
        };
        self.policy_dependents(&old, dirty);
        self.unref_peers(&old);
        let (nss, _) = named_scope(&old);
        for ns in nss {
            if let Some(set) = self.named_by_ns.get_mut(&ns) {
                set.remove(&key);
                if set.is_empty() {
                    self.named_by_ns.remove(&ns);
                }
            }
        }
        self.named_any.remove(&key);
        if let Some(s) = self.by_ns.get_mut(ns) {
            s.remove(&key);
            if s.is_empty() {
                self.by_ns.remove(ns);
            }
        }
    }

    pub fn policy_owners(&self) -> Vec<Owner> {
        let mut v: Vec<Owner> = self
            .policies
            .keys()
            .map(|k| Owner {
                kind: OwnerKind::NetworkPolicy,
                name: k.clone(),
            })
            .collect();
        v.extend(self.peers.keys().map(|n| peer_owner(n)));
        v
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    fn ns_policies(&self, ns: &str) -> impl Iterator<Item = &PolicyInfo> {
        self.by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|k| self.policies.get(k))
    }

    fn peer_pods(&self, peer: Option<&PeerKey>) -> Vec<&PodMeta> {
        match peer.and_then(|k| k.namespace.as_deref().map(|ns| (k, ns))) {
            // Bound to one namespace: only its pods can match.
            Some((k, ns)) => self
                .pods_in(ns)
                .map(|(_, m)| m)
                .filter(|m| k.matches(&m.namespace, self.ns_labels(ns), m))
                .collect(),
            None => match peer.and_then(|k| k.ns_selector.as_ref().map(|s| (k, s))) {
                // Matching namespaces first, then their pods.
                Some((k, sel)) => self
                    .ns_pods
                    .keys()
                    .filter(|ns| sel.matches(self.ns_labels(ns)))
                    .flat_map(|ns| self.pods_in(ns).map(|(_, m)| m))
                    .filter(|m| k.matches(&m.namespace, self.ns_labels(&m.namespace), m))
                    .collect(),
                None => self
                    .pods
                    .values()
                    .filter(|m| match peer {
                        None => true,
                        Some(k) => k.matches(&m.namespace, self.ns_labels(&m.namespace), m),
                    })
                    .collect(),
            },
        }
    }

    // -------------------------------------------------------------- desired rows

    /// The port groups the pod's port belongs to.
    pub fn pod_port_groups(&self, net: &NetworkInfo, key: &str) -> Vec<RowKey> {
        let Some(pod) = self.pods.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let (mut ing, mut eg) = (false, false);
        for p in self.ns_policies(&pod.namespace) {
            if p.selector.matches(&pod.labels) {
                out.push(policy_pg_key(net, &p.namespace, &p.name));
                ing |= p.ingress.is_some();
                eg |= p.egress.is_some();
            }
        }
        if ing {
            out.push(default_deny_key(net, &pod.namespace, Gress::Ingress));
        }
        if eg {
            out.push(default_deny_key(net, &pod.namespace, Gress::Egress));
        }
        out
    }

    /// Rows of the policy `ns:name`.
    pub fn policy_rows(
        &self,
        net: &NetworkInfo,
        families: &[Family],
        key: &str,
    ) -> Vec<DesiredRow> {
        let Some(p) = self.policies.get(key) else {
            return Vec::new();
        };
        let logging = self
            .namespaces
            .get(&p.namespace)
            .map(|n| n.logging.clone())
            .unwrap_or_default();
        let selected: Vec<&PodMeta> = self
            .pods_in(&p.namespace)
            .map(|(_, m)| m)
            .filter(|m| p.selector.matches(&m.labels))
            .collect();
        policy_rows(net, families, p, &logging, &selected, &|peer| {
            self.peer_pods(peer)
        })
    }

    /// Rows of a peer selector: its address sets.
    pub fn peer_rows(&self, net: &NetworkInfo, families: &[Family], name: &str) -> Vec<DesiredRow> {
        let Some((k, _)) = self.peers.get(name) else {
            return Vec::new();
        };
        let ips: Vec<IpAddr> = self
            .peer_pods(Some(k))
            .into_iter()
            .flat_map(|m| m.ips.iter().copied())
            .collect();
        address_set_rows(net, &peer_owner(name), families, &ips)
    }

    /// The namespace's default-deny port groups, while a policy there isolates pods.
    pub fn namespace_rows(&self, net: &NetworkInfo, ns: &str) -> Vec<DesiredRow> {
        let (mut ing, mut eg) = (false, false);
        for p in self.ns_policies(ns) {
            ing |= p.ingress.is_some();
            eg |= p.egress.is_some();
        }
        let logging = self
            .namespaces
            .get(ns)
            .map(|n| n.logging.clone())
            .unwrap_or_default();
        let mut rows = Vec::new();
        if ing {
            rows.extend(default_deny_rows(net, ns, Gress::Ingress, &logging));
        }
        if eg {
            rows.extend(default_deny_rows(net, ns, Gress::Egress, &logging));
        }
        rows
    }
}

// ------------------------------------------------------------------ rows

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gress {
    Ingress,
    Egress,
}

impl Gress {
    fn label(self) -> &'static str {
        match self {
            Gress::Ingress => "Ingress",
            Gress::Egress => "Egress",
        }
    }
    fn direction(self) -> &'static str {
        match self {
            Gress::Ingress => "to-lport",
            Gress::Egress => "from-lport",
        }
    }
    /// The port the pod is on: the destination for ingress, the source for egress.
    fn port_kw(self) -> &'static str {
        match self {
            Gress::Ingress => "outport",
            Gress::Egress => "inport",
        }
    }
    /// The peer's side of the packet.
    fn peer_side(self) -> &'static str {
        match self {
            Gress::Ingress => "src",
            Gress::Egress => "dst",
        }
    }
}

pub fn policy_pg_name(net: &NetworkInfo, ns: &str, name: &str) -> String {
    hash_for_ovn(&format!("{}{ns}_{name}", net.prefix()))
}

pub fn policy_pg_key(net: &NetworkInfo, ns: &str, name: &str) -> RowKey {
    RowKey {
        table: PORT_GROUP,
        id: RowBuilder::new(net, Owner::policy(ns, name)).id("pg"),
    }
}

fn deny_role(g: Gress) -> &'static str {
    match g {
        Gress::Ingress => "ingress-default-deny",
        Gress::Egress => "egress-default-deny",
    }
}

pub fn default_deny_pg_name(net: &NetworkInfo, ns: &str, g: Gress) -> String {
    let suffix = match g {
        Gress::Ingress => "ingressDefaultDeny",
        Gress::Egress => "egressDefaultDeny",
    };
    format!(
        "{}_{suffix}",
        hash_for_ovn(&format!("{}{ns}", net.prefix()))
    )
}

pub fn default_deny_key(net: &NetworkInfo, ns: &str, g: Gress) -> RowKey {
    RowKey {
        table: PORT_GROUP,
        id: RowBuilder::new(net, Owner::namespace(ns)).id(deny_role(g)),
    }
}

/// The `acl-logging` meter (cluster-owned): logging is rate-limited to 20 packets/s.
/// `Meter.bands` needs at least one band, so the band is inserted first and referenced.
pub fn meter_rows(net: &NetworkInfo) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::cluster());
    let band = b.row(
        METER_BAND,
        "acl-logging-band",
        vec![
            ("action", s("drop")),
            ("rate", Value::from(ACL_LOGGING_RATE)),
        ],
        None,
    );
    let band_key = band.key.clone();
    vec![
        band,
        b.row(
            METER,
            "acl-logging-meter",
            vec![
                ("name", s(ACL_LOGGING_METER)),
                ("unit", s("pktps")),
                ("fair", Value::set([true])),
            ],
            None,
        )
        .with_refs("bands", vec![band_key]),
    ]
}

/// ACL name: `<ns>:<policy>:<direction>:<rule>` (readable back to its source), cut to
/// OVN's 63 characters.
fn acl_name(ns: &str, policy: &str, g: Gress, rule: &str) -> String {
    let mut n = format!("{ns}:{policy}:{}:{rule}", g.label());
    if n.len() > 63 {
        let mut cut = 63;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

#[allow(clippy::too_many_arguments)]
fn acl_row(
    b: &RowBuilder,
    role: &str,
    name: String,
    g: Gress,
    priority: i64,
    matches: String,
    action: &str,
    severity: Option<&str>,
    pg: &RowKey,
    extra: &[(&str, &str)],
) -> DesiredRow {
    let mut cols = vec![
        ("name", Value::set([name.as_str()])),
        ("direction", s(g.direction())),
        ("priority", Value::from(priority)),
        ("match", s(matches)),
        ("action", s(action)),
        ("log", Value::from(severity.is_some())),
        ("external_ids", smap(extra)),
    ];
    match severity {
        Some(sev) => {
            cols.push(("severity", Value::set([sev])));
            cols.push(("meter", Value::set([ACL_LOGGING_METER])));
        }
        None => {
            cols.push(("severity", Value::empty()));
            cols.push(("meter", Value::empty()));
        }
    }
    if g == Gress::Egress {
        // Egress policy sees the backend a service balanced to, not the VIP.
        cols.push(("options", smap(&[("apply-after-lb", "true")])));
    }
    b.row(
        ACL,
        role,
        cols,
        Some(crate::rows::ParentLink {
            parent: pg.clone(),
            column: "acls",
        }),
    )
}

fn default_deny_rows(
    net: &NetworkInfo,
    ns: &str,
    g: Gress,
    logging: &AclLogging,
) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::namespace(ns));
    let pg_key = default_deny_key(net, ns, g);
    let pg_name = default_deny_pg_name(net, ns, g);
    let role = deny_role(g);
    let kw = g.port_kw();
    let mut rows = vec![
        b.row(PORT_GROUP, role, vec![("name", s(&pg_name))], None),
        acl_row(
            &b,
            &format!("{role}-drop"),
            format!("{ns}_{}DefaultDeny", g.label().to_lowercase()),
            g,
            DEFAULT_DENY_PRIORITY,
            format!("{kw} == @{pg_name}"),
            "drop",
            logging.deny.as_deref(),
            &pg_key,
            &[("k8s.ovn.org/gress", g.label())],
        ),
        acl_row(
            &b,
            &format!("{role}-arp"),
            format!("{ns}_ARPallow{}", g.label()),
            g,
            ALLOW_PRIORITY,
            format!("{kw} == @{pg_name} && (arp || nd)"),
            "allow",
            None,
            &pg_key,
            &[("k8s.ovn.org/gress", g.label())],
        ),
    ];
    // A pod reaching itself through a service arrives from the hairpin SNAT address; no
    // policy can forbid a pod to reach itself (as upstream).
    if g == Gress::Ingress {
        let [v4, v6] = crate::services::HAIRPIN_SNAT_IPS;
        rows.push(acl_row(
            &b,
            &format!("{role}-hairpin"),
            format!("{ns}_allowHairpin"),
            g,
            ALLOW_PRIORITY,
            format!("{kw} == @{pg_name} && (ip4.src == {v4} || ip6.src == {v6})"),
            "allow-related",
            None,
            &pg_key,
            &[("k8s.ovn.org/gress", g.label())],
        ));
    }
    rows
}

fn family_label(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn ip_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip4",
        Family::V6 => "ip6",
    }
}

/// The address set names of a peer selector, per family.
pub fn peer_set_name(net: &NetworkInfo, peer: &str, f: Family) -> String {
    hash_for_ovn(&RowBuilder::new(net, peer_owner(peer)).id(family_label(f)))
}

fn address_set_rows(
    net: &NetworkInfo,
    owner: &Owner,
    families: &[Family],
    ips: &[IpAddr],
) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, owner.clone());
    families
        .iter()
        .map(|f| {
            let label = family_label(*f);
            let set: BTreeSet<String> = ips
                .iter()
                .filter(|ip| Family::of(ip) == *f)
                .map(|ip| ip.to_string())
                .collect();
            b.row(
                ADDRESS_SET,
                label,
                vec![
                    ("name", s(hash_for_ovn(&b.id(label)))),
                    ("addresses", crate::rows::set(set)),
                    ("external_ids", smap(&[(IP_FAMILY_KEY, label)])),
                ],
                None,
            )
        })
        .collect()
}

fn ip_list(ips: &BTreeSet<IpAddr>, f: Family) -> String {
    let v: Vec<String> = ips
        .iter()
        .filter(|ip| Family::of(ip) == f)
        .map(|ip| ip.to_string())
        .collect();
    format!("{{{}}}", v.join(", "))
}

fn l4(proto: Proto, lo: Option<u16>, hi: Option<u16>) -> String {
    let p = proto.lower();
    match (lo, hi) {
        (Some(a), Some(b)) if a == b => format!("{p} && {p}.dst == {a}"),
        (Some(a), Some(b)) => format!("{p} && {p}.dst >= {a} && {p}.dst <= {b}"),
        _ => p.to_string(),
    }
}

/// The L4 alternatives of a rule, each in parentheses (OVN refuses `&&` and `||` mixed
/// without them, and drops the whole ACL); `named_pods`: the pods a named port is resolved against
/// (the selected pods for ingress, the peer's pods for egress) — each number found
/// becomes its own alternative, limited to the pods that use it. None: any traffic.
fn ports_clause(g: Gress, ports: &[PortSpec], named_pods: &[&PodMeta]) -> Option<Vec<String>> {
    if ports.is_empty() {
        return None;
    }
    let mut alts = Vec::new();
    for p in ports {
        match p {
            PortSpec::Any(proto) => alts.push(format!("({})", l4(*proto, None, None))),
            PortSpec::Range(proto, a, b) => {
                alts.push(format!("({})", l4(*proto, Some(*a), Some(*b))))
            }
            PortSpec::Named(proto, name) => {
                let mut by_num: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
                for m in named_pods {
                    for (n, pr, num) in &m.ports {
                        if n == name && pr == proto {
                            by_num
                                .entry(*num)
                                .or_default()
                                .extend(m.ips.iter().copied());
                        }
                    }
                }
                for (num, ips) in by_num {
                    let mut fams = Vec::new();
                    for f in [Family::V4, Family::V6] {
                        if ips.iter().any(|ip| Family::of(ip) == f) {
                            fams.push(format!(
                                "{}.{} == {}",
                                ip_kw(f),
                                g.own_side_for_named(),
                                ip_list(&ips, f)
                            ));
                        }
                    }
                    alts.push(format!(
                        "(({}) && {})",
                        fams.join(" || "),
                        l4(*proto, Some(num), Some(num))
                    ));
                }
            }
        }
    }
    Some(alts)
}

impl Gress {
    /// Named ports are properties of the destination pod: the selected pod for ingress,
    /// the peer for egress — both are the packet's destination.
    fn own_side_for_named(self) -> &'static str {
        "dst"
    }
}

/// The rows of one policy: its port group and allow ACLs. `peer_pods(None)`: every pod.
pub fn policy_rows<'a>(
    net: &NetworkInfo,
    families: &[Family],
    p: &PolicyInfo,
    logging: &AclLogging,
    selected: &[&'a PodMeta],
    peer_pods: &dyn Fn(Option<&PeerKey>) -> Vec<&'a PodMeta>,
) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::policy(&p.namespace, &p.name));
    let pg_key = policy_pg_key(net, &p.namespace, &p.name);
    let pg = policy_pg_name(net, &p.namespace, &p.name);
    let policy_ref = format!("{}/{}", p.namespace, p.name);
    let mut rows = vec![b.row(
        PORT_GROUP,
        "pg",
        vec![
            ("name", s(&pg)),
            ("external_ids", smap(&[("k8s.ovn.org/policy", &policy_ref)])),
        ],
        None,
    )];
    for (g, rules) in [(Gress::Ingress, &p.ingress), (Gress::Egress, &p.egress)] {
        for (i, rule) in rules.iter().flatten().enumerate() {
            // Peer alternatives: all selector peers in one ACL, each ipBlock in its own,
            // or none (every peer).
            let mut peer_clauses: Vec<(String, Option<String>, Vec<&'a PodMeta>)> = Vec::new();
            let sel: Vec<&PeerKey> = rule
                .peers
                .iter()
                .filter_map(|x| match x {
                    Peer::Pods(k) => Some(k),
                    _ => None,
                })
                .collect();
            // Destination pods are needed only to resolve named ports of egress rules.
            let resolve = g == Gress::Egress && rule.has_named_port();
            if rule.peers.is_empty() {
                let pods = if resolve { peer_pods(None) } else { Vec::new() };
                peer_clauses.push(("any".into(), None, pods));
            }
            if !sel.is_empty() {
                let mut fams = Vec::new();
                // Only the cluster's families have address sets to refer to.
                for f in families.iter().copied() {
                    let names: Vec<String> = sel
                        .iter()
                        .map(|k| format!("${}", peer_set_name(net, &k.name(), f)))
                        .collect();
                    fams.push(format!(
                        "{}.{} == {{{}}}",
                        ip_kw(f),
                        g.peer_side(),
                        names.join(", ")
                    ));
                }
                let mut pods: Vec<&'a PodMeta> = Vec::new();
                if resolve {
                    for k in &sel {
                        pods.extend(peer_pods(Some(k)));
                    }
                }
                peer_clauses.push((
                    "pods".into(),
                    Some(format!("({})", fams.join(" || "))),
                    pods,
                ));
            }
            for (j, x) in rule.peers.iter().enumerate() {
                if let Peer::Block { cidr, except } = x {
                    let f = Family::of_net(cidr);
                    let kw = format!("{}.{}", ip_kw(f), g.peer_side());
                    let mut c = format!("{kw} == {cidr}");
                    let ex: Vec<String> = except
                        .iter()
                        .filter(|e| Family::of_net(e) == f)
                        .map(|e| e.to_string())
                        .collect();
                    if !ex.is_empty() {
                        c.push_str(&format!(" && {kw} != {{{}}}", ex.join(", ")));
                    }
                    peer_clauses.push((format!("block{j}"), Some(c), Vec::new()));
                }
            }
            for (tag, peer, pods) in peer_clauses {
                let named_pods: Vec<&'a PodMeta> = match g {
                    Gress::Ingress => selected.to_vec(),
                    Gress::Egress => pods,
                };
                let ports = ports_clause(g, &rule.ports, &named_pods);
                if ports.as_ref().is_some_and(|a| a.is_empty()) {
                    continue; // only named ports, resolved by no pod: allows nothing
                }
                let mut m = format!("{} == @{pg} && ip", g.port_kw());
                if let Some(peer) = &peer {
                    m.push_str(" && ");
                    m.push_str(peer);
                }
                if let Some(alts) = &ports {
                    m.push_str(&format!(" && ({})", alts.join(" || ")));
                }
                let rule_s = i.to_string();
                let role = format!("{}-{i}-{tag}", g.label().to_lowercase());
                rows.push(acl_row(
                    &b,
                    &role,
                    acl_name(&p.namespace, &p.name, g, &format!("{i}:{tag}")),
                    g,
                    ALLOW_PRIORITY,
                    m,
                    "allow-related",
                    logging.allow.as_deref(),
                    &pg_key,
                    &[
                        ("k8s.ovn.org/policy", &policy_ref),
                        ("k8s.ovn.org/gress", g.label()),
                        ("k8s.ovn.org/rule-index", &rule_s),
                    ],
                ));
            }
        }
    }
    rows
}

/// The node switch's ACL letting the node itself (kubelet probes through the management
/// port) reach its pods whatever their ingress policies.
pub fn node_allow_row(
    b: &RowBuilder,
    switch: &RowKey,
    node: &str,
    mgmt: &[IpAddr],
) -> Option<DesiredRow> {
    if mgmt.is_empty() {
        return None;
    }
    let alts: Vec<String> = mgmt
        .iter()
        .map(|ip| format!("{}.src == {ip}", ip_kw(Family::of(ip))))
        .collect();
    let mut r = acl_row(
        b,
        "allow-from-node",
        format!("{node}_allowFromNode"),
        Gress::Ingress,
        ALLOW_PRIORITY,
        alts.join(" || "),
        "allow-related",
        None,
        switch,
        &[],
    );
    r.parent = Some(crate::rows::ParentLink {
        parent: switch.clone(),
        column: "acls",
    });
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net() -> NetworkInfo {
        NetworkInfo::default_network()
    }

    fn pol(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(ns: &str, l: &[(&str, &str)], ip: &str, ports: &[(&str, u16)]) -> PodMeta {
        PodMeta {
            namespace: ns.into(),
            labels: labels(l),
            ports: ports
                .iter()
                .map(|(n, p)| (n.to_string(), Proto::Tcp, *p))
                .collect(),
            ips: vec![ip.parse().unwrap()],
        }
    }

    fn acl_matches(rows: &[DesiredRow]) -> Vec<String> {
        rows.iter()
            .filter(|r| r.key.table == ACL)
            .map(|r| r.columns["match"].as_str().unwrap().to_string())
            .collect()
    }

    fn index_with(pods: &[(&str, PodMeta)]) -> PolicyIndex {
        let mut ix = PolicyIndex::default();
        let mut d = Vec::new();
        for (k, m) in pods {
            ix.set_pod(k, m.clone(), &mut d);
        }
        ix
    }

    #[test]
    fn implied_policy_types_and_isolation_without_rules() {
        let p = parse_policy(&pol(json!({"metadata": {"name": "deny", "namespace": "x"},
            "spec": {"podSelector": {}}})))
        .unwrap();
        assert_eq!(p.ingress, Some(vec![]));
        assert_eq!(p.egress, None);
        let p = parse_policy(&pol(json!({"metadata": {"name": "e", "namespace": "x"},
            "spec": {"podSelector": {}, "egress": [{}]}})))
        .unwrap();
        assert!(p.ingress.is_some() && p.egress.is_some());
        // A policy with no rules isolates: only the port group, no allow ACL; the
        // namespace gets the default deny.
        let mut ix = index_with(&[("x:a", pod("x", &[], "10.244.1.3", &[]))]);
        let mut d = Vec::new();
        ix.apply(
            &pol(json!({"metadata": {"name": "deny", "namespace": "x"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})),
            &mut d,
        )
        .unwrap();
        let rows = ix.policy_rows(&net(), &[Family::V4], "x:deny");
        assert!(acl_matches(&rows).is_empty());
        let ns = ix.namespace_rows(&net(), "x");
        let m = acl_matches(&ns);
        assert_eq!(
            m.len(),
            5,
            "drop and ARP both ways, hairpin on ingress: {m:?}"
        );
        let pg = default_deny_pg_name(&net(), "x", Gress::Ingress);
        assert!(
            m.contains(&format!(
                "outport == @{pg} && (ip4.src == 169.254.169.5 || ip6.src == fd69::5)"
            )),
            "a pod may reach itself through a service: {m:?}"
        );
        assert!(m
            .iter()
            .any(|x| x.starts_with("outport == @") && !x.contains("arp")));
        assert!(m
            .iter()
            .any(|x| x.starts_with("inport == @") && !x.contains("arp")));
        let groups = ix.pod_port_groups(&net(), "x:a");
        assert_eq!(groups.len(), 3, "policy + ingress and egress default deny");
    }

    #[test]
    fn peers_ports_and_ip_blocks() {
        let mut ix = index_with(&[
            ("x:a", pod("x", &[("pod", "a")], "10.244.1.3", &[])),
            ("y:b", pod("y", &[("pod", "b")], "10.244.2.3", &[])),
        ]);
        let mut d = Vec::new();
        ix.set_namespace("y", labels(&[("ns", "y")]), AclLogging::default(), &mut d);
        ix.apply(
            &pol(json!({"metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
              "ingress": [{"from": [
                  {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}},
                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}],
                "ports": [{"port": 80}, {"protocol": "UDP", "port": 80, "endPort": 81}]}]}})),
            &mut d,
        )
        .unwrap();
        let rows = ix.policy_rows(&net(), &[Family::V4], "x:p");
        let m = acl_matches(&rows);
        assert_eq!(m.len(), 2, "{m:?}");
        let peer = ix.peers.keys().next().unwrap().clone();
        let set = peer_set_name(&net(), &peer, Family::V4);
        let pg = policy_pg_name(&net(), "x", "p");
        let ports = "((tcp && tcp.dst == 80) || (udp && udp.dst >= 80 && udp.dst <= 81))";
        assert_eq!(
            m[0],
            format!("outport == @{pg} && ip && (ip4.src == {{${set}}}) && {ports}")
        );
        assert_eq!(
            m[1],
            format!("outport == @{pg} && ip && ip4.src == 10.0.0.0/8 && ip4.src != {{10.244.0.0/16}} && {ports}")
        );
        // The peer's address set holds the pod of the labelled namespace only.
        let sets = ix.peer_rows(&net(), &[Family::V4], &peer);
        assert_eq!(
            sets[0].columns["addresses"],
            crate::rows::set(["10.244.2.3"])
        );
        // The ACL name reads back to namespace, policy, direction and rule.
        let names: Vec<&Value> = rows
            .iter()
            .filter(|r| r.key.table == ACL)
            .map(|r| &r.columns["name"])
            .collect();
        assert_eq!(names[0], &Value::set(["x:p:Ingress:0:pods"]));
        // Labels change: the namespace loses its label → the peer set owner is dirty and
        // its set empties.
        let mut d = Vec::new();
        ix.set_namespace("y", BTreeMap::new(), AclLogging::default(), &mut d);
        assert!(d.iter().any(|o| o.kind == OwnerKind::PeerSelector));
        let sets = ix.peer_rows(&net(), &[Family::V4], &peer);
        assert_eq!(
            sets[0].columns["addresses"],
            crate::rows::set(Vec::<String>::new())
        );
        // A pod's labels change: it leaves the policy's port group.
        let mut d = Vec::new();
        ix.set_pod("x:a", pod("x", &[("pod", "z")], "10.244.1.3", &[]), &mut d);
        assert!(ix.pod_port_groups(&net(), "x:a").is_empty());
    }

    #[test]
    fn named_ports_resolve_per_pod() {
        let mut ix = index_with(&[
            (
                "x:a",
                pod("x", &[("app", "web")], "10.244.1.3", &[("http", 80)]),
            ),
            (
                "x:b",
                pod("x", &[("app", "web")], "10.244.1.4", &[("http", 8080)]),
            ),
            (
                "x:c",
                pod("x", &[("app", "web")], "10.244.1.5", &[("other", 80)]),
            ),
        ]);
        let mut d = Vec::new();
        ix.apply(
            &pol(json!({"metadata": {"name": "named", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
              "ingress": [{"ports": [{"port": "http"}]}]}})),
            &mut d,
        )
        .unwrap();
        let m = acl_matches(&ix.policy_rows(&net(), &[Family::V4], "x:named"));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].ends_with("(((ip4.dst == {10.244.1.3}) && tcp && tcp.dst == 80) || ((ip4.dst == {10.244.1.4}) && tcp && tcp.dst == 8080))"),
            "{}",
            m[0]
        );
        // A pod's port change makes the policy dirty (named ports are per pod).
        let mut d = Vec::new();
        ix.set_pod(
            "x:c",
            pod("x", &[("app", "web")], "10.244.1.5", &[("http", 81)]),
            &mut d,
        );
        assert!(d.contains(&Owner::policy("x", "named")));
        let m = acl_matches(&ix.policy_rows(&net(), &[Family::V4], "x:named"));
        assert!(
            m[0].contains("(ip4.dst == {10.244.1.5}) && tcp && tcp.dst == 81"),
            "{}",
            m[0]
        );
        // Egress to a named port resolves against the destination pods.
        ix.apply(
            &pol(json!({"metadata": {"name": "out", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
              "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}})),
            &mut d,
        )
        .unwrap();
        let rows = ix.policy_rows(&net(), &[Family::V4], "x:out");
        let m = acl_matches(&rows);
        assert!(m[0].starts_with("inport == @"), "{}", m[0]);
        assert!(
            m[0].contains("(ip4.dst == {10.244.1.3}) && tcp && tcp.dst == 80"),
            "{}",
            m[0]
        );
        let acl = rows.iter().find(|r| r.key.table == ACL).unwrap();
        assert_eq!(
            acl.columns["options"].map_get("apply-after-lb"),
            Some(&"true".into())
        );
        assert_eq!(acl.columns["direction"], s("from-lport"));
    }

    #[test]
    fn logging_follows_the_namespace_annotation() {
        assert!(parse_acl_logging("x", r#"{"allow":"loud"}"#).is_err());
        assert!(parse_acl_logging("x", "not json")
            .unwrap_err()
            .message
            .contains("namespace x"));
        let l = parse_acl_logging("x", r#"{"allow":"notice","deny":"alert"}"#).unwrap();
        let mut ix = index_with(&[("x:a", pod("x", &[], "10.244.1.3", &[]))]);
        let mut d = Vec::new();
        ix.apply(
            &pol(json!({"metadata": {"name": "p", "namespace": "x"},
                "spec": {"podSelector": {}, "ingress": [{}]}})),
            &mut d,
        )
        .unwrap();
        let mut d = Vec::new();
        ix.set_namespace("x", BTreeMap::new(), l, &mut d);
        assert!(d.contains(&Owner::policy("x", "p")) && d.contains(&Owner::namespace("x")));
        let rows = ix.policy_rows(&net(), &[Family::V4], "x:p");
        let acl = rows.iter().find(|r| r.key.table == ACL).unwrap();
        assert_eq!(acl.columns["log"], Value::from(true));
        assert_eq!(acl.columns["severity"], Value::set(["notice"]));
        assert_eq!(acl.columns["meter"], Value::set([ACL_LOGGING_METER]));
        let ns = ix.namespace_rows(&net(), "x");
        let drop = ns
            .iter()
            .find(|r| r.columns.get("action") == Some(&s("drop")))
            .unwrap();
        assert_eq!(drop.columns["severity"], Value::set(["alert"]));
    }

    #[test]
    fn bad_policies_name_the_object() {
        for (spec, want) in [
            (
                json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                "Near",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
                "cidr",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "endPort",
            ),
            (
                json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
                "protocol",
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Sideways"]}),
                "Sideways",
            ),
        ] {
            let e = parse_policy(&pol(
                json!({"metadata": {"name": "bad", "namespace": "x"}, "spec": spec}),
            ))
            .unwrap_err();
            assert!(
                e.message.contains("x/bad") && e.message.contains(want),
                "{e:?}"
            );
        }
    }

    #[test]
    fn selectors() {
        let sel = Selector::parse(
            &serde_json::from_value(json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]},
                                 {"key": "c", "operator": "DoesNotExist"}]}))
            .unwrap(),
        )
        .unwrap();
        assert!(sel.matches(&labels(&[("a", "1"), ("b", "y")])));
        assert!(!sel.matches(&labels(&[("a", "1"), ("b", "z")])));
        assert!(!sel.matches(&labels(&[("a", "1"), ("b", "x"), ("c", "")])));
        assert!(Selector::everything().matches(&BTreeMap::new()));
    }
}
