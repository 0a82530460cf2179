//! Services: pure translation of a Service and its EndpointSlices into OVN Load_Balancer
//! rows (what kube-proxy does elsewhere; upstream's `services` controller).
//!
//! Per protocol one cluster-wide balancer `Service_<ns>/<name>_<PROTO>_cluster` in the
//! cluster's `clusterLBGroup` (every node switch and gateway router holds the group) for the
//! ClusterIPs, and — for external traffic (NodePort on the node IPs, externalIPs, load
//! balancer ingress IPs) — per-node balancers on the node's switch and gateway router:
//! `..._node_router+switch_<node>` when both want the same VIPs, else `..._node_router_<node>`
//! and `..._node_switch_<node>` (externalTrafficPolicy=Local: the router sends only to local
//! endpoints and keeps the client address; internalTrafficPolicy=Local: the switch does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ovsdb::Value;

use crate::index::Problem;
use crate::rows::{s, smap, DesiredRow, NetworkInfo, Owner, RowBuilder, RowKey};

pub const LB: &str = "Load_Balancer";
pub const LB_GROUP: &str = "Load_Balancer_Group";
/// Upstream's name of the group of cluster-wide balancers.
pub const CLUSTER_LB_GROUP: &str = "clusterLBGroup";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The source a pod sees when it reaches itself through a service (upstream's
/// `V4/V6OVNServiceHairpinMasqueradeIP`): a fixed address, so that NetworkPolicy can let
/// hairpin traffic pass (OVN's default would be the VIP, which no policy names).
pub const HAIRPIN_SNAT_IPS: [&str; 2] = ["169.254.169.5", "fd69::5"];
/// The longest `options:affinity_timeout` OVN takes.
pub const OVN_MAX_AFFINITY_TIMEOUT: u32 = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
    /// `TCP`, as in the balancer's name.
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
    /// `tcp`, as in the balancer's `protocol` column.
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcPort {
    /// The port's name ("" when the service has a single unnamed port); EndpointSlice ports
    /// carry the same name, already resolved per pod for named targetPorts.
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// What the translation needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<SvcPort>,
    pub external_ips: Vec<IpAddr>,
    pub ingress_ips: Vec<IpAddr>,
    /// sessionAffinity ClientIP: the timeout in seconds.
    pub affinity_timeout: Option<u32>,
    pub etp_local: bool,
    pub itp_local: bool,
    pub publish_not_ready: bool,
}

impl ServiceInfo {
    /// Whether the service has rows per node (and so depends on the nodes).
    pub fn per_node(&self) -> bool {
        self.etp_local
            || self.itp_local
            || !self.external_ips.is_empty()
            || !self.ingress_ips.is_empty()
            || self.ports.iter().any(|p| p.node_port.is_some())
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ips: Vec<IpAddr>,
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// What the translation needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceInfo {
    /// (name, protocol, port).
    pub ports: Vec<(String, Proto, u16)>,
    pub endpoints: Vec<Endpoint>,
}

/// A node as the balancers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLb {
    pub name: String,
    /// The node's gateway addresses (NodePort VIPs).
    pub ips: Vec<IpAddr>,
    pub switch: RowKey,
    /// The gateway router, once it exists.
    pub router: Option<RowKey>,
}

fn bad(svc: &str, msg: impl std::fmt::Display) -> Problem {
    Problem {
        reason: "InvalidService",
        message: format!("service {svc}: {msg}"),
    }
}

fn parse_ips(
    svc: &str,
    what: &str,
    v: impl IntoIterator<Item = String>,
) -> Result<Vec<IpAddr>, Problem> {
    v.into_iter()
        .filter(|s| !s.is_empty() && s != "None")
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| bad(svc, format!("{what} {s:?} is not an IP address")))
        })
        .collect()
}

/// Reads a Service. `Ok(None)`: nothing to balance (headless, ExternalName, no cluster IP).
pub fn parse_service(svc: &Service) -> Result<Option<ServiceInfo>, Problem> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    let cluster_ips = parse_ips(&key, "clusterIP", ips)?;
    if cluster_ips.is_empty() {
        return Ok(None); // headless
    }
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let proto = Proto::parse(p.protocol.as_deref()).ok_or_else(|| {
            bad(
                &key,
                format!("port {}: unknown protocol {:?}", p.port, p.protocol),
            )
        })?;
        let port = u16::try_from(p.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&key, format!("port {} out of range", p.port)))?;
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => Some(
                u16::try_from(n).map_err(|_| bad(&key, format!("nodePort {n} out of range")))?,
            ),
        };
        ports.push(SvcPort {
            name: p.name.clone().unwrap_or_default(),
            proto,
            port,
            node_port,
        });
    }
    let external_ips = parse_ips(
        &key,
        "externalIP",
        spec.external_ips.clone().unwrap_or_default(),
    )?;
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip);
    let ingress_ips = parse_ips(&key, "load balancer ingress IP", ingress)?;
    let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10_800);
        Some(t.max(1) as u32)
    } else {
        None
    };
    let external = spec.type_.as_deref() == Some("NodePort")
        || spec.type_.as_deref() == Some("LoadBalancer")
        || !external_ips.is_empty();
    Ok(Some(ServiceInfo {
        namespace,
        name,
        cluster_ips,
        ports,
        external_ips,
        ingress_ips,
        affinity_timeout,
        etp_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
        itp_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
    }))
}

/// Reads an EndpointSlice: the service it belongs to (`namespace/name`) and its content.
pub fn parse_slice(slice: &EndpointSlice) -> Option<(String, SliceInfo)> {
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let mut info = SliceInfo::default();
    for p in slice.ports.iter().flatten() {
        let (Some(proto), Some(port)) = (
            Proto::parse(p.protocol.as_deref()),
            p.port.and_then(|n| u16::try_from(n).ok()),
        ) else {
            continue;
        };
        info.ports
            .push((p.name.clone().unwrap_or_default(), proto, port));
    }
    for e in slice.endpoints.iter().flatten() {
        // A loopback endpoint (the lab API server's) cannot be reached through OVN.
        let ips: Vec<IpAddr> = e
            .addresses
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_loopback())
            .collect();
        if ips.is_empty() {
            continue;
        }
        let c = e.conditions.as_ref();
        // Unknown readiness counts as ready (EndpointSlice API).
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        info.endpoints.push(Endpoint {
            ips,
            node: e.node_name.clone(),
            ready,
            serving: c.and_then(|c| c.serving).unwrap_or(ready),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        });
    }
    Some((format!("{ns}/{svc}"), info))
}

/// The backends of one service port: (ip, port, node), sorted, from the slices. Ready
/// endpoints; when none is ready, the serving-and-terminating ones; with
/// publishNotReadyAddresses, all.
pub fn backends(
    svc: &ServiceInfo,
    port: &SvcPort,
    slices: &[&SliceInfo],
) -> Vec<(IpAddr, u16, Option<String>)> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for sl in slices {
        let Some(target) = sl
            .ports
            .iter()
            .find(|(n, p, _)| *n == port.name && *p == port.proto)
            .map(|(_, _, t)| *t)
        else {
            continue;
        };
        for e in &sl.endpoints {
            for ip in &e.ips {
                let b = (*ip, target, e.node.clone());
                if svc.publish_not_ready || (e.ready && !e.terminating) {
                    ready.insert(b);
                } else if e.serving && e.terminating {
                    terminating.insert(b);
                }
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

type Vips = BTreeMap<String, String>;
/// A backend: address, port, node.
pub type Backend = (IpAddr, u16, Option<String>);

fn add_vip(vips: &mut Vips, vip: IpAddr, port: u16, backends: &[(IpAddr, u16, Option<String>)]) {
    let list: Vec<String> = backends
        .iter()
        .filter(|(ip, _, _)| ip.is_ipv4() == vip.is_ipv4())
        .map(|(ip, p, _)| endpoint(*ip, *p))
        .collect();
    vips.insert(endpoint(vip, port), list.join(","));
}

pub fn cluster_lb_group_key(net: &NetworkInfo) -> RowKey {
    RowKey {
        table: LB_GROUP,
        id: RowBuilder::new(net, Owner::cluster()).id("cluster-lb-group"),
    }
}

/// The cluster's `clusterLBGroup` (owned by the cluster).
pub fn cluster_lb_group_row(net: &NetworkInfo) -> DesiredRow {
    let mut r = RowBuilder::new(net, Owner::cluster()).row(
        LB_GROUP,
        "cluster-lb-group",
        vec![("name", s(format!("{}{CLUSTER_LB_GROUP}", net.prefix())))],
        None,
    );
    // Load_Balancer_Group has no external_ids: the row is found by name.
    r.columns.remove("external_ids");
    r
}

pub fn service_owner(namespace: &str, name: &str) -> Owner {
    Owner::service(namespace, name)
}

/// Every balancer one service owns. `slices`: the service's EndpointSlices; `nodes`: every
/// node with a switch.
pub fn service_rows(
    net: &NetworkInfo,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    nodes: &[NodeLb],
) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, service_owner(&svc.namespace, &svc.name));
    let key = format!("{}/{}", svc.namespace, svc.name);
    let protos: BTreeSet<Proto> = svc.ports.iter().map(|p| p.proto).collect();
    let group = cluster_lb_group_key(net);
    let mut rows = Vec::new();
    let mut options: Vec<(&str, String)> = vec![
        ("event", "false".into()),
        ("hairpin_snat_ip", HAIRPIN_SNAT_IPS.join(" ")),
        ("reject", "true".into()),
        ("skip_snat", "false".into()),
    ];
    // OVN times affinity out after at most 65535 s; longer (Kubernetes allows a day) is
    // taken as "for ever" and done by hashing the client address, as upstream does.
    let mut selection = Value::empty();
    match svc.affinity_timeout {
        Some(t) if t <= OVN_MAX_AFFINITY_TIMEOUT => {
            options.push(("affinity_timeout", t.to_string()))
        }
        Some(_) => selection = Value::set(["ip_src"]),
        None => {}
    }
    let lb = |role: String, name: String, proto: Proto, vips: &Vips, skip_snat: bool| {
        let opts: Vec<(&str, &str)> = options
            .iter()
            .map(|(k, v)| {
                if *k == "skip_snat" {
                    (*k, if skip_snat { "true" } else { "false" })
                } else {
                    (*k, v.as_str())
                }
            })
            .collect();
        b.row(
            LB,
            &role,
            vec![
                ("name", s(name)),
                ("protocol", Value::set([proto.lower()])),
                (
                    "vips",
                    Value::string_map(vips.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                ),
                ("options", smap(&opts)),
                ("selection_fields", selection.clone()),
                (
                    "external_ids",
                    smap(&[("k8s.ovn.org/kind", "Service"), ("k8s.ovn.org/owner", &key)]),
                ),
            ],
            None,
        )
    };
    let prefix = format!("{}Service_{key}", net.prefix());
    for proto in protos {
        let ports: Vec<&SvcPort> = svc.ports.iter().filter(|p| p.proto == proto).collect();
        let all: Vec<(&SvcPort, Vec<Backend>)> = ports
            .iter()
            .map(|p| (*p, backends(svc, p, slices)))
            .collect();
        let local = |bs: &[(IpAddr, u16, Option<String>)],
                     node: &str|
         -> Vec<(IpAddr, u16, Option<String>)> {
            bs.iter()
                .filter(|(_, _, n)| n.as_deref() == Some(node))
                .cloned()
                .collect()
        };

        // Cluster-wide: ClusterIPs (unless ITP=Local), and the external IPs unless
        // ETP=Local (then they are per node, on the routers, with local endpoints).
        let mut cluster = Vips::new();
        for (p, bs) in &all {
            if !svc.itp_local {
                for ip in &svc.cluster_ips {
                    add_vip(&mut cluster, *ip, p.port, bs);
                }
            }
            if !svc.etp_local {
                for ip in svc.external_ips.iter().chain(&svc.ingress_ips) {
                    add_vip(&mut cluster, *ip, p.port, bs);
                }
            }
        }
        if !cluster.is_empty() {
            rows.push(
                lb(
                    format!("cluster-{}", proto.lower()),
                    format!("{prefix}_{}_cluster", proto.upper()),
                    proto,
                    &cluster,
                    false,
                )
                .also_in(&group, "load_balancer"),
            );
        }

        for node in nodes {
            let mut router = Vips::new();
            let mut switch = Vips::new();
            for (p, bs) in &all {
                let here = local(bs, &node.name);
                if let Some(np) = p.node_port {
                    for ip in &node.ips {
                        add_vip(&mut router, *ip, np, if svc.etp_local { &here } else { bs });
                        add_vip(&mut switch, *ip, np, bs);
                    }
                }
                if svc.etp_local {
                    for ip in svc.external_ips.iter().chain(&svc.ingress_ips) {
                        add_vip(&mut router, *ip, p.port, &here);
                        add_vip(&mut switch, *ip, p.port, bs);
                    }
                }
                if svc.itp_local {
                    for ip in &svc.cluster_ips {
                        add_vip(&mut switch, *ip, p.port, &here);
                    }
                }
            }
            let n = &node.name;
            let pl = proto.lower();
            let pu = proto.upper();
            if router == switch && svc.etp_local == svc.itp_local {
                if router.is_empty() {
                    continue;
                }
                let mut r = lb(
                    format!("node-{pl}-{n}"),
                    format!("{prefix}_{pu}_node_router+switch_{n}"),
                    proto,
                    &router,
                    svc.etp_local,
                )
                .also_in(&node.switch, "load_balancer");
                if let Some(gr) = &node.router {
                    r = r.also_in(gr, "load_balancer");
                }
                rows.push(r);
                continue;
            }
            if let (false, Some(gr)) = (router.is_empty(), &node.router) {
                rows.push(
                    lb(
                        format!("node-router-{pl}-{n}"),
                        format!("{prefix}_{pu}_node_router_{n}"),
                        proto,
                        &router,
                        svc.etp_local,
                    )
                    .also_in(gr, "load_balancer"),
                );
            }
            if !switch.is_empty() {
                rows.push(
                    lb(
                        format!("node-switch-{pl}-{n}"),
                        format!("{prefix}_{pu}_node_switch_{n}"),
                        proto,
                        &switch,
                        false,
                    )
                    .also_in(&node.switch, "load_balancer"),
                );
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkInfo {
        NetworkInfo::default_network()
    }

    fn svc(ports: Vec<SvcPort>) -> ServiceInfo {
        ServiceInfo {
            namespace: "ns".into(),
            name: "web".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            ports,
            external_ips: vec![],
            ingress_ips: vec![],
            affinity_timeout: None,
            etp_local: false,
            itp_local: false,
            publish_not_ready: false,
        }
    }

    fn tcp(name: &str, port: u16, node_port: Option<u16>) -> SvcPort {
        SvcPort {
            name: name.into(),
            proto: Proto::Tcp,
            port,
            node_port,
        }
    }

    fn ep(ip: &str, node: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ips: vec![ip.parse().unwrap()],
            node: Some(node.into()),
            ready,
            serving: ready || terminating,
            terminating,
        }
    }

    fn slice(ports: &[(&str, u16)], eps: Vec<Endpoint>) -> SliceInfo {
        SliceInfo {
            ports: ports
                .iter()
                .map(|(n, p)| (n.to_string(), Proto::Tcp, *p))
                .collect(),
            endpoints: eps,
        }
    }

    fn nodes() -> Vec<NodeLb> {
        ["n1", "n2"]
            .iter()
            .enumerate()
            .map(|(i, n)| NodeLb {
                name: n.to_string(),
                ips: vec![format!("172.18.0.{}", i + 2).parse().unwrap()],
                switch: RowKey {
                    table: "Logical_Switch",
                    id: format!("sw-{n}"),
                },
                router: Some(RowKey {
                    table: "Logical_Router",
                    id: format!("gr-{n}"),
                }),
            })
            .collect()
    }

    fn by_name<'a>(rows: &'a [DesiredRow], name: &str) -> &'a DesiredRow {
        rows.iter()
            .find(|r| r.columns["name"].as_str() == Some(name))
            .unwrap_or_else(|| {
                let names: Vec<_> = rows.iter().map(|r| r.columns["name"].clone()).collect();
                panic!("no {name} in {names:?}")
            })
    }

    fn vips(r: &DesiredRow) -> Vec<(String, String)> {
        r.columns["vips"].to_string_map().into_iter().collect()
    }

    #[test]
    fn cluster_ip_with_named_ports_and_reject_when_empty() {
        let s = svc(vec![tcp("http", 80, None), tcp("admin", 81, None)]);
        // The slice resolved targetPort "http" to 8080 on these pods.
        let sl = slice(
            &[("http", 8080), ("admin", 9090)],
            vec![
                ep("10.244.1.3", "n1", true, false),
                ep("10.244.2.3", "n2", true, false),
            ],
        );
        let rows = service_rows(&net(), &s, &[&sl], &nodes());
        assert_eq!(rows.len(), 1, "ClusterIP only: one balancer");
        let r = by_name(&rows, "Service_ns/web_TCP_cluster");
        assert_eq!(
            vips(r),
            vec![
                (
                    "10.96.0.10:80".into(),
                    "10.244.1.3:8080,10.244.2.3:8080".into()
                ),
                (
                    "10.96.0.10:81".into(),
                    "10.244.1.3:9090,10.244.2.3:9090".into()
                ),
            ]
        );
        assert_eq!(r.columns["protocol"], Value::set(["tcp"]));
        assert_eq!(r.also_in[0].parent, cluster_lb_group_key(&net()));
        assert_eq!(r.columns["options"].map_get("reject"), Some(&"true".into()));
        assert_eq!(
            r.columns["options"].map_get("hairpin_snat_ip"),
            Some(&"169.254.169.5 fd69::5".into()),
            "hairpin traffic has a source NetworkPolicy can name"
        );
        // No endpoints: the VIP stays, with no backend, so OVN rejects at once.
        let rows = service_rows(&net(), &s, &[], &nodes());
        assert_eq!(
            vips(&rows[0]),
            vec![
                ("10.96.0.10:80".into(), String::new()),
                ("10.96.0.10:81".into(), String::new())
            ]
        );
    }

    #[test]
    fn terminating_endpoints_only_when_none_ready() {
        let s = svc(vec![tcp("", 80, None)]);
        let sl = slice(
            &[("", 80)],
            vec![
                ep("10.244.1.3", "n1", true, false),
                ep("10.244.1.4", "n1", false, true),
            ],
        );
        let r = service_rows(&net(), &s, &[&sl], &[]);
        assert_eq!(vips(&r[0])[0].1, "10.244.1.3:80");
        let sl = slice(
            &[("", 80)],
            vec![
                ep("10.244.1.4", "n1", false, true),
                ep("10.244.1.5", "n1", false, false),
            ],
        );
        let r = service_rows(&net(), &s, &[&sl], &[]);
        assert_eq!(vips(&r[0])[0].1, "10.244.1.4:80");
        let mut p = s.clone();
        p.publish_not_ready = true;
        let r = service_rows(&net(), &p, &[&sl], &[]);
        assert_eq!(vips(&r[0])[0].1, "10.244.1.4:80,10.244.1.5:80");
    }

    #[test]
    fn node_port_on_every_node_ip_and_affinity() {
        let mut s = svc(vec![tcp("", 80, Some(30080))]);
        s.affinity_timeout = Some(30);
        let sl = slice(&[("", 8080)], vec![ep("10.244.1.3", "n1", true, false)]);
        let rows = service_rows(&net(), &s, &[&sl], &nodes());
        for (n, ip) in [("n1", "172.18.0.2"), ("n2", "172.18.0.3")] {
            let r = by_name(&rows, &format!("Service_ns/web_TCP_node_router+switch_{n}"));
            assert_eq!(
                vips(r),
                vec![(format!("{ip}:30080"), "10.244.1.3:8080".into())]
            );
            let parents: Vec<&str> = r.also_in.iter().map(|p| p.parent.id.as_str()).collect();
            assert_eq!(parents, vec![format!("sw-{n}"), format!("gr-{n}")]);
            assert_eq!(
                r.columns["options"].map_get("affinity_timeout"),
                Some(&"30".into())
            );
        }
    }

    #[test]
    fn external_traffic_policy_local() {
        let mut s = svc(vec![tcp("", 80, Some(30080))]);
        s.etp_local = true;
        s.external_ips = vec!["192.0.2.10".parse().unwrap()];
        let sl = slice(
            &[("", 8080)],
            vec![
                ep("10.244.1.3", "n1", true, false),
                ep("10.244.2.3", "n2", true, false),
            ],
        );
        let rows = service_rows(&net(), &s, &[&sl], &nodes());
        let cluster = by_name(&rows, "Service_ns/web_TCP_cluster");
        assert_eq!(
            vips(cluster).len(),
            1,
            "external IP is not cluster-wide with ETP=Local"
        );
        let r1 = by_name(&rows, "Service_ns/web_TCP_node_router_n1");
        assert_eq!(
            vips(r1),
            vec![
                ("172.18.0.2:30080".into(), "10.244.1.3:8080".into()),
                ("192.0.2.10:80".into(), "10.244.1.3:8080".into()),
            ]
        );
        assert_eq!(
            r1.columns["options"].map_get("skip_snat"),
            Some(&"true".into())
        );
        let s1 = by_name(&rows, "Service_ns/web_TCP_node_switch_n1");
        assert_eq!(vips(s1)[0].1, "10.244.1.3:8080,10.244.2.3:8080");
        assert_eq!(
            s1.columns["options"].map_get("skip_snat"),
            Some(&"false".into())
        );
    }

    #[test]
    fn internal_traffic_policy_local() {
        let mut s = svc(vec![tcp("", 80, None)]);
        s.itp_local = true;
        let sl = slice(&[("", 80)], vec![ep("10.244.2.3", "n2", true, false)]);
        let rows = service_rows(&net(), &s, &[&sl], &nodes());
        assert!(rows
            .iter()
            .all(|r| r.columns["name"].as_str() != Some("Service_ns/web_TCP_cluster")));
        let s1 = by_name(&rows, "Service_ns/web_TCP_node_switch_n1");
        assert_eq!(vips(s1), vec![("10.96.0.10:80".into(), String::new())]);
        let s2 = by_name(&rows, "Service_ns/web_TCP_node_switch_n2");
        assert_eq!(
            vips(s2),
            vec![("10.96.0.10:80".into(), "10.244.2.3:80".into())]
        );
    }

    #[test]
    fn dual_stack_and_udp() {
        let mut s = svc(vec![
            tcp("dns-tcp", 53, None),
            SvcPort {
                name: "dns".into(),
                proto: Proto::Udp,
                port: 53,
                node_port: None,
            },
        ]);
        s.cluster_ips.push("fd00:10:96::a".parse().unwrap());
        let sl = SliceInfo {
            ports: vec![
                ("dns-tcp".into(), Proto::Tcp, 5353),
                ("dns".into(), Proto::Udp, 5353),
            ],
            endpoints: vec![Endpoint {
                ips: vec![
                    "10.244.1.3".parse().unwrap(),
                    "fd00:10:244:1::3".parse().unwrap(),
                ],
                node: Some("n1".into()),
                ready: true,
                serving: true,
                terminating: false,
            }],
        };
        let rows = service_rows(&net(), &s, &[&sl], &[]);
        let u = by_name(&rows, "Service_ns/web_UDP_cluster");
        assert_eq!(u.columns["protocol"], Value::set(["udp"]));
        assert_eq!(
            vips(u),
            vec![
                ("10.96.0.10:53".into(), "10.244.1.3:5353".into()),
                (
                    "[fd00:10:96::a]:53".into(),
                    "[fd00:10:244:1::3]:5353".into()
                ),
            ]
        );
    }

    #[test]
    fn headless_and_bad_services() {
        let mut k: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        assert_eq!(parse_service(&k).unwrap(), None);
        k.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.300".into());
        let e = parse_service(&k).unwrap_err();
        assert!(
            e.message.contains("ns/h") && e.message.contains("10.96.0.300"),
            "{e:?}"
        );
        let ok: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.5", "type": "NodePort", "externalTrafficPolicy": "Local",
                     "sessionAffinity": "ClientIP",
                     "ports": [{"port": 80, "protocol": "UDP", "nodePort": 30001, "name": "x"}]}
        }))
        .unwrap();
        let i = parse_service(&ok).unwrap().unwrap();
        assert!(i.etp_local && i.per_node());
        // LoadBalancer status IPs are VIPs too; a service without a selector is balanced
        // to whatever its hand-made EndpointSlices hold.
        let lb: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.6", "type": "LoadBalancer", "ports": [{"port": 443, "nodePort": 30443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let info = parse_service(&lb).unwrap().unwrap();
        assert_eq!(
            info.ingress_ips,
            vec!["192.0.2.50".parse::<IpAddr>().unwrap()]
        );
        let hand: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ext-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "ext"}},
            "addressType": "IPv4",
            "ports": [{"port": 8443}],
            "endpoints": [{"addresses": ["10.244.1.9", "127.0.0.1"]}]
        }))
        .unwrap();
        let (key, sl) = parse_slice(&hand).unwrap();
        assert_eq!(key, "ns/ext");
        let rows = service_rows(&net(), &info, &[&sl], &[]);
        let v = vips(by_name(&rows, "Service_ns/ext_TCP_cluster"));
        assert_eq!(
            v,
            vec![
                ("10.96.0.6:443".into(), "10.244.1.9:8443".into()),
                ("192.0.2.50:443".into(), "10.244.1.9:8443".into()),
            ]
        );
        assert_eq!(i.affinity_timeout, Some(10_800));
        // A day (Kubernetes' maximum) is beyond OVN's timer: hashed on the client address.
        let mut day = i.clone();
        day.affinity_timeout = Some(86_400);
        let r = &service_rows(&net(), &day, &[], &[])[0];
        assert_eq!(r.columns["selection_fields"], Value::set(["ip_src"]));
        assert_eq!(r.columns["options"].map_get("affinity_timeout"), None);
        assert_eq!(i.ports[0].proto, Proto::Udp);
        assert_eq!(i.ports[0].node_port, Some(30001));
    }
}
