//! The node agent's side: a CNI server on a root-only unix socket.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ovnk_cni::{bind_root_socket, serve, CniError, CniHandler, CniRequest, CniResult};
//!
//! struct Agent;
//!
//! impl CniHandler for Agent {
//!     async fn add(&self, req: CniRequest) -> Result<CniResult, CniError> {
//!         // Wire the pod described by req.args / req.netns, then describe it.
//!         Err(CniError::failure(format!("not wired: {:?}", req.pod_key())))
//!     }
//!     async fn del(&self, _req: CniRequest) -> Result<(), CniError> { Ok(()) }
//!     async fn check(&self, _req: CniRequest) -> Result<(), CniError> { Ok(()) }
//!     async fn status(&self, _req: CniRequest) -> Result<(), CniError> { Ok(()) }
//!     async fn gc(&self, _req: CniRequest) -> Result<(), CniError> { Ok(()) }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = bind_root_socket(ovnk_cni::DEFAULT_SERVER_SOCKET.as_ref())?;
//! tokio::spawn(serve(listener, Arc::new(Agent)));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::UnixListener;

use crate::client::{CNI_PATH, MAX_BODY_BYTES};
use crate::{version, CniError, CniRequest, CniResult, Command, ErrorCode};

/// What the node agent does for each command. Futures may be dropped when
/// the request's time bound expires, so implementations must leave nothing
/// half-done that a later DEL (which the runtime sends after a failed ADD)
/// cannot clean up.
pub trait CniHandler: Send + Sync + 'static {
    fn add(&self, req: CniRequest) -> impl Future<Output = Result<CniResult, CniError>> + Send;
    /// Must succeed when the attachment is already gone.
    fn del(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
    fn check(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
    /// `Err` with code 50 or 51 when ADD cannot be served now.
    fn status(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
    /// Remove attachments not in `req.config.valid_attachments`.
    fn gc(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Upper bound on one ADD.
    pub add_timeout: Duration,
    /// Upper bound on every other command.
    pub timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        // Below the shim's defaults (130 s / 60 s) so that the agent's own
        // timeout error, with its details, reaches the runtime first.
        ServerOptions {
            add_timeout: Duration::from_secs(120),
            timeout: Duration::from_secs(50),
        }
    }
}

/// Serves CNI requests forever with default bounds.
pub async fn serve<H: CniHandler>(listener: UnixListener, handler: Arc<H>) {
    serve_with(listener, handler, ServerOptions::default()).await
}

/// Serves CNI requests forever; each connection runs on its own task.
pub async fn serve_with<H: CniHandler>(
    listener: UnixListener,
    handler: Arc<H>,
    opts: ServerOptions,
) {
    let opts = Arc::new(opts);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning; keep serving.
                eprintln!("cni server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                let opts = opts.clone();
                async move { Ok::<_, Infallible>(handle_http(&*handler, &opts, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[derive(Deserialize)]
struct WireRequest {
    env: BTreeMap<String, String>,
    config: Value,
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_reply(e: &CniError, cni_version: &str) -> Response<Full<Bytes>> {
    let status = match e.code {
        ErrorCode::InvalidEnvironment
        | ErrorCode::DecodeFailure
        | ErrorCode::InvalidNetworkConfig
        | ErrorCode::IncompatibleVersion
        | ErrorCode::UnsupportedField => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    reply(status, e.to_json(cni_version).to_string())
}

async fn handle_http<H: CniHandler>(
    handler: &H,
    opts: &ServerOptions,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let latest = version::LATEST_VERSION;
    if req.method() != Method::POST || req.uri().path() != CNI_PATH {
        let e = CniError::new(
            ErrorCode::ProtocolError,
            format!(
                "expected POST {CNI_PATH}, got {} {}",
                req.method(),
                req.uri().path()
            ),
        );
        return reply(StatusCode::NOT_FOUND, e.to_json(latest).to_string());
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_reply(
                &CniError::new(ErrorCode::IoFailure, format!("reading request: {e}")),
                latest,
            )
        }
    };
    let wire: WireRequest = match serde_json::from_slice(&bytes) {
        Ok(w) => w,
        Err(e) => {
            return error_reply(
                &CniError::decode(format!("request is not {{env, config}} JSON: {e}")),
                latest,
            )
        }
    };
    let cni_req = match CniRequest::from_parts(&wire.env, wire.config) {
        Ok(r) => r,
        Err(e) => return error_reply(&e, latest),
    };
    let ver = cni_req.config.cni_version;
    match dispatch(handler, opts, cni_req).await {
        Ok(Some(v)) => reply(StatusCode::OK, v.to_string()),
        Ok(None) => reply(StatusCode::OK, String::new()),
        Err(e) => error_reply(&e, ver.as_str()),
    }
}

/// Runs one request under its time bound: the smaller of the server's and
/// 90% of the shim's (so the answer beats the shim's own timeout).
pub async fn dispatch<H: CniHandler>(
    handler: &H,
    opts: &ServerOptions,
    req: CniRequest,
) -> Result<Option<Value>, CniError> {
    let command = req.command;
    let server_bound = if command == Command::Add {
        opts.add_timeout
    } else {
        opts.timeout
    };
    let bound = server_bound.min(req.config.timeout_for(command).mul_f64(0.9));
    let ver = req.config.cni_version;
    let what = format!(
        "{command} {}",
        req.pod_key().unwrap_or_else(|| req.container_id.clone())
    );
    let prev = req.config.prev_result.clone();
    let work = async move {
        match command {
            Command::Add => handler.add(req).await.map(|r| {
                let r = match &prev {
                    Some(p) => r.after(p),
                    None => r,
                };
                Some(r.render(ver))
            }),
            Command::Del => handler.del(req).await.map(|_| None),
            Command::Check => handler.check(req).await.map(|_| None),
            Command::Status => handler.status(req).await.map(|_| None),
            Command::Gc => handler.gc(req).await.map(|_| None),
            Command::Version => Ok(Some(version::version_info())),
        }
    };
    match tokio::time::timeout(bound, work).await {
        Ok(r) => r,
        Err(_) => Err(CniError::new(
            ErrorCode::Timeout,
            format!("node agent did not finish {what} within {bound:?}"),
        )),
    }
}

/// Binds the CNI server socket so that only root can use it: the parent
/// directory is created 0700 (if missing) and the socket is 0600. The socket
/// is bound under a temporary name, restricted, then renamed into place, so
/// it is never reachable with looser permissions. A stale socket left by a
/// previous run is replaced; any other kind of file at `path` is an error.
pub fn bind_root_socket(path: &Path) -> io::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket path {} has no parent directory", path.display()),
            )
        })?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} has no file name", path.display()),
        )
    })?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let finish = || -> io::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}
