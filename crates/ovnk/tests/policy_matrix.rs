//! NetworkPolicy reachability matrix, as root with the real OVN/OVS daemons.
//!
//! One 3-node lab for the whole file: namespaces x, y, z (labelled `ns=<name>`), pods a, b,
//! c in each (labelled `pod=<name>`), every pod serving TCP 80/81 and UDP 80/81 through the
//! lab's responder. Each scenario applies NetworkPolicies (and label changes) with the stock
//! kubectl, and after every step the measured matrix — every pod probing every pod on
//! TCP 80, TCP 81, UDP 80, UDP 81 from inside its own network namespace — must converge to
//! the matrix an independent model of the NetworkPolicy semantics (below, written from the
//! Kubernetes API documentation, sharing no code with the controller) predicts. After each
//! scenario the policies are deleted, the labels restored, and the matrix must return to
//! all-allowed.
//!
//! Failing scenarios do not stop the run: every scenario is tried, and the test fails at
//! the end with the list of the ones that did not converge (each printed with its expected
//! and measured matrices when it failed).
//! `POLICY_MATRIX_ONLY=part,part` runs only the scenarios whose names contain a part.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{prerequisites, Lab};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ovnk_lab::responder::{probe, ProbeProto};
use serde_json::{json, Value};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// Pods in matrix order: x/a, x/b, x/c, y/a, ... z/c.
const N: usize = NAMESPACES.len() * PODS.len();
/// What every pod serves, in the matrix's order.
const CHANNELS: [(Proto, u16); 4] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 81),
    (Proto::Udp, 80),
    (Proto::Udp, 81),
];
/// The "web" named port: 81 on the b pods, 80 on the others.
fn web_port(pod: &str) -> u16 {
    if pod == "b" {
        81
    } else {
        80
    }
}
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a step may take to show its expected matrix.
const CONVERGE: Duration = Duration::from_secs(15);
/// The very first matrix also waits for the responders to start and the first ARP/MAC
/// learning across nodes.
const FIRST_CONVERGE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn k8s(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

fn cell(from: usize, to: usize, ch: usize) -> usize {
    (from * N + to) * CHANNELS.len() + ch
}

// ---------------------------------------------------------------------------------------
// The cluster as the API server has it
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ContainerPort {
    name: String,
    proto: String,
    port: i32,
}

#[derive(Debug, Clone)]
struct PodInfo {
    ns: String,
    name: String,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
    node: String,
    ports: Vec<ContainerPort>,
    netns: String,
}

impl PodInfo {
    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

#[derive(Debug, Clone)]
struct Cluster {
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// In matrix order.
    pods: Vec<PodInfo>,
}

impl Cluster {
    fn pod(&self, ns: &str, name: &str) -> &PodInfo {
        self.pods
            .iter()
            .find(|p| p.ns == ns && p.name == name)
            .unwrap_or_else(|| panic!("no pod {ns}/{name}"))
    }
}

fn kubectl_json(lab: &Lab, args: &[&str]) -> Result<Value, String> {
    let out = lab.kubectl(args);
    if !out.status.success() {
        return Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("kubectl {}: {e}", args.join(" ")))
}

/// Namespaces x, y, z and their pods, once every pod is running with an address and a
/// sandbox. `Err` while some pod is not there yet.
fn fetch_cluster(lab: &Lab) -> Result<Cluster, String> {
    let mut ns_labels = BTreeMap::new();
    let list = kubectl_json(lab, &["get", "namespaces", "-o", "json"])?;
    for item in list["items"].as_array().cloned().unwrap_or_default() {
        let ns: Namespace = serde_json::from_value(item).map_err(|e| e.to_string())?;
        let name = ns.metadata.name.unwrap_or_default();
        if NAMESPACES.contains(&name.as_str()) {
            ns_labels.insert(name, ns.metadata.labels.unwrap_or_default());
        }
    }
    let list = kubectl_json(lab, &["get", "pods", "-A", "-o", "json"])?;
    let mut found = BTreeMap::new();
    for item in list["items"].as_array().cloned().unwrap_or_default() {
        let pod: Pod = serde_json::from_value(item).map_err(|e| e.to_string())?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if !NAMESPACES.contains(&ns.as_str()) || !PODS.contains(&name.as_str()) {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        let (Some("Running"), Some(ip)) = (status.phase.as_deref(), status.pod_ip.as_deref())
        else {
            return Err(format!("pod {ns}/{name} is not running yet"));
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| format!("pod {ns}/{name}: {ip}: {e}"))?;
        let spec = pod.spec.clone().unwrap_or_default();
        let ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.clone().unwrap_or_default())
            .map(|p| ContainerPort {
                name: p.name.unwrap_or_default(),
                proto: p.protocol.unwrap_or_else(|| "TCP".into()),
                port: p.container_port,
            })
            .collect();
        let sandbox = ovnk_lab::kubelet::find_pod(&lab.dir(), &ns, &name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("pod {ns}/{name} has no sandbox yet"))?;
        found.insert(
            (ns.clone(), name.clone()),
            PodInfo {
                ns,
                name,
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                ip,
                node: spec.node_name.unwrap_or_default(),
                ports,
                netns: sandbox.netns,
            },
        );
    }
    let mut pods = Vec::new();
    for ns in NAMESPACES {
        if !ns_labels.contains_key(ns) {
            return Err(format!("namespace {ns} is missing"));
        }
        for name in PODS {
            pods.push(
                found
                    .remove(&(ns.to_string(), name.to_string()))
                    .ok_or_else(|| format!("pod {ns}/{name} is missing"))?,
            );
        }
    }
    Ok(Cluster { ns_labels, pods })
}

// ---------------------------------------------------------------------------------------
// The model: NetworkPolicy semantics, from the API documentation
// ---------------------------------------------------------------------------------------

/// A label selector against a label set; `None` (an absent selector) selects everything,
/// as does the empty selector.
fn selector_matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else {
        return true;
    };
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => !have.is_some_and(|v| values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("model: unknown selector operator {op}"),
        }
    });
    labels_ok && exprs_ok
}

fn policy_ns(p: &NetworkPolicy) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

/// (isolates for ingress, isolates for egress): `policyTypes` when given, else Ingress
/// always and Egress when the policy has egress rules.
fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.clone().unwrap_or_default();
    match &spec.policy_types {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn selects(p: &NetworkPolicy, pod: &PodInfo) -> bool {
    let spec = p.spec.clone().unwrap_or_default();
    policy_ns(p) == pod.ns && selector_matches(spec.pod_selector.as_ref(), &pod.labels)
}

fn ip_block_matches(b: &IPBlock, ip: IpAddr) -> bool {
    let net: IpNet = b.cidr.parse().expect("model: ipBlock cidr");
    net.contains(&ip)
        && !b.except.iter().flatten().any(|e| {
            let e: IpNet = e.parse().expect("model: ipBlock except");
            e.contains(&ip)
        })
}

/// Does `peer` of a policy in namespace `ns` match `pod`?
fn peer_matches(peer: &NetworkPolicyPeer, ns: &str, pod: &PodInfo, cluster: &Cluster) -> bool {
    if let Some(b) = &peer.ip_block {
        return ip_block_matches(b, pod.ip);
    }
    match (&peer.namespace_selector, &peer.pod_selector) {
        (None, None) => false,
        (None, Some(ps)) => pod.ns == ns && selector_matches(Some(ps), &pod.labels),
        (Some(nss), ps) => {
            let ns_labels = cluster.ns_labels.get(&pod.ns).cloned().unwrap_or_default();
            selector_matches(Some(nss), &ns_labels) && selector_matches(ps.as_ref(), &pod.labels)
        }
    }
}

/// A rule's peer list: absent or empty matches every peer.
fn peers_match(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ns: &str,
    pod: &PodInfo,
    cluster: &Cluster,
) -> bool {
    match peers {
        None => true,
        Some(v) if v.is_empty() => true,
        Some(v) => v.iter().any(|p| peer_matches(p, ns, pod, cluster)),
    }
}

/// A rule's port list against traffic to `dst` on `proto`/`port`: absent or empty matches
/// every port; named ports are looked up in the destination pod's containerPorts.
fn ports_match(
    ports: Option<&Vec<NetworkPolicyPort>>,
    dst: &PodInfo,
    proto: Proto,
    port: u16,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    let port = i32::from(port);
    ports.iter().any(|p| {
        let pproto = p.protocol.as_deref().unwrap_or("TCP");
        if pproto != proto.k8s() {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => (*n..=p.end_port.unwrap_or(*n)).contains(&port),
            Some(IntOrString::String(name)) => dst
                .ports
                .iter()
                .any(|cp| &cp.name == name && cp.proto == pproto && cp.port == port),
        }
    })
}

/// May `src` open a connection to `dst` on `proto`/`port`?
fn allowed(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    src: &PodInfo,
    dst: &PodInfo,
    proto: Proto,
    port: u16,
) -> bool {
    // A pod always reaches itself (the packets never leave its namespace).
    if src.ns == dst.ns && src.name == dst.name {
        return true;
    }
    let egress: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| policy_types(p).1 && selects(p, src))
        .collect();
    let egress_ok = egress.is_empty()
        || egress.iter().any(|p| {
            let spec = p.spec.clone().unwrap_or_default();
            spec.egress.iter().flatten().any(|r| {
                peers_match(r.to.as_ref(), policy_ns(p), dst, cluster)
                    && ports_match(r.ports.as_ref(), dst, proto, port)
            })
        });
    let ingress: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| policy_types(p).0 && selects(p, dst))
        .collect();
    let ingress_ok = ingress.is_empty()
        || ingress.iter().any(|p| {
            let spec = p.spec.clone().unwrap_or_default();
            spec.ingress.iter().flatten().any(|r| {
                peers_match(r.from.as_ref(), policy_ns(p), src, cluster)
                    && ports_match(r.ports.as_ref(), dst, proto, port)
            })
        });
    egress_ok && ingress_ok
}

fn expected_matrix(cluster: &Cluster, policies: &[NetworkPolicy]) -> Vec<bool> {
    let mut m = vec![false; N * N * CHANNELS.len()];
    for (i, src) in cluster.pods.iter().enumerate() {
        for (j, dst) in cluster.pods.iter().enumerate() {
            for (k, &(proto, port)) in CHANNELS.iter().enumerate() {
                m[cell(i, j, k)] = allowed(cluster, policies, src, dst, proto, port);
            }
        }
    }
    m
}

// ---------------------------------------------------------------------------------------
// The measured matrix
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Measured {
    allowed: bool,
    /// The answer or the error, for the mismatch report.
    detail: String,
}

/// Every pod probes every pod on every channel, all at once: one thread per source pod
/// that enters the pod's network namespace and runs its probes there concurrently.
fn measure(cluster: &Cluster) -> Vec<Measured> {
    let mut m = vec![
        Measured {
            allowed: false,
            detail: String::new(),
        };
        N * N * CHANNELS.len()
    ];
    let rows: Vec<Vec<Measured>> = std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .pods
            .iter()
            .map(|src| s.spawn(move || probe_row(src, &cluster.pods)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    for (i, row) in rows.into_iter().enumerate() {
        for (idx, r) in row.into_iter().enumerate() {
            m[i * N * CHANNELS.len() + idx] = r;
        }
    }
    m
}

fn probe_row(src: &PodInfo, dsts: &[PodInfo]) -> Vec<Measured> {
    let failed = |why: String| {
        vec![
            Measured {
                allowed: false,
                detail: why,
            };
            N * CHANNELS.len()
        ]
    };
    let ns = match ovnk_netns::NetNs::named(&src.netns) {
        Ok(ns) => ns,
        Err(e) => return failed(format!("source namespace: {e}")),
    };
    let targets: Vec<(IpAddr, String)> = dsts.iter().map(|d| (d.ip, d.name.clone())).collect();
    let run = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (j, (ip, name)) in targets.into_iter().enumerate() {
                for (k, &(proto, port)) in CHANNELS.iter().enumerate() {
                    let name = name.clone();
                    set.spawn(async move {
                        let pp = match proto {
                            Proto::Tcp => ProbeProto::Tcp,
                            Proto::Udp => ProbeProto::Udp,
                        };
                        let r = probe(pp, ip, port, Some("hostname"), PROBE_TIMEOUT).await;
                        let m = match r {
                            Ok(answer) if answer == name => Measured {
                                allowed: true,
                                detail: answer,
                            },
                            Ok(answer) => Measured {
                                allowed: false,
                                detail: format!("answered {answer:?}"),
                            },
                            Err(e) => Measured {
                                allowed: false,
                                detail: e.to_string(),
                            },
                        };
                        (j * CHANNELS.len() + k, m)
                    });
                }
            }
            let mut row = vec![
                Measured {
                    allowed: false,
                    detail: "not probed".into(),
                };
                N * CHANNELS.len()
            ];
            while let Some(r) = set.join_next().await {
                let (idx, m) = r.expect("probe task");
                row[idx] = m;
            }
            row
        })
    });
    run.unwrap_or_else(|e| failed(format!("entering the source namespace: {e}")))
}

/// Both matrices side by side, one block per channel; rows are sources, columns
/// destinations; `.` allowed, `X` denied, `*` marks a measured cell that differs.
/// `misses[c]` counts the rounds in which cell `c` mismatched, out of `rounds`: a cell
/// wrong in every round is a policy problem, one wrong in the last round only a hiccup.
fn render(
    cluster: &Cluster,
    expected: &[bool],
    measured: &[Measured],
    misses: &[usize],
    rounds: usize,
) -> String {
    let names: Vec<String> = cluster.pods.iter().map(|p| p.key()).collect();
    let header: String = names.iter().map(|n| format!("{n:>4}")).collect();
    let mut out = String::new();
    for (k, (proto, port)) in CHANNELS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<8}{:<w$} | measured (* where it differs)",
            format!("{proto:?}/{port}").to_uppercase(),
            "  expected",
            w = 4 * N
        );
        let _ = writeln!(out, "{:<8}{header} | {header}", "from\\to");
        for (i, from) in names.iter().enumerate() {
            let mut e = String::new();
            let mut m = String::new();
            for j in 0..N {
                let c = cell(i, j, k);
                let sym = |a: bool| if a { '.' } else { 'X' };
                let _ = write!(e, "{:>4}", sym(expected[c]));
                let mark = if expected[c] == measured[c].allowed {
                    ' '
                } else {
                    '*'
                };
                let _ = write!(m, "  {mark}{}", sym(measured[c].allowed));
            }
            let _ = writeln!(out, "{from:<8}{e} | {m}");
        }
    }
    let mismatches: Vec<String> = (0..N * N * CHANNELS.len())
        .filter(|&c| expected[c] != measured[c].allowed)
        .map(|c| {
            let (i, j, k) = (
                c / (N * CHANNELS.len()),
                (c / CHANNELS.len()) % N,
                c % CHANNELS.len(),
            );
            let (proto, port) = CHANNELS[k];
            format!(
                "  {} -> {} ({}) {proto:?}/{port}: expected {}, measured {} ({}), wrong in {}/{rounds} rounds",
                names[i],
                names[j],
                cluster.pods[j].ip,
                if expected[c] { "allowed" } else { "denied" },
                if measured[c].allowed {
                    "allowed"
                } else {
                    "denied"
                },
                measured[c].detail,
                misses[c]
            )
        })
        .collect();
    let always = (0..misses.len()).filter(|&c| misses[c] == rounds).count();
    let _ = writeln!(
        out,
        "{} mismatching cells in the last round ({always} cells wrong in every round):",
        mismatches.len()
    );
    for l in mismatches.iter().take(24) {
        let _ = writeln!(out, "{l}");
    }
    if mismatches.len() > 24 {
        let _ = writeln!(out, "  ... and {} more", mismatches.len() - 24);
    }
    out
}

/// Probes until the measured matrix equals `expected` (one full round that matches) or
/// `within` has passed; `Err` carries the rendered matrices of the last round.
fn converge(cluster: &Cluster, expected: &[bool], within: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut rounds = 0;
    let mut misses = vec![0usize; expected.len()];
    let mut history = Vec::new();
    loop {
        let round = Instant::now();
        let m = measure(cluster);
        rounds += 1;
        let mut wrong = 0;
        for (c, (m, e)) in m.iter().zip(expected).enumerate() {
            if m.allowed != *e {
                misses[c] += 1;
                wrong += 1;
            }
        }
        history.push(wrong);
        if wrong == 0 {
            return Ok(format!(
                "converged in {:.1}s ({rounds} rounds)",
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() >= within {
            return Err(format!(
                "no convergence after {:.1}s ({rounds} rounds; wrong cells per round {history:?}):\n{}",
                start.elapsed().as_secs_f64(),
                render(cluster, expected, &m, &misses, rounds)
            ));
        }
        // A round with denied cells already waited for its timeouts.
        if round.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenario steps
// ---------------------------------------------------------------------------------------

type Step = Result<(), String>;

/// One scenario's view of the lab: what it applied, what it relabelled, what the last
/// checked matrix was.
struct Ctx<'a> {
    lab: &'a Lab,
    /// The cluster as it was set up (base labels, addresses).
    base: Cluster,
    policies: BTreeMap<(String, String), NetworkPolicy>,
    /// Labels changed by the scenario, to restore: (kind, namespace, name, key).
    relabelled: BTreeSet<(&'static str, String, String, String)>,
    last: Vec<bool>,
    scenario: &'static str,
}

fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

impl Ctx<'_> {
    fn ip(&self, ns: &str, pod: &str) -> IpAddr {
        self.base.pod(ns, pod).ip
    }

    fn kubectl(&self, args: &[&str]) -> Step {
        let out = self.lab.kubectl(args);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Creates the policy, or replaces it (an in-place update) when this scenario already
    /// applied one of that name.
    fn apply(&mut self, policy: Value) -> Step {
        let typed: NetworkPolicy =
            serde_json::from_value(policy.clone()).map_err(|e| format!("policy: {e}"))?;
        let key = (
            policy_ns(&typed).to_string(),
            typed.metadata.name.clone().unwrap_or_default(),
        );
        let file = self
            .lab
            .root
            .path()
            .join(format!("{}-{}-{}.json", self.scenario, key.0, key.1));
        std::fs::write(&file, serde_json::to_vec_pretty(&policy).unwrap())
            .map_err(|e| e.to_string())?;
        let verb = if self.policies.contains_key(&key) {
            "replace"
        } else {
            "create"
        };
        self.kubectl(&[verb, "-f", &file.display().to_string()])?;
        self.policies.insert(key, typed);
        Ok(())
    }

    fn delete(&mut self, ns: &str, name: &str) -> Step {
        self.kubectl(&["delete", "networkpolicy", "-n", ns, name])?;
        self.policies.remove(&(ns.to_string(), name.to_string()));
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a label of pod `ns/pod`.
    fn label_pod(&mut self, ns: &str, pod: &str, key: &str, value: Option<&str>) -> Step {
        let arg = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        self.kubectl(&["label", "pod", "-n", ns, pod, &arg, "--overwrite"])?;
        self.relabelled
            .insert(("pod", ns.to_string(), pod.to_string(), key.to_string()));
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a label of namespace `ns`.
    fn label_ns(&mut self, ns: &str, key: &str, value: Option<&str>) -> Step {
        let arg = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        self.kubectl(&["label", "namespace", ns, &arg, "--overwrite"])?;
        self.relabelled
            .insert(("namespace", String::new(), ns.to_string(), key.to_string()));
        Ok(())
    }

    /// The matrix must converge to what the model predicts for the cluster as the API
    /// server has it now and the policies applied. A step whose expected matrix equals
    /// the previous one could pass without the controller doing anything: refused.
    fn check(&mut self, what: &str) -> Step {
        let cluster = fetch_cluster(self.lab)?;
        let policies: Vec<NetworkPolicy> = self.policies.values().cloned().collect();
        let expected = expected_matrix(&cluster, &policies);
        if expected == self.last {
            return Err(format!(
                "{what}: the expected matrix did not change from the previous step (scenario bug)"
            ));
        }
        let denied = expected.iter().filter(|a| !**a).count();
        let r = converge(&cluster, &expected, CONVERGE);
        self.last = expected;
        match r {
            Ok(msg) => {
                eprintln!("  [{}] {what}: {denied} denied cells, {msg}", self.scenario);
                Ok(())
            }
            Err(report) => {
                let dump = nb_policy_dump(self.lab);
                // Diagnosis only (the step has failed already). Which layer holds the
                // stale state? First ovn-controller's incrementally computed OpenFlow
                // (a full recompute), then the datapaths' cached flows (a purge).
                let mut after = Vec::new();
                for (daemon, command, label) in [
                    ("ovn-controller", "recompute", "`ovn-appctl recompute`"),
                    (
                        "ovs-vswitchd",
                        "revalidator/purge",
                        "`ovs-appctl revalidator/purge`",
                    ),
                ] {
                    appctl_every_node(self.lab, daemon, command);
                    match converge(&cluster, &self.last, Duration::from_secs(5)) {
                        Ok(msg) => {
                            after.push(format!("after {label} on every node: {msg}"));
                            break;
                        }
                        Err(_) => after.push(format!("after {label} on every node: still wrong")),
                    }
                }
                let after = after.join("\n");
                Err(format!("{what}: {report}\n{dump}\n{after}"))
            }
        }
    }

    /// Deletes the scenario's policies, restores the labels it changed, and checks the
    /// matrix is all-allowed again.
    fn reset(&mut self) -> Step {
        let mut errors = Vec::new();
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, name) in self.policies.keys() {
            by_ns.entry(ns.clone()).or_default().push(name.clone());
        }
        for (ns, names) in by_ns {
            let mut args = vec!["delete", "networkpolicy", "-n", &ns];
            args.extend(names.iter().map(|s| s.as_str()));
            if let Err(e) = self.kubectl(&args) {
                errors.push(e);
            }
        }
        self.policies.clear();
        for (kind, ns, name, key) in std::mem::take(&mut self.relabelled) {
            let base = if kind == "pod" {
                self.base.pod(&ns, &name).labels.get(&key)
            } else {
                self.base.ns_labels[&name].get(&key)
            };
            let arg = match base {
                Some(v) => format!("{key}={v}"),
                None => format!("{key}-"),
            };
            let mut args = vec!["label", kind];
            if kind == "pod" {
                args.extend(["-n", ns.as_str()]);
            }
            args.extend([name.as_str(), arg.as_str(), "--overwrite"]);
            if let Err(e) = self.kubectl(&args) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            if let Err(e) = self.check("after deleting the policies") {
                errors.push(e);
            }
        }
        // "All allowed" is reached before the old allows are gone from the dataplane, so
        // the next scenario could start on leftovers: wait until NB holds no policy rows
        // and every ovn-controller has applied NB up to now (nb_cfg → hv_cfg).
        if errors.is_empty() {
            if let Err(e) = self.drained() {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    fn drained(&self) -> Step {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pgs = nbctl(
                self.lab,
                &["--bare", "--columns=name", "list", "Port_Group"],
            )?;
            if pgs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("policy port groups left in NB: {pgs}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let db = format!(
            "unix:{}",
            self.lab.dir().join("central").join("nb.sock").display()
        );
        let out = std::process::Command::new("ovn-nbctl")
            .args([
                format!("--db={db}"),
                "--wait=hv".into(),
                "--timeout=30".into(),
                "sync".into(),
            ])
            .output()
            .map_err(|e| format!("ovn-nbctl --wait=hv sync: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ovn-nbctl --wait=hv sync: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

fn labels(k: &str, v: &str) -> Value {
    json!({"matchLabels": {k: v}})
}

fn deny_all_ingress_in_namespace(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ))?;
    c.check("nothing enters x")
}

fn deny_all_egress_but_dns(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "dns-only",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
    ))?;
    c.check("x reaches nothing but UDP 53")
}

fn allow_from_same_namespace(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "same-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    ))?;
    c.check("x is entered from x only")
}

fn allow_from_namespace_by_label(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
    ))?;
    c.check("x is entered from y only")
}

fn pod_and_namespace_selector_in_one_peer(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-y-a",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "a")}
        ]}]}),
    ))?;
    c.check("x is entered from y/a only")
}

fn pod_and_namespace_selector_as_two_peers(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-y-or-a",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": labels("ns", "y")},
            {"podSelector": labels("pod", "a")}
        ]}]}),
    ))?;
    c.check("x is entered from all of y and from x/a")
}

fn match_expressions(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "exprs",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
               "ingress": [{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
            "podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "In", "values": ["a", "b"]},
                {"key": "nope", "operator": "DoesNotExist"}
            ]}
        }]}]}),
    ))?;
    c.check("x is entered from a and b of y and z")
}

fn empty_namespace_selector_with_pod_selector(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-any-b",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": labels("pod", "b")}
        ]}]}),
    ))?;
    c.check("x is entered from the b pods of every namespace")
}

fn empty_pod_selector_with_namespace_selector(c: &mut Ctx) -> Step {
    c.apply(np(
        "y",
        "from-all-of-z",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": labels("ns", "z"), "podSelector": {}}
        ]}]}),
    ))?;
    c.check("y is entered from every pod of z")
}

fn ip_block_with_except(c: &mut Ctx) -> Step {
    let yb = c.ip("y", "b");
    let zc = c.ip("z", "c");
    let net = IpNet::new(yb, 16).unwrap().trunc();
    c.apply(np(
        "x",
        "from-ipblock",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
            "cidr": net.to_string(), "except": [format!("{yb}/32"), format!("{zc}/32")]
        }}]}]}),
    ))?;
    c.check("x is entered from the pod network but y/b and z/c")
}

fn ip_block_node_subnet(c: &mut Ctx) -> Step {
    let za = c.base.pod("z", "a").clone();
    let net = IpNet::new(za.ip, 24).unwrap().trunc();
    c.apply(np(
        "y",
        "from-one-node",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": net.to_string()}}]}]}),
    ))?;
    c.check(&format!(
        "y is entered from {net} only (the pods of node {})",
        za.node
    ))
}

fn egress_ip_block_with_except(c: &mut Ctx) -> Step {
    let ya = c.ip("y", "a");
    let net = IpNet::new(ya, 16).unwrap().trunc();
    c.apply(np(
        "x",
        "to-ipblock",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {
            "cidr": net.to_string(), "except": [format!("{ya}/32")]
        }}]}]}),
    ))?;
    c.check("x reaches the pod network but y/a")
}

fn named_port(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "named-81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    ))?;
    c.check("x is entered on serve-81-tcp only")
}

fn named_port_different_numbers(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "named-web",
        json!({"podSelector": {}, "ingress": [{
            "from": [{"namespaceSelector": {}}],
            "ports": [{"protocol": "TCP", "port": "web"}]
        }]}),
    ))?;
    c.check("x is entered on web: TCP 80 of x/a and x/c, TCP 81 of x/b")
}

fn named_port_udp(c: &mut Ctx) -> Step {
    c.apply(np(
        "z",
        "named-udp",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    ))?;
    c.check("z is entered on serve-80-udp only")
}

fn named_port_egress(c: &mut Ctx) -> Step {
    c.apply(np(
        "y",
        "to-web",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "TCP", "port": "web"}]}]}),
    ))?;
    c.check("y reaches web only (80 on a/c pods, 81 on b pods)")
}

fn end_port_80_to_81(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "tcp-80-81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
    ))?;
    c.check("x is entered on TCP 80-81")
}

fn end_port_81_only(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "tcp-81-85",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 81, "endPort": 85}]}]}),
    ))?;
    c.check("x is entered on TCP 81-85 (so 81 only)")
}

fn numeric_port_defaults_to_tcp(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "port-80",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    ))?;
    c.check("x is entered on TCP 80 only")
}

fn udp_only_rule(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "udp-only",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
    ))?;
    c.check("x is entered over UDP only")
}

fn two_policies_add_up(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
    ))?;
    c.apply(np(
        "x",
        "from-z-81",
        json!({"podSelector": {}, "ingress": [{
            "from": [{"namespaceSelector": labels("ns", "z")}],
            "ports": [{"protocol": "TCP", "port": 81}]
        }]}),
    ))?;
    c.check("x is entered from y, and from z on TCP 81")
}

fn allow_all_on_top_of_deny_all(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ))?;
    c.check("nothing enters x")?;
    c.apply(np(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    ))?;
    c.check("an empty rule lets everything in again")
}

fn policy_updated_in_place(c: &mut Ctx) -> Step {
    let from = |ns: &str| {
        np(
            "x",
            "moving",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels("ns", ns)}]}]}),
        )
    };
    c.apply(from("y"))?;
    c.check("x is entered from y")?;
    c.apply(from("z"))?;
    c.check("updated: x is entered from z")?;
    c.apply(np(
        "x",
        "moving",
        json!({"podSelector": labels("pod", "c"), "ingress": [{
            "from": [{"namespaceSelector": labels("ns", "z")}],
            "ports": [{"protocol": "UDP", "port": 81}]
        }]}),
    ))?;
    c.check("updated: x/c only, from z on UDP 81")
}

fn policy_deleted(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    ))?;
    c.apply(np(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}]}),
    ))?;
    c.check("x is entered from y")?;
    c.delete("x", "from-y")?;
    c.check("from-y deleted: nothing enters x")
}

fn pod_label_changed_on_a_peer(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-clients",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": labels("role", "client")}
        ]}]}),
    ))?;
    c.check("no client yet: nothing enters x")?;
    c.label_pod("y", "b", "role", Some("client"))?;
    c.check("y/b labelled a client")?;
    c.label_pod("x", "c", "role", Some("client"))?;
    c.check("x/c labelled a client too")?;
    c.label_pod("y", "b", "role", None)?;
    c.check("y/b no longer a client")
}

fn pod_label_changed_on_a_selected_pod(c: &mut Ctx) -> Step {
    c.apply(np(
        "y",
        "isolate-marked",
        json!({"podSelector": labels("isolate", "yes"), "policyTypes": ["Ingress", "Egress"]}),
    ))?;
    c.label_pod("y", "b", "isolate", Some("yes"))?;
    c.check("y/b isolated both ways")?;
    c.label_pod("y", "a", "isolate", Some("yes"))?;
    c.check("y/a isolated too")?;
    c.label_pod("y", "b", "isolate", None)?;
    c.check("y/b released")
}

fn namespace_label_changed(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "from-blue",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": labels("team", "blue")}]}]}),
    ))?;
    c.check("no blue namespace: nothing enters x")?;
    c.label_ns("z", "team", Some("blue"))?;
    c.check("z turned blue")?;
    c.label_ns("y", "team", Some("blue"))?;
    c.label_ns("z", "team", Some("red"))?;
    c.check("y blue, z red")
}

fn egress_only_to_a_namespace(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "to-y",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": labels("ns", "y")}]}]}),
    ))?;
    c.check("x reaches y only")
}

fn egress_only_one_port(c: &mut Ctx) -> Step {
    c.apply(np(
        "z",
        "tcp-80-out",
        json!({"podSelector": labels("pod", "a"), "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "TCP", "port": 80}]}]}),
    ))?;
    c.check("z/a sends TCP 80 only")
}

fn egress_rules_imply_both_policy_types(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "implied-types",
        json!({"podSelector": labels("pod", "a"), "egress": [{"to": [{"podSelector": {}}]}]}),
    ))?;
    c.check("x/a: nothing in (implied Ingress), out to x only")
}

fn policy_types_without_rules_isolate(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "isolate",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    ))?;
    c.check("x cut off both ways")
}

fn only_selected_pods_isolated(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "isolate-a",
        json!({"podSelector": labels("pod", "a"), "policyTypes": ["Ingress"]}),
    ))?;
    c.check("only x/a isolated")
}

fn ingress_and_egress_in_one_policy(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "both",
        json!({"podSelector": labels("pod", "a"), "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"namespaceSelector": labels("ns", "y")}]}],
               "egress": [{"to": [{"namespaceSelector": labels("ns", "z")}]}]}),
    ))?;
    c.check("x/a: in from y, out to z")
}

fn egress_and_ingress_must_both_allow(c: &mut Ctx) -> Step {
    c.apply(np(
        "x",
        "to-y",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": labels("ns", "y")}]}]}),
    ))?;
    c.apply(np(
        "y",
        "from-x-a",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": labels("ns", "x"), "podSelector": labels("pod", "a")}
        ]}]}),
    ))?;
    c.check("x -> y only from x/a; y entered from x/a only")
}

fn every_namespace_isolated_to_itself(c: &mut Ctx) -> Step {
    for ns in NAMESPACES {
        c.apply(np(
            ns,
            "same-ns",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ))?;
    }
    c.check("traffic stays within each namespace")
}

fn ingress_in_two_namespaces_different_ports(c: &mut Ctx) -> Step {
    c.apply(np(
        "y",
        "udp-81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 81}]}]}),
    ))?;
    c.apply(np(
        "z",
        "from-x-tcp",
        json!({"podSelector": labels("pod", "b"), "ingress": [{
            "from": [{"namespaceSelector": labels("ns", "x")}],
            "ports": [{"protocol": "TCP"}]
        }]}),
    ))?;
    c.check("y on UDP 81 only; z/b from x over TCP only")
}

/// `acl_log` lines of every node's ovn-controller that name `acl`, with their verdict.
fn acl_log_lines(lab: &Lab, acl: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = format!("name=\"{acl}\"");
    if let Ok(dirs) = std::fs::read_dir(lab.dir().join("logs")) {
        for d in dirs.flatten() {
            let f = d.path().join("ovn-controller.log");
            if let Ok(text) = std::fs::read_to_string(&f) {
                out.extend(
                    text.lines()
                        .filter(|l| l.contains("acl_log") && l.contains(&needle))
                        .map(str::to_string),
                );
            }
        }
    }
    out
}

/// `ovn-nbctl` on the lab's NB database (an independent witness).
fn nbctl(lab: &Lab, args: &[&str]) -> Result<String, String> {
    let db = format!(
        "unix:{}",
        lab.dir().join("central").join("nb.sock").display()
    );
    let out = std::process::Command::new("ovn-nbctl")
        .arg(format!("--db={db}"))
        .args(args)
        .output()
        .map_err(|e| format!("ovn-nbctl: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `ovs-appctl -t <daemon>.<pid>.ctl <command>` on every node (diagnosis of a failure).
fn appctl_every_node(lab: &Lab, daemon: &str, command: &str) {
    let prefix = format!("{daemon}.");
    if let Ok(nodes) = std::fs::read_dir(lab.dir().join("nodes")) {
        for n in nodes.flatten() {
            let ctl = std::fs::read_dir(n.path().join("run")).ok().and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
                        && p.extension().is_some_and(|x| x == "ctl")
                })
            });
            if let Some(ctl) = ctl {
                let _ = std::process::Command::new("ovs-appctl")
                    .arg("-t")
                    .arg(&ctl)
                    .arg(command)
                    .output();
            }
        }
    }
}

/// What NB holds for policies, for a failure report (port groups with their member
/// count, ACLs): tells a controller mistake from a dataplane that lags behind NB.
fn nb_policy_dump(lab: &Lab) -> String {
    let pgs = nbctl(
        lab,
        &[
            "--format=csv",
            "--columns=name,ports,external_ids",
            "list",
            "Port_Group",
        ],
    )
    .unwrap_or_else(|e| e);
    let acls = nbctl(
        lab,
        &[
            "--format=csv",
            "--columns=name,priority,direction,action,match",
            "list",
            "ACL",
        ],
    )
    .unwrap_or_else(|e| e);
    let mut logs = String::new();
    if let Ok(dirs) = std::fs::read_dir(lab.dir().join("logs")) {
        for d in dirs.flatten() {
            for daemon in ["ovn-controller.log", "ovnk-node.log"] {
                let f = d.path().join(daemon);
                if let Ok(text) = std::fs::read_to_string(&f) {
                    let tail: Vec<&str> = text
                        .lines()
                        .filter(|l| !l.contains("acl_log"))
                        .rev()
                        .take(8)
                        .collect();
                    logs.push_str(&format!("--- {}\n", f.display()));
                    for l in tail.into_iter().rev() {
                        logs.push_str(l);
                        logs.push('\n');
                    }
                }
            }
        }
    }
    // Each node's datapath view: conntrack entries and datapath flows touching TCP 81,
    // the port the stale allows were seen on (to tell a dataplane cache from a rule).
    let mut dp = String::new();
    if let Ok(nodes) = std::fs::read_dir(lab.dir().join("nodes")) {
        for n in nodes.flatten() {
            let run = n.path().join("run");
            let ctl = std::fs::read_dir(&run).ok().and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    p.to_string_lossy().contains("ovs-vswitchd.")
                        && p.extension().is_some_and(|x| x == "ctl")
                })
            });
            let Some(ctl) = ctl else { continue };
            for cmd in ["dpctl/dump-conntrack", "dpctl/dump-flows"] {
                let out = std::process::Command::new("ovs-appctl")
                    .arg("-t")
                    .arg(&ctl)
                    .arg(cmd)
                    .output();
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let hits: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            l.contains("dport=81")
                                || l.contains("tp_dst=81")
                                || l.contains("dst=81")
                        })
                        .take(20)
                        .collect();
                    dp.push_str(&format!(
                        "--- {} {cmd}: {} lines, {} on port 81\n",
                        n.path().display(),
                        text.lines().count(),
                        hits.len()
                    ));
                    for h in hits {
                        dp.push_str(h);
                        dp.push('\n');
                    }
                }
            }
        }
    }
    format!("NB port groups:\n{pgs}\nNB ACLs:\n{acls}\nlast log lines:\n{logs}\ndatapaths:\n{dp}")
}

/// Policy logs: the namespace's `k8s.ovn.org/acl-logging` turns logging on for its
/// policies' ACLs (allowed packets logged under the policy's ACL name, dropped ones under
/// the namespace's default deny), and removing it turns it off without a restart.
fn acl_logging(c: &mut Ctx) -> Step {
    c.kubectl(&[
        "annotate",
        "namespace",
        "x",
        r#"k8s.ovn.org/acl-logging={"allow":"notice","deny":"alert"}"#,
        "--overwrite",
    ])?;
    c.apply(np(
        "x",
        "logged",
        json!({"podSelector": labels("pod", "a"), "ingress": [{
            "from": [{"namespaceSelector": labels("ns", "y")}]
        }]}),
    ))?;
    // The check's probes are the logged traffic: y → x/a allowed, x and z → x/a dropped.
    c.check("x/a entered from y only, logged")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (allow, deny) = loop {
        let allow = acl_log_lines(c.lab, "x:logged:Ingress:0:pods");
        let deny = acl_log_lines(c.lab, "x_ingressDefaultDeny");
        let ok = allow
            .iter()
            .any(|l| l.contains("verdict=allow") && l.contains("severity=notice"))
            && deny
                .iter()
                .any(|l| l.contains("verdict=drop") && l.contains("severity=alert"));
        if ok || Instant::now() > deadline {
            break (allow, deny);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    if !allow.iter().any(|l| l.contains("verdict=allow"))
        || !deny.iter().any(|l| l.contains("verdict=drop"))
    {
        return Err(format!(
            "acl_log lines missing: allowed {} lines, dropped {} lines (first: {:?} / {:?})",
            allow.len(),
            deny.len(),
            allow.first(),
            deny.first()
        ));
    }
    // Removing the annotation turns logging off in NB without a restart.
    c.kubectl(&["annotate", "namespace", "x", "k8s.ovn.org/acl-logging-"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged = nbctl(
            c.lab,
            &["--bare", "--columns=log", "find", "ACL", "log=true"],
        )?;
        if logged.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "ACLs still logging after the annotation went: {logged}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

type Scenario = (&'static str, fn(&mut Ctx) -> Step);

const SCENARIOS: &[Scenario] = &[
    (
        "deny-all-ingress-in-namespace",
        deny_all_ingress_in_namespace,
    ),
    ("deny-all-egress-but-dns", deny_all_egress_but_dns),
    ("allow-from-same-namespace", allow_from_same_namespace),
    (
        "allow-from-namespace-by-label",
        allow_from_namespace_by_label,
    ),
    (
        "pod-and-namespace-selector-in-one-peer",
        pod_and_namespace_selector_in_one_peer,
    ),
    (
        "pod-and-namespace-selector-as-two-peers",
        pod_and_namespace_selector_as_two_peers,
    ),
    ("match-expressions", match_expressions),
    (
        "empty-namespace-selector-with-pod-selector",
        empty_namespace_selector_with_pod_selector,
    ),
    (
        "empty-pod-selector-with-namespace-selector",
        empty_pod_selector_with_namespace_selector,
    ),
    ("ip-block-with-except", ip_block_with_except),
    ("ip-block-node-subnet", ip_block_node_subnet),
    ("egress-ip-block-with-except", egress_ip_block_with_except),
    ("named-port", named_port),
    ("named-port-different-numbers", named_port_different_numbers),
    ("named-port-udp", named_port_udp),
    ("named-port-egress", named_port_egress),
    ("end-port-80-to-81", end_port_80_to_81),
    ("end-port-81-only", end_port_81_only),
    ("numeric-port-defaults-to-tcp", numeric_port_defaults_to_tcp),
    ("udp-only-rule", udp_only_rule),
    ("two-policies-add-up", two_policies_add_up),
    ("allow-all-on-top-of-deny-all", allow_all_on_top_of_deny_all),
    ("policy-updated-in-place", policy_updated_in_place),
    ("policy-deleted", policy_deleted),
    ("pod-label-changed-on-a-peer", pod_label_changed_on_a_peer),
    (
        "pod-label-changed-on-a-selected-pod",
        pod_label_changed_on_a_selected_pod,
    ),
    ("namespace-label-changed", namespace_label_changed),
    ("egress-only-to-a-namespace", egress_only_to_a_namespace),
    ("egress-only-one-port", egress_only_one_port),
    (
        "egress-rules-imply-both-policy-types",
        egress_rules_imply_both_policy_types,
    ),
    (
        "policy-types-without-rules-isolate",
        policy_types_without_rules_isolate,
    ),
    ("only-selected-pods-isolated", only_selected_pods_isolated),
    (
        "ingress-and-egress-in-one-policy",
        ingress_and_egress_in_one_policy,
    ),
    (
        "egress-and-ingress-must-both-allow",
        egress_and_ingress_must_both_allow,
    ),
    (
        "every-namespace-isolated-to-itself",
        every_namespace_isolated_to_itself,
    ),
    (
        "ingress-in-two-namespaces-different-ports",
        ingress_in_two_namespaces_different_ports,
    ),
    ("acl-logging", acl_logging),
];

// ---------------------------------------------------------------------------------------
// Setup and the test
// ---------------------------------------------------------------------------------------

/// The node pod `pod` of namespace `ns` runs on: a Latin square over the (sorted) nodes,
/// so every namespace and every pod name spans all three nodes.
fn placement<'n>(nodes: &'n [String], ns: &str, pod: &str) -> &'n str {
    let i = NAMESPACES.iter().position(|n| *n == ns).unwrap();
    let j = PODS.iter().position(|p| *p == pod).unwrap();
    &nodes[(i + j) % nodes.len()]
}

fn manifest(nodes: &[String]) -> Value {
    let mut items = Vec::new();
    for ns in NAMESPACES {
        items.push(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ns": ns}},
        }));
    }
    for ns in NAMESPACES {
        for pod in PODS {
            let port = |name: &str, proto: &str, n: u16| json!({"name": name, "containerPort": n, "protocol": proto});
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": placement(nodes, ns, pod)},
                    "containers": [{
                        "name": "responder",
                        "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                        "ports": [
                            port("serve-80-tcp", "TCP", 80),
                            port("serve-81-tcp", "TCP", 81),
                            port("serve-80-udp", "UDP", 80),
                            port("serve-81-udp", "UDP", 81),
                            port("web", "TCP", web_port(pod)),
                        ],
                    }],
                },
            }));
        }
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Runs one scenario, then resets (deletes its policies, restores labels, checks the
/// all-allowed matrix and drains); either failing fails the scenario.
fn run_scenario(
    lab: &Lab,
    base: &Cluster,
    all_allowed: &[bool],
    name: &'static str,
    run: fn(&mut Ctx) -> Step,
) -> Step {
    let mut ctx = Ctx {
        lab,
        base: base.clone(),
        policies: BTreeMap::new(),
        relabelled: BTreeSet::new(),
        last: all_allowed.to_vec(),
        scenario: name,
    };
    let outcome = run(&mut ctx);
    if let Err(e) = &outcome {
        eprintln!("FAIL {name}: {e}");
    }
    // Cleanup runs (and is checked) whatever the outcome; a leftover would spoil the
    // following scenarios.
    ctx.last = Vec::new();
    let cleanup = ctx.reset().map_err(|e| format!("cleanup: {e}"));
    if let Err(e) = &cleanup {
        eprintln!("FAIL {name}: {e}");
    }
    match (outcome, cleanup) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(a), Ok(())) => Err(a),
        (Ok(()), Err(b)) => Err(b),
        (Err(a), Err(b)) => Err(format!("{a}\n{b}")),
    }
}

#[test]
fn network_policy_reachability_matrix() {
    if !prerequisites() {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab {
        name: format!("pm{}", std::process::id() % 100000),
        root: tempfile::tempdir().unwrap(),
    };
    assert!(
        lab.ovnk(&["up", "--nodes", "3"]).status.success(),
        "ovnk lab up failed"
    );
    let nodes = kubectl_json(&lab, &["get", "nodes", "-o", "json"]).unwrap();
    let mut nodes: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
        .collect();
    nodes.sort();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let file = lab.root.path().join("setup.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&manifest(&nodes)).unwrap()).unwrap();
    // The lab API server serves no OpenAPI schema for the List kind: no client validation.
    let created = lab.kubectl(&[
        "create",
        "--validate=false",
        "-f",
        &file.display().to_string(),
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let base = loop {
        match fetch_cluster(&lab) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "pods not ready: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    eprintln!(
        "lab up and pods running in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    for p in &base.pods {
        eprintln!("  {:<4} {:<15} {}", p.key(), p.ip, p.node);
    }
    for p in &base.pods {
        assert_eq!(p.node, placement(&nodes, &p.ns, &p.name), "{}", p.key());
    }

    // The baseline: with no policy every pod reaches every pod on every channel.
    let all_allowed = vec![true; N * N * CHANNELS.len()];
    match converge(&base, &all_allowed, FIRST_CONVERGE) {
        Ok(msg) => eprintln!("baseline all-allowed matrix: {msg}"),
        Err(report) => panic!("baseline (no policy) matrix: {report}"),
    }

    // POLICY_MATRIX_ONLY=named-port,egress runs the scenarios whose names contain one of
    // the given parts (for working on a few; CI runs them all).
    let only: Vec<String> = std::env::var("POLICY_MATRIX_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let mut results: Vec<(&str, Duration, Result<(), String>)> = Vec::new();
    let mut flaky: Vec<(&str, String)> = Vec::new();
    for (name, run) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        eprintln!("=== {name}");
        // One retry from a clean slate, as insurance for a loaded 2-core CI machine. The
        // failure it was added for (a stale megaflow of OVS 3.1's userspace datapath that
        // kept one remote cell allowed) is gone since the lab runs without megaflows
        // (crates/lab/src/daemons.rs, disable_megaflows). A controller mistake fails both
        // attempts; a first-attempt failure is still printed in full and counted.
        let mut outcome = run_scenario(&lab, &base, &all_allowed, name, *run);
        if let Err(first) = &outcome {
            eprintln!("--- {name}: retrying once from a clean slate");
            let retry = run_scenario(&lab, &base, &all_allowed, name, *run);
            outcome = match retry {
                Ok(()) => {
                    flaky.push((name, first.lines().next().unwrap_or("").to_string()));
                    Ok(())
                }
                Err(second) => Err(format!("{first}\n(retry) {second}")),
            };
        }
        eprintln!(
            "--- {name}: {} in {:.1}s",
            if outcome.is_ok() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        results.push((name, started.elapsed(), outcome));
    }

    eprintln!(
        "\n{} scenarios in {:.0}s (whole test {:.0}s):",
        results.len(),
        results.iter().map(|r| r.1).sum::<Duration>().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    for (name, took, r) in &results {
        let first = r
            .as_ref()
            .err()
            .map(|e| e.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default();
        eprintln!(
            "  {:<6} {name:<44} {:>5.1}s  {first}",
            if r.is_ok() { "ok" } else { "FAIL" },
            took.as_secs_f64()
        );
    }
    for (name, first) in &flaky {
        eprintln!("  note: {name} passed only on its retry; first attempt: {first}");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.2.is_err())
        .map(|r| r.0)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed: {failed:?}",
        failed.len(),
        results.len()
    );
}

/// The model on a synthetic cluster (no lab needed): a few cells worked out by hand.
#[test]
fn model_agrees_with_hand_worked_cells() {
    let mut pods = Vec::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        for (m, pod) in PODS.iter().enumerate() {
            pods.push(PodInfo {
                ns: ns.to_string(),
                name: pod.to_string(),
                labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
                ip: format!("10.244.{m}.{}", 10 + n).parse().unwrap(),
                node: format!("node{m}"),
                ports: vec![
                    ContainerPort {
                        name: "serve-80-tcp".into(),
                        proto: "TCP".into(),
                        port: 80,
                    },
                    ContainerPort {
                        name: "web".into(),
                        proto: "TCP".into(),
                        port: i32::from(web_port(pod)),
                    },
                ],
                netns: String::new(),
            });
        }
    }
    let ns_labels = NAMESPACES
        .iter()
        .map(|ns| {
            (
                ns.to_string(),
                BTreeMap::from([("ns".to_string(), ns.to_string())]),
            )
        })
        .collect();
    let cluster = Cluster { ns_labels, pods };
    let policy = |v: Value| -> NetworkPolicy { serde_json::from_value(v).unwrap() };
    let idx = |key: &str| cluster.pods.iter().position(|p| p.key() == key).unwrap();
    let at = |m: &[bool], from: &str, to: &str, ch: usize| m[cell(idx(from), idx(to), ch)];
    const TCP80: usize = 0;
    const TCP81: usize = 1;
    const UDP80: usize = 2;

    let m = expected_matrix(&cluster, &[]);
    assert!(m.iter().all(|a| *a));

    // Deny all ingress in x: nothing enters x but a pod's own traffic; x still sends.
    let m = expected_matrix(
        &cluster,
        &[policy(np(
            "x",
            "d",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ))],
    );
    assert!(!at(&m, "y/a", "x/b", TCP80));
    assert!(!at(&m, "x/a", "x/b", UDP80));
    assert!(at(&m, "x/b", "x/b", TCP80));
    assert!(at(&m, "x/a", "y/b", TCP81));

    // Named port "web" with a different number on b; one peer ANDs both selectors.
    let m = expected_matrix(
        &cluster,
        &[policy(np(
            "x",
            "w",
            json!({"podSelector": {}, "ingress": [{
                "from": [{"namespaceSelector": labels("ns", "y"), "podSelector": labels("pod", "a")}],
                "ports": [{"port": "web"}]
            }]}),
        ))],
    );
    assert!(at(&m, "y/a", "x/a", TCP80));
    assert!(!at(&m, "y/a", "x/a", TCP81));
    assert!(at(&m, "y/a", "x/b", TCP81));
    assert!(!at(&m, "y/a", "x/b", TCP80));
    assert!(!at(&m, "y/b", "x/a", TCP80));
    assert!(!at(&m, "x/a", "x/b", TCP81));

    // endPort, ipBlock except, and egress implied by egress rules.
    let m = expected_matrix(
        &cluster,
        &[
            policy(np(
                "y",
                "r",
                json!({"podSelector": {}, "ingress": [{
                    "from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.12/32"]}}],
                    "ports": [{"protocol": "TCP", "port": 81, "endPort": 90}]
                }]}),
            )),
            policy(np(
                "z",
                "e",
                json!({"podSelector": labels("pod", "a"), "egress": [{"to": [{"podSelector": {}}]}]}),
            )),
        ],
    );
    assert!(at(&m, "x/a", "y/c", TCP81));
    assert!(!at(&m, "x/a", "y/c", TCP80));
    assert!(!at(&m, "z/b", "y/c", TCP81), "10.244.1.12 is z/b, excepted");
    assert!(at(&m, "z/a", "z/b", UDP80));
    assert!(!at(&m, "z/a", "x/b", TCP80), "z/a sends within z only");
    assert!(!at(&m, "z/b", "z/a", TCP80), "implied Ingress isolates z/a");
    assert!(at(&m, "x/a", "z/b", TCP80));
}
