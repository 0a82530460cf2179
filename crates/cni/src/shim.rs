//! The plugin binary's logic, as a function of (environment, stdin), so that
//! it is testable without exec and the binary stays a thin wrapper.
//!
//! DEL when the node agent is unreachable: if its socket does not exist, the
//! agent is not running on this node (or was removed), there is nothing it
//! could tear down now, and it garbage-collects stale pod ports when it
//! starts; DEL then succeeds (with a warning on stderr) so pod deletion is
//! never blocked forever. If the socket exists but the agent does not answer
//! (refused, timeout), it is restarting or overloaded: DEL fails with code 11
//! (try again later) so the runtime retries.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::client::{call_agent, ClientError, ClientOptions};
use crate::request::{parse_command, CNI_ENV_VARS};
use crate::{version, CniError, CniRequest, CniResult, Command, ErrorCode, SpecVersion};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimOutcome {
    /// Printed on stdout (empty: print nothing).
    pub stdout: String,
    /// Log lines for stderr.
    pub stderr: Vec<String>,
    pub exit_code: i32,
}

impl ShimOutcome {
    fn ok(stdout: String) -> Self {
        ShimOutcome {
            stdout,
            stderr: Vec::new(),
            exit_code: 0,
        }
    }

    pub fn error(e: &CniError, cni_version: &str) -> Self {
        ShimOutcome {
            stdout: e.to_json(cni_version).to_string(),
            stderr: vec![format!("ovn-k8s-cni-overlay: {e}")],
            exit_code: 1,
        }
    }
}

/// The cniVersion to put in an error found before the config was validated:
/// the requested one if we speak it, else the newest.
fn version_for_error(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .and_then(|s| SpecVersion::parse(s).ok())
        })
        .map_or(version::LATEST_VERSION, |v| v.as_str())
}

/// Runs one CNI invocation.
pub async fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> ShimOutcome {
    let command = match parse_command(env) {
        Ok(c) => c,
        Err(e) => return ShimOutcome::error(&e, version_for_error(stdin)),
    };
    if command == Command::Version {
        return ShimOutcome::ok(version::version_info().to_string());
    }
    let req = match CniRequest::parse(env, stdin) {
        Ok(r) => r,
        Err(e) => return ShimOutcome::error(&e, version_for_error(stdin)),
    };
    let ver = req.config.cni_version.as_str();
    let forward: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| CNI_ENV_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let opts = ClientOptions {
        socket: req.config.server_socket.clone(),
        connect_timeout: req.config.connect_timeout,
        timeout: req.config.timeout_for(command),
    };
    match call_agent(&opts, &forward, &req.config.raw).await {
        Ok(answer) => success(command, ver, answer),
        Err(ClientError::SocketMissing(path)) if command == Command::Del => {
            let mut out = ShimOutcome::ok(String::new());
            out.stderr.push(format!(
                "ovn-k8s-cni-overlay: DEL {}: node agent socket {} is absent; nothing to tear down now, the agent cleans stale ports when it starts",
                req.container_id,
                path.display()
            ));
            out
        }
        Err(e) => ShimOutcome::error(&client_error_to_cni(command, e), ver),
    }
}

fn success(command: Command, ver: &str, answer: Option<Value>) -> ShimOutcome {
    if command != Command::Add {
        return ShimOutcome::ok(String::new());
    }
    let Some(v) = answer else {
        return ShimOutcome::error(
            &CniError::new(
                ErrorCode::ProtocolError,
                "node agent answered ADD without a result",
            ),
            ver,
        );
    };
    if let Err(e) = CniResult::from_json(&v) {
        let e = CniError::new(
            ErrorCode::ProtocolError,
            format!("node agent's ADD result is invalid: {}", e.msg),
        );
        return ShimOutcome::error(&e, ver);
    }
    if v.get("cniVersion").and_then(Value::as_str) != Some(ver) {
        let e = CniError::new(
            ErrorCode::ProtocolError,
            format!("node agent's ADD result is not for cniVersion {ver}"),
        );
        return ShimOutcome::error(&e, ver);
    }
    ShimOutcome::ok(v.to_string())
}

/// Maps transport failures to CNI codes per command (see the module docs):
/// for STATUS every transport failure means "not available" (50); for DEL
/// it means "retry later" (11), including an agent that died mid-request.
pub fn client_error_to_cni(command: Command, e: ClientError) -> CniError {
    let text = e.to_string();
    match e {
        ClientError::Agent(err) => err,
        _ if command == Command::Status => {
            CniError::new(ErrorCode::PluginNotAvailable, "node agent is not available")
                .with_details(text)
        }
        _ if command == Command::Del => CniError::new(
            ErrorCode::TryAgainLater,
            "node agent is not answering; retry DEL later",
        )
        .with_details(text),
        ClientError::Protocol(_) => CniError::new(ErrorCode::ProtocolError, text),
        ClientError::Timeout { .. } => CniError::new(ErrorCode::Timeout, text),
        ClientError::SocketMissing(_)
        | ClientError::Connect { .. }
        | ClientError::ConnectTimeout { .. } => {
            CniError::new(ErrorCode::NodeAgentUnreachable, text)
        }
    }
}
