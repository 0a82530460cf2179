//! The NB side: an `ovsdb::Client` monitoring the tables ovnk writes, our ownership-indexed
//! [`NbCache`] fed from its events, and transactions of planned operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ovsdb::{Client, ClientConfig, Event, Remote, TlsFiles};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::ControllerConfig;
use crate::desired::TABLES;
use crate::engine::NbCache;
use crate::ControllerError;

pub const NB_DB: &str = "OVN_Northbound";

/// Why a transaction did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnFailure {
    /// The server refused it (an operation failed): something in the batch is at fault.
    #[error("rejected: {0}")]
    Rejected(String),
    /// No connection, or it dropped: the outcome is unknown and the batch is retried whole
    /// (the plan is recomputed from the cache, so a committed one then plans to nothing).
    #[error("connection: {0}")]
    Connection(String),
}

/// A connected NB client with the controller's cache.
pub struct Nb {
    client: Client,
    cache: Mutex<NbCache>,
    events: Mutex<UnboundedReceiver<Event>>,
    /// Transactions sent (tests assert "restart with no change → zero writes").
    pub transactions: AtomicU64,
    pub operations: AtomicU64,
    /// Time spent waiting for transaction replies, and applying monitor events to our cache.
    pub txn_nanos: AtomicU64,
    pub cache_nanos: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Nb {
    /// Connects to the first usable remote (leader only for a Raft cluster), monitors the
    /// controller's tables and fills the cache.
    pub async fn connect(cfg: &ControllerConfig, controller: &str) -> Result<Nb, ControllerError> {
        let remotes = cfg
            .nb_remotes
            .iter()
            .map(|r| {
                r.parse::<Remote>()
                    .map_err(|e| ControllerError::Config(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut cc = ClientConfig::new(remotes, NB_DB);
        cc.leader_only = cfg.nb_remotes.len() > 1;
        cc.monitor_tables = Some(TABLES.iter().map(|t| t.to_string()).collect());
        cc.connect_timeout = Duration::from_secs(20);
        if let (Some(k), Some(c), Some(ca)) = (&cfg.nb_tls_key, &cfg.nb_tls_cert, &cfg.nb_tls_ca) {
            cc.tls = Some(TlsFiles {
                private_key: k.clone(),
                certificate: c.clone(),
                ca_cert: ca.clone(),
            });
        }
        let client = Client::connect(cc)
            .await
            .map_err(|e| ControllerError::Nb(format!("connect: {e}")))?;
        // Subscribe first, then snapshot: events that overlap the snapshot are re-applied
        // in order, which ends in the same state (each event carries the whole new row).
        let rx = client.cache().subscribe();
        let schema = client
            .schema()
            .ok_or_else(|| ControllerError::Nb("no schema after connect".into()))?;
        let mut cache = NbCache::new((*schema).clone(), controller);
        for t in TABLES {
            if !schema.tables.contains_key(*t) {
                return Err(ControllerError::Nb(format!(
                    "the NB schema has no table {t}"
                )));
            }
            for (u, row) in client.cache().table_rows(t) {
                cache.apply_shared(t, u, Some(row));
            }
        }
        Ok(Nb {
            client,
            cache: Mutex::new(cache),
            events: Mutex::new(rx),
            transactions: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            txn_nanos: AtomicU64::new(0),
            cache_nanos: AtomicU64::new(0),
        })
    }

    /// The cache, brought up to date with every event received so far.
    pub fn cache(&self) -> MutexGuard<'_, NbCache> {
        let started = std::time::Instant::now();
        let mut cache = lock(&self.cache);
        let mut rx = lock(&self.events);
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Insert { table, uuid, new }
                | Event::Update {
                    table, uuid, new, ..
                } => cache.apply_shared(&table, uuid, Some(new)),
                Event::Delete { table, uuid, .. } => cache.apply_shared(&table, uuid, None),
            }
        }
        self.cache_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        cache
    }

    /// Sends one transaction of planned operations. Per-operation errors come back as one
    /// error naming the operation.
    pub async fn transact(&self, ops: Vec<Json>) -> Result<(), TxnFailure> {
        // What each operation was, for error messages; the operations themselves are moved
        // into the request (a 50,000-operation batch is not copied).
        let summary: Vec<String> = ops
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["op"].as_str().unwrap_or("?"),
                    o["table"].as_str().unwrap_or("")
                )
            })
            .collect();
        let n_ops = ops.len();
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(NB_DB));
        params.extend(ops);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.operations.fetch_add(n_ops as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let res = self
            .client
            // The updates this transaction caused are in the cache when it returns, so the
            // owners it committed are never planned again from stale rows.
            .call_applied("transact", Json::Array(params))
            .await
            .map_err(|e| TxnFailure::Connection(e.to_string()));
        self.txn_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let res = res?;
        let results = res.as_array().ok_or_else(|| {
            TxnFailure::Rejected(format!("transact reply is not an array: {res}"))
        })?;
        for (i, r) in results.iter().enumerate() {
            if let Some(err) = r.get("error").and_then(|e| e.as_str()) {
                let details = r.get("details").and_then(|d| d.as_str()).unwrap_or("");
                let op = summary
                    .get(i)
                    .map_or_else(String::new, |o| format!(" ({o})"));
                return Err(TxnFailure::Rejected(format!(
                    "operation {i}{op}: {err}: {details}"
                )));
            }
        }
        if results.len() < n_ops {
            return Err(TxnFailure::Rejected(format!(
                "transact reply has {} results for {n_ops} operations",
                results.len(),
            )));
        }
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn transaction_count(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
}

/// Shared handle.
pub type NbHandle = Arc<Nb>;
