//! Join-switch addresses derived from node ids.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{addr_to_u128, u128_to_addr, with_prefix, Family, IpamError};

/// OVN-Kubernetes' default IPv4 join subnet.
pub const DEFAULT_JOIN_SUBNET_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};
/// OVN-Kubernetes' default IPv6 join subnet.
pub const DEFAULT_JOIN_SUBNET_V6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 0, 0), 64) {
        Ok(n) => n,
        Err(_) => panic!("constant"),
    };

/// The join subnet(s) between `ovn_cluster_router` and the gateway routers.
/// The cluster router port is `.1`; node `id` gets `base + id` (ids start at 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinSubnets {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

impl Default for JoinSubnets {
    fn default() -> Self {
        JoinSubnets {
            v4: Some(DEFAULT_JOIN_SUBNET_V4),
            v6: Some(DEFAULT_JOIN_SUBNET_V6),
        }
    }
}

impl JoinSubnets {
    pub fn subnet(&self, family: Family) -> Option<IpNet> {
        match family {
            Family::V4 => self.v4.map(|n| IpNet::V4(n.trunc())),
            Family::V6 => self.v6.map(|n| IpNet::V6(n.trunc())),
        }
    }

    fn nth(&self, family: Family, n: u32) -> Result<Option<IpNet>, IpamError> {
        let Some(subnet) = self.subnet(family) else {
            return Ok(None);
        };
        let addr = u128_to_addr(
            family,
            addr_to_u128(subnet.network()).wrapping_add(u128::from(n)),
        );
        // The last address of an IPv4 subnet is its broadcast address.
        let is_broadcast = family == Family::V4 && addr == subnet.broadcast();
        if !subnet.contains(&addr) || addr < subnet.network() || is_broadcast {
            return Err(IpamError::OutOfRange {
                value: format!("node id {n}"),
                range: format!("join subnet {subnet}"),
            });
        }
        Ok(Some(with_prefix(addr, subnet.prefix_len())))
    }

    /// `rtoj-ovn_cluster_router` addresses (`.1`), one per configured family.
    pub fn cluster_router_ips(&self) -> Vec<IpNet> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| self.nth(f, 1).ok().flatten())
            .collect()
    }

    /// `rtoj-GR_<node>` addresses of node `node_id` (IPv4 first).
    pub fn gateway_router_ips(&self, node_id: u32) -> Result<Vec<IpNet>, IpamError> {
        if node_id < crate::FIRST_NODE_ID {
            return Err(IpamError::Reserved {
                value: format!("node id {node_id}"),
                range: "join subnets".into(),
                why: "ids 0 and 1 map to the network address and the cluster router",
            });
        }
        let mut out = Vec::with_capacity(2);
        for f in [Family::V4, Family::V6] {
            if let Some(ip) = self.nth(f, node_id)? {
                out.push(ip);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_addresses() {
        let j = JoinSubnets::default();
        let names = |v: Vec<IpNet>| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(j.cluster_router_ips()),
            ["100.64.0.1/16", "fd98::1/64"]
        );
        assert_eq!(
            names(j.gateway_router_ips(2).unwrap()),
            ["100.64.0.2/16", "fd98::2/64"]
        );
        assert_eq!(
            names(j.gateway_router_ips(300).unwrap()),
            ["100.64.1.44/16", "fd98::12c/64"]
        );
        assert!(j.gateway_router_ips(1).is_err());
        let small = JoinSubnets {
            v4: Some("100.64.0.0/29".parse().unwrap()),
            v6: None,
        };
        assert_eq!(
            names(small.gateway_router_ips(6).unwrap()),
            ["100.64.0.6/29"]
        );
        assert!(matches!(
            small.gateway_router_ips(7),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            small.gateway_router_ips(8),
            Err(IpamError::OutOfRange { .. })
        ));
    }
}
