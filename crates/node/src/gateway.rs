//! Shared gateway ("variant B" of LAB-gateway.md, OVN-Kubernetes' default): the gateway
//! router `GR_<node>` uses the node IP and the gateway bridge's MAC, and OpenFlow rules on
//! the bridge (`breth0`) split the traffic between the host and OVN:
//!
//! - from the patch port (OVN) and from LOCAL (host): commit to conntrack zone 64000,
//!   marking the connection 1 (OVN) or 2 (host), out the uplink;
//! - from the uplink: replies to OVN's connections (ct_mark 1) to the patch port,
//!   NodePort / external IP traffic to the patch port, everything else to the host;
//! - ARP from the uplink to both, ARP from either out the uplink; anything else NORMAL.
//!
//! [`bridge_flows`] computes the flow set (pure), [`FlowSync`] installs it idempotently
//! through a [`FlowTable`] (the OpenFlow seam; [`OpenFlowTable`] is the real one), and
//! [`run`] keeps it installed: at start, whenever ovs-vswitchd restarts or our flows
//! vanish (checked every few seconds), when the patch port's ofport changes and when
//! Services change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use ovnk_openflow::{
    ct_state, port, Action, AggregateRequest, Client, Ct, Flow, L4Proto, Masked, Match, SetField,
};
use tokio::sync::watch;

/// Cookie of every flow we own on the gateway bridge ("ovnkgw" + generation in bit 0).
pub const COOKIE_BASE: u64 = 0x6f76_6e6b_6777_0000;
/// Selects our flows of either generation.
pub const COOKIE_MASK: u64 = !1;
/// The conntrack zone of the bridge's host/OVN split (as in OVN-Kubernetes).
pub const CT_ZONE: u16 = 64000;
/// ct_mark of connections that OVN (the gateway router) initiated.
pub const CT_MARK_OVN: u32 = 1;
/// ct_mark of connections the host initiated.
pub const CT_MARK_HOST: u32 = 2;
/// Priority of the NodePort / external IP steering flows (above the ct lookup at 50).
pub const PRIORITY_SERVICE: u16 = 110;
/// How often the agent checks that its flows are still there.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// Errors of the gateway's side effects.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("OpenFlow on {bridge}: {source}")]
    OpenFlow {
        bridge: String,
        #[source]
        source: ovnk_openflow::Error,
    },
}

/// The bridge's two ports that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ofports {
    /// The uplink NIC (`eth0`).
    pub uplink: u32,
    /// ovn-controller's patch port towards br-int (the gateway router's side).
    pub patch: u32,
}

/// One address and port that must reach the gateway router rather than the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceTarget {
    pub proto: L4Proto,
    pub ip: IpAddr,
    pub port: u16,
}

/// What the gateway needs of one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// (protocol, service port, node port).
    pub ports: Vec<(L4Proto, u16, Option<u16>)>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<IpAddr>,
    /// `spec.clusterIPs` (none for headless services).
    pub cluster_ips: Vec<IpAddr>,
}

/// The patch port ovn-controller creates on `bridge` for the localnet port
/// `<bridge>_<node>` (the `interface-id` of `l3-gateway-config`).
pub fn patch_port_name(bridge: &str, node: &str) -> String {
    format!("patch-{bridge}_{node}-to-br-int")
}

fn proto_of(p: Option<&str>) -> Option<L4Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(L4Proto::Tcp),
        "UDP" => Some(L4Proto::Udp),
        "SCTP" => Some(L4Proto::Sctp),
        _ => None,
    }
}

/// The parts of a Service the gateway steers (pure).
pub fn service_view(svc: &Service) -> ServiceView {
    let mut v = ServiceView::default();
    let Some(spec) = &svc.spec else {
        return v;
    };
    // A nodePort left over on a ClusterIP service is not served.
    let node_ports =
        spec.type_.as_deref() != Some("ClusterIP") && spec.type_.as_deref() != Some("ExternalName");
    for p in spec.ports.iter().flatten() {
        let Some(proto) = proto_of(p.protocol.as_deref()) else {
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let np = p
            .node_port
            .filter(|_| node_ports)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0);
        v.ports.push((proto, port, np));
    }
    let ext = spec.external_ips.iter().flatten();
    let lb = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_ref());
    v.external_ips = ext.chain(lb).filter_map(|s| s.parse().ok()).collect();
    v.external_ips.sort();
    v.external_ips.dedup();
    let cluster = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter());
    v.cluster_ips = cluster.filter_map(|s| s.parse().ok()).collect();
    v.cluster_ips.dedup();
    v
}

/// Every (protocol, IP, port) to steer to the gateway router: each NodePort on the node
/// IP, each service port on each external / load-balancer IP. Only the node IP's family
/// is served (the bridge flows are IPv4 today).
pub fn service_targets<'a>(
    node_ip: IpAddr,
    services: impl IntoIterator<Item = &'a ServiceView>,
) -> BTreeSet<ServiceTarget> {
    let mut out = BTreeSet::new();
    for s in services {
        for &(proto, port, node_port) in &s.ports {
            if let Some(np) = node_port {
                out.insert(ServiceTarget {
                    proto,
                    ip: node_ip,
                    port: np,
                });
            }
            for ip in s
                .external_ips
                .iter()
                .filter(|i| i.is_ipv4() == node_ip.is_ipv4())
            {
                out.insert(ServiceTarget {
                    proto,
                    ip: *ip,
                    port,
                });
            }
        }
    }
    out
}

/// The gateway bridge's complete flow set (pure). `cookie` marks every flow.
pub fn bridge_flows(cookie: u64, ports: Ofports, targets: &BTreeSet<ServiceTarget>) -> Vec<Flow> {
    let (e, p) = (ports.uplink, ports.patch);
    let out = Action::Output;
    let commit = |mark| {
        Action::Ct(Ct {
            commit: true,
            zone: CT_ZONE,
            table: None,
            actions: vec![Action::SetField(SetField::CtMark(mark))],
        })
    };
    let est = ct_state::TRK | ct_state::EST;
    let rel = ct_state::TRK | ct_state::REL;
    let mut flows = vec![
        Flow::new(
            0,
            100,
            cookie,
            Match::new().in_port(p).ipv4(),
            vec![commit(CT_MARK_OVN), out(e)],
        ),
        Flow::new(
            0,
            100,
            cookie,
            Match::new().in_port(port::LOCAL).ipv4(),
            vec![commit(CT_MARK_HOST), out(e)],
        ),
        // Everything else from outside: look up the connection, decide in table 1.
        Flow::new(
            0,
            50,
            cookie,
            Match::new().in_port(e).ipv4(),
            vec![Action::Ct(Ct {
                commit: false,
                zone: CT_ZONE,
                table: Some(1),
                actions: vec![],
            })],
        ),
        // Both the host and the router own the node IP: both must see ARP.
        Flow::new(
            0,
            10,
            cookie,
            Match::new().in_port(e).arp(),
            vec![out(port::LOCAL), out(p)],
        ),
        Flow::new(
            0,
            10,
            cookie,
            Match::new().in_port(port::LOCAL).arp(),
            vec![out(e)],
        ),
        Flow::new(0, 10, cookie, Match::new().in_port(p).arp(), vec![out(e)]),
        // Without this the node loses its underlay (LAB-gateway.md pitfall B).
        Flow::new(0, 0, cookie, Match::new(), vec![out(port::NORMAL)]),
        Flow::new(
            1,
            100,
            cookie,
            Match::new().ipv4().ct_state(est, est).ct_mark(CT_MARK_OVN),
            vec![out(p)],
        ),
        Flow::new(
            1,
            100,
            cookie,
            Match::new().ipv4().ct_state(rel, rel).ct_mark(CT_MARK_OVN),
            vec![out(p)],
        ),
        // Geneve arrives here too: new in zone 64000, so it goes to the host's datapath.
        Flow::new(1, 0, cookie, Match::new(), vec![out(port::LOCAL)]),
    ];
    for t in targets {
        let IpAddr::V4(ip) = t.ip else {
            continue;
        };
        flows.push(Flow::new(
            0,
            PRIORITY_SERVICE,
            cookie,
            Match::new()
                .in_port(e)
                .ipv4()
                .ipv4_dst(ip, 32)
                .tp_dst(t.proto, Masked::exact(t.port)),
            vec![out(p)],
        ));
    }
    flows
}

/// The OpenFlow side effects the gateway needs (a seam: [`FakeFlowTable`] in tests).
pub trait FlowTable: Send {
    /// Connects if not connected. `Ok(true)`: a new connection, so the switch's flows
    /// are unknown (ovs-vswitchd may have restarted and lost them).
    fn ensure_connected(
        &mut self,
    ) -> impl std::future::Future<Output = Result<bool, GatewayError>> + Send;
    /// Adds (replaces) flows; done when it returns.
    fn add(
        &mut self,
        flows: &[Flow],
    ) -> impl std::future::Future<Output = Result<(), GatewayError>> + Send;
    fn delete_cookie(
        &mut self,
        cookie: u64,
        mask: u64,
    ) -> impl std::future::Future<Output = Result<(), GatewayError>> + Send;
    fn count_cookie(
        &mut self,
        cookie: u64,
        mask: u64,
    ) -> impl std::future::Future<Output = Result<u32, GatewayError>> + Send;
    /// Drops the connection (after an error), so the next call reconnects.
    fn reset(&mut self);
}

/// Keeps exactly one flow set installed with our cookie, without a moment where a
/// desired flow is missing: flows are added with the other generation of the cookie
/// (an add replaces the same match and priority in place), then whatever still carries
/// the old generation is stale and deleted.
pub struct FlowSync<T: FlowTable> {
    table: T,
    generation: u64,
    /// What the switch holds, if known.
    installed: Option<Vec<Flow>>,
}

impl<T: FlowTable> FlowSync<T> {
    pub fn new(table: T) -> Self {
        FlowSync {
            table,
            generation: 0,
            installed: None,
        }
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut T {
        &mut self.table
    }

    /// Makes the switch hold `desired` (cookies are set here). `Ok(true)` when flows
    /// were written, `Ok(false)` when everything was already in place.
    pub async fn sync(&mut self, desired: &[Flow]) -> Result<bool, GatewayError> {
        let res = self.sync_inner(desired).await;
        if res.is_err() {
            self.installed = None;
            self.table.reset();
        }
        res
    }

    async fn sync_inner(&mut self, desired: &[Flow]) -> Result<bool, GatewayError> {
        if self.table.ensure_connected().await? {
            self.installed = None;
        }
        if self.installed.as_deref() == Some(desired) {
            let n = self.table.count_cookie(COOKIE_BASE, COOKIE_MASK).await?;
            if n as usize == desired.len() {
                return Ok(false);
            }
            tracing::warn!(
                "gateway bridge holds {n} of our {} flows; reinstalling",
                desired.len()
            );
            self.installed = None;
        }
        // Unknown state: stale flows may carry either generation, so replace twice.
        let rounds = if self.installed.is_none() { 2 } else { 1 };
        for _ in 0..rounds {
            let next = self.generation ^ 1;
            let flows: Vec<Flow> = desired
                .iter()
                .map(|f| Flow {
                    cookie: COOKIE_BASE | next,
                    ..f.clone()
                })
                .collect();
            self.table.add(&flows).await?;
            self.table
                .delete_cookie(COOKIE_BASE | self.generation, u64::MAX)
                .await?;
            self.generation = next;
        }
        self.installed = Some(desired.to_vec());
        Ok(true)
    }
}

/// [`FlowTable`] over the bridge's OpenFlow management socket.
pub struct OpenFlowTable {
    socket: PathBuf,
    bridge: String,
    client: Option<Client>,
}

impl OpenFlowTable {
    pub fn new(ovs_rundir: &std::path::Path, bridge: &str) -> Self {
        OpenFlowTable {
            socket: ovnk_openflow::mgmt_socket(ovs_rundir, bridge),
            bridge: bridge.to_string(),
            client: None,
        }
    }

    fn err(&self, source: ovnk_openflow::Error) -> GatewayError {
        GatewayError::OpenFlow {
            bridge: self.bridge.clone(),
            source,
        }
    }

    fn client(&self) -> Result<&Client, GatewayError> {
        self.client
            .as_ref()
            .ok_or_else(|| self.err(ovnk_openflow::Error::Closed))
    }
}

impl FlowTable for OpenFlowTable {
    async fn ensure_connected(&mut self) -> Result<bool, GatewayError> {
        if self.client.as_ref().is_some_and(Client::is_connected) {
            return Ok(false);
        }
        self.client = None;
        let c = Client::connect(&self.socket)
            .await
            .map_err(|e| self.err(e))?;
        self.client = Some(c);
        Ok(true)
    }

    async fn add(&mut self, flows: &[Flow]) -> Result<(), GatewayError> {
        self.client()?
            .add_flows(flows)
            .await
            .map_err(|e| self.err(e))
    }

    async fn delete_cookie(&mut self, cookie: u64, mask: u64) -> Result<(), GatewayError> {
        self.client()?
            .delete_by_cookie(cookie, mask)
            .await
            .map_err(|e| self.err(e))
    }

    async fn count_cookie(&mut self, cookie: u64, mask: u64) -> Result<u32, GatewayError> {
        self.client()?
            .aggregate(&AggregateRequest::by_cookie(cookie, mask))
            .await
            .map(|s| s.flow_count)
            .map_err(|e| self.err(e))
    }

    fn reset(&mut self) {
        self.client = None;
    }
}

/// An in-memory switch table with OpenFlow's add/delete semantics, for tests.
#[derive(Debug, Default)]
pub struct FakeFlowTable {
    /// Keyed by what identifies a flow entry: table, priority, match.
    pub flows: BTreeMap<(u8, u16, Match), Flow>,
    pub connected: bool,
    /// Flow mods received (adds and deletes), to see that a steady state writes nothing.
    pub writes: usize,
    /// Fail the next call (a broken connection).
    pub fail_next: bool,
}

impl FakeFlowTable {
    /// What a vswitchd restart does: the connection drops and only NORMAL is left.
    pub fn restart(&mut self) {
        self.connected = false;
        self.flows.clear();
        let normal = Flow::new(0, 0, 0, Match::new(), vec![Action::Output(port::NORMAL)]);
        self.flows.insert((0, 0, Match::new()), normal);
    }

    /// The flows with our cookie, cookie cleared, sorted.
    pub fn ours(&self) -> Vec<Flow> {
        let mut v: Vec<Flow> = self
            .flows
            .values()
            .filter(|f| f.cookie & COOKIE_MASK == COOKIE_BASE)
            .map(|f| Flow {
                cookie: 0,
                ..f.clone()
            })
            .collect();
        v.sort();
        v
    }

    fn check(&mut self) -> Result<(), GatewayError> {
        if std::mem::take(&mut self.fail_next) || !self.connected {
            self.connected = false;
            return Err(GatewayError::OpenFlow {
                bridge: "fake".into(),
                source: ovnk_openflow::Error::Closed,
            });
        }
        Ok(())
    }
}

impl FlowTable for FakeFlowTable {
    async fn ensure_connected(&mut self) -> Result<bool, GatewayError> {
        let new = !self.connected;
        self.connected = true;
        Ok(new)
    }

    async fn add(&mut self, flows: &[Flow]) -> Result<(), GatewayError> {
        self.check()?;
        for f in flows {
            self.writes += 1;
            self.flows
                .insert((f.table, f.priority, f.matches.clone()), f.clone());
        }
        Ok(())
    }

    async fn delete_cookie(&mut self, cookie: u64, mask: u64) -> Result<(), GatewayError> {
        self.check()?;
        self.writes += 1;
        self.flows.retain(|_, f| f.cookie & mask != cookie & mask);
        Ok(())
    }

    async fn count_cookie(&mut self, cookie: u64, mask: u64) -> Result<u32, GatewayError> {
        self.check()?;
        Ok(self
            .flows
            .values()
            .filter(|f| f.cookie & mask == cookie & mask)
            .count() as u32)
    }

    fn reset(&mut self) {
        self.connected = false;
    }
}

/// Where the gateway reads the bridge's ports from (the OVS database; a seam for tests).
pub trait PortSource: Send + Sync {
    /// The uplink's and the patch port's ofports, once both exist and have one.
    fn ofports(&self, bridge: &str, patch: &str) -> Option<Ofports>;
}

impl PortSource for crate::ovs::Ovs {
    fn ofports(&self, bridge: &str, patch: &str) -> Option<Ofports> {
        let ifaces = self.bridge_interfaces(bridge);
        let patch = ifaces
            .iter()
            .find(|i| i.name == patch)
            .and_then(|i| i.ofport)?;
        // The uplink: the one port that is neither the bridge's own nor a patch port.
        let mut uplinks = ifaces
            .iter()
            .filter(|i| i.name != bridge && i.typ != "internal" && i.typ != "patch");
        let uplink = uplinks.next().and_then(|i| i.ofport)?;
        Some(Ofports { uplink, patch })
    }
}

/// What [`run`] needs to know.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub node_name: String,
    pub bridge: String,
    pub node_ip: Ipv4Addr,
    pub interval: Duration,
}

/// Keeps the bridge's flows installed, forever: on every change of the ofports or the
/// services, and every `interval` (a restarted vswitchd, flows deleted by hand).
pub async fn run<P: PortSource, T: FlowTable>(
    settings: GatewaySettings,
    ports: Arc<P>,
    table: T,
    mut services: watch::Receiver<BTreeMap<(String, String), ServiceView>>,
) {
    let patch = patch_port_name(&settings.bridge, &settings.node_name);
    let mut sync = FlowSync::new(table);
    let mut waiting_logged = false;
    let mut last_error: Option<String> = None;
    loop {
        match ports.ofports(&settings.bridge, &patch) {
            None => {
                if !waiting_logged {
                    tracing::info!(
                        "waiting for {patch} and the uplink on {} (ovn-controller creates the patch port)",
                        settings.bridge
                    );
                    waiting_logged = true;
                }
            }
            Some(ofports) => {
                waiting_logged = false;
                let targets = {
                    let svcs = services.borrow_and_update();
                    service_targets(IpAddr::V4(settings.node_ip), svcs.values())
                };
                let desired = bridge_flows(0, ofports, &targets);
                match sync.sync(&desired).await {
                    Ok(true) => {
                        tracing::info!(
                            bridge = %settings.bridge,
                            "gateway flows installed ({} flows, {} service targets, uplink {}, patch {})",
                            desired.len(),
                            targets.len(),
                            ofports.uplink,
                            ofports.patch
                        );
                        last_error = None;
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!("gateway flows: {msg}; retrying");
                        }
                        last_error = Some(msg);
                    }
                }
            }
        }
        // Short retries while waiting for the patch port or after an error.
        let wait = if waiting_logged || last_error.is_some() {
            settings.interval.min(Duration::from_millis(500))
        } else {
            settings.interval
        };
        crate::kube_watch::sleep_or_changed(&mut services, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };

    const PORTS: Ofports = Ofports {
        uplink: 1,
        patch: 7,
    };
    fn node_ip() -> IpAddr {
        "172.18.0.2".parse().unwrap()
    }

    fn svc(typ: &str, ports: &[(&str, i32, Option<i32>)], ext: &[&str], lb: &[&str]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(typ.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(p, port, np)| ServicePort {
                            protocol: Some(p.to_string()),
                            port: *port,
                            node_port: *np,
                            ..Default::default()
                        })
                        .collect(),
                ),
                external_ips: (!ext.is_empty())
                    .then(|| ext.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        lb.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn targets_from_services() {
        let views = [
            service_view(&svc(
                "NodePort",
                &[("TCP", 80, Some(30080)), ("UDP", 53, Some(30053))],
                &[],
                &[],
            )),
            service_view(&svc(
                "LoadBalancer",
                &[("SCTP", 9, Some(31000))],
                &["192.0.2.5", "fd00::5"],
                &["198.51.100.7"],
            )),
            // A stale nodePort on a ClusterIP service is not served; its external IP is.
            service_view(&svc(
                "ClusterIP",
                &[("TCP", 443, Some(30443))],
                &["192.0.2.6"],
                &[],
            )),
            service_view(&svc("ClusterIP", &[("ICMP", 1, None)], &[], &[])),
        ];
        let t = service_targets(node_ip(), views.iter());
        let want: BTreeSet<ServiceTarget> = [
            (L4Proto::Tcp, "172.18.0.2", 30080),
            (L4Proto::Udp, "172.18.0.2", 30053),
            (L4Proto::Sctp, "172.18.0.2", 31000),
            (L4Proto::Sctp, "192.0.2.5", 9),
            (L4Proto::Sctp, "198.51.100.7", 9),
            (L4Proto::Tcp, "192.0.2.6", 443),
        ]
        .into_iter()
        .map(|(proto, ip, port)| ServiceTarget {
            proto,
            ip: ip.parse().unwrap(),
            port,
        })
        .collect();
        assert_eq!(t, want);
    }

    #[test]
    fn flow_set_matches_the_design() {
        let t: BTreeSet<ServiceTarget> = [ServiceTarget {
            proto: L4Proto::Tcp,
            ip: node_ip(),
            port: 30080,
        }]
        .into();
        let flows = bridge_flows(9, PORTS, &t);
        assert_eq!(flows.len(), 11);
        assert!(flows.iter().all(|f| f.cookie == 9));
        let np = flows
            .iter()
            .find(|f| f.priority == PRIORITY_SERVICE)
            .expect("nodeport flow");
        assert_eq!(np.matches.in_port, Some(1));
        assert_eq!(
            np.matches.ipv4_dst,
            Some(Masked::exact(Ipv4Addr::new(172, 18, 0, 2)))
        );
        assert_eq!(
            np.matches.tp_dst,
            Some((L4Proto::Tcp, Masked::exact(30080)))
        );
        assert_eq!(
            np.instructions,
            vec![ovnk_openflow::Instruction::ApplyActions(vec![
                Action::Output(7)
            ])]
        );
        // Table 1 defaults to the host; only OVN's connections go back to the patch port.
        let t1: Vec<&Flow> = flows.iter().filter(|f| f.table == 1).collect();
        assert_eq!(t1.len(), 3);
        assert!(t1
            .iter()
            .filter(|f| f.priority == 100)
            .all(|f| f.matches.ct_mark == Some(Masked::exact(CT_MARK_OVN))));
        // Distinct (table, priority, match): no flow silently replaces another.
        let keys: BTreeSet<_> = flows
            .iter()
            .map(|f| (f.table, f.priority, f.matches.clone()))
            .collect();
        assert_eq!(keys.len(), flows.len());
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn sync_is_idempotent_and_recovers() {
        rt().block_on(async {
            let mut s = FlowSync::new(FakeFlowTable::default());
            // vswitchd's own NORMAL flow and a stale flow of a previous agent run.
            s.table_mut().restart();
            let stale = Flow::new(0, 110, COOKIE_BASE, Match::new().in_port(1), vec![]);
            s.table_mut()
                .flows
                .insert((0, 110, stale.matches.clone()), stale);

            let want = bridge_flows(0, PORTS, &BTreeSet::new());
            let mut sorted = want.clone();
            sorted.sort();
            assert!(s.sync(&want).await.unwrap());
            assert_eq!(
                s.table().ours(),
                sorted,
                "stale flow removed, NORMAL replaced"
            );
            assert_eq!(s.table().flows.len(), want.len());

            // Steady state: nothing written.
            let w = s.table().writes;
            assert!(!s.sync(&want).await.unwrap());
            assert_eq!(s.table().writes, w);

            // Somebody deleted a flow: noticed and repaired.
            let k = s.table().flows.keys().next().cloned().unwrap();
            s.table_mut().flows.remove(&k);
            assert!(s.sync(&want).await.unwrap());
            assert_eq!(s.table().ours(), sorted);

            // vswitchd restarted: reconnect and reinstall.
            s.table_mut().restart();
            assert!(s.sync(&want).await.unwrap());
            assert_eq!(s.table().ours(), sorted);

            // A service appears, then goes: its flow comes and goes, nothing else moves.
            let t: BTreeSet<ServiceTarget> = [ServiceTarget {
                proto: L4Proto::Udp,
                ip: node_ip(),
                port: 30053,
            }]
            .into();
            let with = bridge_flows(0, PORTS, &t);
            assert!(s.sync(&with).await.unwrap());
            assert_eq!(s.table().ours().len(), want.len() + 1);
            assert!(s.sync(&want).await.unwrap());
            assert_eq!(s.table().ours(), sorted);

            // An error drops the connection; the next sync starts over.
            s.table_mut().fail_next = true;
            assert!(s.sync(&with).await.is_err());
            assert!(s.sync(&with).await.unwrap());
            let mut w2 = with.clone();
            w2.sort();
            assert_eq!(s.table().ours(), w2);
        });
    }

    struct FixedPorts(std::sync::Mutex<Option<Ofports>>);
    impl PortSource for FixedPorts {
        fn ofports(&self, _: &str, patch: &str) -> Option<Ofports> {
            assert_eq!(patch, "patch-breth0_node1-to-br-int");
            *self.0.lock().unwrap()
        }
    }

    /// A FlowTable sharing its state with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<FakeFlowTable>>);
    impl FlowTable for Shared {
        async fn ensure_connected(&mut self) -> Result<bool, GatewayError> {
            let mut t = std::mem::take(&mut *self.0.lock().unwrap());
            let r = t.ensure_connected().await;
            *self.0.lock().unwrap() = t;
            r
        }
        async fn add(&mut self, flows: &[Flow]) -> Result<(), GatewayError> {
            let mut t = std::mem::take(&mut *self.0.lock().unwrap());
            let r = t.add(flows).await;
            *self.0.lock().unwrap() = t;
            r
        }
        async fn delete_cookie(&mut self, c: u64, m: u64) -> Result<(), GatewayError> {
            let mut t = std::mem::take(&mut *self.0.lock().unwrap());
            let r = t.delete_cookie(c, m).await;
            *self.0.lock().unwrap() = t;
            r
        }
        async fn count_cookie(&mut self, c: u64, m: u64) -> Result<u32, GatewayError> {
            let mut t = std::mem::take(&mut *self.0.lock().unwrap());
            let r = t.count_cookie(c, m).await;
            *self.0.lock().unwrap() = t;
            r
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().reset();
        }
    }

    #[test]
    fn run_waits_for_the_patch_port_and_follows_services() {
        rt().block_on(async {
            let ports = Arc::new(FixedPorts(std::sync::Mutex::new(None)));
            let table = Shared::default();
            let (tx, rx) = watch::channel(BTreeMap::new());
            let settings = GatewaySettings {
                node_name: "node1".into(),
                bridge: "breth0".into(),
                node_ip: Ipv4Addr::new(172, 18, 0, 2),
                interval: Duration::from_millis(20),
            };
            let task = tokio::spawn(run(settings, ports.clone(), table.clone(), rx));
            let count = || table.0.lock().unwrap().ours().len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(count(), 0, "nothing before the patch port exists");

            *ports.0.lock().unwrap() = Some(PORTS);
            let until = |n: usize| async move {
                for _ in 0..200 {
                    if count() == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("expected {n} flows, have {}", count());
            };
            until(10).await;
            let mut m = BTreeMap::new();
            m.insert(
                ("default".to_string(), "web".to_string()),
                service_view(&svc(
                    "NodePort",
                    &[("TCP", 80, Some(30080))],
                    &["192.0.2.9"],
                    &[],
                )),
            );
            tx.send_replace(m);
            until(12).await;
            tx.send_replace(BTreeMap::new());
            until(10).await;
            // A vswitchd restart is repaired by the periodic check.
            table.0.lock().unwrap().restart();
            until(10).await;
            assert!(table.0.lock().unwrap().connected);
            task.abort();
        });
    }
}
