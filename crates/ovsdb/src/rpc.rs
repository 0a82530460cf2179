//! JSON-RPC 1.0 session over one stream (RFC 7047 §4): pipelined requests matched by id,
//! the server's `echo` answered, our own `echo` sent as an inactivity probe, and
//! notifications (`update*`, `locked`, ...) passed on in arrival order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::framer::{Framer, DEFAULT_MAX_MESSAGE};

/// Errors of one RPC.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The connection closed before the reply came (or was already closed).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server answered with a non-null `"error"`.
    #[error("{method}: server error {error}")]
    Server { method: String, error: String },
    /// The reply could not be decoded into the expected shape.
    #[error("{method}: malformed reply: {msg}")]
    Decode { method: String, msg: String },
    #[error("cannot encode {method} request: {msg}")]
    Encode { method: String, msg: String },
}

impl RpcError {
    /// True when the server said it does not know the method (older ovsdb-server).
    pub fn is_unknown_method(&self) -> bool {
        matches!(self, RpcError::Server { error, .. } if error.contains("unknown method"))
    }
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Largest accepted message (bytes).
    pub max_message: usize,
    /// Send an `echo` after this much silence, and drop the connection after as much again
    /// without any reply (up to 6 intervals more while our own requests are outstanding,
    /// since a server computing a big reply is silent too).
    /// `None` disables the probe.
    pub probe_interval: Option<Duration>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            max_message: DEFAULT_MAX_MESSAGE,
            probe_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// A notification from the server: its method and the whole message (parse `params` from
/// it with the type you expect).
#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub frame: Vec<u8>,
    /// 1 for the first notification of the session, 2 for the next, ...
    pub seq: u64,
}

/// A reply frame and the number of notifications received before it.
type Reply = Result<(Vec<u8>, u64), RpcError>;

struct Shared {
    pending: Mutex<Pending>,
    closed_tx: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct Pending {
    map: HashMap<u64, oneshot::Sender<Reply>>,
    closed: Option<String>,
}

impl Shared {
    /// Marks the session closed and fails every pending call. Idempotent.
    fn close(&self, why: &str) {
        let drained = {
            let mut p = match self.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            if p.closed.is_some() {
                return;
            }
            p.closed = Some(why.to_owned());
            std::mem::take(&mut p.map)
        };
        for (_, tx) in drained {
            let _ = tx.send(Err(RpcError::ConnectionLost(why.to_owned())));
        }
        self.closed_tx.send_replace(Some(why.to_owned()));
    }
}

struct Inner {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next_id: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close("connection handle dropped");
    }
}

/// A JSON-RPC session. Cheap to clone; all clones share the session, which closes when the
/// last clone is dropped or [`Connection::close`] is called.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Serialize)]
struct Request<'a, P: ?Sized> {
    id: u64,
    method: &'a str,
    params: &'a P,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResultOnly<T> {
    result: T,
}

impl Connection {
    /// Starts a session on a connected stream. Notifications arrive on the returned
    /// receiver in the order the server sent them.
    pub fn start<S>(
        stream: S,
        cfg: RpcConfig,
    ) -> (Connection, mpsc::UnboundedReceiver<Notification>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(stream);
        let (closed_tx, closed_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            closed_tx,
        });
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let next_id = Arc::new(AtomicU64::new(1));
        tokio::spawn(writer(wr, out_rx, shared.clone(), closed_rx.clone()));
        tokio::spawn(reader(
            rd,
            cfg,
            shared.clone(),
            out_tx.clone(),
            note_tx,
            next_id.clone(),
            closed_rx,
        ));
        let conn = Connection {
            inner: Arc::new(Inner {
                shared,
                out: out_tx,
                next_id,
            }),
        };
        (conn, note_rx)
    }

    /// Sends a request and returns the whole reply message (with `"error": null`).
    pub async fn call_raw<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_raw_seq(method, params).await.map(|(f, _)| f)
    }

    /// Like [`Connection::call_raw`], also returning how many notifications arrived before
    /// the reply ([`Notification::seq`] of the last one), so a caller can wait until those
    /// are processed (read-your-writes on a monitor cache).
    pub async fn call_raw_seq<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<(Vec<u8>, u64), RpcError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(128);
        serde_json::to_writer(&mut buf, &Request { id, method, params }).map_err(|e| {
            RpcError::Encode {
                method: method.to_owned(),
                msg: e.to_string(),
            }
        })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = match self.inner.shared.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(why) = &p.closed {
                return Err(RpcError::ConnectionLost(why.clone()));
            }
            p.map.insert(id, tx);
        }
        if self.inner.out.send(buf).is_err() {
            self.inner.shared.close("writer stopped");
        }
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(RpcError::Server { error, .. })) => Err(RpcError::Server {
                method: method.to_owned(),
                error,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RpcError::ConnectionLost("reply channel dropped".into())),
        }
    }

    /// Sends a request and decodes its `result` as `T`.
    pub async fn call<P: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<T, RpcError> {
        let frame = self.call_raw(method, params).await?;
        decode_result(method, &frame)
    }

    /// Requests sent (or being sent) whose reply has not arrived yet.
    pub fn pending_count(&self) -> usize {
        lock_pending(&self.inner.shared).map.len()
    }

    /// Closes the session: pending calls fail with [`RpcError::ConnectionLost`].
    pub fn close(&self) {
        self.inner.shared.close("closed by client");
    }

    /// The reason the session closed, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.shared.closed_tx.borrow().clone()
    }

    /// Waits until the session is closed; returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.inner.shared.closed_tx.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "session gone".into();
            }
        }
    }
}

/// Decodes the `result` member of a reply message.
pub fn decode_result<T: DeserializeOwned>(method: &str, frame: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice::<ResultOnly<T>>(frame)
        .map(|r| r.result)
        .map_err(|e| RpcError::Decode {
            method: method.to_owned(),
            msg: e.to_string(),
        })
}

async fn writer<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
    mut closed: watch::Receiver<Option<String>>,
) {
    tokio::pin!(wr);
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = closed.wait_for(|c| c.is_some()) => break,
        };
        // Coalesce what is already queued into one write (pipelined small requests).
        let mut batch = first;
        let mut err = None;
        while let Ok(more) = rx.try_recv() {
            if batch.len() + more.len() > 1 << 20 {
                if let Err(e) = wr.write_all(&batch).await {
                    err = Some(e);
                    break;
                }
                batch = more;
            } else {
                batch.extend_from_slice(&more);
            }
        }
        if err.is_none() {
            if let Err(e) = wr.write_all(&batch).await {
                err = Some(e);
            } else if let Err(e) = wr.flush().await {
                err = Some(e);
            }
        }
        if let Some(e) = err {
            shared.close(&format!("write failed: {e}"));
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn reader<R: AsyncRead>(
    rd: R,
    cfg: RpcConfig,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    notes: mpsc::UnboundedSender<Notification>,
    next_id: Arc<AtomicU64>,
    mut closed: watch::Receiver<Option<String>>,
) {
    tokio::pin!(rd);
    const CHUNK: usize = 256 * 1024;
    /// Probe intervals of silence tolerated after our echo while requests are pending.
    const BUSY_GRACE_ROUNDS: u32 = 6;
    let mut framer = Framer::new(cfg.max_message);
    let mut probe_sent = false;
    let mut silent_rounds = 0u32;
    let mut note_seq = 0u64;
    let why = loop {
        let buf = framer.read_buf(CHUNK);
        let read = async {
            match cfg.probe_interval {
                Some(d) => tokio::time::timeout(d, rd.read(buf)).await.ok(),
                None => Some(rd.read(buf).await),
            }
        };
        let res = tokio::select! {
            r = read => r,
            _ = closed.wait_for(|c| c.is_some()) => {
                framer.commit(0, CHUNK);
                break String::new();
            }
        };
        match res {
            None => {
                framer.commit(0, CHUNK);
                if probe_sent {
                    // A server busy computing a big reply (e.g. a monitor of a large db)
                    // is silent too: with requests outstanding, allow it longer.
                    silent_rounds += 1;
                    let busy = !lock_pending(&shared).map.is_empty();
                    if !busy || silent_rounds >= BUSY_GRACE_ROUNDS {
                        break "inactivity probe: no reply from server".to_owned();
                    }
                    continue;
                }
                silent_rounds = 0;
                // Our own echo; its reply has no waiter and is simply dropped.
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let mut b = Vec::new();
                let _ = serde_json::to_writer(
                    &mut b,
                    &Request::<[(); 0]> {
                        id,
                        method: "echo",
                        params: &[],
                    },
                );
                let _ = out.send(b);
                probe_sent = true;
            }
            Some(Ok(0)) => {
                framer.commit(0, CHUNK);
                break "connection closed by server".to_owned();
            }
            Some(Ok(n)) => {
                framer.commit(n, CHUNK);
                probe_sent = false;
                let mut failed = None;
                loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => {
                            if let Err(e) = dispatch(frame, &shared, &out, &notes, &mut note_seq) {
                                failed = Some(e);
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(format!("framing error: {e}"));
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
            }
            Some(Err(e)) => {
                framer.commit(0, CHUNK);
                break format!("read failed: {e}");
            }
        }
    };
    if !why.is_empty() {
        tracing::debug!(reason = %why, "ovsdb connection closed");
        shared.close(&why);
    }
}

fn lock_pending(shared: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    match shared.pending.lock() {
        Ok(p) => p,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn dispatch(
    frame: Vec<u8>,
    shared: &Shared,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    notes: &mpsc::UnboundedSender<Notification>,
    seq: &mut u64,
) -> Result<(), String> {
    let head: Head<'_> =
        serde_json::from_slice(&frame).map_err(|e| format!("malformed JSON-RPC message: {e}"))?;
    if let Some(method) = head.method {
        let id = head.id.filter(|i| i.get() != "null");
        match (method.as_str(), id) {
            ("echo", Some(id)) => {
                let params = head.params.map(RawValue::get).unwrap_or("[]");
                let reply = format!(r#"{{"id":{},"result":{},"error":null}}"#, id.get(), params);
                let _ = out.send(reply.into_bytes());
            }
            (_, Some(id)) => {
                let reply = format!(
                    r#"{{"id":{},"result":null,"error":"unknown method"}}"#,
                    id.get()
                );
                let _ = out.send(reply.into_bytes());
            }
            (_, None) => {
                *seq += 1;
                let _ = notes.send(Notification {
                    method,
                    frame,
                    seq: *seq,
                });
            }
        }
        return Ok(());
    }
    let id = head
        .id
        .ok_or("JSON-RPC message with neither method nor id")?;
    let Ok(id) = id.get().parse::<u64>() else {
        // Not one of ours (we only use integer ids); ignore rather than fail.
        return Ok(());
    };
    let error = head
        .error
        .filter(|e| e.get() != "null")
        .map(|e| e.get().to_owned());
    let tx = {
        let mut p = match shared.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        p.map.remove(&id)
    };
    if let Some(tx) = tx {
        let _ = tx.send(match error {
            None => Ok((frame, *seq)),
            Some(error) => Err(RpcError::Server {
                method: String::new(),
                error,
            }),
        });
    }
    Ok(())
}
