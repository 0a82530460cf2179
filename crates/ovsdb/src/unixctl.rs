//! The control socket every OVS/OVN daemon serves (`--unixctl=<path>`, what `ovs-appctl`
//! talks to): JSON-RPC 1.0 where the method is the command and the params its arguments,
//! so it rides on the same [`Connection`] as OVSDB.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::rpc::{Connection, RpcConfig, RpcError};

/// Errors of one control command, naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum UnixctlError {
    #[error("{socket}: cannot connect: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("{socket}: {source}")]
    Rpc { socket: String, source: RpcError },
    #[error("{socket}: `{command}` got no answer within {timeout:?}")]
    Timeout {
        socket: String,
        command: String,
        timeout: Duration,
    },
}

/// Runs `command args…` on the daemon behind `socket` and returns its text answer.
pub async fn call(
    socket: &Path,
    command: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, UnixctlError> {
    let name = socket.display().to_string();
    let run = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| UnixctlError::Connect {
                socket: name.clone(),
                source,
            })?;
        // The daemons answer commands, not our `echo` probes: no inactivity probe.
        let cfg = RpcConfig {
            probe_interval: None,
            ..RpcConfig::default()
        };
        let (conn, _notes) = Connection::start(stream, cfg);
        let answer: Option<String> =
            conn.call(command, args)
                .await
                .map_err(|source| UnixctlError::Rpc {
                    socket: name.clone(),
                    source,
                })?;
        conn.close();
        Ok(answer.unwrap_or_default())
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(UnixctlError::Timeout {
                socket: name.clone(),
                command: command.to_owned(),
                timeout,
            })
        })
}
