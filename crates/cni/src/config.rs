//! The network configuration read from stdin.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{CniError, CniResult, SpecVersion};

/// Where `ovnk node` listens unless the configuration says otherwise.
pub const DEFAULT_SERVER_SOCKET: &str = "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock";
/// ADD waits for the pod's port to be `ovn-installed`, which can take long on a busy cluster.
pub const DEFAULT_ADD_TIMEOUT: Duration = Duration::from_secs(130);
/// Every other command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An attachment the runtime still uses (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The parsed network configuration. `raw` keeps the whole object so the
/// node agent can read fields of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: SpecVersion,
    pub name: String,
    pub plugin_type: String,
    /// `serverSocket`: the node agent's socket.
    pub server_socket: PathBuf,
    /// `connectTimeoutSeconds`.
    pub connect_timeout: Duration,
    /// `addTimeoutSeconds`: bound on a whole ADD.
    pub add_timeout: Duration,
    /// `timeoutSeconds`: bound on every other command.
    pub timeout: Duration,
    /// `mtu`, if set.
    pub mtu: Option<u32>,
    pub prev_result: Option<CniResult>,
    /// GC only: `None` when the key is absent.
    pub valid_attachments: Option<Vec<Attachment>>,
    pub raw: Value,
}

impl NetConf {
    /// The timeout for a command.
    pub fn timeout_for(&self, command: crate::Command) -> Duration {
        if command == crate::Command::Add {
            self.add_timeout
        } else {
            self.timeout
        }
    }

    /// Decodes stdin: malformed JSON is code 6, an unsupported cniVersion
    /// code 1, anything else wrong code 7.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::decode(format!("network configuration is not valid JSON: {e}"))
        })?;
        Self::from_value(raw)
    }

    pub fn from_value(raw: Value) -> Result<NetConf, CniError> {
        Self::from_value_with(raw, false)
    }

    /// As [`NetConf::from_value`]; with `lenient_prev_result` an undecodable
    /// `prevResult` is dropped instead of failing (DEL must clean up as much
    /// as it can, and a bad cached result must not block pod deletion).
    pub fn from_value_with(raw: Value, lenient_prev_result: bool) -> Result<NetConf, CniError> {
        let obj = raw
            .as_object()
            .ok_or_else(|| CniError::decode("network configuration must be a JSON object"))?;
        let version_text = match obj.get("cniVersion") {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "cniVersion must be a string, got {other}"
                )))
            }
        };
        let cni_version = SpecVersion::parse(version_text)?;

        let name = string_field(obj, "name")?.unwrap_or_default();
        if !valid_network_name(&name) {
            return Err(CniError::invalid_config(format!(
                "invalid network name {name:?}: must start with an alphanumeric character, then alphanumerics, '_', '.' or '-'"
            )));
        }
        let plugin_type = string_field(obj, "type")?.unwrap_or_default();
        if plugin_type.is_empty() {
            return Err(CniError::invalid_config(
                "network configuration has no \"type\"",
            ));
        }
        let server_socket = match string_field(obj, "serverSocket")? {
            None => PathBuf::from(DEFAULT_SERVER_SOCKET),
            Some(s) if s.is_empty() => {
                return Err(CniError::invalid_config("serverSocket must not be empty"))
            }
            Some(s) => PathBuf::from(s),
        };
        let connect_timeout =
            seconds_field(obj, "connectTimeoutSeconds")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let add_timeout = seconds_field(obj, "addTimeoutSeconds")?.unwrap_or(DEFAULT_ADD_TIMEOUT);
        let timeout = seconds_field(obj, "timeoutSeconds")?.unwrap_or(DEFAULT_TIMEOUT);
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|m| (576..=65535).contains(m))
                    .map(|m| m as u32)
                    .ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "mtu must be an integer 576..=65535, got {v}"
                        ))
                    })?,
            ),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => match CniResult::from_json(v) {
                Ok(r) => Some(r),
                Err(_) if lenient_prev_result => None,
                Err(e) => return Err(CniError::decode(format!("prevResult: {}", e.msg))),
            },
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_attachments(v)?),
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            server_socket,
            connect_timeout,
            add_timeout,
            timeout,
            mtu,
            prev_result,
            valid_attachments,
            raw,
        })
    }
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::invalid_config(format!(
            "{key} must be a string, got {other}"
        ))),
    }
}

fn seconds_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let secs = v
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .ok_or_else(|| {
                    CniError::invalid_config(format!(
                        "{key} must be a number of seconds in (0, 3600], got {v}"
                    ))
                })?;
            Ok(Some(Duration::from_secs_f64(secs)))
        }
    }
}

fn parse_attachments(v: &Value) -> Result<Vec<Attachment>, CniError> {
    let bad = |why: String| CniError::invalid_config(format!("cni.dev/valid-attachments: {why}"));
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("expected a list, got {v}")))?;
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let container_id = a
                .get("containerID")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("entry {i} has no string containerID")))?;
            let ifname = a
                .get("ifname")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("entry {i} has no string ifname")))?;
            Ok(Attachment {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            })
        })
        .collect()
}

/// The spec's network name rule.
fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn defaults_and_overrides() {
        let c =
            parse(r#"{"cniVersion":"1.0.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay"}"#)
                .unwrap();
        assert_eq!(c.cni_version, SpecVersion::V1_0_0);
        assert_eq!(c.server_socket, PathBuf::from(DEFAULT_SERVER_SOCKET));
        assert_eq!(c.add_timeout, DEFAULT_ADD_TIMEOUT);
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","serverSocket":"/tmp/x.sock","addTimeoutSeconds":2.5,
                "timeoutSeconds":1,"connectTimeoutSeconds":0.5,"mtu":1400,
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.server_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.add_timeout, Duration::from_millis(2500));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn error_codes() {
        let cases: &[(&str, ErrorCode)] = &[
            ("{", ErrorCode::DecodeFailure),
            ("[]", ErrorCode::DecodeFailure),
            (
                r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#,
                ErrorCode::IncompatibleVersion,
            ),
            (r#"{"name":"n","type":"t"}"#, ErrorCode::IncompatibleVersion),
            (
                r#"{"cniVersion":1,"name":"n","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"-bad","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","serverSocket":5}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","timeoutSeconds":-1}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":10}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"bad"}]}}"#,
                ErrorCode::DecodeFailure,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#,
                ErrorCode::InvalidNetworkConfig,
            ),
        ];
        for (text, code) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, *code, "{text}: {e}");
        }
        let e = parse(r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#).unwrap_err();
        assert!(e.msg.contains("0.3.1") && e.msg.contains("1.1.0"), "{e}");
    }
}
