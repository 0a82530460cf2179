//! Node annotations: subnets, id, chassis id, gateway router port addresses,
//! primary interface addresses and the L3 gateway configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    check_one_per_family, net_of_family, parse_cidr, parse_ip, parse_json, AnnotationError,
    IpFamily, MacAddr, DEFAULT_NETWORK, L3_GATEWAY_CONFIG, NODE_CHASSIS_ID,
    NODE_GATEWAY_ROUTER_LRP_IFADDRS, NODE_ID, NODE_SUBNETS,
};

/// Network name → value, the shape of every per-network node annotation.
pub type PerNetwork<T> = BTreeMap<String, T>;

// ---------------------------------------------------------------- node-subnets

/// `k8s.ovn.org/node-subnets`: the node's pod subnets, per network, at most
/// one per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSubnets(pub PerNetwork<Vec<IpNet>>);

impl NodeSubnets {
    pub fn with_default(subnets: Vec<IpNet>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(DEFAULT_NETWORK.to_string(), subnets);
        NodeSubnets(m)
    }
    pub fn default_network(&self) -> Option<&[IpNet]> {
        self.0.get(DEFAULT_NETWORK).map(Vec::as_slice)
    }
    /// The default network's subnet of `family`.
    pub fn subnet(&self, family: IpFamily) -> Option<IpNet> {
        self.default_network()
            .and_then(|s| net_of_family(s, family))
    }
    pub fn v4(&self) -> Option<IpNet> {
        self.subnet(IpFamily::V4)
    }
    pub fn v6(&self) -> Option<IpNet> {
        self.subnet(IpFamily::V6)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Parses `k8s.ovn.org/node-subnets`, accepting both the list form
/// `{"default":["10.244.1.0/24"]}` and the legacy `{"default":"10.244.1.0/24"}`.
/// Host bits are cleared, as upstream does.
pub fn parse_node_subnets(text: &str) -> Result<NodeSubnets, AnnotationError> {
    let raw: BTreeMap<String, OneOrMany> = parse_json(NODE_SUBNETS, text)?;
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let texts = match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if texts.is_empty() {
            return Err(AnnotationError::invalid(
                NODE_SUBNETS,
                name,
                "[]",
                "no subnet",
            ));
        }
        let subnets = texts
            .iter()
            .enumerate()
            .map(|(i, s)| parse_cidr(NODE_SUBNETS, &format!("{name}[{i}]"), s).map(|n| n.trunc()))
            .collect::<Result<Vec<_>, _>>()?;
        check_one_per_family(NODE_SUBNETS, &name, &subnets, IpFamily::of_net, |n| {
            n.to_string()
        })?;
        out.insert(name, subnets);
    }
    Ok(NodeSubnets(out))
}

/// Renders the list form, which every current OVN-Kubernetes reader accepts.
pub fn render_node_subnets(subnets: &NodeSubnets) -> String {
    let mut m = Map::new();
    for (name, nets) in &subnets.0 {
        let v: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        m.insert(name.clone(), json!(v));
    }
    Value::Object(m).to_string()
}

// ---------------------------------------------------------------- node-id

/// Parses `k8s.ovn.org/node-id`, a non-negative decimal integer such as `"3"`.
pub fn parse_node_id(text: &str) -> Result<u32, AnnotationError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AnnotationError::invalid(
            NODE_ID,
            "value",
            text,
            "expected a non-negative decimal integer",
        ));
    }
    text.parse::<u32>()
        .map_err(|e| AnnotationError::invalid(NODE_ID, "value", text, e.to_string()))
}

pub fn render_node_id(id: u32) -> String {
    id.to_string()
}

// ---------------------------------------------------------------- node-chassis-id

/// Parses `k8s.ovn.org/node-chassis-id`. It is the OVS `system-id`, normally a
/// UUID, but OVS accepts any string there, so only empty values and whitespace
/// (which would break OVSDB matching and log lines) are rejected.
pub fn parse_node_chassis_id(text: &str) -> Result<String, AnnotationError> {
    if text.is_empty() {
        return Err(AnnotationError::invalid(
            NODE_CHASSIS_ID,
            "value",
            text,
            "empty chassis id",
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AnnotationError::invalid(
            NODE_CHASSIS_ID,
            "value",
            text,
            "contains whitespace or control characters",
        ));
    }
    Ok(text.to_string())
}

pub fn render_node_chassis_id(id: &str) -> String {
    id.to_string()
}

// ---------------------------------------------------------------- ifaddrs

/// `{"ipv4":"100.64.0.2/16","ipv6":"fd98::2/64"}`: one interface address per
/// family (node-primary-ifaddr, the legacy node-gateway-router-lrp-ifaddr,
/// node-transit-switch-port-ifaddr, and each entry of
/// node-gateway-router-lrp-ifaddrs). At least one family is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfAddrs {
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
}

impl IfAddrs {
    pub fn get(&self, family: IpFamily) -> Option<IpNet> {
        match family {
            IpFamily::V4 => self.ipv4,
            IpFamily::V6 => self.ipv6,
        }
    }
    /// The set addresses, IPv4 first.
    pub fn all(&self) -> Vec<IpNet> {
        self.ipv4.into_iter().chain(self.ipv6).collect()
    }
}

#[derive(Deserialize)]
struct RawIfAddrs {
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
}

fn convert_if_addrs(
    annotation: &'static str,
    prefix: &str,
    raw: RawIfAddrs,
) -> Result<IfAddrs, AnnotationError> {
    let one = |field: &str,
               v: Option<String>,
               family: IpFamily|
     -> Result<Option<IpNet>, AnnotationError> {
        let Some(s) = v.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let name = format!("{prefix}{field}");
        let net = parse_cidr(annotation, &name, &s)?;
        if IpFamily::of_net(&net) != family {
            return Err(AnnotationError::invalid(
                annotation,
                name,
                s,
                format!("not an {family} address"),
            ));
        }
        Ok(Some(net))
    };
    let out = IfAddrs {
        ipv4: one("ipv4", raw.ipv4, IpFamily::V4)?,
        ipv6: one("ipv6", raw.ipv6, IpFamily::V6)?,
    };
    if out.ipv4.is_none() && out.ipv6.is_none() {
        let field = if prefix.is_empty() {
            "ipv4/ipv6".to_string()
        } else {
            format!("{prefix}ipv4/ipv6")
        };
        return Err(AnnotationError::missing(annotation, field));
    }
    Ok(out)
}

fn if_addrs_value(a: &IfAddrs) -> Value {
    let mut m = Map::new();
    if let Some(v4) = a.ipv4 {
        m.insert("ipv4".into(), json!(v4.to_string()));
    }
    if let Some(v6) = a.ipv6 {
        m.insert("ipv6".into(), json!(v6.to_string()));
    }
    Value::Object(m)
}

/// Parses an [`IfAddrs`] annotation; `annotation` is the key, used in errors
/// (e.g. [`crate::NODE_PRIMARY_IFADDR`]).
pub fn parse_if_addrs(annotation: &'static str, text: &str) -> Result<IfAddrs, AnnotationError> {
    let raw: RawIfAddrs = parse_json(annotation, text)?;
    convert_if_addrs(annotation, "", raw)
}

pub fn render_if_addrs(a: &IfAddrs) -> String {
    if_addrs_value(a).to_string()
}

/// Parses `k8s.ovn.org/node-gateway-router-lrp-ifaddrs`:
/// `{"default":{"ipv4":"100.64.0.2/16","ipv6":"fd98::2/64"}}`.
pub fn parse_gateway_router_lrp_ifaddrs(
    text: &str,
) -> Result<PerNetwork<IfAddrs>, AnnotationError> {
    let raw: BTreeMap<String, RawIfAddrs> = parse_json(NODE_GATEWAY_ROUTER_LRP_IFADDRS, text)?;
    raw.into_iter()
        .map(|(name, r)| {
            let a = convert_if_addrs(NODE_GATEWAY_ROUTER_LRP_IFADDRS, &format!("{name}."), r)?;
            Ok((name, a))
        })
        .collect()
}

pub fn render_gateway_router_lrp_ifaddrs(m: &PerNetwork<IfAddrs>) -> String {
    let obj: Map<String, Value> = m
        .iter()
        .map(|(k, v)| (k.clone(), if_addrs_value(v)))
        .collect();
    Value::Object(obj).to_string()
}

// ---------------------------------------------------------------- l3-gateway-config

/// Enabled gateway modes (upstream `config.GatewayMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMode {
    Shared,
    Local,
}

impl GatewayMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            GatewayMode::Shared => "shared",
            GatewayMode::Local => "local",
        }
    }
}

/// Secondary external gateway interface (`exgw-*` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressGateway {
    pub interface_id: String,
    pub mac_address: MacAddr,
    pub ip_addresses: Vec<IpNet>,
}

/// An enabled L3 gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Gateway {
    pub mode: GatewayMode,
    /// OVS bridge carrying the external traffic (e.g. `breth0`).
    pub bridge_id: Option<String>,
    /// `iface-id` of the bridge's patch port (e.g. `breth0_node1`).
    pub interface_id: Option<String>,
    pub mac_address: MacAddr,
    /// Node external addresses, at most one per family.
    pub ip_addresses: Vec<IpNet>,
    /// Default gateways on the external network.
    pub next_hops: Vec<IpAddr>,
    pub node_port_enable: bool,
    /// 0..=4095 (the NB `tag_request` bound).
    pub vlan_id: Option<u16>,
    pub egress_gw: Option<EgressGateway>,
}

impl L3Gateway {
    pub fn ip(&self, family: IpFamily) -> Option<IpNet> {
        net_of_family(&self.ip_addresses, family)
    }
    pub fn next_hop(&self, family: IpFamily) -> Option<IpAddr> {
        crate::addr_of_family(&self.next_hops, family)
    }
}

/// One network's entry of `k8s.ovn.org/l3-gateway-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L3GatewayConfig {
    /// `{"mode":""}`: no gateway on this node.
    Disabled,
    Enabled(L3Gateway),
}

#[derive(Deserialize)]
struct RawL3 {
    #[serde(default)]
    mode: Option<String>,
    #[serde(rename = "bridge-id", default)]
    bridge_id: Option<String>,
    #[serde(rename = "interface-id", default)]
    interface_id: Option<String>,
    #[serde(rename = "mac-address", default)]
    mac_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    ip_addresses: Option<Vec<String>>,
    #[serde(rename = "ip-address", default)]
    ip_address: Option<String>,
    #[serde(rename = "exgw-interface-id", default)]
    exgw_interface_id: Option<String>,
    #[serde(rename = "exgw-mac-address", default)]
    exgw_mac_address: Option<String>,
    #[serde(rename = "exgw-ip-addresses", default)]
    exgw_ip_addresses: Option<Vec<String>>,
    #[serde(rename = "exgw-ip-address", default)]
    exgw_ip_address: Option<String>,
    #[serde(rename = "next-hops", default)]
    next_hops: Option<Vec<String>>,
    #[serde(rename = "next-hop", default)]
    next_hop: Option<String>,
    #[serde(rename = "node-port-enable", default)]
    node_port_enable: Option<String>,
    #[serde(rename = "vlan-id", default)]
    vlan_id: Option<String>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn list_or_legacy(list: Option<Vec<String>>, legacy: Option<String>) -> Vec<String> {
    match list {
        Some(l) if !l.is_empty() => l,
        _ => nonempty(legacy).into_iter().collect(),
    }
}

fn parse_mac(field: &str, text: Option<String>) -> Result<MacAddr, AnnotationError> {
    let s = nonempty(text).ok_or_else(|| AnnotationError::missing(L3_GATEWAY_CONFIG, field))?;
    s.parse()
        .map_err(|e| AnnotationError::invalid(L3_GATEWAY_CONFIG, field, &s, format!("{e}")))
}

fn parse_cidrs(field: &str, texts: &[String]) -> Result<Vec<IpNet>, AnnotationError> {
    let nets = texts
        .iter()
        .enumerate()
        .map(|(i, s)| parse_cidr(L3_GATEWAY_CONFIG, &format!("{field}[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    check_one_per_family(L3_GATEWAY_CONFIG, field, &nets, IpFamily::of_net, |n| {
        n.to_string()
    })?;
    Ok(nets)
}

fn convert_l3(name: &str, r: RawL3) -> Result<L3GatewayConfig, AnnotationError> {
    const A: &str = L3_GATEWAY_CONFIG;
    let f = |field: &str| format!("{name}.{field}");
    let mode = match r.mode.as_deref().unwrap_or("") {
        "" | "disabled" => return Ok(L3GatewayConfig::Disabled),
        "shared" => GatewayMode::Shared,
        "local" => GatewayMode::Local,
        other => {
            return Err(AnnotationError::invalid(
                A,
                f("mode"),
                other,
                "expected shared, local or empty (disabled)",
            ))
        }
    };
    let mac_address = parse_mac(&f("mac-address"), r.mac_address)?;
    let ip_texts = list_or_legacy(r.ip_addresses, r.ip_address);
    if ip_texts.is_empty() {
        return Err(AnnotationError::missing(A, f("ip-addresses")));
    }
    let ip_addresses = parse_cidrs(&f("ip-addresses"), &ip_texts)?;
    let next_hops = list_or_legacy(r.next_hops, r.next_hop)
        .iter()
        .enumerate()
        .map(|(i, s)| parse_ip(A, &f(&format!("next-hops[{i}]")), s))
        .collect::<Result<Vec<_>, _>>()?;
    let node_port_enable = match r.node_port_enable.as_deref().unwrap_or("") {
        "true" => true,
        // Upstream treats anything but "true" as false; keep that but reject garbage.
        "" | "false" => false,
        other => {
            return Err(AnnotationError::invalid(
                A,
                f("node-port-enable"),
                other,
                "expected \"true\" or \"false\"",
            ))
        }
    };
    let vlan_id = match nonempty(r.vlan_id) {
        None => None,
        Some(s) => {
            let v: u16 = s.parse().map_err(|_| {
                AnnotationError::invalid(A, f("vlan-id"), &s, "expected an integer 0..=4095")
            })?;
            if v > 4095 {
                return Err(AnnotationError::invalid(
                    A,
                    f("vlan-id"),
                    &s,
                    "exceeds 4095",
                ));
            }
            Some(v)
        }
    };
    let egress_gw = match nonempty(r.exgw_interface_id) {
        None => None,
        Some(interface_id) => {
            let mac_address = parse_mac(&f("exgw-mac-address"), r.exgw_mac_address)?;
            let texts = list_or_legacy(r.exgw_ip_addresses, r.exgw_ip_address);
            if texts.is_empty() {
                return Err(AnnotationError::missing(A, f("exgw-ip-addresses")));
            }
            Some(EgressGateway {
                interface_id,
                mac_address,
                ip_addresses: parse_cidrs(&f("exgw-ip-addresses"), &texts)?,
            })
        }
    };
    Ok(L3GatewayConfig::Enabled(L3Gateway {
        mode,
        bridge_id: nonempty(r.bridge_id),
        interface_id: nonempty(r.interface_id),
        mac_address,
        ip_addresses,
        next_hops,
        node_port_enable,
        vlan_id,
        egress_gw,
    }))
}

/// Parses `k8s.ovn.org/l3-gateway-config` (all networks; legacy single
/// `ip-address` / `next-hop` fields are used when the lists are absent).
pub fn parse_l3_gateway_config(text: &str) -> Result<PerNetwork<L3GatewayConfig>, AnnotationError> {
    let raw: BTreeMap<String, RawL3> = parse_json(L3_GATEWAY_CONFIG, text)?;
    raw.into_iter()
        .map(|(name, r)| {
            let c = convert_l3(&name, r)?;
            Ok((name, c))
        })
        .collect()
}

fn put_list(m: &mut Map<String, Value>, list_key: &str, single_key: &str, items: Vec<String>) {
    if items.len() == 1 {
        m.insert(single_key.into(), json!(items[0]));
    }
    if !items.is_empty() {
        m.insert(list_key.into(), json!(items));
    }
}

/// Renders as upstream: legacy single fields when a list has one entry,
/// `node-port-enable` always as a string, disabled as `{"mode":""}`.
pub fn render_l3_gateway_config(m: &PerNetwork<L3GatewayConfig>) -> String {
    let mut top = Map::new();
    for (name, c) in m {
        let mut o = Map::new();
        match c {
            L3GatewayConfig::Disabled => {
                o.insert("mode".into(), json!(""));
            }
            L3GatewayConfig::Enabled(g) => {
                o.insert("mode".into(), json!(g.mode.as_str()));
                if let Some(b) = &g.bridge_id {
                    o.insert("bridge-id".into(), json!(b));
                }
                if let Some(i) = &g.interface_id {
                    o.insert("interface-id".into(), json!(i));
                }
                o.insert("mac-address".into(), json!(g.mac_address.to_string()));
                put_list(
                    &mut o,
                    "ip-addresses",
                    "ip-address",
                    g.ip_addresses.iter().map(|n| n.to_string()).collect(),
                );
                put_list(
                    &mut o,
                    "next-hops",
                    "next-hop",
                    g.next_hops.iter().map(|n| n.to_string()).collect(),
                );
                o.insert(
                    "node-port-enable".into(),
                    json!(if g.node_port_enable { "true" } else { "false" }),
                );
                if let Some(v) = g.vlan_id {
                    o.insert("vlan-id".into(), json!(v.to_string()));
                }
                if let Some(e) = &g.egress_gw {
                    o.insert("exgw-interface-id".into(), json!(e.interface_id));
                    o.insert("exgw-mac-address".into(), json!(e.mac_address.to_string()));
                    put_list(
                        &mut o,
                        "exgw-ip-addresses",
                        "exgw-ip-address",
                        e.ip_addresses.iter().map(|n| n.to_string()).collect(),
                    );
                }
            }
        }
        top.insert(name.clone(), Value::Object(o));
    }
    Value::Object(top).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NODE_PRIMARY_IFADDR;

    #[test]
    fn node_subnets_list_and_legacy() {
        let s =
            parse_node_subnets(r#"{"default":["10.244.1.0/24","fd00:10:244:2::/64"]}"#).unwrap();
        assert_eq!(s.v4().unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(s.v6().unwrap().to_string(), "fd00:10:244:2::/64");
        assert_eq!(parse_node_subnets(&render_node_subnets(&s)).unwrap(), s);

        let legacy = parse_node_subnets(r#"{"default":"10.244.1.0/24"}"#).unwrap();
        assert_eq!(legacy.default_network().unwrap().len(), 1);
        assert_eq!(
            render_node_subnets(&legacy),
            r#"{"default":["10.244.1.0/24"]}"#
        );
        assert!(legacy.v6().is_none());
    }

    #[test]
    fn node_subnets_errors() {
        let e = parse_node_subnets(r#"{"default":["10.244.1.0/33"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(NODE_SUBNETS) && e.contains("default[0]"), "{e}");
        let e = parse_node_subnets(r#"{"default":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no subnet"), "{e}");
        let e = parse_node_subnets(r#"{"default":["10.244.1.0/24","10.244.2.0/24"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one IPv4"), "{e}");
        let e = parse_node_subnets(r#"{"default":5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed JSON"), "{e}");
    }

    #[test]
    fn node_id_and_chassis() {
        assert_eq!(parse_node_id("3").unwrap(), 3);
        assert_eq!(render_node_id(3), "3");
        for bad in ["", "-1", "x", " 3", "99999999999"] {
            let e = parse_node_id(bad).unwrap_err();
            assert_eq!(e.annotation(), NODE_ID, "{bad}");
        }
        let id = "b1f96182-2bdd-42b6-88f9-9a1fc1c85ece";
        assert_eq!(parse_node_chassis_id(id).unwrap(), id);
        assert!(parse_node_chassis_id("").is_err());
        assert!(parse_node_chassis_id("a b").is_err());
    }

    #[test]
    fn if_addrs_forms() {
        let a = parse_if_addrs(NODE_PRIMARY_IFADDR, r#"{"ipv4":"172.30.33.11/24"}"#).unwrap();
        assert_eq!(a.ipv4.unwrap().to_string(), "172.30.33.11/24");
        assert_eq!(a.ipv6, None);
        assert_eq!(render_if_addrs(&a), r#"{"ipv4":"172.30.33.11/24"}"#);
        let e = parse_if_addrs(NODE_PRIMARY_IFADDR, r#"{"ipv4":"fd00::1/64"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IPv4"), "{e}");
        let e = parse_if_addrs(NODE_PRIMARY_IFADDR, "{}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ipv4/ipv6 is missing") && e.contains(NODE_PRIMARY_IFADDR),
            "{e}"
        );

        let m = parse_gateway_router_lrp_ifaddrs(
            r#"{"default":{"ipv4":"100.64.0.2/16","ipv6":"fd98::2/64"}}"#,
        )
        .unwrap();
        let d = &m[DEFAULT_NETWORK];
        assert_eq!(d.get(IpFamily::V6).unwrap().to_string(), "fd98::2/64");
        assert_eq!(d.all().len(), 2);
        assert_eq!(
            parse_gateway_router_lrp_ifaddrs(&render_gateway_router_lrp_ifaddrs(&m)).unwrap(),
            m
        );
        let e = parse_gateway_router_lrp_ifaddrs(r#"{"default":{"ipv4":"100.64.0.2"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("default.ipv4") && e.contains("bad CIDR"), "{e}");
    }

    #[test]
    fn l3_gateway_round_trip() {
        let text = r#"{"default":{"mode":"shared","interface-id":"breth0_node1","mac-address":"f2:20:a0:3c:26:4c",
            "ip-addresses":["172.30.33.11/24"],"ip-address":"172.30.33.11/24","next-hops":["172.30.33.1"],
            "next-hop":"172.30.33.1","node-port-enable":"true","vlan-id":"0","bridge-id":"breth0"}}"#;
        let m = parse_l3_gateway_config(text).unwrap();
        let L3GatewayConfig::Enabled(g) = &m[DEFAULT_NETWORK] else {
            panic!("disabled")
        };
        assert_eq!(g.mode, GatewayMode::Shared);
        assert_eq!(g.interface_id.as_deref(), Some("breth0_node1"));
        assert_eq!(g.ip(IpFamily::V4).unwrap().to_string(), "172.30.33.11/24");
        assert_eq!(g.next_hop(IpFamily::V4).unwrap().to_string(), "172.30.33.1");
        assert!(g.node_port_enable);
        assert_eq!(g.vlan_id, Some(0));
        let rendered = render_l3_gateway_config(&m);
        assert!(
            rendered.contains(r#""ip-address":"172.30.33.11/24""#),
            "{rendered}"
        );
        assert!(
            rendered.contains(r#""node-port-enable":"true""#),
            "{rendered}"
        );
        assert_eq!(parse_l3_gateway_config(&rendered).unwrap(), m);

        let legacy = parse_l3_gateway_config(
            r#"{"default":{"mode":"local","mac-address":"f2:20:a0:3c:26:4c","ip-address":"169.254.33.2/24","next-hop":"169.254.33.1"}}"#,
        )
        .unwrap();
        let L3GatewayConfig::Enabled(g) = &legacy[DEFAULT_NETWORK] else {
            panic!("disabled")
        };
        assert_eq!(g.mode, GatewayMode::Local);
        assert_eq!(g.next_hops.len(), 1);
        assert!(!g.node_port_enable);

        let disabled = parse_l3_gateway_config(r#"{"default":{"mode":""}}"#).unwrap();
        assert_eq!(disabled[DEFAULT_NETWORK], L3GatewayConfig::Disabled);
        assert_eq!(
            render_l3_gateway_config(&disabled),
            r#"{"default":{"mode":""}}"#
        );
    }

    #[test]
    fn l3_gateway_errors() {
        let cases = [
            (r#"{"default":{"mode":"fast"}}"#, "default.mode"),
            (
                r#"{"default":{"mode":"shared","ip-addresses":["1.2.3.4/24"]}}"#,
                "default.mac-address is missing",
            ),
            (
                r#"{"default":{"mode":"shared","mac-address":"f2:20:a0:3c:26:4c"}}"#,
                "default.ip-addresses is missing",
            ),
            (
                r#"{"default":{"mode":"shared","mac-address":"f2:20:a0:3c:26","ip-addresses":["1.2.3.4/24"]}}"#,
                "default.mac-address",
            ),
            (
                r#"{"default":{"mode":"shared","mac-address":"f2:20:a0:3c:26:4c","ip-addresses":["1.2.3.4/24"],"vlan-id":"4096"}}"#,
                "exceeds 4095",
            ),
            (
                r#"{"default":{"mode":"shared","mac-address":"f2:20:a0:3c:26:4c","ip-addresses":["1.2.3.4/24"],"next-hops":["x"]}}"#,
                "default.next-hops[0]",
            ),
            (
                r#"{"default":{"mode":"shared","mac-address":"f2:20:a0:3c:26:4c","ip-addresses":["1.2.3.4/24"],"node-port-enable":"yes"}}"#,
                "node-port-enable",
            ),
        ];
        for (text, want) in cases {
            let e = parse_l3_gateway_config(text).unwrap_err();
            assert_eq!(e.annotation(), L3_GATEWAY_CONFIG);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }
}
