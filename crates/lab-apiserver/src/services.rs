//! Service defaulting and ClusterIP / NodePort allocation, with the messages a real
//! kube-apiserver gives (services-allocation-cases.json).

use crate::error::{ApiError, ApiResult};
use crate::store::{service_ips, service_node_ports, State};
use ipnet::IpNet;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Service address settings.
#[derive(Debug, Clone)]
pub struct ServiceNet {
    /// One CIDR per family, primary first (two = dual-stack).
    pub cidrs: Vec<IpNet>,
    pub node_ports: (u16, u16),
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn net_family(n: &IpNet) -> &'static str {
    family_of(&n.addr())
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

impl ServiceNet {
    /// The first usable address (the `kubernetes` service's).
    pub fn first_ip(&self, family: usize) -> Option<IpAddr> {
        let n = self.cidrs.get(family)?;
        Some(from_u128(to_u128(n.network()) + 1, n.addr().is_ipv4()))
    }

    fn cidr_for(&self, fam: &str) -> Option<&IpNet> {
        self.cidrs.iter().find(|c| net_family(c) == fam)
    }

    /// A random free address, preferring the upper part of the range (the lower band is left
    /// for explicit requests, as kube-apiserver does).
    fn allocate(&self, fam: &str, taken: &HashSet<IpAddr>) -> Option<IpAddr> {
        let n = self.cidr_for(fam)?;
        let v4 = n.addr().is_ipv4();
        let host_bits = (if v4 { 32 } else { 128 }) - n.prefix_len() as u32;
        // Cap huge IPv6 ranges: 2^20 candidates are plenty for a lab.
        let size: u128 = 1u128 << host_bits.min(20);
        if size < 4 {
            // A /31 or /32 (or IPv6 /126+) leaves nothing to hand out.
            return None;
        }
        let base = to_u128(n.network());
        let first = 1u128;
        let last = if v4 { size - 2 } else { size - 1 };
        if last < first {
            return None;
        }
        let band = (size / 16).clamp(16, 256).min(last);
        let mut rng = rand::rng();
        let upper_lo = (first + band).min(last);
        for _ in 0..64 {
            let off = rng.random_range(upper_lo..=last);
            let ip = from_u128(base + off, v4);
            if !taken.contains(&ip) {
                return Some(ip);
            }
        }
        (first..=last)
            .map(|off| from_u128(base + off, v4))
            .find(|ip| !taken.contains(ip))
    }
}

fn invalid(name: &str, field: &str, value: Value, why: &str) -> ApiError {
    ApiError::invalid_value("Service", name, field, &value, why)
}

/// Fills defaults and allocates addresses for a Service being created (`old` = None) or
/// updated. `st` is the index, which still holds `old`'s allocations.
pub fn prepare(
    net: &ServiceNet,
    st: &State,
    name: &str,
    svc: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let own_ips: HashSet<IpAddr> = old
        .map(service_ips)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let own_ports: HashSet<u16> = old
        .map(service_node_ports)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let old_spec = old.and_then(|o| o.get("spec"));
    if !svc.get("spec").is_some_and(Value::is_object) {
        return Err(ApiError::required("Service", name, "spec"));
    }
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(ApiError::required("Service", name, "spec"));
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !matches!(
        ty.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(ApiError::invalid(
            "Service",
            name,
            vec![crate::error::Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
                field: "spec.type".into(),
            }],
        ));
    }
    spec.insert("type".into(), json!(ty));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if ty == "ExternalName" {
        if spec
            .get("externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::required("Service", name, "spec.externalName"));
        }
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(k);
        }
    } else {
        prepare_ports(spec, name)?;
        prepare_ips(net, st, name, spec, old_spec, &own_ips)?;
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.entry("externalTrafficPolicy")
            .or_insert(json!("Cluster"));
        if ty == "LoadBalancer" {
            spec.entry("allocateLoadBalancerNodePorts")
                .or_insert(json!(true));
        }
        allocate_node_ports(net, st, name, spec, &own_ports)?;
    } else if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        // ClusterIP services hold no node ports (a type change back releases them).
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
        spec.remove("externalTrafficPolicy");
    }
    if old.is_none() {
        if let Some(o) = svc.as_object_mut() {
            o.insert("status".into(), json!({"loadBalancer": {}}));
        }
    }
    Ok(())
}

fn prepare_ports(spec: &mut Map<String, Value>, name: &str) -> ApiResult<()> {
    let Some(Value::Array(ports)) = spec.get_mut("ports") else {
        return Err(ApiError::required("Service", name, "spec.ports"));
    };
    if ports.is_empty() {
        return Err(ApiError::required("Service", name, "spec.ports"));
    }
    for (i, p) in ports.iter_mut().enumerate() {
        let Some(p) = p.as_object_mut() else {
            return Err(invalid(
                name,
                &format!("spec.ports[{i}]"),
                json!(p),
                "must be an object",
            ));
        };
        let port = p.get("port").and_then(Value::as_u64);
        let Some(port) = port.filter(|n| (1..=65535).contains(n)) else {
            return match p.get("port") {
                None => Err(ApiError::required(
                    "Service",
                    name,
                    &format!("spec.ports[{i}].port"),
                )),
                Some(v) => Err(invalid(
                    name,
                    &format!("spec.ports[{i}].port"),
                    v.clone(),
                    "must be between 1 and 65535, inclusive",
                )),
            };
        };
        p.entry("protocol").or_insert(json!("TCP"));
        p.entry("targetPort").or_insert(json!(port));
    }
    Ok(())
}

fn prepare_ips(
    net: &ServiceNet,
    st: &State,
    name: &str,
    spec: &mut Map<String, Value>,
    old_spec: Option<&Value>,
    own: &HashSet<IpAddr>,
) -> ApiResult<()> {
    let dual = net.cidrs.len() > 1;
    let configured: Vec<&str> = net.cidrs.iter().map(net_family).collect();
    // Keep the addresses already set: they may not change once set.
    let old_ips: Vec<String> = old_spec
        .and_then(|s| s.get("clusterIPs"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut req_ips: Vec<String> = match spec.get("clusterIPs").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        None => spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
    };
    if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str) {
        if !ip.is_empty() && req_ips.first().map(String::as_str) != Some(ip) {
            req_ips.insert(0, ip.to_string());
        }
    }
    if !old_ips.is_empty() {
        if req_ips.is_empty() {
            req_ips = old_ips.clone();
        } else if req_ips.first() != old_ips.first() {
            return Err(ApiError::invalid(
                "Service",
                name,
                vec![crate::error::Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {}: may not change once set", json!(req_ips)),
                    field: "spec.clusterIPs[0]".into(),
                }],
            ));
        }
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("SingleStack")
        .to_string();
    if !matches!(
        policy.as_str(),
        "SingleStack" | "PreferDualStack" | "RequireDualStack"
    ) {
        return Err(invalid(
            name,
            "spec.ipFamilyPolicy",
            json!(policy),
            "supported values: \"SingleStack\", \"PreferDualStack\", \"RequireDualStack\"",
        ));
    }
    if policy == "RequireDualStack" && !dual {
        return Err(invalid(
            name,
            "spec.ipFamilyPolicy",
            json!(policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    let mut families: Vec<String> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (i, f) in families.iter().enumerate() {
        if !configured.contains(&f.as_str()) {
            return Err(invalid(
                name,
                &format!("spec.ipFamilies[{i}]"),
                json!(f),
                "not configured on this cluster",
            ));
        }
    }
    let headless = req_ips.first().map(String::as_str) == Some("None");
    if families.is_empty() {
        if !headless && !req_ips.is_empty() {
            for ip in &req_ips {
                let parsed: IpAddr = ip.parse().map_err(|_| {
                    invalid(
                        name,
                        "spec.clusterIPs",
                        json!(req_ips),
                        &format!("{ip} is not a valid IP address"),
                    )
                })?;
                families.push(family_of(&parsed).to_string());
            }
        } else {
            families.push(configured[0].to_string());
        }
    }
    if dual && policy != "SingleStack" && families.len() == 1 {
        if let Some(other) = configured.iter().find(|f| **f != families[0]) {
            families.push(other.to_string());
        }
    }
    if policy == "SingleStack" {
        families.truncate(1);
    }
    let ips: Vec<String> = if headless {
        vec!["None".to_string()]
    } else {
        let mut taken: HashSet<IpAddr> = st.cluster_ips.difference(own).copied().collect();
        let mut out = Vec::new();
        for (i, fam) in families.iter().enumerate() {
            match req_ips.get(i) {
                Some(s) => {
                    let ip: IpAddr = s.parse().map_err(|_| {
                        invalid(
                            name,
                            "spec.clusterIPs",
                            json!(req_ips),
                            "must be a valid IP",
                        )
                    })?;
                    let fail = |why: &str| {
                        invalid(
                            name,
                            "spec.clusterIPs",
                            json!(req_ips),
                            &format!("failed to allocate IP {ip}: {why}"),
                        )
                    };
                    let in_range = net
                        .cidr_for(family_of(&ip))
                        .is_some_and(|c| c.contains(&ip) && ip != c.network());
                    if !in_range || family_of(&ip) != fam {
                        return Err(fail(
                            "the provided network does not match the current range",
                        ));
                    }
                    if taken.contains(&ip) && !own.contains(&ip) {
                        return Err(fail("provided IP is already allocated"));
                    }
                    taken.insert(ip);
                    out.push(ip.to_string());
                }
                None => {
                    let ip = net.allocate(fam, &taken).ok_or_else(|| {
                        ApiError::internal(format!(
                            "failed to allocate a serviceIP: range is full ({fam})"
                        ))
                    })?;
                    taken.insert(ip);
                    out.push(ip.to_string());
                }
            }
        }
        out
    };
    spec.insert("clusterIP".into(), json!(ips[0]));
    spec.insert("clusterIPs".into(), json!(ips));
    spec.insert("ipFamilies".into(), json!(families));
    spec.insert("ipFamilyPolicy".into(), json!(policy));
    Ok(())
}

fn allocate_node_ports(
    net: &ServiceNet,
    st: &State,
    name: &str,
    spec: &mut Map<String, Value>,
    own: &HashSet<u16>,
) -> ApiResult<()> {
    let (lo, hi) = net.node_ports;
    let mut used: HashSet<u16> = HashSet::new();
    let Some(Value::Array(ports)) = spec.get_mut("ports") else {
        return Ok(());
    };
    let taken = |p: u16, used: &HashSet<u16>| {
        used.contains(&p) || (st.node_ports.contains(&p) && !own.contains(&p))
    };
    // Explicit ports first, so a random pick never steals one asked for later in the list.
    for (i, p) in ports.iter().enumerate() {
        let Some(v) = p.get("nodePort") else { continue };
        let field = format!("spec.ports[{i}].nodePort");
        let n = v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| {
                invalid(
                    name,
                    &field,
                    v.clone(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ),
                )
            })?;
        if taken(n, &used) {
            return Err(invalid(
                name,
                &field,
                v.clone(),
                "provided port is already allocated",
            ));
        }
        used.insert(n);
    }
    let mut rng = rand::rng();
    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
        if p.contains_key("nodePort") {
            continue;
        }
        let upper_lo = lo + (hi - lo) / 16;
        let mut pick = None;
        for _ in 0..64 {
            let n = rng.random_range(upper_lo..=hi);
            if !taken(n, &used) {
                pick = Some(n);
                break;
            }
        }
        let n = pick
            .or_else(|| (lo..=hi).find(|n| !taken(*n, &used)))
            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
        used.insert(n);
        p.insert("nodePort".into(), json!(n));
    }
    Ok(())
}
