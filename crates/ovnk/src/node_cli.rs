//! `ovnk node`: flags → [`ovnk_node::NodeConfig`].

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use ipnet::IpNet;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// This node's name in Kubernetes.
    #[arg(long, env = "K8S_NODE")]
    node_name: String,
    /// Run outside the node's network namespace and manage this one (the lab does, so the
    /// agent reaches an API server on loopback): a path like /run/netns/NAME.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// The local OVS database socket.
    #[arg(long, default_value = "/var/run/openvswitch/db.sock")]
    ovs_db: PathBuf,
    /// The OVN Southbound remote for ovn-controller (`external_ids:ovn-remote`).
    #[arg(long)]
    sb_remote: String,
    /// OVS system-id (= OVN chassis name) when OVS has none.
    #[arg(long)]
    system_id: Option<String>,
    /// The node IP with prefix length: the Geneve endpoint and the gateway address.
    #[arg(long)]
    node_ip: IpNet,
    /// The gateway bridge that holds the node IP (shared gateway); none = no gateway.
    #[arg(long)]
    gateway_interface: Option<String>,
    /// Next hop of the external network.
    #[arg(long)]
    gateway_next_hop: Option<IpAddr>,
    /// A dedicated address/prefix for the gateway router (default: it shares the node IP).
    #[arg(long)]
    gateway_router_address: Option<IpNet>,
    #[arg(long, default_value_t = 1400)]
    mtu: u32,
    /// Use the kernel datapath instead of the userspace one.
    #[arg(long)]
    kernel_datapath: bool,
    #[arg(long, default_value = ovnk_cni::DEFAULT_SERVER_SOCKET)]
    cni_socket: PathBuf,
    /// Where to install the CNI network configuration.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// Where to install the CNI plugin binary.
    #[arg(long)]
    cni_bin_dir: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "10.244.0.0/16")]
    cluster_cidrs: Vec<IpNet>,
    #[arg(long, value_delimiter = ',', default_value = "10.96.0.0/16")]
    service_cidrs: Vec<IpNet>,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cfg =
        ovnk_node::NodeConfig::new(&args.node_name, &args.ovs_db, &args.sb_remote, args.node_ip);
    cfg.system_id = args.system_id;
    cfg.netns = args.netns;
    cfg.gateway = match (args.gateway_interface, args.gateway_next_hop) {
        (Some(interface), Some(next_hop)) => Some(ovnk_node::GatewayConfig {
            interface,
            next_hop,
            router_address: args.gateway_router_address,
        }),
        (None, None) => None,
        _ => anyhow::bail!("--gateway-interface and --gateway-next-hop go together"),
    };
    cfg.mtu = args.mtu;
    cfg.userspace_datapath = !args.kernel_datapath;
    cfg.cni_socket = args.cni_socket;
    cfg.cni_conf_dir = args.cni_conf_dir;
    cfg.cni_bin_dir = args.cni_bin_dir;
    cfg.cluster_cidrs = args.cluster_cidrs;
    cfg.service_cidrs = args.service_cidrs;
    let client = crate::kube_client(args.kubeconfig.as_deref()).await?;
    ovnk_node::run(cfg, client)
        .await
        .with_context(|| format!("ovnk node {}", args.node_name))
}
