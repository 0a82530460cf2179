//! The management port `ovn-k8s-mp0`: an OVS internal port on br-int bound to the
//! logical port `k8s-<node>` (the node subnet's .2), through which the node's host
//! network reaches pods and services (LAB-gateway.md §2).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use ovnk_annotations::MacAddr;

use crate::config::NodeConfig;
use crate::ovs::{Ovs, PortSpec};
use crate::podnet::{HostLinkSpec, NetOps, Route};
use crate::NodeError;

pub const MGMT_PORT: &str = "ovn-k8s-mp0";

/// Addresses of the management port in a node subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtAddrs {
    /// `.2/<prefix>`.
    pub address: IpNet,
    /// `.1`: the node switch's router port.
    pub gateway: IpAddr,
    /// The LSP's MAC, derived from `.2` as OVN-Kubernetes does.
    pub mac: MacAddr,
}

fn nth(subnet: &IpNet, n: u8) -> Option<IpAddr> {
    match subnet.network() {
        IpAddr::V4(a) => u32::from(a)
            .checked_add(u32::from(n))
            .map(|x| IpAddr::V4(x.into())),
        IpAddr::V6(a) => u128::from(a)
            .checked_add(u128::from(n))
            .map(|x| IpAddr::V6(x.into())),
    }
}

/// `.2`, `.1` and the MAC for a node subnet; a subnet too small to hold them is an error.
pub fn mgmt_addrs(subnet: &IpNet) -> Result<MgmtAddrs, NodeError> {
    let too_small = || NodeError::Config(format!("node subnet {subnet} is too small"));
    if subnet.max_prefix_len() - subnet.prefix_len() < 2 {
        return Err(too_small());
    }
    let ip = nth(subnet, 2).ok_or_else(too_small)?;
    let gateway = nth(subnet, 1).ok_or_else(too_small)?;
    let address = IpNet::new(ip, subnet.prefix_len()).map_err(|_| too_small())?;
    Ok(MgmtAddrs {
        address,
        gateway,
        mac: MacAddr::from_ip(ip),
    })
}

/// The OVS port for `node`.
pub fn mgmt_port_spec(node: &str, addrs: &MgmtAddrs, mtu: u32) -> PortSpec {
    let mut ids = BTreeMap::new();
    ids.insert("iface-id".to_string(), format!("k8s-{node}"));
    PortSpec {
        name: MGMT_PORT.to_string(),
        internal: true,
        external_ids: ids,
        // Also set in OVS so that vswitchd keeps the tap's MAC and MTU as configured.
        mac: Some(addrs.mac.to_string()),
        mtu_request: Some(mtu),
        port_other_config: BTreeMap::new(),
    }
}

/// The host link: MAC, MTU, `.2`, and routes to the cluster and service CIDRs via `.1`.
pub fn mgmt_link_spec(
    addrs: &MgmtAddrs,
    mtu: u32,
    cluster_cidrs: &[IpNet],
    service_cidrs: &[IpNet],
) -> HostLinkSpec {
    let same_family = |n: &&IpNet| n.addr().is_ipv4() == addrs.gateway.is_ipv4();
    HostLinkSpec {
        name: MGMT_PORT.to_string(),
        mac: Some(addrs.mac.0),
        mtu,
        addresses: vec![addrs.address],
        routes: cluster_cidrs
            .iter()
            .chain(service_cidrs)
            .filter(same_family)
            .map(|n| Route {
                dest: n.trunc(),
                via: Some(addrs.gateway),
            })
            .collect(),
    }
}

/// Creates (or re-asserts, idempotently) the management port for `subnet`; waits at
/// most `cfg.startup_timeout` for ovs-vswitchd to create the device.
pub async fn setup_mgmt_port<N: NetOps>(
    ovs: &Ovs,
    net: &N,
    cfg: &NodeConfig,
    subnet: &IpNet,
) -> Result<MgmtAddrs, NodeError> {
    let (node, mtu, timeout) = (&cfg.node_name, cfg.mtu, cfg.startup_timeout);
    let addrs = mgmt_addrs(subnet)?;
    ovs.add_port(&mgmt_port_spec(node, &addrs, mtu)).await?;
    // ovs-vswitchd creates the tap asynchronously; it is a local daemon, a short poll is fine.
    let deadline = tokio::time::Instant::now() + timeout;
    while !net.link_exists(MGMT_PORT).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::Timeout(format!(
                "{MGMT_PORT} did not appear within {timeout:?} after adding it to br-int (is ovs-vswitchd running?)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    net.configure_host_link(&mgmt_link_spec(
        &addrs,
        mtu,
        &cfg.cluster_cidrs,
        &cfg.service_cidrs,
    ))
    .await?;
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_a_node_subnet() {
        let a = mgmt_addrs(&"10.244.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(a.address.to_string(), "10.244.1.2/24");
        assert_eq!(a.gateway.to_string(), "10.244.1.1");
        assert_eq!(a.mac.to_string(), "0a:58:0a:f4:01:02");
        assert!(mgmt_addrs(&"10.0.0.0/31".parse().unwrap()).is_err());
    }

    #[test]
    fn link_routes_cluster_and_services_via_the_router() {
        let a = mgmt_addrs(&"10.244.1.0/24".parse().unwrap()).unwrap();
        let l = mgmt_link_spec(
            &a,
            1400,
            &[
                "10.244.0.0/16".parse().unwrap(),
                "fd00::/48".parse().unwrap(),
            ],
            &["10.96.0.0/16".parse().unwrap()],
        );
        let routes: Vec<String> = l
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.dest, r.via))
            .collect();
        assert_eq!(
            routes,
            vec![
                "10.244.0.0/16 via Some(10.244.1.1)",
                "10.96.0.0/16 via Some(10.244.1.1)"
            ]
        );
        assert_eq!(l.mac, Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]));
        let p = mgmt_port_spec("node1", &a, 1400);
        assert_eq!(p.external_ids["iface-id"], "k8s-node1");
        assert!(p.internal);
    }

    #[tokio::test]
    async fn fake_net_gets_the_link_configured() {
        // Only the netlink half; the OVS half is covered by the ovsdb-server tests.
        let net = crate::fake::FakeNet::default();
        net.add_host_link(MGMT_PORT);
        let a = mgmt_addrs(&"10.244.2.0/24".parse().unwrap()).unwrap();
        let spec = mgmt_link_spec(&a, 1400, &["10.244.0.0/16".parse().unwrap()], &[]);
        net.configure_host_link(&spec).await.unwrap();
        let st = net.lock();
        let got = st.host_links[MGMT_PORT].as_ref().unwrap();
        assert_eq!(got.addresses[0].to_string(), "10.244.2.2/24");
    }
}
