//! The CNI Result, rendered in the shape of the requested cniVersion.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{CniError, SpecVersion};

/// An interface created (or used) by the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Only rendered for 1.1.0 (added there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for interfaces inside the sandbox; `None` for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix, e.g. 10.244.1.3/24.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// Only rendered for 1.1.0 (added there).
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// What ADD returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// The Result object for `version`: 0.4.0 carries `"version":"4"|"6"` in
    /// each IP entry, 1.x does not; interface and route `mtu` exist from 1.1.0.
    pub fn render(&self, version: SpecVersion) -> Value {
        let v11 = version >= SpecVersion::V1_1_0;
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if let (true, Some(mtu)) = (v11, i.mtu) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), json!(s));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version == SpecVersion::V0_4_0 {
                    let fam = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    o.insert("version".into(), json!(fam));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(idx) = ip.interface {
                    o.insert("interface".into(), json!(idx));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                if let (true, Some(mtu)) = (v11, r.mtu) {
                    o.insert("mtu".into(), json!(mtu));
                }
                Value::Object(o)
            })
            .collect();
        let mut top = Map::new();
        top.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            top.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            top.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            top.insert("routes".into(), Value::Array(routes));
        }
        top.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or_else(|_| json!({})),
        );
        Value::Object(top)
    }

    /// Parses a Result of any supported version (e.g. a `prevResult`).
    /// Decoding failures are CNI code 6.
    pub fn from_json(v: &Value) -> Result<CniResult, CniError> {
        let raw: RawResult = serde_json::from_value(v.clone())
            .map_err(|e| CniError::decode(format!("invalid CNI result: {e}")))?;
        let ips = raw
            .ips
            .into_iter()
            .enumerate()
            .map(|(i, ip)| {
                let address: IpNet = ip.address.parse().map_err(|e| {
                    CniError::decode(format!("ips[{i}].address {:?}: {e}", ip.address))
                })?;
                let gateway = ip
                    .gateway
                    .map(|g| {
                        g.parse::<IpAddr>()
                            .map_err(|e| CniError::decode(format!("ips[{i}].gateway {g:?}: {e}")))
                    })
                    .transpose()?;
                if let Some(idx) = ip.interface {
                    if idx >= raw.interfaces.len() {
                        return Err(CniError::decode(format!(
                            "ips[{i}].interface {idx} is not an index into interfaces ({} entries)",
                            raw.interfaces.len()
                        )));
                    }
                }
                Ok(IpConfig {
                    address,
                    gateway,
                    interface: ip.interface,
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        let routes =
            raw.routes
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let dst: IpNet = r.dst.parse().map_err(|e| {
                        CniError::decode(format!("routes[{i}].dst {:?}: {e}", r.dst))
                    })?;
                    let gw =
                        r.gw.map(|g| {
                            g.parse::<IpAddr>()
                                .map_err(|e| CniError::decode(format!("routes[{i}].gw {g:?}: {e}")))
                        })
                        .transpose()?;
                    Ok(Route {
                        dst,
                        gw,
                        mtu: r.mtu,
                    })
                })
                .collect::<Result<Vec<_>, CniError>>()?;
        Ok(CniResult {
            interfaces: raw.interfaces,
            ips,
            routes,
            dns: raw.dns.unwrap_or_default(),
        })
    }

    /// Chains this result after a previous plugin's: the previous interfaces,
    /// addresses and routes come first, and our interface indexes are shifted.
    pub fn after(mut self, prev: &CniResult) -> CniResult {
        let shift = prev.interfaces.len();
        for ip in &mut self.ips {
            ip.interface = ip.interface.map(|i| i + shift);
        }
        let mut out = prev.clone();
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips);
        out.routes.extend(self.routes);
        if !self.dns.is_empty() {
            out.dns = self.dns;
        }
        out
    }
}

#[derive(Deserialize)]
struct RawIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "abcdef012345678".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    mtu: None,
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:f4:01:03".into()),
                    mtu: Some(1400),
                    sandbox: Some("/var/run/netns/pod".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.3/24".parse().unwrap(),
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:10:244:2::3/64".parse().unwrap(),
                    gateway: Some("fd00:10:244:2::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "10.96.0.0/16".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
                mtu: Some(1400),
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn renders_0_4_0_with_ip_version() {
        let v = sample().render(SpecVersion::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["ips"][0],
            json!({"version":"4","address":"10.244.1.3/24","gateway":"10.244.1.1","interface":1})
        );
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["routes"][0].get("mtu").is_none());
        assert_eq!(v["dns"], json!({}));
    }

    #[test]
    fn renders_1_x_without_ip_version() {
        for ver in [SpecVersion::V1_0_0, SpecVersion::V1_1_0] {
            let v = sample().render(ver);
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(
                v["ips"][0],
                json!({"address":"10.244.1.3/24","gateway":"10.244.1.1","interface":1})
            );
            assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/pod");
            assert_eq!(
                v["interfaces"][1].get("mtu").is_some(),
                ver == SpecVersion::V1_1_0
            );
        }
    }

    #[test]
    fn parses_every_rendering_back() {
        for ver in [
            SpecVersion::V0_4_0,
            SpecVersion::V1_0_0,
            SpecVersion::V1_1_0,
        ] {
            let mut want = sample();
            if ver != SpecVersion::V1_1_0 {
                want.interfaces[1].mtu = None;
                want.routes[0].mtu = None;
            }
            assert_eq!(CniResult::from_json(&sample().render(ver)).unwrap(), want);
        }
    }

    #[test]
    fn decode_errors_are_code_6() {
        for bad in [
            json!({"ips":[{"address":"10.0.0.300/24"}]}),
            json!({"ips":[{"address":"10.0.0.3/24","interface":0}]}),
            json!({"routes":[{"dst":"x"}]}),
            json!({"ips":"nope"}),
        ] {
            let e = CniResult::from_json(&bad).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::DecodeFailure, "{bad}");
        }
    }

    #[test]
    fn chaining_shifts_interface_indexes() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "127.0.0.1/8".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let out = sample().after(&prev);
        assert_eq!(out.interfaces.len(), 3);
        assert_eq!(out.ips[0].interface, Some(0));
        assert_eq!(out.ips[1].interface, Some(2));
    }
}
