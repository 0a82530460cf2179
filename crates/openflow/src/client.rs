//! The IO side: one OpenFlow 1.3 connection to a bridge's management socket
//! (`<ovs rundir>/<bridge>.mgmt`). A reader task answers the switch's echo requests and
//! routes replies (and errors) to the request with the same xid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::message::{negotiate, Header, HEADER_LEN, OFP_VERSION_1_3};
use crate::{AggregateRequest, AggregateStats, Error, Flow, FlowMod, Message};

/// Default bound on every request (a local switch answers in microseconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The management socket ovs-vswitchd creates for `bridge` in its run directory.
pub fn mgmt_socket(ovs_rundir: &Path, bridge: &str) -> PathBuf {
    ovs_rundir.join(format!("{bridge}.mgmt"))
}

type Pending = Mutex<HashMap<u32, oneshot::Sender<Message>>>;

struct Inner {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_xid: AtomicU32,
    closed: AtomicBool,
    timeout: Duration,
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Message>>> {
        // The map stays consistent even if a holder panicked.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn xid(&self) -> u32 {
        self.next_xid.fetch_add(1, Ordering::Relaxed)
    }

    async fn write(&self, bytes: &[u8]) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        Ok(())
    }
}

/// An OpenFlow 1.3 connection. Dropping it closes the connection.
pub struct Client {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_frame(r: &mut OwnedReadHalf) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; HEADER_LEN];
    r.read_exact(&mut buf).await?;
    let h = Header::parse(&buf)?;
    buf.resize(usize::from(h.length), 0);
    r.read_exact(&mut buf[HEADER_LEN..]).await?;
    Ok(buf)
}

impl Client {
    /// Connects to `<ovs_rundir>/<bridge>.mgmt`.
    pub async fn connect_bridge(ovs_rundir: &Path, bridge: &str) -> Result<Client, Error> {
        Self::connect(&mgmt_socket(ovs_rundir, bridge)).await
    }

    /// Connects to a unix socket and negotiates OpenFlow 1.3.
    pub async fn connect(path: &Path) -> Result<Client, Error> {
        Self::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Client, Error> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (mut rd, mut wr) = stream.into_split();
        let hello = Message::Hello {
            versions: Some(1 << OFP_VERSION_1_3),
        }
        .encode(0)?;
        wr.write_all(&hello).await?;
        // The peer's HELLO comes first; nothing else is valid before it.
        let frame = tokio::time::timeout(timeout, read_frame(&mut rd))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let (h, m) = Message::decode(&frame)?;
        let Message::Hello { versions } = m else {
            return Err(Error::Unexpected(format!(
                "message type {} before HELLO",
                h.typ
            )));
        };
        if !negotiate(h.version, versions) {
            return Err(Error::Version {
                version: h.version,
                bitmap: versions,
            });
        }
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(wr),
            pending: Mutex::new(HashMap::new()),
            next_xid: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            timeout,
        });
        let reader = tokio::spawn(read_loop(rd, inner.clone()));
        Ok(Client {
            inner,
            reader,
            path: path.to_path_buf(),
        })
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False once the switch closed the connection (e.g. ovs-vswitchd restarted).
    pub fn is_connected(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
    }

    /// Sends `msg` and waits for the message with the same xid. An `OFPT_ERROR` reply
    /// becomes [`Error::Switch`].
    pub async fn request(&self, msg: &Message) -> Result<Message, Error> {
        let xid = self.inner.xid();
        let rx = self.register(xid);
        let res = async {
            self.inner.write(&msg.encode(xid)?).await?;
            self.wait(rx).await
        }
        .await;
        self.inner.pending().remove(&xid);
        match res? {
            Message::Error(e) => Err(Error::Switch(e.error())),
            m => Ok(m),
        }
    }

    fn register(&self, xid: u32) -> oneshot::Receiver<Message> {
        let (tx, rx) = oneshot::channel();
        self.inner.pending().insert(xid, tx);
        rx
    }

    async fn wait(&self, rx: oneshot::Receiver<Message>) -> Result<Message, Error> {
        match tokio::time::timeout(self.inner.timeout, rx).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(self.inner.timeout)),
        }
    }

    /// Round trip to the switch.
    pub async fn echo(&self) -> Result<(), Error> {
        match self
            .request(&Message::EchoRequest(b"ovnk".to_vec()))
            .await?
        {
            Message::EchoReply(_) => Ok(()),
            m => Err(Error::Unexpected(format!("{m:?} to ECHO_REQUEST"))),
        }
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<(), Error> {
        match self.request(&Message::BarrierRequest).await? {
            Message::BarrierReply => Ok(()),
            m => Err(Error::Unexpected(format!("{m:?} to BARRIER_REQUEST"))),
        }
    }

    /// Sends the flow mods followed by a barrier: when this returns `Ok`, all of them are
    /// in the switch's tables. The first error the switch reported for any of them is
    /// returned (the others may have been applied: OpenFlow 1.3 has no transactions).
    pub async fn flow_mods(&self, mods: &[FlowMod]) -> Result<(), Error> {
        let mut bytes = Vec::new();
        let mut waits = Vec::with_capacity(mods.len());
        for fm in mods {
            let xid = self.inner.xid();
            waits.push((xid, self.register(xid)));
            bytes.extend(Message::FlowMod(fm.clone()).encode(xid)?);
        }
        let bxid = self.inner.xid();
        let brx = self.register(bxid);
        bytes.extend(Message::BarrierRequest.encode(bxid)?);
        let res = async {
            self.inner.write(&bytes).await?;
            self.wait(brx).await
        }
        .await;
        {
            let mut p = self.inner.pending();
            p.remove(&bxid);
            for (xid, _) in &waits {
                p.remove(xid);
            }
        }
        match res? {
            Message::BarrierReply => {}
            Message::Error(e) => return Err(Error::Switch(e.error())),
            m => return Err(Error::Unexpected(format!("{m:?} to BARRIER_REQUEST"))),
        }
        // Replies are routed in order, so any error for a flow mod is there by now.
        for (_, mut rx) in waits {
            if let Ok(Message::Error(e)) = rx.try_recv() {
                return Err(Error::Switch(e.error()));
            }
        }
        Ok(())
    }

    /// Adds (or replaces) the flows and waits until they are installed.
    pub async fn add_flows(&self, flows: &[Flow]) -> Result<(), Error> {
        let mods: Vec<FlowMod> = flows.iter().map(FlowMod::add).collect();
        self.flow_mods(&mods).await
    }

    /// Deletes exactly these flows (table, priority, match).
    pub async fn delete_flows_strict(&self, flows: &[Flow]) -> Result<(), Error> {
        let mods: Vec<FlowMod> = flows.iter().map(FlowMod::delete_strict).collect();
        self.flow_mods(&mods).await
    }

    /// Deletes every flow whose cookie matches `cookie` under `mask`.
    pub async fn delete_by_cookie(&self, cookie: u64, mask: u64) -> Result<(), Error> {
        self.flow_mods(&[FlowMod::delete_by_cookie(cookie, mask)])
            .await
    }

    /// Counts the flows (and their packets/bytes) matching the request.
    pub async fn aggregate(&self, req: &AggregateRequest) -> Result<AggregateStats, Error> {
        match self
            .request(&Message::AggregateRequest(req.clone()))
            .await?
        {
            Message::AggregateReply(s) => Ok(s),
            m => Err(Error::Unexpected(format!("{m:?} to OFPMP_AGGREGATE"))),
        }
    }
}

async fn read_loop(mut rd: OwnedReadHalf, inner: Arc<Inner>) {
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("OpenFlow connection ends: {e}");
                break;
            }
        };
        let (h, m) = match Message::decode(&frame) {
            Ok(x) => x,
            Err(e) => {
                // The length was valid, so the stream is still in sync: skip this one.
                // A request waiting for it times out with a clear error.
                tracing::warn!("undecodable OpenFlow message ({} bytes): {e}", frame.len());
                continue;
            }
        };
        if let Message::EchoRequest(data) = &m {
            let reply = Message::EchoReply(data.clone()).encode(h.xid);
            if let Ok(bytes) = reply {
                if inner.write(&bytes).await.is_err() {
                    break;
                }
            }
            continue;
        }
        let tx = inner.pending().remove(&h.xid);
        match tx {
            Some(tx) => {
                let _ = tx.send(m);
            }
            None => tracing::debug!(xid = h.xid, "unsolicited OpenFlow message type {}", h.typ),
        }
    }
    inner.closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiter with `Closed`.
    inner.pending().clear();
}
