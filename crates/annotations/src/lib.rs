//! OVN-Kubernetes annotation formats (`k8s.ovn.org/*`): parse, validate, render.
//!
//! Every format is a typed Rust structure with a `parse_*` function that validates
//! the annotation text (errors name the annotation, the field and what is wrong)
//! and a `render_*` function that writes exactly what OVN-Kubernetes writes, so a
//! cluster can move between ovnk and OVN-Kubernetes without re-annotating.
//!
//! Structures that hold addresses hold at most one per IP family and offer
//! `v4()` / `v6()` accessors, so single-stack IPv4, single-stack IPv6 and dual
//! stack are handled the same way.

mod error;
mod mac;
mod namespace;
mod node;
mod pod;

pub use error::AnnotationError;
pub use mac::{MacAddr, MacParseError};
pub use namespace::{parse_acl_logging, render_acl_logging, AclLogging, AclSeverity};
pub use node::{
    parse_gateway_router_lrp_ifaddrs, parse_if_addrs, parse_l3_gateway_config,
    parse_node_chassis_id, parse_node_id, parse_node_subnets, render_gateway_router_lrp_ifaddrs,
    render_if_addrs, render_l3_gateway_config, render_node_chassis_id, render_node_id,
    render_node_subnets, EgressGateway, GatewayMode, IfAddrs, L3Gateway, L3GatewayConfig,
    NodeSubnets, PerNetwork,
};
pub use pod::{
    parse_pod_networks, render_pod_networks, NetworkRole, PodNetwork, PodNetworks, PodRoute,
};

use std::net::IpAddr;

use ipnet::IpNet;

/// Pod: addresses, MAC, gateways and routes per network (written by the controller).
pub const POD_NETWORKS: &str = "k8s.ovn.org/pod-networks";
/// Node: pod subnets allocated to the node, per network.
pub const NODE_SUBNETS: &str = "k8s.ovn.org/node-subnets";
/// Node: the cluster-wide numeric node id (decimal string).
pub const NODE_ID: &str = "k8s.ovn.org/node-id";
/// Node: the OVS `system-id` of the node, used as OVN chassis name.
pub const NODE_CHASSIS_ID: &str = "k8s.ovn.org/node-chassis-id";
/// Node: the gateway router's join-switch port addresses, per network.
pub const NODE_GATEWAY_ROUTER_LRP_IFADDRS: &str = "k8s.ovn.org/node-gateway-router-lrp-ifaddrs";
/// Node: legacy single-network form of [`NODE_GATEWAY_ROUTER_LRP_IFADDRS`] (an [`IfAddrs`]).
pub const NODE_GATEWAY_ROUTER_LRP_IFADDR: &str = "k8s.ovn.org/node-gateway-router-lrp-ifaddr";
/// Node: L3 gateway configuration, per network.
pub const L3_GATEWAY_CONFIG: &str = "k8s.ovn.org/l3-gateway-config";
/// Node: addresses of the node's primary interface (an [`IfAddrs`]).
pub const NODE_PRIMARY_IFADDR: &str = "k8s.ovn.org/node-primary-ifaddr";
/// Node: transit switch port addresses (interconnect; an [`IfAddrs`]).
pub const NODE_TRANSIT_SWITCH_PORT_IFADDR: &str = "k8s.ovn.org/node-transit-switch-port-ifaddr";
/// Node: MAC address of the management port.
pub const NODE_MGMT_PORT_MAC_ADDRESS: &str = "k8s.ovn.org/node-mgmt-port-mac-address";
/// Namespace: ACL logging severities for allow / deny verdicts.
pub const ACL_LOGGING: &str = "k8s.ovn.org/acl-logging";
/// Namespace: `"true"` enables multicast for the namespace.
pub const MULTICAST_ENABLED: &str = "k8s.ovn.org/multicast-enabled";

/// Key of the cluster default network in every per-network annotation map.
pub const DEFAULT_NETWORK: &str = "default";

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Self {
        Self::of(&net.addr())
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// The first network of `family` in `nets`.
pub fn net_of_family(nets: &[IpNet], family: IpFamily) -> Option<IpNet> {
    nets.iter().copied().find(|n| IpFamily::of_net(n) == family)
}

/// The first address of `family` in `addrs`.
pub fn addr_of_family(addrs: &[IpAddr], family: IpFamily) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| IpFamily::of(a) == family)
}

/// Rejects a list holding two entries of the same family: ovnk allocates one
/// address (or subnet) per family, and a second one would be silently ignored.
pub(crate) fn check_one_per_family<T>(
    annotation: &'static str,
    field: &str,
    items: &[T],
    family: impl Fn(&T) -> IpFamily,
    show: impl Fn(&T) -> String,
) -> Result<(), AnnotationError> {
    let mut seen: Vec<IpFamily> = Vec::with_capacity(2);
    for item in items {
        let f = family(item);
        if seen.contains(&f) {
            return Err(AnnotationError::invalid(
                annotation,
                field,
                show(item),
                format!("more than one {f} entry"),
            ));
        }
        seen.push(f);
    }
    Ok(())
}

/// Parses `a.b.c.d/len` keeping the host bits (pod and router port addresses are
/// written as address/prefix).
pub(crate) fn parse_cidr(
    annotation: &'static str,
    field: &str,
    value: &str,
) -> Result<IpNet, AnnotationError> {
    value
        .parse::<IpNet>()
        .map_err(|e| AnnotationError::invalid(annotation, field, value, format!("bad CIDR: {e}")))
}

pub(crate) fn parse_ip(
    annotation: &'static str,
    field: &str,
    value: &str,
) -> Result<IpAddr, AnnotationError> {
    value.parse::<IpAddr>().map_err(|e| {
        AnnotationError::invalid(annotation, field, value, format!("bad IP address: {e}"))
    })
}

pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    annotation: &'static str,
    text: &'a str,
) -> Result<T, AnnotationError> {
    serde_json::from_str(text).map_err(|source| AnnotationError::Json { annotation, source })
}
