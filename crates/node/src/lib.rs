//! Node agent (`ovnk node`): local OVS registration, the CNI server and pod wiring.
//!
//! [`run`] is the whole agent. Its building blocks are public for the lab and tests:
//! [`register`] (pure: OVS `external_ids` and Node annotations), [`ovs::Ovs`] (the node's
//! OVS database), [`pods::PodCache`] (pods and their annotations, fed by
//! [`kube_watch`]), [`cni::CniAgent`] (the `ovnk_cni::CniHandler`), [`mgmt`] (the
//! management port), [`install`] (the CNI configuration and binary) and [`gateway`] (the
//! shared gateway's OpenFlow rules on breth0, when the router shares the node IP).
//!
//! Side effects sit behind small seams ([`podnet::NetOps`] for netlink, the real
//! ovsdb-server for OVS, [`pods::PodCache`] for Kubernetes) so the logic is tested
//! without root; the real implementations are tested as root in network namespaces.

pub mod cni;
pub mod config;
/// The interface knobs netlink does not cover (TX checksum offload, IPv6), shared with the lab.
pub use ovnk_netns::ethtool;
pub mod fake;
pub mod gateway;
pub mod hostnat;
pub mod install;
pub mod kube_watch;
pub mod mgmt;
pub mod ovs;
pub mod podnet;
pub mod pods;
pub mod register;

use std::sync::Arc;
use std::time::Duration;

use ovnk_annotations::{parse_node_subnets, NODE_SUBNETS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{GatewayConfig, NodeConfig};

/// Errors of the node's network side effects; each names the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    NetNs(#[from] ovnk_netns::NetNsError),
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("invalid route {0}")]
    InvalidRoute(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the node agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    /// Boxed: OVS errors carry the client's error and would bloat every `Result`.
    #[error(transparent)]
    Ovs(Box<ovs::OvsError>),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("Kubernetes API: {0}")]
    Kube(String),
    #[error("node {node}: {reason}")]
    Annotation { node: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<ovs::OvsError> for NodeError {
    fn from(e: ovs::OvsError) -> Self {
        NodeError::Ovs(Box::new(e))
    }
}

/// Aborts the agent's background tasks when [`run`] ends or is dropped, so a
/// stopped agent leaves nothing running (tests restart it in-process).
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn connect_ovs(cfg: &NodeConfig) -> Result<ovs::Ovs, NodeError> {
    let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
    loop {
        match ovs::Ovs::connect(&cfg.ovs_db).await {
            Ok(o) => return Ok(o),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `f` holds for the watched value, bounded.
async fn wait_for<T, R>(
    rx: &mut watch::Receiver<T>,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&T) -> Option<R>,
) -> Result<R, NodeError> {
    let wait = async {
        loop {
            if let Some(r) = f(&rx.borrow_and_update()) {
                return Some(r);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Some(r)) => Ok(r),
        _ => Err(NodeError::Timeout(format!("{what} within {timeout:?}"))),
    }
}

/// Runs the node agent until a fatal error: registers the node in OVS and in
/// Kubernetes, serves CNI requests, creates the management port once the node's
/// subnet is known, removes ports of pods that no longer exist, then installs the CNI
/// configuration. Restarting it leaves running pods untouched.
pub async fn run(config: NodeConfig, kube: kube::Client) -> Result<(), NodeError> {
    config.validate()?;
    let node_ns = match &config.netns {
        Some(p) => ovnk_netns::NetNs::open(p).map_err(NetError::from)?,
        None => ovnk_netns::NetNs::current().map_err(NetError::from)?,
    };
    let net = Arc::new(podnet::Netlink::in_netns(node_ns)?);
    run_with(config, kube, net).await
}

/// [`run`] with a given [`podnet::NetOps`] (tests use [`fake::FakeNet`]).
pub async fn run_with<N: podnet::NetOps>(
    config: NodeConfig,
    kube: kube::Client,
    net: Arc<N>,
) -> Result<(), NodeError> {
    config.validate()?;
    let cfg = &config;
    let node = cfg.node_name.clone();

    // 1. OVS: chassis registration and br-int.
    let ovs = connect_ovs(cfg).await?;
    let existing = ovs
        .system_external_ids()
        .and_then(|m| m.get("system-id").cloned());
    let system_id = register::choose_system_id(cfg, existing.as_deref());
    ovs.set_system_external_ids(&register::ovs_external_ids(cfg, &system_id))
        .await?;
    ovs.ensure_bridge(
        ovs::BR_INT,
        cfg.userspace_datapath.then_some("netdev"),
        true,
    )
    .await?;

    // 2. Kubernetes watchers.
    let pods = Arc::new(pods::PodCache::new());
    let (node_tx, mut node_rx) = watch::channel(None);
    let mut tasks = Tasks(vec![
        tokio::spawn(kube_watch::watch_pods(
            kube.clone(),
            node.clone(),
            pods.clone(),
        )),
        tokio::spawn(kube_watch::watch_node(kube.clone(), node.clone(), node_tx)),
    ]);

    // 3. Node annotations.
    let gw_mac = match &cfg.gateway {
        // A dedicated router address brings its own MAC; only the shared one needs breth0's.
        None => None,
        Some(g) if g.router_address.is_some() => None,
        Some(g) => {
            let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
            loop {
                if let Some(m) = ovs.bridge_mac(&g.interface) {
                    break Some(m);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(NodeError::Timeout(format!(
                        "gateway bridge {} has no MAC in OVS ({}); does it exist?",
                        g.interface,
                        ovs.db()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let annotations = register::node_annotations(cfg, &system_id, gw_mac.as_deref())?;
    wait_for(
        &mut node_rx,
        cfg.startup_timeout,
        &format!("Node {node} to exist"),
        |n| n.as_ref().map(|_| ()),
    )
    .await?;
    kube_watch::annotate_node(kube.clone(), &node, &annotations)
        .await
        .map_err(|e| NodeError::Kube(format!("annotating Node {node}: {e}")))?;

    // 3b. Shared gateway (the router uses the node IP): breth0's OpenFlow split.
    let mut host_services = None;
    if let Some(g) = cfg.gateway.as_ref().filter(|g| g.router_address.is_none()) {
        match cfg.node_ip.addr() {
            std::net::IpAddr::V4(node_ip) => {
                let (svc_tx, svc_rx) = watch::channel(kube_watch::ServiceMap::new());
                host_services = Some((node_ip, svc_rx.clone()));
                tasks.0.push(tokio::spawn(kube_watch::watch_services(
                    kube.clone(),
                    svc_tx,
                )));
                let settings = gateway::GatewaySettings {
                    node_name: node.clone(),
                    bridge: g.interface.clone(),
                    node_ip,
                    interval: gateway::CHECK_INTERVAL,
                };
                let table = gateway::OpenFlowTable::new(&cfg.ovs_rundir(), &g.interface);
                tasks.0.push(tokio::spawn(gateway::run(
                    settings,
                    Arc::new(ovs.clone()),
                    table,
                    svc_rx,
                )));
            }
            std::net::IpAddr::V6(_) => {
                tracing::warn!(
                    "shared gateway flows are IPv4 only; {} left at NORMAL",
                    g.interface
                )
            }
        }
    }

    // 4. CNI server (STATUS says "not ready" until the management port is up).
    // Veth checksums must be complete whenever br-int forwards in userspace, also
    // when someone else made br-int netdev.
    let userspace = cfg.userspace_datapath
        || ovs.bridge_datapath_type(ovs::BR_INT).as_deref() == Some("netdev");
    let (ready_tx, ready_rx) = watch::channel(false);
    let agent = Arc::new(cni::CniAgent::new(
        net.clone(),
        ovs.clone(),
        pods.clone(),
        cni::CniSettings {
            mtu: cfg.mtu,
            tx_checksum_off: userspace,
            pod_annotation_timeout: cfg.pod_annotation_timeout,
            ovn_installed_timeout: cfg.ovn_installed_timeout,
            node_netns: cfg.netns.clone(),
        },
        ready_rx,
    ));
    let listener = ovnk_cni::bind_root_socket(&cfg.cni_socket)
        .map_err(|e| NodeError::Io(format!("CNI socket {}: {e}", cfg.cni_socket.display())))?;
    let server = tokio::spawn(ovnk_cni::serve(listener, agent.clone()));

    // 5. Node subnet → management port.
    let subnets = wait_for(
        &mut node_rx,
        cfg.startup_timeout,
        &format!("{NODE_SUBNETS} on Node {node} (is the controller running?)"),
        |n| {
            n.as_ref()
                .and_then(|v| v.annotations.get(NODE_SUBNETS).cloned())
        },
    )
    .await?;
    let subnets = parse_node_subnets(&subnets).map_err(|e| NodeError::Annotation {
        node: node.clone(),
        reason: e.to_string(),
    })?;
    let subnet = subnets
        .v4()
        .or_else(|| subnets.v6())
        .ok_or_else(|| NodeError::Annotation {
            node: node.clone(),
            reason: format!("{NODE_SUBNETS} has no subnet for the default network"),
        })?;
    let mgmt = mgmt::setup_mgmt_port(&ovs, &*net, cfg, &subnet).await?;
    tracing::info!(node = %node, "management port {} at {}", mgmt::MGMT_PORT, mgmt.address);

    // 5b. The host's own connections to its NodePorts and external IPs (nftables).
    if let (Some((node_ip, svc_rx)), std::net::IpAddr::V4(mgmt_ip)) =
        (host_services, mgmt.address.addr())
    {
        let ns = match &cfg.netns {
            Some(p) => ovnk_netns::NetNs::open(p),
            None => ovnk_netns::NetNs::current(),
        };
        match ns.map(|ns| ns.run(ovnk_nft::NftSocket::open)) {
            Ok(Ok(Ok(sock))) => tasks.0.push(tokio::spawn(hostnat::run(
                sock,
                node_ip,
                mgmt_ip,
                svc_rx,
                hostnat::REASSERT_INTERVAL,
            ))),
            Ok(Ok(Err(e))) => tracing::warn!(
                "no nftables ({e}): the host cannot reach its own NodePorts; everything else works"
            ),
            Ok(Err(e)) | Err(e) => tracing::warn!(
                "no nftables (node namespace: {e}): the host cannot reach its own NodePorts"
            ),
        }
    }

    // 6. Ports of pods deleted while the agent was away (the shim's DEL succeeds
    //    without us when our socket is absent).
    if pods.wait_synced(cfg.startup_timeout).await {
        match agent.remove_stale_ports().await {
            Ok(gone) if !gone.is_empty() => tracing::info!("removed stale pod ports {gone:?}"),
            Ok(_) => {}
            Err(e) => tracing::warn!("stale port cleanup: {e}"),
        }
    } else {
        tracing::warn!(
            "pod list not synced within {:?}; stale port cleanup skipped",
            cfg.startup_timeout
        );
    }

    // 7. Ready: publish the CNI configuration last, so runtimes only use us now.
    if let Some(dir) = &cfg.cni_bin_dir {
        let src = cfg
            .cni_plugin_source
            .clone()
            .or_else(install::default_plugin_source)
            .ok_or_else(|| NodeError::Config("no CNI plugin binary to install".into()))?;
        install::install_plugin(&src, dir)?;
    }
    if let Some(dir) = &cfg.cni_conf_dir {
        install::install_conflist(dir, &cfg.cni_socket, cfg.mtu)?;
    }
    ready_tx.send_replace(true);
    tracing::info!(node = %node, "node ready");

    tasks.0.push(server);
    // Serve until aborted; the server loop itself never ends.
    if let Some(server) = tasks.0.last_mut() {
        let _ = server.await;
    }
    Err(NodeError::Io("CNI server stopped".into()))
}
