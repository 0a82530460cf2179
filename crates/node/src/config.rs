//! The node agent's configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::NodeError;

/// The shared gateway: the OVS bridge that owns the node IP (`breth0`) and the next hop
/// of the external network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// OVS bridge (and its internal interface) holding the node IP, e.g. `breth0`.
    pub interface: String,
    pub next_hop: IpAddr,
    /// A dedicated address (with prefix) for the gateway router on the external network.
    /// `None`: the router shares the node IP and the bridge's MAC (OVN-Kubernetes' shared
    /// gateway, which needs OpenFlow rules on the bridge to split the node's own traffic
    /// from the router's). `Some`: the router has this address and a MAC derived from it,
    /// so the bridge's plain NORMAL switching serves both (what the lab uses today).
    pub router_address: Option<IpNet>,
}

/// Everything `ovnk node` needs to know; [`NodeConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Kubernetes node name (also the default OVS `system-id`).
    pub node_name: String,
    /// The node's network namespace when the agent runs outside it (the lab);
    /// `None`: the agent's own.
    pub netns: Option<PathBuf>,
    /// The node's OVS database socket (`unix:` path of its ovsdb-server).
    pub ovs_db: PathBuf,
    /// The OVN Southbound remote written to `external_ids:ovn-remote`.
    pub sb_remote: String,
    /// ovs-vswitchd's run directory, where the bridges' OpenFlow management sockets
    /// (`<bridge>.mgmt`) are; `None`: the directory of `ovs_db`.
    pub ovs_rundir: Option<PathBuf>,
    /// `system-id` to use when OVS has none yet (default: the node name).
    pub system_id: Option<String>,
    /// The node IP with its prefix: the Geneve endpoint (`ovn-encap-ip`) and the
    /// address published in `node-primary-ifaddr` / `l3-gateway-config`.
    pub node_ip: IpNet,
    /// Shared gateway; `None` publishes a disabled gateway.
    pub gateway: Option<GatewayConfig>,
    /// MTU of pod interfaces and the management port.
    pub mtu: u32,
    /// Userspace (netdev) datapath: br-int is made `datapath_type=netdev` and veth TX
    /// checksum offload is turned off.
    pub userspace_datapath: bool,
    /// Where the CNI server listens (root-only).
    pub cni_socket: PathBuf,
    /// Where to write the CNI network configuration (`None`: don't).
    pub cni_conf_dir: Option<PathBuf>,
    /// Where to install the plugin binary (`None`: don't).
    pub cni_bin_dir: Option<PathBuf>,
    /// The plugin binary to copy into `cni_bin_dir` (default: `ovn-k8s-cni-overlay`
    /// next to the running executable).
    pub cni_plugin_source: Option<PathBuf>,
    pub cluster_cidrs: Vec<IpNet>,
    pub service_cidrs: Vec<IpNet>,
    /// How long a CNI ADD waits for the pod's `k8s.ovn.org/pod-networks`.
    pub pod_annotation_timeout: Duration,
    /// How long a CNI ADD waits for `ovn-installed` on the pod's OVS interface.
    pub ovn_installed_timeout: Duration,
    /// How long start-up waits for OVS, the Node object and its subnets.
    pub startup_timeout: Duration,
}

impl NodeConfig {
    pub fn new(
        node_name: impl Into<String>,
        ovs_db: impl Into<PathBuf>,
        sb_remote: impl Into<String>,
        node_ip: IpNet,
    ) -> Self {
        NodeConfig {
            node_name: node_name.into(),
            netns: None,
            ovs_db: ovs_db.into(),
            sb_remote: sb_remote.into(),
            ovs_rundir: None,
            system_id: None,
            node_ip,
            gateway: None,
            mtu: 1400,
            userspace_datapath: true,
            cni_socket: ovnk_cni::DEFAULT_SERVER_SOCKET.into(),
            cni_conf_dir: None,
            cni_bin_dir: None,
            cni_plugin_source: None,
            cluster_cidrs: vec![IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 244, 0, 0),
                16,
            ))],
            service_cidrs: vec![IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                16,
            ))],
            pod_annotation_timeout: Duration::from_secs(30),
            ovn_installed_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(120),
        }
    }

    /// Where the bridges' OpenFlow management sockets are.
    pub fn ovs_rundir(&self) -> PathBuf {
        self.ovs_rundir.clone().unwrap_or_else(|| {
            self.ovs_db
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch"))
        })
    }

    /// Checks what would otherwise fail late and obscurely.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return bad(format!("invalid node name {:?}", self.node_name));
        }
        if !(576..=65535).contains(&self.mtu) {
            return bad(format!("mtu {} is outside 576..=65535", self.mtu));
        }
        if self.sb_remote.is_empty() {
            return bad("the OVN SB remote (ovn-remote) is empty".into());
        }
        if let Some(g) = &self.gateway {
            if g.interface.is_empty() || g.interface.len() > 15 {
                return bad(format!("invalid gateway interface {:?}", g.interface));
            }
            if g.next_hop.is_ipv4() != self.node_ip.addr().is_ipv4() {
                return bad(format!(
                    "gateway next hop {} and node IP {} are of different families",
                    g.next_hop, self.node_ip
                ));
            }
        }
        Ok(())
    }
}
