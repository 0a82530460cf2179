//! Desired state: pure functions from what the index knows to the NB rows one Kubernetes key
//! owns. No database, no cluster: every function here is unit-tested on plain values.
//!
//! Names follow OVN-Kubernetes (ARCHITECTURE.md, LAB-gateway.md); every function takes the
//! network as a parameter so secondary networks can reuse them (names get `<net>_`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam::Family;
use ipnet::IpNet;
use ovnk_annotations::{L3Gateway, MacAddr};
use ovsdb::Value;

use crate::config::Resolved;
use crate::rows::{
    hash_for_ovn, s, set, smap, DesiredRow, NetworkInfo, Owner, ParentLink, RowBuilder, RowKey,
    IP_FAMILY_KEY,
};

pub const LS: &str = "Logical_Switch";
pub const LSP: &str = "Logical_Switch_Port";
pub const LR: &str = "Logical_Router";
pub const LRP: &str = "Logical_Router_Port";
pub const ROUTE: &str = "Logical_Router_Static_Route";
pub const NAT: &str = "NAT";
pub const POLICY: &str = "Logical_Router_Policy";
pub const ADDRESS_SET: &str = "Address_Set";
pub const STATIC_MAC_BINDING: &str = "Static_MAC_Binding";

/// The tables the controller writes (and monitors).
pub const TABLES: &[&str] = &[
    LS,
    LSP,
    LR,
    LRP,
    ROUTE,
    NAT,
    POLICY,
    ADDRESS_SET,
    crate::services::LB,
    crate::services::LB_GROUP,
    PORT_GROUP,
    ACL,
    METER,
    METER_BAND,
    STATIC_MAC_BINDING,
];
pub const PORT_GROUP: &str = "Port_Group";
pub const ACL: &str = "ACL";
pub const METER: &str = "Meter";
pub const METER_BAND: &str = "Meter_Band";

/// Upstream's router policy priorities on `ovn_cluster_router`.
pub const NODE_SUBNET_POLICY_PRIORITY: i64 = 1004;
pub const DEFAULT_NO_REROUTE_PRIORITY: i64 = 101;
pub const JOIN_NO_REROUTE_PRIORITY: i64 = 102;

fn ip_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip4",
        Family::V6 => "ip6",
    }
}

/// A node as the desired-state functions need it: allocations already persisted in its
/// annotations, plus what the node agent reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub node_id: u32,
    /// Node subnets, one per family (network address / prefix).
    pub subnets: Vec<IpNet>,
    /// `rtoj-GR_<node>` addresses, one per family.
    pub join_ips: Vec<IpNet>,
    /// `k8s.ovn.org/node-chassis-id`; the gateway router waits for it.
    pub chassis_id: Option<String>,
    /// `k8s.ovn.org/l3-gateway-config` when enabled.
    pub gateway: Option<L3Gateway>,
}

/// A pod with its addresses (from `k8s.ovn.org/pod-networks`).
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// address/prefix, one per family.
    pub ips: Vec<IpNet>,
    pub mac: MacAddr,
}

fn fam(n: &IpNet) -> Family {
    Family::of_net(n)
}

fn family_label(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn default_route(f: Family) -> &'static str {
    match f {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    }
}

/// Address `n` of a subnet (1 = gateway, 2 = management port) with the subnet's prefix.
pub fn nth_addr(subnet: &IpNet, n: u32) -> IpNet {
    let base = subnet.network();
    let addr = match base {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(n)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(u128::from(n))).into()),
    };
    IpNet::new(addr, subnet.prefix_len()).unwrap_or(*subnet)
}

fn host_route(ip: IpAddr) -> String {
    IpNet::from(ip).to_string()
}

fn mac_of(nets: &[IpNet]) -> Option<MacAddr> {
    nets.first().map(|n| MacAddr::from_ip(n.addr()))
}

// ------------------------------------------------------------------ names and keys

pub fn cluster_router_name(net: &NetworkInfo) -> String {
    format!("{}ovn_cluster_router", net.prefix())
}
pub fn join_switch_name(net: &NetworkInfo) -> String {
    format!("{}join", net.prefix())
}
pub fn node_switch_name(net: &NetworkInfo, node: &str) -> String {
    format!("{}{node}", net.prefix())
}
pub fn gateway_router_name(net: &NetworkInfo, node: &str) -> String {
    format!("{}GR_{node}", net.prefix())
}
pub fn ext_switch_name(net: &NetworkInfo, node: &str) -> String {
    format!("{}ext_{node}", net.prefix())
}
pub fn pod_port_name(net: &NetworkInfo, namespace: &str, pod: &str) -> String {
    format!("{}{namespace}_{pod}", net.prefix())
}

pub fn cluster_router_key(net: &NetworkInfo) -> RowKey {
    RowKey {
        table: LR,
        id: RowBuilder::new(net, Owner::cluster()).id("cluster-router"),
    }
}
pub fn join_switch_key(net: &NetworkInfo) -> RowKey {
    RowKey {
        table: LS,
        id: RowBuilder::new(net, Owner::cluster()).id("join-switch"),
    }
}
pub fn node_switch_key(net: &NetworkInfo, node: &str) -> RowKey {
    RowKey {
        table: LS,
        id: RowBuilder::new(net, Owner::node(node)).id("switch"),
    }
}

/// A router port `<lrp>-<peer>` on `router` and the switch port `<lsp>-<peer>` patched to
/// it (`type=router`, `addresses=router`) on `switch`; nothing while `nets` is empty.
fn router_patch(
    b: &RowBuilder,
    (lrp, lsp): (&str, &str),
    peer: &str,
    nets: &[IpNet],
    router: &RowKey,
    switch: &RowKey,
) -> Vec<DesiredRow> {
    let Some(mac) = mac_of(nets) else {
        return Vec::new();
    };
    let lrp_name = format!("{lrp}-{peer}");
    vec![
        b.row(
            LRP,
            lrp,
            vec![
                ("name", s(&lrp_name)),
                ("mac", s(mac.to_string())),
                ("networks", set(nets.iter().map(|n| n.to_string()))),
            ],
            link(router, "ports"),
        ),
        b.row(
            LSP,
            lsp,
            vec![
                ("name", s(format!("{lsp}-{peer}"))),
                ("type", s("router")),
                ("addresses", set(["router"])),
                ("options", smap(&[("router-port", &lrp_name)])),
            ],
            link(switch, "ports"),
        ),
    ]
}

/// `Static_MAC_Binding` has no `external_ids`: its identity is (logical_port, ip), and
/// [`crate::rows::owner_of`] reads the node back from the GR port's name.
fn gr_join_mac_binding(
    b: &RowBuilder,
    gr: &str,
    ip: IpAddr,
    mac: MacAddr,
    label: &str,
) -> DesiredRow {
    let mut columns = ovsdb::Row::new();
    columns.insert("logical_port".into(), s(format!("rtoj-{gr}")));
    columns.insert("ip".into(), s(ip.to_string()));
    columns.insert("mac".into(), s(mac.to_string()));
    columns.insert(
        "override_dynamic_mac".into(),
        Value::Atom(ovsdb::Atom::Boolean(true)),
    );
    DesiredRow {
        key: RowKey {
            table: STATIC_MAC_BINDING,
            id: b.id(&crate::rows::gr_join_mac_role(label)),
        },
        columns,
        parent: None,
        also_in: Vec::new(),
        refs: Vec::new(),
    }
}

fn link(parent: &RowKey, column: &'static str) -> Option<ParentLink> {
    Some(ParentLink {
        parent: parent.clone(),
        column,
    })
}

// ------------------------------------------------------------------ cluster

/// `ovn_cluster_router`, the `join` switch and the router's join port.
pub fn cluster_rows(net: &NetworkInfo, cfg: &Resolved) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::cluster());
    let cr = cluster_router_name(net);
    let join = join_switch_name(net);
    let cr_key = cluster_router_key(net);
    let join_key = join_switch_key(net);
    let join_ips = cfg.join.cluster_router_ips();
    let mut rows = vec![
        b.row(
            LR,
            "cluster-router",
            vec![
                ("name", s(&cr)),
                ("external_ids", smap(&[("k8s-cluster-router", "yes")])),
            ],
            None,
        ),
        b.row(LS, "join-switch", vec![("name", s(&join))], None),
        crate::services::cluster_lb_group_row(net),
    ];
    rows.extend(crate::policy::meter_rows(net));
    // Pod-to-pod and pod-to-join traffic is routed normally, never rerouted by the
    // lower-priority policies (upstream's 101/102 "no reroute" policies).
    for f in &cfg.families {
        let ip = ip_kw(*f);
        let label = family_label(*f);
        for (i, cidr) in cfg.cluster_cidrs(*f).iter().enumerate() {
            rows.push(b.row(
                POLICY,
                &format!("no-reroute-pods-{label}-{i}"),
                vec![
                    ("priority", Value::from(DEFAULT_NO_REROUTE_PRIORITY)),
                    (
                        "match",
                        s(format!("{ip}.src == {cidr} && {ip}.dst == {cidr}")),
                    ),
                    ("action", s("allow")),
                ],
                link(&cr_key, "policies"),
            ));
            if let Some(j) = cfg.join.subnet(*f) {
                rows.push(b.row(
                    POLICY,
                    &format!("no-reroute-join-{label}-{i}"),
                    vec![
                        ("priority", Value::from(JOIN_NO_REROUTE_PRIORITY)),
                        ("match", s(format!("{ip}.src == {cidr} && {ip}.dst == {j}"))),
                        ("action", s("allow")),
                    ],
                    link(&cr_key, "policies"),
                ));
            }
        }
    }
    rows.extend(router_patch(
        &b,
        ("rtoj", "jtor"),
        &cr,
        &join_ips,
        &cr_key,
        &join_key,
    ));
    rows
}

// ------------------------------------------------------------------ node

/// Everything one node owns: its switch, router port, management port, gateway router,
/// external switch, routes and SNAT. The gateway part waits for the chassis id.
pub fn node_rows(net: &NetworkInfo, cfg: &Resolved, node: &NodeState) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::node(&node.name));
    let n = &node.name;
    let cr_key = cluster_router_key(net);
    let join_key = join_switch_key(net);
    let ls_key = node_switch_key(net, n);
    let ls_name = node_switch_name(net, n);
    let gws: Vec<IpNet> = node.subnets.iter().map(|s| nth_addr(s, 1)).collect();
    let mgmt: Vec<IpNet> = node.subnets.iter().map(|s| nth_addr(s, 2)).collect();
    let mut rows = Vec::new();

    // The node switch with the subnets for OVN's own IPAM-less bookkeeping.
    let mut other_config: Vec<(String, String)> = Vec::new();
    for sn in &node.subnets {
        match fam(sn) {
            Family::V4 => other_config.push(("subnet".into(), sn.to_string())),
            Family::V6 => other_config.push(("ipv6_prefix".into(), sn.network().to_string())),
        }
    }
    let oc: Vec<(&str, &str)> = other_config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let lb_group = crate::services::cluster_lb_group_key(net);
    rows.push(
        b.row(
            LS,
            "switch",
            vec![("name", s(&ls_name)), ("other_config", smap(&oc))],
            None,
        )
        .with_refs("load_balancer_group", vec![lb_group.clone()]),
    );
    let rtos = format!("rtos-{ls_name}");
    rows.extend(router_patch(
        &b,
        ("rtos", "stor"),
        &ls_name,
        &gws,
        &cr_key,
        &ls_key,
    ));
    if let Some(mac) = mac_of(&mgmt) {
        let mut addr = mac.to_string();
        for m in &mgmt {
            addr.push(' ');
            addr.push_str(&m.addr().to_string());
        }
        rows.push(b.row(
            LSP,
            "mgmt",
            vec![
                ("name", s(format!("{}k8s-{n}", net.prefix()))),
                ("addresses", set([addr.clone()])),
                ("port_security", set([addr])),
            ],
            link(&ls_key, "ports"),
        ));
    }

    // The node (kubelet probes) reaches its pods whatever their ingress policies.
    let mgmt_ips: Vec<IpAddr> = mgmt.iter().map(|m| m.addr()).collect();
    rows.extend(crate::policy::node_allow_row(&b, &ls_key, n, &mgmt_ips));

    // Pods reach their own node's IP through the management port (upstream 1004 policy).
    if let Some(gw) = &node.gateway {
        for ip in &gw.ip_addresses {
            let f = fam(ip);
            if let Some(m) = mgmt.iter().find(|m| fam(m) == f) {
                rows.push(b.row(
                    POLICY,
                    &format!("node-ip-{}", family_label(f)),
                    vec![
                        ("priority", Value::from(NODE_SUBNET_POLICY_PRIORITY)),
                        (
                            "match",
                            s(format!(
                                "inport == \"{rtos}\" && {}.dst == {} /* {n} */",
                                ip_kw(f),
                                ip.addr()
                            )),
                        ),
                        ("action", s("reroute")),
                        ("nexthops", set([m.addr().to_string()])),
                    ],
                    link(&cr_key, "policies"),
                ));
            }
        }
    }

    // Gateway router: only once ovn-controller on the node has a chassis to bind it to.
    let Some(chassis) = node.chassis_id.as_deref() else {
        return rows;
    };
    let gr = gateway_router_name(net, n);
    let gr_key = RowKey {
        table: LR,
        id: b.id("gateway-router"),
    };
    let mut gr_ext: Vec<(&str, String)> = Vec::new();
    if let Some(gw) = &node.gateway {
        if let Some(ip) = gw.ip_addresses.first() {
            gr_ext.push(("physical_ip", ip.addr().to_string()));
        }
        let all: Vec<String> = gw
            .ip_addresses
            .iter()
            .map(|i| i.addr().to_string())
            .collect();
        gr_ext.push(("physical_ips", all.join(",")));
    }
    let gr_ext_ref: Vec<(&str, &str)> = gr_ext.iter().map(|(k, v)| (*k, v.as_str())).collect();
    rows.push(
        b.row(
            LR,
            "gateway-router",
            vec![
                ("name", s(&gr)),
                (
                    "options",
                    smap(&[
                        ("chassis", chassis),
                        ("lb_force_snat_ip", "router_ip"),
                        ("always_learn_from_arp_request", "false"),
                        ("dynamic_neigh_routers", "true"),
                    ]),
                ),
                ("external_ids", smap(&gr_ext_ref)),
            ],
            None,
        )
        .with_refs("load_balancer_group", vec![lb_group]),
    );
    rows.extend(router_patch(
        &b,
        ("rtoj", "jtor"),
        &gr,
        &node.join_ips,
        &gr_key,
        &join_key,
    ));
    let cr_join: Vec<IpNet> = cfg.join.cluster_router_ips();
    for j in &node.join_ips {
        let f = fam(j);
        let label = family_label(f);
        // Cluster router → this GR: the /32 (/128) route answers traffic sent to the GR's
        // join address via the right GR (LAB-gateway.md pitfall A).
        rows.push(b.row(
            ROUTE,
            &format!("cr-join-host-{label}"),
            vec![
                ("ip_prefix", s(host_route(j.addr()))),
                ("nexthop", s(j.addr().to_string())),
            ],
            link(&cr_key, "static_routes"),
        ));
        // Pods of this node leave the cluster through this node's GR.
        for sn in node.subnets.iter().filter(|sn| fam(sn) == f) {
            rows.push(b.row(
                ROUTE,
                &format!("cr-src-{label}"),
                vec![
                    ("ip_prefix", s(sn.to_string())),
                    ("nexthop", s(j.addr().to_string())),
                    ("policy", Value::set(["src-ip"])),
                ],
                link(&cr_key, "static_routes"),
            ));
        }
        // GR → cluster networks via the cluster router's join address.
        if let Some(crj) = cr_join.iter().find(|c| fam(c) == f) {
            // The GR resolves its neighbour routers dynamically (dynamic_neigh_routers),
            // and the first packet that needs the cluster router's MAC is buffered while
            // it ARPs and then re-injected without its conntrack state: a NodePort
            // connection loses its force-SNAT mark and is answered around the GR, so the
            // first connection through a new GR fails. The one neighbour the GR always
            // needs is therefore bound statically.
            if let Some(mac) = mac_of(&cr_join) {
                rows.push(gr_join_mac_binding(&b, &gr, crj.addr(), mac, label));
            }
            for (i, cidr) in cfg.cluster_cidrs(f).iter().enumerate() {
                rows.push(b.row(
                    ROUTE,
                    &format!("gr-cluster-{label}-{i}"),
                    vec![
                        ("ip_prefix", s(cidr.to_string())),
                        ("nexthop", s(crj.addr().to_string())),
                    ],
                    link(&gr_key, "static_routes"),
                ));
            }
        }
    }

    // External side: ext_<node> with the localnet port, the GR's external port, default
    // routes and SNAT of the cluster networks to the node IP.
    let Some(gw) = node.gateway.as_ref() else {
        return rows;
    };
    let ext = ext_switch_name(net, n);
    let ext_key = RowKey {
        table: LS,
        id: b.id("ext-switch"),
    };
    let rtoe = format!("rtoe-{gr}");
    rows.push(b.row(LS, "ext-switch", vec![("name", s(&ext))], None));
    let bridge = gw.bridge_id.clone().unwrap_or_else(|| "breth0".into());
    let localnet = gw
        .interface_id
        .clone()
        .unwrap_or_else(|| format!("{bridge}_{n}"));
    let mut localnet_cols = vec![
        ("name", s(localnet)),
        ("type", s("localnet")),
        ("addresses", set(["unknown"])),
        (
            "options",
            smap(&[("network_name", cfg.physical_network.as_str())]),
        ),
    ];
    if let Some(vlan) = gw.vlan_id.filter(|v| *v > 0) {
        localnet_cols.push(("tag_request", Value::set([i64::from(vlan)])));
    }
    rows.push(b.row(LSP, "localnet", localnet_cols, link(&ext_key, "ports")));
    rows.push(b.row(
        LRP,
        "rtoe",
        vec![
            ("name", s(&rtoe)),
            ("mac", s(gw.mac_address.to_string())),
            (
                "networks",
                set(gw.ip_addresses.iter().map(|n| n.to_string())),
            ),
        ],
        link(&gr_key, "ports"),
    ));
    rows.push(b.row(
        LSP,
        "etor",
        vec![
            ("name", s(format!("etor-{gr}"))),
            ("type", s("router")),
            ("addresses", set([gw.mac_address.to_string()])),
            (
                "options",
                smap(&[("router-port", &rtoe), ("nat-addresses", "router")]),
            ),
        ],
        link(&ext_key, "ports"),
    ));
    for nh in &gw.next_hops {
        let f = Family::of(nh);
        rows.push(b.row(
            ROUTE,
            &format!("gr-default-{}", family_label(f)),
            vec![
                ("ip_prefix", s(default_route(f))),
                ("nexthop", s(nh.to_string())),
                ("output_port", Value::set([rtoe.as_str()])),
            ],
            link(&gr_key, "static_routes"),
        ));
    }
    for ip in &gw.ip_addresses {
        let f = fam(ip);
        for (i, cidr) in cfg.cluster_cidrs(f).iter().enumerate() {
            rows.push(b.row(
                NAT,
                &format!("snat-{}-{i}", family_label(f)),
                vec![
                    ("type", s("snat")),
                    ("external_ip", s(ip.addr().to_string())),
                    ("logical_ip", s(cidr.to_string())),
                ],
                link(&gr_key, "nat"),
            ));
        }
    }
    rows
}

// ------------------------------------------------------------------ pod

/// The pod's logical switch port on its node's switch.
pub fn pod_rows(net: &NetworkInfo, pod: &PodState) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::pod(&pod.namespace, &pod.name));
    let mut addr = pod.mac.to_string();
    for ip in &pod.ips {
        addr.push(' ');
        addr.push_str(&ip.addr().to_string());
    }
    vec![b.row(
        LSP,
        "port",
        vec![
            ("name", s(pod_port_name(net, &pod.namespace, &pod.name))),
            ("addresses", set([addr.clone()])),
            ("port_security", set([addr])),
            (
                "options",
                smap(&[
                    ("requested-chassis", pod.node.as_str()),
                    ("iface-id-ver", pod.uid.as_str()),
                ]),
            ),
            (
                "external_ids",
                smap(&[("namespace", pod.namespace.as_str()), ("pod", "true")]),
            ),
        ],
        link(&node_switch_key(net, &pod.node), "ports"),
    )]
}

// ------------------------------------------------------------------ namespace

/// Upstream's address set name for a namespace and family: `a<fnv64a(id)>` where id is
/// `<controller>:Namespace:<namespace>:<v4|v6>` (dbobjects `AddressSetNamespace`).
pub fn namespace_address_set_name(net: &NetworkInfo, namespace: &str, f: Family) -> String {
    hash_for_ovn(&RowBuilder::new(net, Owner::namespace(namespace)).id(family_label(f)))
}

/// One address set per configured family holding the namespace's pod IPs.
pub fn namespace_rows<'a>(
    net: &NetworkInfo,
    cfg: &Resolved,
    namespace: &str,
    pod_ips: impl IntoIterator<Item = &'a IpAddr>,
) -> Vec<DesiredRow> {
    let b = RowBuilder::new(net, Owner::namespace(namespace));
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for ip in pod_ips {
        match ip {
            IpAddr::V4(_) => v4.insert(ip.to_string()),
            IpAddr::V6(_) => v6.insert(ip.to_string()),
        };
    }
    cfg.families
        .iter()
        .map(|f| {
            let label = family_label(*f);
            let ips = match f {
                Family::V4 => &v4,
                Family::V6 => &v6,
            };
            b.row(
                ADDRESS_SET,
                label,
                vec![
                    ("name", s(namespace_address_set_name(net, namespace, *f))),
                    ("addresses", set(ips.iter().cloned())),
                    ("external_ids", smap(&[(IP_FAMILY_KEY, label)])),
                ],
                None,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;
    use crate::rows::{owner_of, PRIMARY_ID_KEY};
    use ovnk_annotations::GatewayMode;

    fn cfg(subnets: &[&str]) -> Resolved {
        ControllerConfig::with_cluster_subnets(subnets)
            .resolve()
            .unwrap()
    }

    fn col<'a>(rows: &'a [DesiredRow], name: &str, column: &str) -> &'a Value {
        let r = rows
            .iter()
            .find(|r| r.columns.get("name").and_then(|v| v.as_str()) == Some(name))
            .unwrap_or_else(|| panic!("no row named {name}"));
        r.columns.get(column).unwrap()
    }

    fn node(chassis: bool, gateway: bool) -> NodeState {
        NodeState {
            name: "node1".into(),
            node_id: 2,
            subnets: vec!["10.244.1.0/24".parse().unwrap()],
            join_ips: vec!["100.64.0.2/16".parse().unwrap()],
            chassis_id: chassis.then(|| "chassis-1".to_string()),
            gateway: gateway.then(|| L3Gateway {
                mode: GatewayMode::Shared,
                bridge_id: Some("breth0".into()),
                interface_id: Some("breth0_node1".into()),
                mac_address: "0a:00:00:00:00:01".parse().unwrap(),
                ip_addresses: vec!["172.30.33.11/24".parse().unwrap()],
                next_hops: vec!["172.30.33.100".parse().unwrap()],
                node_port_enable: true,
                vlan_id: None,
                egress_gw: None,
            }),
        }
    }

    #[test]
    fn cluster_topology_names() {
        let rows = cluster_rows(&NetworkInfo::default_network(), &cfg(&["10.244.0.0/16/24"]));
        assert_eq!(
            col(&rows, "rtoj-ovn_cluster_router", "networks"),
            &set(["100.64.0.1/16"])
        );
        assert_eq!(
            col(&rows, "rtoj-ovn_cluster_router", "mac"),
            &s("0a:58:64:40:00:01")
        );
        assert_eq!(
            col(&rows, "jtor-ovn_cluster_router", "options"),
            &smap(&[("router-port", "rtoj-ovn_cluster_router")])
        );
        let matches: Vec<&Value> = rows
            .iter()
            .filter(|r| r.key.table == POLICY)
            .map(|r| &r.columns["match"])
            .collect();
        assert_eq!(
            matches,
            vec![
                &s("ip4.src == 10.244.0.0/16 && ip4.dst == 10.244.0.0/16"),
                &s("ip4.src == 10.244.0.0/16 && ip4.dst == 100.64.0.0/16"),
            ]
        );
    }

    #[test]
    fn node_without_chassis_has_no_gateway_router() {
        let net = NetworkInfo::default_network();
        let rows = node_rows(&net, &cfg(&["10.244.0.0/16/24"]), &node(false, true));
        let names: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.columns.get("name").and_then(|v| v.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                "node1",
                "rtos-node1",
                "stor-node1",
                "k8s-node1",
                "node1_allowFromNode"
            ]
        );
        assert_eq!(
            col(&rows, "rtos-node1", "networks"),
            &set(["10.244.1.1/24"])
        );
        assert_eq!(
            col(&rows, "k8s-node1", "addresses"),
            &set(["0a:58:0a:f4:01:02 10.244.1.2"])
        );
        assert_eq!(
            col(&rows, "node1", "other_config"),
            &smap(&[("subnet", "10.244.1.0/24")])
        );
    }

    #[test]
    fn node_with_gateway_has_routes_and_snat() {
        let net = NetworkInfo::default_network();
        let rows = node_rows(&net, &cfg(&["10.244.0.0/16/24"]), &node(true, true));
        assert_eq!(
            col(&rows, "GR_node1", "options").map_get("chassis"),
            Some(&"chassis-1".into())
        );
        let routes: Vec<(String, String, bool)> = rows
            .iter()
            .filter(|r| r.key.table == ROUTE)
            .map(|r| {
                (
                    r.columns["ip_prefix"].as_str().unwrap().to_string(),
                    r.columns["nexthop"].as_str().unwrap().to_string(),
                    r.columns.contains_key("policy"),
                )
            })
            .collect();
        for want in [
            ("100.64.0.2/32", "100.64.0.2", false),
            ("10.244.1.0/24", "100.64.0.2", true),
            ("10.244.0.0/16", "100.64.0.1", false),
            ("0.0.0.0/0", "172.30.33.100", false),
        ] {
            assert!(
                routes.contains(&(want.0.into(), want.1.into(), want.2)),
                "missing route {want:?} in {routes:?}"
            );
        }
        let pol = rows.iter().find(|r| r.key.table == POLICY).unwrap();
        assert_eq!(
            pol.columns["match"],
            s("inport == \"rtos-node1\" && ip4.dst == 172.30.33.11 /* node1 */")
        );
        assert_eq!(pol.columns["nexthops"], set(["10.244.1.2"]));
        let nat = rows.iter().find(|r| r.key.table == NAT).unwrap();
        assert_eq!(nat.columns["external_ip"], s("172.30.33.11"));
        assert_eq!(nat.columns["logical_ip"], s("10.244.0.0/16"));
        assert_eq!(
            nat.parent.as_ref().unwrap().parent.id,
            "default-network-controller:Node:node1:gateway-router"
        );
        // Every row is owned by the node and ids are unique.
        let mut ids = BTreeSet::new();
        for r in &rows {
            let (o, id) = owner_of(&r.columns, "default-network-controller").unwrap();
            assert_eq!(o, Owner::node("node1"));
            assert!(ids.insert((r.key.table, id)), "duplicate id {:?}", r.key);
        }
    }

    #[test]
    fn dual_stack_node_and_pod() {
        let net = NetworkInfo::default_network();
        let c = cfg(&["10.244.0.0/16/24", "fd00:10:244::/48/64"]);
        let mut n = node(true, false);
        n.subnets.push("fd00:10:244:1::/64".parse().unwrap());
        n.join_ips.push("fd98::2/64".parse().unwrap());
        let rows = node_rows(&net, &c, &n);
        assert_eq!(
            col(&rows, "rtos-node1", "networks"),
            &set(["10.244.1.1/24", "fd00:10:244:1::1/64"])
        );
        assert_eq!(
            col(&rows, "node1", "other_config"),
            &smap(&[
                ("subnet", "10.244.1.0/24"),
                ("ipv6_prefix", "fd00:10:244:1::")
            ])
        );
        assert!(rows
            .iter()
            .any(|r| r.columns.get("ip_prefix") == Some(&s("fd98::2/128"))));
        let pod = PodState {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
            node: "node1".into(),
            ips: vec![
                "10.244.1.3/24".parse().unwrap(),
                "fd00:10:244:1::3/64".parse().unwrap(),
            ],
            mac: MacAddr::from_ip("10.244.1.3".parse().unwrap()),
        };
        let p = pod_rows(&net, &pod);
        assert_eq!(
            p[0].columns["port_security"],
            set(["0a:58:0a:f4:01:03 10.244.1.3 fd00:10:244:1::3"])
        );
        assert_eq!(p[0].columns["name"], s("ns_p"));
        assert_eq!(
            p[0].parent.as_ref().unwrap().parent,
            node_switch_key(&net, "node1")
        );
        let ips: Vec<IpAddr> = pod.ips.iter().map(|n| n.addr()).collect();
        let sets = namespace_rows(&net, &c, "ns", &ips);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].columns["addresses"], set(["10.244.1.3"]));
        assert_eq!(sets[1].columns["addresses"], set(["fd00:10:244:1::3"]));
        assert_eq!(
            sets[0].columns["external_ids"].map_get(PRIMARY_ID_KEY),
            Some(&"default-network-controller:Namespace:ns:v4".into())
        );
        assert_eq!(
            sets[0].columns["name"],
            s(hash_for_ovn("default-network-controller:Namespace:ns:v4"))
        );
    }

    #[test]
    fn secondary_network_prefixes_names() {
        let net = NetworkInfo {
            name: "blue".into(),
        };
        let rows = cluster_rows(&net, &cfg(&["10.244.0.0/16/24"]));
        assert_eq!(rows[0].columns["name"], s("blue_ovn_cluster_router"));
        assert!(rows[0].key.id.starts_with("blue-network-controller:"));
    }
}
