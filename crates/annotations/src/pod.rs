//! `k8s.ovn.org/pod-networks`: the pod's addresses per network, written by the
//! controller and read by the node agent when it wires the pod.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    addr_of_family, check_one_per_family, net_of_family, parse_cidr, parse_ip, parse_json,
    AnnotationError, IpFamily, MacAddr, DEFAULT_NETWORK, POD_NETWORKS,
};

/// What a network is to the pod (upstream `PodAnnotation.Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRole {
    Primary,
    Secondary,
    /// The default network when a user-defined network is primary: probes only.
    InfrastructureLocked,
}

impl NetworkRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            NetworkRole::Primary => "primary",
            NetworkRole::Secondary => "secondary",
            NetworkRole::InfrastructureLocked => "infrastructure-locked",
        }
    }
}

/// A route to install in the pod besides the default route via the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    /// Destination network (host bits cleared, never a default route).
    pub dest: IpNet,
    /// Next hop, same family as `dest`; `None` means on-link.
    pub next_hop: Option<IpAddr>,
}

/// The pod's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// Address/prefix, at most one per family.
    pub ip_addresses: Vec<IpNet>,
    pub mac_address: MacAddr,
    /// Default gateways, at most one per family (may be fewer than addresses).
    pub gateway_ips: Vec<IpAddr>,
    pub routes: Vec<PodRoute>,
    /// Layer-2 secondary networks only; 0 means unset.
    pub tunnel_id: u32,
    pub role: Option<NetworkRole>,
}

impl PodNetwork {
    pub fn ip(&self, family: IpFamily) -> Option<IpNet> {
        net_of_family(&self.ip_addresses, family)
    }
    pub fn v4(&self) -> Option<IpNet> {
        self.ip(IpFamily::V4)
    }
    pub fn v6(&self) -> Option<IpNet> {
        self.ip(IpFamily::V6)
    }
    pub fn gateway(&self, family: IpFamily) -> Option<IpAddr> {
        addr_of_family(&self.gateway_ips, family)
    }
    pub fn is_dual_stack(&self) -> bool {
        self.v4().is_some() && self.v6().is_some()
    }
}

/// The whole annotation: network name (`"default"` or `namespace/nad`) → attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworks(pub BTreeMap<String, PodNetwork>);

impl PodNetworks {
    pub fn default_network(&self) -> Option<&PodNetwork> {
        self.0.get(DEFAULT_NETWORK)
    }
    pub fn with_default(net: PodNetwork) -> Self {
        let mut m = BTreeMap::new();
        m.insert(DEFAULT_NETWORK.to_string(), net);
        PodNetworks(m)
    }
}

#[derive(Deserialize)]
struct RawRoute {
    dest: Option<String>,
    #[serde(rename = "nextHop", default)]
    next_hop: Option<String>,
}

#[derive(Deserialize)]
struct RawPodNetwork {
    #[serde(default)]
    ip_addresses: Option<Vec<String>>,
    #[serde(default)]
    mac_address: Option<String>,
    #[serde(default)]
    gateway_ips: Option<Vec<String>>,
    #[serde(default)]
    routes: Option<Vec<RawRoute>>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    gateway_ip: Option<String>,
    #[serde(default)]
    tunnel_id: Option<u32>,
    #[serde(default)]
    role: Option<String>,
}

/// Parses `k8s.ovn.org/pod-networks`, including the legacy single
/// `ip_address` / `gateway_ip` fields (used when the lists are absent; a
/// conflict between the two forms is an error, as upstream).
pub fn parse_pod_networks(text: &str) -> Result<PodNetworks, AnnotationError> {
    let raw: BTreeMap<String, RawPodNetwork> = parse_json(POD_NETWORKS, text)?;
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        let net = convert(&name, r)?;
        out.insert(name, net);
    }
    Ok(PodNetworks(out))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn convert(name: &str, r: RawPodNetwork) -> Result<PodNetwork, AnnotationError> {
    const A: &str = POD_NETWORKS;
    let f = |field: &str| format!("{name}.{field}");

    let mac_text =
        non_empty(r.mac_address).ok_or_else(|| AnnotationError::missing(A, f("mac_address")))?;
    let mac_address: MacAddr = mac_text
        .parse()
        .map_err(|e| AnnotationError::invalid(A, f("mac_address"), &mac_text, format!("{e}")))?;

    let mut ip_texts = r.ip_addresses.unwrap_or_default();
    let legacy_ip = non_empty(r.ip_address);
    match (&legacy_ip, ip_texts.first()) {
        (Some(ip), None) => ip_texts.push(ip.clone()),
        (Some(ip), Some(first)) if ip != first => {
            return Err(AnnotationError::invalid(
                A,
                f("ip_address"),
                ip,
                format!("conflicts with ip_addresses[0] {first:?}"),
            ))
        }
        _ => {}
    }
    let ip_addresses = ip_texts
        .iter()
        .enumerate()
        .map(|(i, s)| parse_cidr(A, &f(&format!("ip_addresses[{i}]")), s))
        .collect::<Result<Vec<_>, _>>()?;
    check_one_per_family(
        A,
        &f("ip_addresses"),
        &ip_addresses,
        IpFamily::of_net,
        |n| n.to_string(),
    )?;

    let mut gw_texts = r.gateway_ips.unwrap_or_default();
    let legacy_gw = non_empty(r.gateway_ip);
    match (&legacy_gw, gw_texts.first()) {
        (Some(gw), None) => gw_texts.push(gw.clone()),
        (Some(gw), Some(first)) if gw != first => {
            return Err(AnnotationError::invalid(
                A,
                f("gateway_ip"),
                gw,
                format!("conflicts with gateway_ips[0] {first:?}"),
            ))
        }
        _ => {}
    }
    let gateway_ips = gw_texts
        .iter()
        .enumerate()
        .map(|(i, s)| parse_ip(A, &f(&format!("gateway_ips[{i}]")), s))
        .collect::<Result<Vec<_>, _>>()?;
    check_one_per_family(A, &f("gateway_ips"), &gateway_ips, IpFamily::of, |a| {
        a.to_string()
    })?;
    for gw in &gateway_ips {
        if !ip_addresses
            .iter()
            .any(|n| IpFamily::of_net(n) == IpFamily::of(gw))
        {
            return Err(AnnotationError::invalid(
                A,
                f("gateway_ips"),
                gw.to_string(),
                format!("no {} pod address for this gateway", IpFamily::of(gw)),
            ));
        }
    }

    let mut routes = Vec::new();
    for (i, rr) in r.routes.unwrap_or_default().into_iter().enumerate() {
        let field = f(&format!("routes[{i}]"));
        let dest_text = non_empty(rr.dest)
            .ok_or_else(|| AnnotationError::missing(A, format!("{field}.dest")))?;
        let dest = parse_cidr(A, &format!("{field}.dest"), &dest_text)?.trunc();
        if dest.prefix_len() == 0 {
            return Err(AnnotationError::invalid(
                A,
                format!("{field}.dest"),
                dest_text,
                "a default route must be given as a gateway, not a route",
            ));
        }
        let next_hop = match non_empty(rr.next_hop) {
            None => None,
            Some(nh) => {
                let ip = parse_ip(A, &format!("{field}.nextHop"), &nh)?;
                if IpFamily::of(&ip) != IpFamily::of_net(&dest) {
                    return Err(AnnotationError::invalid(
                        A,
                        format!("{field}.nextHop"),
                        nh,
                        format!("next hop family differs from destination {dest}"),
                    ));
                }
                Some(ip)
            }
        };
        routes.push(PodRoute { dest, next_hop });
    }

    let role = match non_empty(r.role).as_deref() {
        None => None,
        Some("primary") => Some(NetworkRole::Primary),
        Some("secondary") => Some(NetworkRole::Secondary),
        Some("infrastructure-locked") => Some(NetworkRole::InfrastructureLocked),
        Some(other) => {
            return Err(AnnotationError::invalid(
                A,
                f("role"),
                other,
                "expected primary, secondary or infrastructure-locked",
            ))
        }
    };

    Ok(PodNetwork {
        ip_addresses,
        mac_address,
        gateway_ips,
        routes,
        tunnel_id: r.tunnel_id.unwrap_or(0),
        role,
    })
}

/// Renders the annotation as OVN-Kubernetes does, including the legacy
/// `ip_address` / `gateway_ip` fields for single-stack attachments.
pub fn render_pod_networks(nets: &PodNetworks) -> String {
    let mut top = Map::new();
    for (name, n) in &nets.0 {
        let mut o = Map::new();
        let ips: Vec<String> = n.ip_addresses.iter().map(|i| i.to_string()).collect();
        o.insert("mac_address".into(), json!(n.mac_address.to_string()));
        if ips.len() == 1 {
            o.insert("ip_address".into(), json!(ips[0]));
            if n.gateway_ips.len() == 1 {
                o.insert("gateway_ip".into(), json!(n.gateway_ips[0].to_string()));
            }
        }
        // Upstream marshals a nil address list as null (the field has no omitempty).
        o.insert(
            "ip_addresses".into(),
            if ips.is_empty() {
                Value::Null
            } else {
                json!(ips)
            },
        );
        if !n.gateway_ips.is_empty() {
            let gws: Vec<String> = n.gateway_ips.iter().map(|g| g.to_string()).collect();
            o.insert("gateway_ips".into(), json!(gws));
        }
        if !n.routes.is_empty() {
            let routes: Vec<Value> = n
                .routes
                .iter()
                .map(|r| {
                    json!({
                        "dest": r.dest.to_string(),
                        "nextHop": r.next_hop.map(|h| h.to_string()).unwrap_or_default(),
                    })
                })
                .collect();
            o.insert("routes".into(), Value::Array(routes));
        }
        if n.tunnel_id != 0 {
            o.insert("tunnel_id".into(), json!(n.tunnel_id));
        }
        if let Some(role) = n.role {
            o.insert("role".into(), json!(role.as_str()));
        }
        top.insert(name.clone(), Value::Object(o));
    }
    Value::Object(top).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> &'static str {
        r#"{"default":{"ip_addresses":["10.244.1.3/24","fd00:10:244:2::3/64"],
            "mac_address":"0a:58:0a:f4:01:03",
            "gateway_ips":["10.244.1.1","fd00:10:244:2::1"],
            "routes":[{"dest":"10.244.0.0/16","nextHop":"10.244.1.1"},
                      {"dest":"100.64.0.0/16","nextHop":"10.244.1.1"},
                      {"dest":"fd98::/64","nextHop":"fd00:10:244:2::1"}],
            "role":"primary"}}"#
    }

    #[test]
    fn parses_dual_stack() {
        let p = parse_pod_networks(sample()).unwrap();
        let d = p.default_network().unwrap();
        assert_eq!(d.v4().unwrap().to_string(), "10.244.1.3/24");
        assert_eq!(d.v6().unwrap().to_string(), "fd00:10:244:2::3/64");
        assert!(d.is_dual_stack());
        assert_eq!(
            d.gateway(IpFamily::V6).unwrap().to_string(),
            "fd00:10:244:2::1"
        );
        assert_eq!(d.mac_address.to_string(), "0a:58:0a:f4:01:03");
        assert_eq!(d.routes.len(), 3);
        assert_eq!(
            d.routes[2].next_hop.unwrap().to_string(),
            "fd00:10:244:2::1"
        );
        assert_eq!(d.role, Some(NetworkRole::Primary));
    }

    #[test]
    fn round_trip() {
        let p = parse_pod_networks(sample()).unwrap();
        let text = render_pod_networks(&p);
        assert_eq!(parse_pod_networks(&text).unwrap(), p);
        // Dual stack: no legacy single fields.
        assert!(!text.contains("\"ip_address\""));
    }

    #[test]
    fn single_stack_renders_legacy_fields_like_upstream() {
        let n = PodNetwork {
            ip_addresses: vec!["10.244.1.3/24".parse().unwrap()],
            mac_address: "0a:58:0a:f4:01:03".parse().unwrap(),
            gateway_ips: vec!["10.244.1.1".parse().unwrap()],
            routes: vec![],
            tunnel_id: 0,
            role: Some(NetworkRole::Primary),
        };
        let text = render_pod_networks(&PodNetworks::with_default(n.clone()));
        assert_eq!(
            text,
            r#"{"default":{"gateway_ip":"10.244.1.1","gateway_ips":["10.244.1.1"],"ip_address":"10.244.1.3/24","ip_addresses":["10.244.1.3/24"],"mac_address":"0a:58:0a:f4:01:03","role":"primary"}}"#
        );
        assert_eq!(
            parse_pod_networks(&text).unwrap().default_network(),
            Some(&n)
        );
    }

    #[test]
    fn legacy_only_fields_are_accepted() {
        let p = parse_pod_networks(
            r#"{"default":{"mac_address":"0a:58:0a:f4:01:03","ip_address":"10.244.1.3/24","gateway_ip":"10.244.1.1"}}"#,
        )
        .unwrap();
        let d = p.default_network().unwrap();
        assert_eq!(
            d.ip_addresses,
            vec!["10.244.1.3/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(d.gateway_ips, vec!["10.244.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.role, None);
    }

    fn err(text: &str) -> String {
        let e = parse_pod_networks(text).unwrap_err();
        assert_eq!(e.annotation(), POD_NETWORKS);
        e.to_string()
    }

    #[test]
    fn malformed_input_is_named() {
        assert!(err("{").contains("malformed JSON"));
        assert!(err(r#"{"default":{"ip_addresses":["10.244.1.3/24"]}}"#)
            .contains("default.mac_address is missing"));
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.300/24"],"mac_address":"0a:58:0a:f4:01:03"}}"#,
        );
        assert!(
            e.contains("default.ip_addresses[0]") && e.contains("bad CIDR"),
            "{e}"
        );
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"mac_address":"0a:58:zz:f4:01:03"}}"#,
        );
        assert!(
            e.contains("default.mac_address") && e.contains("0a:58:zz"),
            "{e}"
        );
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24","10.244.1.4/24"],"mac_address":"0a:58:0a:f4:01:03"}}"#,
        );
        assert!(e.contains("more than one IPv4"), "{e}");
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"ip_address":"10.244.1.9/24","mac_address":"0a:58:0a:f4:01:03"}}"#,
        );
        assert!(e.contains("conflicts"), "{e}");
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"gateway_ips":["fd00::1"],"mac_address":"0a:58:0a:f4:01:03"}}"#,
        );
        assert!(e.contains("no IPv6 pod address"), "{e}");
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"mac_address":"0a:58:0a:f4:01:03","routes":[{"dest":"0.0.0.0/0","nextHop":"10.244.1.1"}]}}"#,
        );
        assert!(e.contains("default route"), "{e}");
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"mac_address":"0a:58:0a:f4:01:03","routes":[{"dest":"10.0.0.0/8","nextHop":"fd00::1"}]}}"#,
        );
        assert!(
            e.contains("routes[0].nextHop") && e.contains("family"),
            "{e}"
        );
        let e = err(
            r#"{"default":{"ip_addresses":["10.244.1.3/24"],"mac_address":"0a:58:0a:f4:01:03","role":"boss"}}"#,
        );
        assert!(e.contains("default.role"), "{e}");
    }
}
