//! Node registration as pure functions: the OVS `external_ids` and the Node annotations
//! that `ovnk node` publishes. [`crate::run`] applies them.

use std::collections::BTreeMap;

use ovnk_annotations::{
    render_if_addrs, render_l3_gateway_config, render_node_chassis_id, GatewayMode, IfAddrs,
    L3Gateway, L3GatewayConfig, MacAddr, DEFAULT_NETWORK, L3_GATEWAY_CONFIG, NODE_CHASSIS_ID,
    NODE_PRIMARY_IFADDR,
};

use crate::config::NodeConfig;
use crate::NodeError;

/// The physical network name of the localnet port on `ext_<node>`.
pub const PHYSNET: &str = "physnet";

/// `Open_vSwitch.external_ids` for this node.
pub fn ovs_external_ids(cfg: &NodeConfig, system_id: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("system-id".into(), system_id.to_string());
    m.insert("hostname".into(), cfg.node_name.clone());
    m.insert("ovn-remote".into(), cfg.sb_remote.clone());
    m.insert("ovn-encap-type".into(), "geneve".into());
    m.insert("ovn-encap-ip".into(), cfg.node_ip.addr().to_string());
    if let Some(g) = &cfg.gateway {
        m.insert(
            "ovn-bridge-mappings".into(),
            format!("{PHYSNET}:{}", g.interface),
        );
    }
    if cfg.userspace_datapath {
        m.insert("ovn-bridge-datapath-type".into(), "netdev".into());
    }
    // A restarted ovn-controller otherwise clears br-int's flows as it connects and
    // traffic of running pods stops until it has recomputed them; with this it keeps
    // the old flows while it computes (ovn-controller(8)).
    m.insert(
        "ovn-ofctrl-wait-before-clear".into(),
        OFCTRL_WAIT_BEFORE_CLEAR_MS.to_string(),
    );
    m
}

/// Milliseconds ovn-controller keeps the old flows after a restart (ample for a node's
/// flow computation; it only delays the first flow install of a fresh chassis).
pub const OFCTRL_WAIT_BEFORE_CLEAR_MS: u32 = 1000;

/// The system-id to use: the one OVS already has (a chassis keeps its name across
/// restarts), else the configured one, else the node name.
pub fn choose_system_id(cfg: &NodeConfig, existing: Option<&str>) -> String {
    existing
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or_else(|| cfg.system_id.clone())
        .unwrap_or_else(|| cfg.node_name.clone())
}

fn ifaddrs(cfg: &NodeConfig) -> IfAddrs {
    if cfg.node_ip.addr().is_ipv4() {
        IfAddrs {
            ipv4: Some(cfg.node_ip),
            ipv6: None,
        }
    } else {
        IfAddrs {
            ipv4: None,
            ipv6: Some(cfg.node_ip),
        }
    }
}

/// The Node annotations: chassis id, primary address and the shared-gateway config
/// (`gateway_mac` = the gateway bridge's MAC; required when a gateway is configured).
pub fn node_annotations(
    cfg: &NodeConfig,
    system_id: &str,
    gateway_mac: Option<&str>,
) -> Result<BTreeMap<String, String>, NodeError> {
    let mut m = BTreeMap::new();
    m.insert(NODE_CHASSIS_ID.into(), render_node_chassis_id(system_id));
    m.insert(NODE_PRIMARY_IFADDR.into(), render_if_addrs(&ifaddrs(cfg)));
    let l3 = match &cfg.gateway {
        None => L3GatewayConfig::Disabled,
        Some(
            g @ crate::config::GatewayConfig {
                router_address: Some(addr),
                ..
            },
        ) => {
            let addr = *addr;
            L3GatewayConfig::Enabled(L3Gateway {
                mode: GatewayMode::Shared,
                bridge_id: Some(g.interface.clone()),
                interface_id: Some(format!("{}_{}", g.interface, cfg.node_name)),
                mac_address: MacAddr::from_ip(addr.addr()),
                ip_addresses: vec![addr],
                next_hops: vec![g.next_hop],
                node_port_enable: true,
                vlan_id: None,
                egress_gw: None,
            })
        }
        Some(g) => {
            let text = gateway_mac.ok_or_else(|| {
                NodeError::Config(format!("gateway bridge {} has no MAC address", g.interface))
            })?;
            let mac: MacAddr = text
                .parse()
                .map_err(|e| NodeError::Config(format!("gateway bridge {}: {e}", g.interface)))?;
            L3GatewayConfig::Enabled(L3Gateway {
                mode: GatewayMode::Shared,
                bridge_id: Some(g.interface.clone()),
                interface_id: Some(format!("{}_{}", g.interface, cfg.node_name)),
                mac_address: mac,
                ip_addresses: vec![cfg.node_ip],
                next_hops: vec![g.next_hop],
                node_port_enable: true,
                vlan_id: None,
                egress_gw: None,
            })
        }
    };
    let mut per = BTreeMap::new();
    per.insert(DEFAULT_NETWORK.to_string(), l3);
    m.insert(L3_GATEWAY_CONFIG.into(), render_l3_gateway_config(&per));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use ovnk_annotations::{parse_if_addrs, parse_l3_gateway_config, parse_node_chassis_id};

    fn cfg() -> NodeConfig {
        let mut c = NodeConfig::new(
            "node1",
            "/run/ovs/db.sock",
            "unix:/central/sb.sock",
            "172.30.33.11/24".parse().unwrap(),
        );
        c.gateway = Some(GatewayConfig {
            router_address: None,
            interface: "breth0".into(),
            next_hop: "172.30.33.100".parse().unwrap(),
        });
        c
    }

    #[test]
    fn ovs_ids_register_the_chassis() {
        let ids = ovs_external_ids(&cfg(), "node1");
        let get = |k: &str| ids.get(k).map(String::as_str);
        assert_eq!(get("system-id"), Some("node1"));
        assert_eq!(get("ovn-remote"), Some("unix:/central/sb.sock"));
        assert_eq!(get("ovn-encap-type"), Some("geneve"));
        assert_eq!(get("ovn-encap-ip"), Some("172.30.33.11"));
        assert_eq!(get("ovn-bridge-mappings"), Some("physnet:breth0"));
        assert_eq!(get("ovn-bridge-datapath-type"), Some("netdev"));
        assert_eq!(get("ovn-ofctrl-wait-before-clear"), Some("1000"));
        let mut kernel = cfg();
        kernel.userspace_datapath = false;
        kernel.gateway = None;
        let ids = ovs_external_ids(&kernel, "x");
        assert!(!ids.contains_key("ovn-bridge-datapath-type"));
        assert!(!ids.contains_key("ovn-bridge-mappings"));
    }

    #[test]
    fn existing_system_id_wins() {
        let mut c = cfg();
        assert_eq!(choose_system_id(&c, None), "node1");
        c.system_id = Some("abc".into());
        assert_eq!(choose_system_id(&c, None), "abc");
        assert_eq!(choose_system_id(&c, Some("old")), "old");
        assert_eq!(choose_system_id(&c, Some("")), "abc");
    }

    #[test]
    fn annotations_round_trip_through_the_parsers() {
        let m = node_annotations(&cfg(), "node1", Some("0a:58:ac:1e:21:11")).unwrap();
        assert_eq!(parse_node_chassis_id(&m[NODE_CHASSIS_ID]).unwrap(), "node1");
        let ifa = parse_if_addrs(NODE_PRIMARY_IFADDR, &m[NODE_PRIMARY_IFADDR]).unwrap();
        assert_eq!(ifa.ipv4.unwrap().to_string(), "172.30.33.11/24");
        let l3 = parse_l3_gateway_config(&m[L3_GATEWAY_CONFIG]).unwrap();
        let L3GatewayConfig::Enabled(g) = &l3[DEFAULT_NETWORK] else {
            panic!("gateway disabled: {l3:?}");
        };
        assert_eq!(g.interface_id.as_deref(), Some("breth0_node1"));
        assert_eq!(g.mac_address.to_string(), "0a:58:ac:1e:21:11");
        assert_eq!(
            g.next_hops,
            vec!["172.30.33.100".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(g.mode, GatewayMode::Shared);
    }

    #[test]
    fn gateway_without_mac_is_an_error_and_none_is_disabled() {
        let e = node_annotations(&cfg(), "node1", None).unwrap_err();
        assert!(e.to_string().contains("breth0"), "{e}");
        let mut c = cfg();
        c.gateway = None;
        let m = node_annotations(&c, "node1", None).unwrap();
        let l3 = parse_l3_gateway_config(&m[L3_GATEWAY_CONFIG]).unwrap();
        assert_eq!(l3[DEFAULT_NETWORK], L3GatewayConfig::Disabled);
    }

    #[test]
    fn dedicated_router_address_gets_its_own_mac() {
        let mut c = cfg();
        if let Some(g) = c.gateway.as_mut() {
            g.router_address = Some("172.30.33.101/24".parse().unwrap());
        }
        // No bridge MAC needed: the router's MAC derives from its own address.
        let m = node_annotations(&c, "chassis-1", None).unwrap();
        let l3 = parse_l3_gateway_config(&m[L3_GATEWAY_CONFIG]).unwrap();
        let L3GatewayConfig::Enabled(g) = &l3[DEFAULT_NETWORK] else {
            panic!("gateway disabled");
        };
        assert_eq!(g.mac_address.to_string(), "0a:58:ac:1e:21:65");
        assert_eq!(g.ip_addresses, vec!["172.30.33.101/24".parse().unwrap()]);
    }
}
