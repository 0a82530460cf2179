//! The shim's side of the node-agent protocol: HTTP/1.1 over a unix socket,
//! `POST /cni` with `{"env": {...}, "config": {...}}`.
//!
//! Answers: `200` with the rendered CNI Result for ADD (empty body otherwise),
//! or a non-2xx status with a CNI error object.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;

use crate::CniError;

/// The request path on the node agent's socket.
pub const CNI_PATH: &str = "/cni";
/// Bound on request and response bodies.
pub const MAX_BODY_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub socket: PathBuf,
    pub connect_timeout: Duration,
    /// Bound on the whole exchange, connect included.
    pub timeout: Duration,
}

/// Why talking to the node agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("node agent socket {0} does not exist (is ovnk node running?)")]
    SocketMissing(PathBuf),
    #[error("cannot connect to node agent socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connecting to node agent socket {path} timed out after {after:?}")]
    ConnectTimeout { path: PathBuf, after: Duration },
    #[error("no answer from node agent on {path} within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    #[error("node agent protocol error: {0}")]
    Protocol(String),
    /// The agent answered with a CNI error.
    #[error("{0}")]
    Agent(CniError),
}

/// Sends one request; `Ok(None)` for an empty success body.
pub async fn call_agent(
    opts: &ClientOptions,
    env: &BTreeMap<String, String>,
    config: &Value,
) -> Result<Option<Value>, ClientError> {
    let body = json!({ "env": env, "config": config }).to_string();
    match tokio::time::timeout(opts.timeout, exchange(opts, body)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            path: opts.socket.clone(),
            after: opts.timeout,
        }),
    }
}

async fn exchange(opts: &ClientOptions, body: String) -> Result<Option<Value>, ClientError> {
    let path = &opts.socket;
    let stream = match tokio::time::timeout(opts.connect_timeout, UnixStream::connect(path)).await {
        Err(_) => {
            return Err(ClientError::ConnectTimeout {
                path: path.clone(),
                after: opts.connect_timeout,
            })
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ClientError::SocketMissing(path.clone()))
        }
        Ok(Err(source)) => {
            return Err(ClientError::Connect {
                path: path.clone(),
                source,
            })
        }
        Ok(Ok(s)) => s,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Protocol(format!("HTTP handshake: {e}")))?;
    // The connection future does the IO on its own task; the guard aborts it
    // when this exchange ends, including when the caller's timeout drops us.
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = Request::post(CNI_PATH)
        .header(hyper::header::HOST, "ovnk-node")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Protocol(format!("building request: {e}")))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(format!("sending request: {e}")))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading answer: {e}")))?
            .to_bytes();
        interpret(status, &bytes)
    }
    .await;
    result
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn interpret(status: StatusCode, bytes: &[u8]) -> Result<Option<Value>, ClientError> {
    if status.is_success() {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Protocol(format!("answer is not JSON: {e}")))?;
        return Ok(Some(v));
    }
    match CniError::from_json(bytes) {
        Some(e) => Err(ClientError::Agent(e)),
        None => Err(ClientError::Protocol(format!(
            "HTTP {status} without a CNI error object: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))),
    }
}
