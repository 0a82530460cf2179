//! A CNI invocation: environment + network configuration, validated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{CniError, ErrorCode, NetConf};

/// The environment variables that make up a request (all the shim forwards).
pub const CNI_ENV_VARS: &[&str] = &[
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => return Err(CniError::invalid_env("CNI_COMMAND is not set")),
            other => {
                return Err(CniError::invalid_env(format!(
                    "unknown CNI_COMMAND {other:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                )))
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Commands about one container attachment.
    pub fn is_per_container(&self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_ARGS`: `K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;K8S_POD_UID=...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_infra_container_id: Option<String>,
    /// Every pair, including the ones above.
    pub all: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::invalid_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE"))
            })?;
            if k.is_empty() {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS: {pair:?} has an empty key"
                )));
            }
            let val = (!v.is_empty()).then(|| v.to_string());
            match k {
                "K8S_POD_NAMESPACE" => out.pod_namespace = val,
                "K8S_POD_NAME" => out.pod_name = val,
                "K8S_POD_UID" => out.pod_uid = val,
                "K8S_POD_INFRA_CONTAINER_ID" => out.pod_infra_container_id = val,
                _ => {}
            }
            out.all.insert(k.to_string(), v.to_string());
        }
        Ok(out)
    }
}

/// A parsed and validated CNI request (everything except VERSION, which
/// needs no validation beyond the command).
#[derive(Debug, Clone, PartialEq)]
pub struct CniRequest {
    pub command: Command,
    /// Empty for STATUS and GC.
    pub container_id: String,
    /// Required for ADD and CHECK; optional for DEL.
    pub netns: Option<PathBuf>,
    /// Empty for STATUS and GC.
    pub ifname: String,
    pub args: CniArgs,
    pub cni_path: Vec<PathBuf>,
    pub config: NetConf,
}

impl CniRequest {
    /// The pod's `namespace/name`, when the runtime passed it.
    pub fn pod_key(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.args.pod_namespace.as_ref()?,
            self.args.pod_name.as_ref()?
        ))
    }

    /// Validates the environment (code 4) and the configuration (codes 1, 6, 7).
    pub fn parse(env: &BTreeMap<String, String>, config: &[u8]) -> Result<CniRequest, CniError> {
        let command = parse_command(env)?;
        let partial = parse_env(command, env)?;
        let raw: serde_json::Value = serde_json::from_slice(config).map_err(|e| {
            CniError::decode(format!("network configuration is not valid JSON: {e}"))
        })?;
        partial.finish(NetConf::from_value_with(raw, command == Command::Del)?)
    }

    /// As [`CniRequest::parse`] with an already decoded configuration.
    pub fn from_parts(
        env: &BTreeMap<String, String>,
        config: serde_json::Value,
    ) -> Result<CniRequest, CniError> {
        let command = parse_command(env)?;
        let partial = parse_env(command, env)?;
        partial.finish(NetConf::from_value_with(config, command == Command::Del)?)
    }
}

/// `CNI_COMMAND` from the environment.
pub fn parse_command(env: &BTreeMap<String, String>) -> Result<Command, CniError> {
    Command::parse(env.get("CNI_COMMAND").map(String::as_str).unwrap_or(""))
}

struct PartialRequest {
    command: Command,
    container_id: String,
    netns: Option<PathBuf>,
    ifname: String,
    args: CniArgs,
    cni_path: Vec<PathBuf>,
}

impl PartialRequest {
    fn finish(self, config: NetConf) -> Result<CniRequest, CniError> {
        let c = self.command;
        if matches!(c, Command::Status | Command::Gc) && !config.cni_version.has_status_and_gc() {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "{c} needs cniVersion 1.1.0 or later, the configuration says {}",
                    config.cni_version.as_str()
                ),
            ));
        }
        if c == Command::Check && config.prev_result.is_none() {
            return Err(CniError::invalid_config(
                "CHECK requires prevResult in the network configuration",
            ));
        }
        Ok(CniRequest {
            command: c,
            container_id: self.container_id,
            netns: self.netns,
            ifname: self.ifname,
            args: self.args,
            cni_path: self.cni_path,
            config,
        })
    }
}

fn parse_env(command: Command, env: &BTreeMap<String, String>) -> Result<PartialRequest, CniError> {
    let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut container_id = String::new();
    let mut ifname = String::new();
    let mut netns = None;
    let mut args = CniArgs::default();
    if command.is_per_container() {
        container_id = get("CNI_CONTAINERID")
            .ok_or_else(|| {
                CniError::invalid_env(format!("CNI_CONTAINERID is required for {command}"))
            })?
            .to_string();
        validate_container_id(&container_id)?;
        ifname = get("CNI_IFNAME")
            .ok_or_else(|| CniError::invalid_env(format!("CNI_IFNAME is required for {command}")))?
            .to_string();
        validate_ifname(&ifname)?;
        netns = get("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(CniError::invalid_env(format!(
                "CNI_NETNS (the network namespace path) is required for {command}"
            )));
        }
        args = CniArgs::parse(get("CNI_ARGS").unwrap_or(""))?;
        // The node agent finds the pod (and its annotation) by these.
        if command == Command::Add || command == Command::Check {
            for (key, v) in [
                ("K8S_POD_NAMESPACE", &args.pod_namespace),
                ("K8S_POD_NAME", &args.pod_name),
            ] {
                if v.is_none() {
                    return Err(CniError::invalid_env(format!(
                        "CNI_ARGS has no {key}, needed for {command}"
                    )));
                }
            }
        }
    }
    let cni_path = get("CNI_PATH")
        .map(|p| {
            p.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(PartialRequest {
        command,
        container_id,
        netns,
        ifname,
        args,
        cni_path,
    })
}

/// The spec's container id rule: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!(
            "invalid CNI_CONTAINERID {id:?}"
        )))
    }
}

/// Linux interface name rules (as libcni checks them).
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::invalid_env(format!(
            "invalid CNI_IFNAME {name:?}: {why}"
        )))
    };
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str =
        r#"{"cniVersion":"1.0.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay"}"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn add_env() -> BTreeMap<String, String> {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
    }

    #[test]
    fn parses_add() {
        let r = CniRequest::parse(&add_env(), CONF.as_bytes()).unwrap();
        assert_eq!(r.command, Command::Add);
        assert_eq!(r.container_id, "abc123");
        assert_eq!(r.netns, Some(PathBuf::from("/var/run/netns/x")));
        assert_eq!(r.pod_key().as_deref(), Some("default/web-0"));
        assert_eq!(r.args.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(
            r.args.all.get("IgnoreUnknown").map(String::as_str),
            Some("1")
        );
        assert_eq!(r.cni_path.len(), 2);
    }

    #[test]
    fn env_errors_are_code_4() {
        let mut cases: Vec<(BTreeMap<String, String>, &str)> = Vec::new();
        let without = |k: &str| {
            let mut e = add_env();
            e.remove(k);
            e
        };
        let with = |k: &str, v: &str| {
            let mut e = add_env();
            e.insert(k.into(), v.into());
            e
        };
        cases.push((without("CNI_COMMAND"), "CNI_COMMAND is not set"));
        cases.push((with("CNI_COMMAND", "FROB"), "unknown CNI_COMMAND"));
        cases.push((without("CNI_CONTAINERID"), "CNI_CONTAINERID is required"));
        cases.push((with("CNI_CONTAINERID", "-x"), "invalid CNI_CONTAINERID"));
        cases.push((without("CNI_IFNAME"), "CNI_IFNAME is required"));
        cases.push((
            with("CNI_IFNAME", "a-very-long-interface"),
            "longer than 15",
        ));
        cases.push((with("CNI_IFNAME", "eth/0"), "contains '/'"));
        cases.push((
            without("CNI_NETNS"),
            "CNI_NETNS (the network namespace path) is required for ADD",
        ));
        cases.push((
            with("CNI_ARGS", "K8S_POD_NAMESPACE=default;garbage"),
            "not KEY=VALUE",
        ));
        cases.push((
            with("CNI_ARGS", "K8S_POD_NAMESPACE=default"),
            "no K8S_POD_NAME",
        ));
        for (e, want) in cases {
            let err = CniRequest::parse(&e, CONF.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{want}: {err}");
            assert!(err.msg.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn del_tolerates_a_bad_prev_result_add_does_not() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"bad"}]}}"#;
        let mut e = add_env();
        let err = CniRequest::parse(&e, conf.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::DecodeFailure);
        e.insert("CNI_COMMAND".into(), "DEL".into());
        let r = CniRequest::parse(&e, conf.as_bytes()).unwrap();
        assert_eq!(r.config.prev_result, None);
        assert!(r.config.raw.get("prevResult").is_some());
    }

    #[test]
    fn del_without_netns_is_fine() {
        let mut e = add_env();
        e.insert("CNI_COMMAND".into(), "DEL".into());
        e.remove("CNI_NETNS");
        e.remove("CNI_ARGS");
        let r = CniRequest::parse(&e, CONF.as_bytes()).unwrap();
        assert_eq!(r.netns, None);
        assert_eq!(r.pod_key(), None);
    }

    #[test]
    fn check_needs_prev_result_and_status_needs_1_1() {
        let mut e = add_env();
        e.insert("CNI_COMMAND".into(), "CHECK".into());
        let err = CniRequest::parse(&e, CONF.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig);
        let with_prev = r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#;
        let r = CniRequest::parse(&e, with_prev.as_bytes()).unwrap();
        assert_eq!(r.config.prev_result.unwrap().ips.len(), 1);

        let status = env(&[("CNI_COMMAND", "STATUS")]);
        let err = CniRequest::parse(&status, CONF.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
        let ok =
            CniRequest::parse(&status, br#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        assert_eq!(ok.command, Command::Status);
    }
}
