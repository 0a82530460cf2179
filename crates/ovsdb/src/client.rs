//! The connection manager and client handle: remotes tried in turn with exponential backoff
//! and jitter, optional leader-only mode for Raft clusters (via the `_Server` database), a
//! monitor that keeps the [`Cache`] right across reconnects, and transactions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::sync::watch;

use crate::cache::{ApplyMode, Cache, CacheError, IndexSpec};
use crate::model::{check_models, SchemaMismatch};
use crate::rpc::{Connection, Notification, RpcConfig, RpcError};
use crate::schema::{DatabaseSchema, SchemaError};
use crate::stream::{Remote, Stream, TlsError, TlsFiles};
use crate::txn::{
    parse_transact_reply, Condition, ErrorKind, OpResult, TransactParams, Transaction, TxnError,
};
use crate::update::{
    decode_notice, CondSinceReply, Notice, RowUpdate1, RowUpdate2, TableUpdates, Updates,
};

/// Which monitor method to use. `Auto` tries `monitor_cond_since`, then `monitor_cond`, then
/// `monitor`, as the server supports them; the others force one (for tests and old servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MonitorMethod {
    #[default]
    Auto,
    CondSince,
    Cond,
    Plain,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Remotes to try in turn (`unix:PATH`, `tcp:IP:PORT`, `ssl:IP:PORT`).
    pub remotes: Vec<Remote>,
    pub database: String,
    /// Needed for `ssl:` remotes.
    pub tls: Option<TlsFiles>,
    /// Only stay connected to the Raft leader of a clustered database.
    pub leader_only: bool,
    /// Tables to monitor into the cache: `None` = every table, `Some(vec![])` = no monitor.
    pub monitor_tables: Option<Vec<String>>,
    pub monitor_method: MonitorMethod,
    /// Per-table monitor conditions (`where` clauses, conditions ANDed); tables not listed
    /// are monitored whole. Needs `monitor_cond` or newer; change them live with
    /// [`Client::set_monitor_condition`].
    pub monitor_where: HashMap<String, Vec<Condition>>,
    /// Tables/columns the caller's models need (checked at every connect).
    pub models: Vec<(&'static str, &'static [&'static str])>,
    /// Cache indexes to maintain.
    pub indexes: Vec<(String, IndexSpec)>,
    pub rpc: RpcConfig,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a call waits for a connection before failing with `NotConnected`.
    pub request_timeout: Duration,
    /// Timeout of connecting plus the initial handshake (schema, monitor) per attempt.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(remotes: Vec<Remote>, database: impl Into<String>) -> Self {
        ClientConfig {
            remotes,
            database: database.into(),
            tls: None,
            leader_only: false,
            monitor_tables: None,
            monitor_method: MonitorMethod::Auto,
            monitor_where: HashMap::new(),
            models: Vec::new(),
            indexes: Vec::new(),
            rpc: RpcConfig::default(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Client errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An operation does not fit the schema; nothing was sent.
    #[error("operation {index}: {source}")]
    Schema {
        index: usize,
        #[source]
        source: SchemaError,
    },
    /// The server rejected the transaction (typed per-operation or commit error).
    #[error(transparent)]
    Txn(#[from] TxnError),
    /// The connection dropped while the request was in flight: it may or may not have been
    /// applied. Re-check (the cache, or a guarded retry) before trying again.
    #[error("connection lost, outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No connection could be had within the request timeout.
    #[error("not connected: {0}")]
    NotConnected(String),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    SchemaMismatch(#[from] SchemaMismatch),
    #[error("TLS: {0}")]
    Tls(Arc<TlsError>),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The client was shut down.
    #[error("client stopped")]
    Stopped,
}

impl Error {
    /// Errors after which retrying a guarded (idempotent) transaction makes sense.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::OutcomeUnknown(_) | Error::NotConnected(_) => true,
            Error::Rpc(RpcError::ConnectionLost(_)) => true,
            Error::Txn(t) => matches!(t.kind(), Some(ErrorKind::Cluster | ErrorKind::NotLeader)),
            _ => false,
        }
    }
}

#[derive(Clone)]
struct Live {
    conn: Connection,
    /// Seq of the last notification the session loop has applied to the cache.
    applied: watch::Receiver<u64>,
    schema: Arc<DatabaseSchema>,
    remote: Remote,
}

struct Shared {
    cfg: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    cache: Arc<Cache>,
    live: watch::Sender<Option<Live>>,
    /// Set once the first sync is done, or to the fatal error that stopped the manager.
    status: watch::Sender<Status>,
    stop: watch::Sender<bool>,
    last_txn_id: Mutex<Option<String>>,
    /// OVSDB locks this client wants (re-requested after every reconnect) and whether the
    /// current connection holds each.
    locks: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Why the last connect attempt failed (for error messages).
    last_error: Mutex<Option<String>>,
    /// Current monitor conditions (start from `cfg.monitor_where`).
    conditions: Mutex<HashMap<String, Vec<Condition>>>,
    /// Number of successful (re)connections, for tests and metrics.
    connects: std::sync::atomic::AtomicU64,
    /// Number of monitors resumed from the last transaction id (no full resync).
    resumes: std::sync::atomic::AtomicU64,
}

#[derive(Clone, Debug)]
enum Status {
    Starting,
    Synced,
    Failed(Error),
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        if let Some(l) = self.shared.live.borrow().as_ref() {
            l.conn.close();
        }
    }
}

/// A cloneable, thread-safe OVSDB client. The connection manager runs in the background
/// until the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    h: Arc<Handle>,
}

const MONITOR_ID: &str = "ovsdb-rs-db";
const SERVER_MONITOR_ID: &str = "ovsdb-rs-server";
const ZERO_TXN: &str = "00000000-0000-0000-0000-000000000000";

impl Client {
    /// Starts the connection manager and waits until the first connection is up and the
    /// cache is synced (or a fatal error such as a schema mismatch occurs, or
    /// `connect_timeout` passes with no success).
    pub async fn connect(cfg: ClientConfig) -> Result<Client, Error> {
        let wait = cfg.connect_timeout;
        let c = Client::start(cfg)?;
        let mut st = c.h.shared.status.subscribe();
        let res = tokio::time::timeout(wait, st.wait_for(|s| !matches!(s, Status::Starting))).await;
        match res {
            Ok(Ok(s)) => match &*s {
                Status::Failed(e) => Err(e.clone()),
                _ => Ok(c.clone()),
            },
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::NotConnected(format!(
                "no usable server among {} within {:?}; last error: {}",
                remotes_str(&c.h.shared.cfg.remotes),
                wait,
                lock(&c.h.shared.last_error).as_deref().unwrap_or("none")
            ))),
        }
    }

    /// Starts the connection manager without waiting.
    pub fn start(cfg: ClientConfig) -> Result<Client, Error> {
        if cfg.remotes.is_empty() {
            return Err(Error::Config("no remotes".into()));
        }
        let needs_tls = cfg
            .remotes
            .iter()
            .any(|r| matches!(r, Remote::Ssl(_) | Remote::SslHost { .. }));
        let tls = match (&cfg.tls, needs_tls) {
            (Some(t), _) => Some(t.client_config().map_err(|e| Error::Tls(Arc::new(e)))?),
            (None, true) => {
                return Err(Error::Config(
                    "ssl: remotes need a private key, certificate and CA certificate".into(),
                ))
            }
            (None, false) => None,
        };
        let cache = Arc::new(Cache::new());
        for (t, spec) in &cfg.indexes {
            cache.add_index(t, spec.clone());
        }
        let conditions = Mutex::new(cfg.monitor_where.clone());
        let shared = Arc::new(Shared {
            conditions,
            cfg,
            tls,
            cache,
            live: watch::channel(None).0,
            status: watch::channel(Status::Starting).0,
            stop: watch::channel(false).0,
            last_txn_id: Mutex::new(None),
            last_error: Mutex::new(None),
            locks: Mutex::new(HashMap::new()),
            connects: std::sync::atomic::AtomicU64::new(0),
            resumes: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(manager(shared.clone()));
        Ok(Client {
            h: Arc::new(Handle { shared }),
        })
    }

    /// The monitor cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.h.shared.cache
    }

    /// The schema of the current (or last) connection.
    pub fn schema(&self) -> Option<Arc<DatabaseSchema>> {
        self.h.shared.cache.schema()
    }

    /// The remote currently connected to.
    pub fn current_remote(&self) -> Option<Remote> {
        self.h
            .shared
            .live
            .borrow()
            .as_ref()
            .map(|l| l.remote.clone())
    }

    /// How many times a connection was established (and synced).
    pub fn connect_count(&self) -> u64 {
        self.h
            .shared
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many reconnects resumed the monitor from the last transaction id
    /// (`monitor_cond_since` found it) instead of resyncing everything.
    pub fn resume_count(&self) -> u64 {
        self.h
            .shared
            .resumes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last transaction id seen by the monitor (clustered databases).
    pub fn last_txn_id(&self) -> Option<String> {
        lock(&self.h.shared.last_txn_id).clone()
    }

    /// Requests on the current connection still waiting for their reply.
    pub fn requests_in_flight(&self) -> usize {
        self.h
            .shared
            .live
            .borrow()
            .as_ref()
            .map_or(0, |l| l.conn.pending_count())
    }

    /// Drops the current connection (the manager reconnects); for tests and operators.
    pub fn disconnect(&self) {
        if let Some(l) = self.h.shared.live.borrow().as_ref() {
            l.conn.close();
        }
    }

    async fn live(&self) -> Result<Live, Error> {
        let mut rx = self.h.shared.live.subscribe();
        let timeout = self.h.shared.cfg.request_timeout;
        let mut stop = self.h.shared.stop.subscribe();
        tokio::select! {
            r = tokio::time::timeout(timeout, rx.wait_for(|l| l.as_ref().is_some_and(|l| l.conn.closed_reason().is_none()))) => match r {
                Ok(Ok(l)) => l.clone().ok_or(Error::Stopped),
                Ok(Err(_)) => Err(Error::Stopped),
                Err(_) => Err(Error::NotConnected(format!("no connection within {timeout:?}"))),
            },
            _ = stop.wait_for(|s| *s) => Err(Error::Stopped),
        }
    }

    /// Waits until the session has applied notification `seq` (or the session ends).
    async fn wait_applied(&self, live: &Live, seq: u64) {
        let mut applied = live.applied.clone();
        let wait = applied.wait_for(|a| *a >= seq);
        let _ = tokio::time::timeout(self.h.shared.cfg.request_timeout, wait).await;
    }

    /// Checks the transaction against the schema, sends it, and returns one result per
    /// operation, or a typed error.
    pub async fn transact(&self, txn: &Transaction) -> Result<Vec<OpResult>, Error> {
        let live = self.live().await?;
        if txn.database == live.schema.name {
            txn.check(&live.schema)
                .map_err(|(index, source)| Error::Schema { index, source })?;
        }
        match live
            .conn
            .call_raw_seq("transact", &TransactParams(txn))
            .await
        {
            Ok((frame, seq)) => {
                let res = parse_transact_reply(txn, &frame);
                // Read-your-writes: ovsdb-server sends a transaction's monitor updates
                // before its reply, so once those are applied the cache shows this commit.
                self.wait_applied(&live, seq).await;
                Ok(res?)
            }
            Err(RpcError::ConnectionLost(why)) => Err(Error::OutcomeUnknown(why)),
            Err(e) => Err(Error::Rpc(e)),
        }
    }

    /// Commits `txn`, deciding by the cache whether an attempt whose outcome is unknown took
    /// effect: after a lost connection it waits for the reconnect and resync, then asks
    /// `committed(cache)` (e.g. "a port named X exists"); only if that says no is the
    /// transaction sent again. Returns `Some(results)` from the attempt that answered, or
    /// `None` when the cache showed an earlier attempt had committed.
    pub async fn transact_checked<F>(
        &self,
        txn: &Transaction,
        attempts: usize,
        committed: F,
    ) -> Result<Option<Vec<OpResult>>, Error>
    where
        F: Fn(&Cache) -> bool,
    {
        let mut delay = self.h.shared.cfg.backoff_min;
        let mut last = Error::NotConnected("no attempt made".into());
        let mut unknown = false;
        for _ in 0..attempts.max(1) {
            if unknown {
                // `live()` only yields a connection whose monitor has synced the cache.
                self.live().await?;
                if committed(self.cache()) {
                    return Ok(None);
                }
            }
            match self.transact(txn).await {
                Ok(r) => return Ok(Some(r)),
                Err(e) if e.is_transient() => {
                    unknown |= matches!(
                        e,
                        Error::OutcomeUnknown(_) | Error::Rpc(RpcError::ConnectionLost(_))
                    ) || matches!(&e, Error::Txn(t) if t.kind() == Some(&ErrorKind::Cluster));
                    last = e;
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(self.h.shared.cfg.backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Retries a transaction on transient errors (connection lost / outcome unknown, not
    /// connected, Raft leader changes) up to `attempts` times.
    ///
    /// Only for transactions that are idempotent by construction: guard them with a `wait`
    /// (e.g. "no row named X exists yet") or an `assert`, so that a second delivery of an
    /// already-committed transaction fails instead of applying twice. The caller sees that
    /// failure (e.g. `timed out` on the guard) and can conclude the first attempt committed.
    pub async fn transact_retry(
        &self,
        txn: &Transaction,
        attempts: usize,
    ) -> Result<Vec<OpResult>, Error> {
        let mut delay = self.h.shared.cfg.backoff_min;
        let mut last = Error::NotConnected("no attempt made".into());
        for _ in 0..attempts.max(1) {
            match self.transact(txn).await {
                Err(e) if e.is_transient() => {
                    last = e;
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(self.h.shared.cfg.backoff_max);
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Sends any JSON-RPC method on the current connection and returns its `result`.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let live = self.live().await?;
        Ok(live.conn.call(method, &params).await?)
    }

    /// As [`Client::call`], but returns only once every monitor update that arrived before
    /// the reply is in the cache (and sent to subscribers): a caller that planned from the
    /// cache can plan its next step from it right away (a `transact` sent raw).
    pub async fn call_applied(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let live = self.live().await?;
        let (frame, seq) = live.conn.call_raw_seq(method, &params).await?;
        self.wait_applied(&live, seq).await;
        Ok(crate::rpc::decode_result(method, &frame)?)
    }

    /// Changes the monitor condition of one table (`monitor_cond_change`); an empty list
    /// means every row. The cache then gets inserts/deletes for rows entering/leaving the
    /// condition, and later reconnects use the new condition.
    pub async fn set_monitor_condition(
        &self,
        table: &str,
        conditions: Vec<Condition>,
    ) -> Result<(), Error> {
        let shared = &self.h.shared;
        if let Some(schema) = self.schema() {
            let mut t = Transaction::new(schema.name.clone());
            t.select(table, conditions.clone());
            t.check(&schema)
                .map_err(|(index, source)| Error::Schema { index, source })?;
        }
        lock(&shared.conditions).insert(table.to_owned(), conditions.clone());
        let live = match self.live().await {
            Ok(l) => l,
            Err(e) => {
                // Not applied on a connection: the next one must resync from scratch.
                *lock(&shared.last_txn_id) = None;
                return Err(e);
            }
        };
        let req = json!([MONITOR_ID, MONITOR_ID, { table: [{ "where": conditions }] }]);
        match live.conn.call_raw_seq("monitor_cond_change", &req).await {
            Ok((_, seq)) => {
                self.wait_applied(&live, seq).await;
                Ok(())
            }
            Err(e) => {
                *lock(&shared.last_txn_id) = None;
                live.conn.close();
                Err(e.into())
            }
        }
    }

    /// Asks for the OVSDB lock `name` (RFC 7047 §4.1.8) and returns a watch of whether this
    /// client holds it: true at once if it was free, later when the holder lets go. The
    /// client asks again after every reconnect (locks belong to a connection) until
    /// [`Client::unlock`]. Guard transactions with [`Transaction::assert_lock`].
    pub async fn lock(&self, name: &str) -> Result<watch::Receiver<bool>, Error> {
        self.lock_op("lock", name).await
    }

    /// Takes the lock `name` even if another client holds it (that one is told "stolen").
    pub async fn steal(&self, name: &str) -> Result<watch::Receiver<bool>, Error> {
        self.lock_op("steal", name).await
    }

    async fn lock_op(&self, method: &str, name: &str) -> Result<watch::Receiver<bool>, Error> {
        if !crate::schema::is_id(name) {
            return Err(Error::Config(format!("invalid lock name {name:?}")));
        }
        let rx = lock(&self.h.shared.locks)
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        let live = self.live().await?;
        let r: LockReply = live.conn.call(method, &json!([name])).await?;
        if let Some(tx) = lock(&self.h.shared.locks).get(name) {
            // A "locked" notification may have raced ahead of this reply; never undo it.
            tx.send_if_modified(|held| {
                let was = *held;
                *held |= r.locked;
                was != *held
            });
        }
        Ok(rx)
    }

    /// Releases (or stops waiting for) the lock `name`.
    pub async fn unlock(&self, name: &str) -> Result<(), Error> {
        if let Some(tx) = lock(&self.h.shared.locks).remove(name) {
            tx.send_replace(false);
        }
        let live = self.live().await?;
        live.conn
            .call::<_, serde_json::Value>("unlock", &json!([name]))
            .await?;
        Ok(())
    }

    /// Round trip to the server.
    pub async fn echo(&self) -> Result<(), Error> {
        self.call("echo", json!([])).await.map(|_| ())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn remotes_str(r: &[Remote]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn jitter(d: Duration) -> Duration {
    // "Equal jitter": half fixed, half random, so retries spread out but still progress.
    let half = d / 2;
    let extra = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(extra)
}

#[derive(serde::Deserialize)]
struct LockReply {
    locked: bool,
}

enum SessionEnd {
    Stopped,
    Lost(String),
}

enum SessionFail {
    Fatal(Error),
    Retry(String),
}

async fn manager(shared: Arc<Shared>) {
    let n = shared.cfg.remotes.len();
    let mut idx = 0usize;
    let mut delay = shared.cfg.backoff_min;
    let mut failures_in_round = 0usize;
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let remote = shared.cfg.remotes[idx % n].clone();
        let started = tokio::time::Instant::now();
        let res = tokio::select! {
            r = session(&shared, &remote) => r,
            _ = stop.wait_for(|s| *s) => Ok(SessionEnd::Stopped),
        };
        shared.live.send_replace(None);
        for tx in lock(&shared.locks).values() {
            tx.send_replace(false);
        }
        match res {
            Ok(SessionEnd::Stopped) => break,
            Ok(SessionEnd::Lost(why)) => {
                tracing::info!(remote = %remote, reason = %why, "ovsdb connection lost; reconnecting");
                // A session that dies right away (a flapping or hostile server) must not
                // turn into a tight reconnect loop: only a lasting one resets the backoff.
                if started.elapsed() > Duration::from_secs(5) {
                    delay = shared.cfg.backoff_min;
                } else {
                    delay = (delay * 2).min(shared.cfg.backoff_max);
                }
                failures_in_round = 0;
                // The server we had may be gone (or no longer leader): try the next first.
                if n > 1 {
                    idx += 1;
                }
                tokio::time::sleep(jitter(delay)).await;
            }
            Err(SessionFail::Fatal(e)) => {
                tracing::error!(remote = %remote, error = %e, "ovsdb client stopping");
                shared.status.send_replace(Status::Failed(e));
                break;
            }
            Err(SessionFail::Retry(why)) => {
                tracing::debug!(remote = %remote, reason = %why, "ovsdb connect attempt failed");
                *lock(&shared.last_error) = Some(format!("{remote}: {why}"));
                idx += 1;
                failures_in_round += 1;
                if failures_in_round >= n {
                    failures_in_round = 0;
                    tokio::select! {
                        _ = tokio::time::sleep(jitter(delay)) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    delay = (delay * 2).min(shared.cfg.backoff_max);
                }
            }
        }
    }
    shared.live.send_replace(None);
}

fn retry<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SessionFail + '_ {
    move |e| SessionFail::Retry(format!("{what}: {e}"))
}

/// Connects, checks the schema and leadership, monitors, then serves notifications until
/// the connection ends.
async fn session(shared: &Arc<Shared>, remote: &Remote) -> Result<SessionEnd, SessionFail> {
    let cfg = &shared.cfg;
    let setup = async {
        let stream = Stream::connect(remote, shared.tls.as_ref())
            .await
            .map_err(retry("connect"))?;
        let (conn, notes) = Connection::start(stream, cfg.rpc.clone());
        let schema_json: serde_json::Value = conn
            .call("get_schema", &json!([cfg.database]))
            .await
            .map_err(retry("get_schema"))?;
        let schema = Arc::new(
            DatabaseSchema::from_json(&schema_json)
                .map_err(|e| SessionFail::Fatal(Error::Config(e.to_string())))?,
        );
        check_models(&schema, &cfg.models).map_err(|e| SessionFail::Fatal(e.into()))?;
        if cfg.leader_only {
            check_leader(&conn, &cfg.database).await?;
        }
        // Ask to be told (instead of disconnected) when the database changes; old servers
        // lack the method, which is fine.
        let _ = conn
            .call::<_, serde_json::Value>("set_db_change_aware", &json!([true]))
            .await;
        shared.cache.set_schema(schema.clone());
        let tables: Vec<String> = match &cfg.monitor_tables {
            Some(t) => t.clone(),
            None => schema.tables.keys().cloned().collect(),
        };
        if !tables.is_empty() {
            start_monitor(shared, &conn, &tables).await?;
        }
        if cfg.leader_only {
            start_server_monitor(&conn, &cfg.database).await?;
        }
        // Locks belong to a connection: ask again for the ones we want.
        let wanted: Vec<String> = lock(&shared.locks).keys().cloned().collect();
        for name in wanted {
            let r: LockReply = conn
                .call("lock", &json!([name]))
                .await
                .map_err(retry("lock"))?;
            if let Some(tx) = lock(&shared.locks).get(&name) {
                tx.send_replace(r.locked);
            }
        }
        Ok::<_, SessionFail>((conn, notes, schema, tables))
    };
    let (conn, mut notes, schema, tables) =
        match tokio::time::timeout(cfg.connect_timeout, setup).await {
            Ok(r) => r?,
            Err(_) => return Err(SessionFail::Retry("connect/handshake timed out".into())),
        };
    shared
        .connects
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (applied_tx, applied) = watch::channel(0u64);
    shared.live.send_replace(Some(Live {
        conn: conn.clone(),
        applied,
        schema,
        remote: remote.clone(),
    }));
    shared.status.send_if_modified(|s| {
        if matches!(s, Status::Starting) {
            *s = Status::Synced;
            true
        } else {
            false
        }
    });
    tracing::info!(remote = %remote, db = %cfg.database, "ovsdb connected");
    loop {
        let Some(n) = notes.recv().await else {
            let why = conn.closed().await;
            return Ok(SessionEnd::Lost(why));
        };
        let seq = n.seq;
        if let Some(end) = handle_notification(shared, n, &tables) {
            conn.close();
            return Ok(end);
        }
        applied_tx.send_replace(seq);
    }
}

fn handle_notification(shared: &Shared, n: Notification, tables: &[String]) -> Option<SessionEnd> {
    let notice = match decode_notice(&n.method, &n.frame) {
        Ok(x) => x,
        Err(e) => {
            // A server sending garbage cannot be trusted to keep the cache right.
            return Some(SessionEnd::Lost(e.to_string()));
        }
    };
    let (monitor_id, updates) = match notice {
        Notice::Update {
            monitor_id,
            updates,
        } => (monitor_id, updates),
        Notice::Update3 {
            monitor_id,
            last_txn_id,
            updates,
        } => {
            *lock(&shared.last_txn_id) = Some(last_txn_id);
            (monitor_id, updates)
        }
        Notice::Other(m) => {
            if m == "database_changed" || m == "monitor_canceled" {
                return Some(SessionEnd::Lost(format!("server sent {m}")));
            }
            if m == "locked" || m == "stolen" {
                #[derive(serde::Deserialize)]
                struct P {
                    params: (String,),
                }
                if let Ok(P { params: (name,) }) = serde_json::from_slice::<P>(&n.frame) {
                    if let Some(tx) = lock(&shared.locks).get(&name) {
                        tx.send_replace(m == "locked");
                    }
                }
            }
            return None;
        }
    };
    if monitor_id == json!(SERVER_MONITOR_ID) {
        return match server_row_says_leader(&updates) {
            Some(false) => Some(SessionEnd::Lost(
                "server is no longer the cluster leader".into(),
            )),
            _ => None,
        };
    }
    if monitor_id != json!(MONITOR_ID) {
        return None;
    }
    let (_, errors) = shared.cache.apply(updates, ApplyMode::Delta, tables);
    report(&errors);
    None
}

fn report(errors: &[CacheError]) {
    for e in errors {
        tracing::warn!(error = %e, "ovsdb update not applied");
    }
}

async fn check_leader(conn: &Connection, db: &str) -> Result<(), SessionFail> {
    let txn = json!(["_Server", {"op": "select", "table": "Database",
        "where": [["name", "==", db]], "columns": ["leader", "connected", "model"]}]);
    let res: serde_json::Value = conn
        .call("transact", &txn)
        .await
        .map_err(retry("_Server select"))?;
    let row = res
        .get(0)
        .and_then(|r| r.get("rows"))
        .and_then(|r| r.get(0))
        .ok_or_else(|| SessionFail::Retry(format!("database {db} not served here")))?;
    let clustered = row.get("model").and_then(|m| m.as_str()) == Some("clustered");
    let leader = row.get("leader").and_then(|m| m.as_bool()).unwrap_or(false);
    let connected = row
        .get("connected")
        .and_then(|m| m.as_bool())
        .unwrap_or(false);
    if clustered && !(leader && connected) {
        return Err(SessionFail::Retry(format!(
            "not the cluster leader (leader={leader}, connected={connected})"
        )));
    }
    Ok(())
}

async fn start_server_monitor(conn: &Connection, db: &str) -> Result<(), SessionFail> {
    let req = json!(["_Server", SERVER_MONITOR_ID, {"Database": [{
        "where": [["name", "==", db]], "columns": ["leader", "connected", "model"]}]}]);
    let res = conn
        .call::<_, TableUpdates<RowUpdate2>>("monitor_cond", &req)
        .await
        .map_err(retry("_Server monitor"))?;
    if server_row_says_leader(&Updates::V2(res)) == Some(false) {
        return Err(SessionFail::Retry("not the cluster leader".into()));
    }
    Ok(())
}

/// From `_Server.Database` updates: Some(false) if the row says not leader/not connected
/// (for a clustered database), Some(true) if it says leader, None if it does not say.
fn server_row_says_leader(u: &Updates) -> Option<bool> {
    let Updates::V2(t) = u else { return None };
    let rows = t.get("Database")?;
    let mut verdict = None;
    for r in rows.values() {
        let row = match r {
            RowUpdate2::Initial(r) | RowUpdate2::Insert(r) | RowUpdate2::Modify(r) => r,
            RowUpdate2::Delete(_) => return Some(false),
        };
        if row
            .get("model")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m != "clustered")
        {
            return Some(true);
        }
        for col in ["leader", "connected"] {
            if let Some(v) = row.get(col).and_then(|v| v.as_bool()) {
                if !v {
                    return Some(false);
                }
                verdict = Some(true);
            }
        }
    }
    verdict
}

async fn start_monitor(
    shared: &Shared,
    conn: &Connection,
    tables: &[String],
) -> Result<(), SessionFail> {
    let cfg = &shared.cfg;
    let db = &cfg.database;
    let cond_req: serde_json::Map<String, serde_json::Value> = {
        let conds = lock(&shared.conditions);
        tables
            .iter()
            .map(|t| match conds.get(t) {
                Some(w) => (t.clone(), json!([{ "where": w }])),
                None => (t.clone(), json!([{}])),
            })
            .collect()
    };
    let mut method = cfg.monitor_method;
    if matches!(method, MonitorMethod::Auto | MonitorMethod::CondSince) {
        let since = lock(&shared.last_txn_id)
            .clone()
            .unwrap_or_else(|| ZERO_TXN.into());
        let r = conn
            .call::<_, CondSinceReply>(
                "monitor_cond_since",
                &json!([db, MONITOR_ID, cond_req, since]),
            )
            .await;
        match r {
            Ok(CondSinceReply(found, txn_id, updates)) => {
                *lock(&shared.last_txn_id) = Some(txn_id);
                if found {
                    shared
                        .resumes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mode = if found {
                    ApplyMode::Delta
                } else {
                    ApplyMode::Snapshot
                };
                let (_, errors) = shared.cache.apply(Updates::V2(updates), mode, tables);
                report(&errors);
                return Ok(());
            }
            Err(e) if e.is_unknown_method() && method == MonitorMethod::Auto => {
                method = MonitorMethod::Cond
            }
            Err(e) => return Err(SessionFail::Retry(format!("monitor_cond_since: {e}"))),
        }
    }
    if method == MonitorMethod::Cond {
        let r = conn
            .call::<_, TableUpdates<RowUpdate2>>("monitor_cond", &json!([db, MONITOR_ID, cond_req]))
            .await;
        match r {
            Ok(u) => {
                let (_, errors) = shared
                    .cache
                    .apply(Updates::V2(u), ApplyMode::Snapshot, tables);
                report(&errors);
                return Ok(());
            }
            Err(e) if e.is_unknown_method() && cfg.monitor_method == MonitorMethod::Auto => {
                method = MonitorMethod::Plain
            }
            Err(e) => return Err(SessionFail::Retry(format!("monitor_cond: {e}"))),
        }
    }
    if method == MonitorMethod::Plain {
        let req: serde_json::Map<String, serde_json::Value> =
            tables.iter().map(|t| (t.clone(), json!({}))).collect();
        let u = conn
            .call::<_, TableUpdates<RowUpdate1>>("monitor", &json!([db, MONITOR_ID, req]))
            .await
            .map_err(retry("monitor"))?;
        let (_, errors) = shared
            .cache
            .apply(Updates::V1(u), ApplyMode::Snapshot, tables);
        report(&errors);
    }
    Ok(())
}
