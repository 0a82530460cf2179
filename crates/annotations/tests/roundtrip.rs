//! Property tests: whatever we render, we parse back to the same value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ovnk_annotations::*;
use proptest::prelude::*;

fn v4net() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 1u8..=32)
        .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap()))
}
fn v6net() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 1u8..=128)
        .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), p).unwrap()))
}

prop_compose! {
    fn pod_network()(v4 in proptest::option::of(v4net()), v6 in proptest::option::of(v6net()),
                     mac in any::<[u8; 6]>(), gw in any::<bool>(), tunnel in any::<u32>())
                     -> PodNetwork {
        let ip_addresses: Vec<IpNet> = v4.into_iter().chain(v6).collect();
        let gateway_ips: Vec<IpAddr> = if gw { ip_addresses.iter().map(|n| n.addr()).collect() } else { vec![] };
        let routes = ip_addresses.iter().map(|n| PodRoute { dest: n.trunc(), next_hop: Some(n.addr()) })
            .filter(|r| r.dest.prefix_len() > 0).collect();
        PodNetwork { ip_addresses, mac_address: MacAddr(mac), gateway_ips, routes, tunnel_id: tunnel,
                     role: Some(NetworkRole::Primary) }
    }
}

proptest! {
    #[test]
    fn pod_networks_round_trip(n in pod_network()) {
        let p = PodNetworks::with_default(n);
        prop_assert_eq!(parse_pod_networks(&render_pod_networks(&p)).unwrap(), p);
    }

    #[test]
    fn node_subnets_round_trip(v4 in proptest::option::of(v4net()), v6 in proptest::option::of(v6net())) {
        let nets: Vec<IpNet> = v4.into_iter().chain(v6).map(|n| n.trunc()).collect();
        prop_assume!(!nets.is_empty());
        let s = NodeSubnets::with_default(nets);
        prop_assert_eq!(parse_node_subnets(&render_node_subnets(&s)).unwrap(), s);
    }

    #[test]
    fn mac_text_round_trip(b in any::<[u8; 6]>()) {
        let m = MacAddr(b);
        prop_assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn v4_mac_embeds_address(a in any::<u32>()) {
        let ip = Ipv4Addr::from(a);
        let m = MacAddr::from_ip(IpAddr::V4(ip));
        prop_assert_eq!(&m.0[..2], &[0x0au8, 0x58][..]);
        prop_assert_eq!(&m.0[2..], &ip.octets()[..]);
    }

    #[test]
    fn garbage_never_panics(s in ".*") {
        let _ = parse_pod_networks(&s);
        let _ = parse_node_subnets(&s);
        let _ = parse_l3_gateway_config(&s);
        let _ = parse_gateway_router_lrp_ifaddrs(&s);
        let _ = parse_acl_logging(&s);
        let _ = parse_node_id(&s);
    }
}
