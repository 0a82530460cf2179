//! Storage: an in-memory index (the truth for reads), SQLite (the truth across restarts), and
//! a bounded window of recent events for watches.
//!
//! Write path: a request mutates the index under one mutex, which also assigns the next
//! resourceVersion (one counter across kinds; one RV = one event), and queues the change to
//! the writer thread while still holding the lock, so the queue is in RV order. The writer
//! drains everything queued (group commit: one SQLite transaction and one fsync for a burst of
//! concurrent requests), commits, and only then publishes the events to watchers and answers
//! the requests. So nothing is acknowledged or shown to a watcher before it is on disk.
//!
//! Durability: WAL with `synchronous=FULL`, i.e. the WAL is fsynced at every commit. NORMAL
//! would survive kill -9 (the WAL is in the OS page cache) but not a power loss; group commit
//! keeps FULL cheap enough.

use crate::error::{ApiError, ApiResult, Error};
use crate::registry::Registry;
use bytes::Bytes;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One committed change, serialized once and shared by every watcher.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub res: usize,
    pub ns: String,
    pub etype: EventType,
    pub obj: Arc<Value>,
    /// The state before (for filtered watches); `None` for creations and for events reloaded
    /// after a restart.
    pub prev: Option<Arc<Value>>,
    /// `{"type":...,"object":...}\n`, the exact watch line.
    pub line: Bytes,
}

/// (namespace, name); namespace is "" for cluster-scoped kinds.
pub type Key = (String, String);

/// The in-memory index.
#[derive(Debug, Default)]
pub struct State {
    pub rv: u64,
    pub objects: Vec<BTreeMap<Key, Arc<Value>>>,
    /// Allocated ClusterIPs and NodePorts, kept in step with the Service objects.
    pub cluster_ips: HashSet<IpAddr>,
    pub node_ports: HashSet<u16>,
    service_res: Option<usize>,
}

impl State {
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
    }

    fn track_service(&mut self, res: usize, old: Option<&Value>, new: Option<&Value>) {
        if Some(res) != self.service_res {
            return;
        }
        if let Some(o) = old {
            for ip in service_ips(o) {
                self.cluster_ips.remove(&ip);
            }
            for p in service_node_ports(o) {
                self.node_ports.remove(&p);
            }
        }
        if let Some(n) = new {
            self.cluster_ips.extend(service_ips(n));
            self.node_ports.extend(service_node_ports(n));
        }
    }
}

pub fn service_ips(svc: &Value) -> Vec<IpAddr> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn service_node_ports(svc: &Value) -> Vec<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("nodePort")?.as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

struct Pending {
    rv: u64,
    res: usize,
    ns: String,
    name: String,
    etype: EventType,
    obj: Arc<Value>,
    prev: Option<Arc<Value>>,
}

/// A mutation in progress; every `put`/`delete` takes the next resourceVersion.
pub struct Txn<'a> {
    pub state: &'a mut State,
    pending: Vec<Pending>,
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Txn<'_> {
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.state.get(res, ns, name).cloned()
    }

    /// Stores `obj` (ADDED if new, MODIFIED otherwise) with a fresh resourceVersion.
    pub fn put(&mut self, res: usize, ns: &str, name: &str, mut obj: Value) -> Arc<Value> {
        self.state.rv += 1;
        let rv = self.state.rv;
        set_rv(&mut obj, rv);
        let obj = Arc::new(obj);
        let key = (ns.to_string(), name.to_string());
        let prev = self
            .state
            .objects
            .get_mut(res)
            .and_then(|m| m.insert(key, obj.clone()));
        self.state
            .track_service(res, prev.as_deref(), Some(obj.as_ref()));
        self.pending.push(Pending {
            rv,
            res,
            ns: ns.to_string(),
            name: name.to_string(),
            etype: if prev.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            obj: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes an object; the DELETED event carries its last state with a new resourceVersion.
    pub fn delete(&mut self, res: usize, ns: &str, name: &str) -> Option<Arc<Value>> {
        let key = (ns.to_string(), name.to_string());
        let prev = self.state.objects.get_mut(res)?.remove(&key)?;
        self.state.rv += 1;
        let rv = self.state.rv;
        let mut last = (*prev).clone();
        set_rv(&mut last, rv);
        let last = Arc::new(last);
        self.state.track_service(res, Some(prev.as_ref()), None);
        self.pending.push(Pending {
            rv,
            res,
            ns: ns.to_string(),
            name: name.to_string(),
            etype: EventType::Deleted,
            obj: last.clone(),
            prev: Some(prev),
        });
        Some(last)
    }
}

/// The recent events and the broadcast of new ones.
struct Window {
    events: VecDeque<Arc<Event>>,
    /// Every event with rv ≤ this may be gone: watching from an older RV answers 410.
    compacted_through: u64,
    cap: usize,
}

struct Hub {
    window: Mutex<Window>,
    tx: broadcast::Sender<Arc<Event>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the server: the data is still consistent because every
    // critical section either completes or changes nothing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    fn publish(&self, events: Vec<Arc<Event>>) {
        let mut w = lock(&self.window);
        for e in events {
            w.events.push_back(e.clone());
            // No receivers is not an error: nobody is watching.
            let _ = self.tx.send(e);
        }
        while w.events.len() > w.cap {
            if let Some(old) = w.events.pop_front() {
                w.compacted_through = old.rv;
            }
        }
    }
}

struct WriteJob {
    pending: Vec<Pending>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The storage handle shared by all requests.
pub struct Store {
    state: Mutex<State>,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    hub: Arc<Hub>,
    broken: Arc<AtomicBool>,
}

/// What a new watch starts from.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    res TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (res, ns, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL, res TEXT NOT NULL,
    ns TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

fn watch_line(etype: EventType, json: &str) -> Bytes {
    let mut s = String::with_capacity(json.len() + 32);
    s.push_str("{\"type\":\"");
    s.push_str(etype.as_str());
    s.push_str("\",\"object\":");
    s.push_str(json);
    s.push_str("}\n");
    Bytes::from(s)
}

impl Store {
    /// Opens (or creates) the database and loads the index and the event window.
    pub fn open(path: &Path, registry: Arc<Registry>, window: usize) -> Result<Self, Error> {
        // Created private first: SQLite gives its -wal/-shm files the database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let conn = Connection::open(path).map_err(|e| Error::sqlite("open", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| Error::sqlite("journal_mode", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| Error::sqlite("synchronous", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| Error::sqlite("schema", e))?;

        let mut state = State {
            objects: vec![BTreeMap::new(); registry.len()],
            service_res: registry.index_of(crate::registry::Behavior::Service),
            ..State::default()
        };
        let mut max_rv: u64 = conn
            .query_row("SELECT v FROM meta WHERE k = 'rv'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .unwrap_or(0);
        {
            let mut stmt = conn
                .prepare("SELECT res, ns, name, rv, value FROM objects")
                .map_err(|e| Error::sqlite("load objects", e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(|e| Error::sqlite("load objects", e))?;
            for row in rows {
                let (res, ns, name, rv, value) =
                    row.map_err(|e| Error::sqlite("load objects", e))?;
                let Some(idx) = registry.by_storage_key(&res) else {
                    tracing::warn!(res, ns, name, "stored object of an unknown kind; skipped");
                    continue;
                };
                let v: Value = serde_json::from_str(&value).map_err(|e| {
                    Error::Corrupt(format!("object {res} {ns}/{name} is not JSON: {e}"))
                })?;
                max_rv = max_rv.max(rv as u64);
                state.track_service(idx, None, Some(&v));
                state.objects[idx].insert((ns, name), Arc::new(v));
            }
        }
        let mut events = VecDeque::new();
        {
            let floor = max_rv.saturating_sub(window as u64) as i64;
            let mut stmt = conn
                .prepare("SELECT rv, type, res, ns, value FROM events WHERE rv > ?1 ORDER BY rv")
                .map_err(|e| Error::sqlite("load events", e))?;
            let rows = stmt
                .query_map([floor], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(|e| Error::sqlite("load events", e))?;
            for row in rows {
                let (rv, etype, res, ns, value) =
                    row.map_err(|e| Error::sqlite("load events", e))?;
                max_rv = max_rv.max(rv as u64);
                let (Some(idx), Some(etype)) =
                    (registry.by_storage_key(&res), EventType::parse(&etype))
                else {
                    continue;
                };
                let obj: Value = serde_json::from_str(&value)
                    .map_err(|e| Error::Corrupt(format!("event {rv} is not JSON: {e}")))?;
                events.push_back(Arc::new(Event {
                    rv: rv as u64,
                    res: idx,
                    ns,
                    etype,
                    obj: Arc::new(obj),
                    prev: None,
                    line: watch_line(etype, &value),
                }));
            }
        }
        state.rv = max_rv;
        // Events are contiguous in RV (one per RV), so the window covers everything after
        // the one before its first event.
        let compacted_through = events.front().map(|e| e.rv - 1).unwrap_or(max_rv);
        let (tx, _) = broadcast::channel(65_536);
        let hub = Arc::new(Hub {
            window: Mutex::new(Window {
                events,
                compacted_through,
                cap: window.max(1),
            }),
            tx,
        });
        let broken = Arc::new(AtomicBool::new(false));
        let (wtx, wrx) = mpsc::channel::<WriteJob>();
        let thread = {
            let hub = hub.clone();
            let broken = broken.clone();
            let registry = registry.clone();
            std::thread::Builder::new()
                .name("apiserver-sqlite".into())
                .spawn(move || writer_loop(conn, wrx, hub, broken, registry, window))
                .map_err(|e| Error::io("spawn the SQLite writer", e))?
        };
        Ok(Store {
            state: Mutex::new(state),
            writer: Mutex::new(Some(wtx)),
            writer_thread: Mutex::new(Some(thread)),
            hub,
            broken,
        })
    }

    /// Runs `f` on the index (read-only).
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    /// Runs `f` as one mutation; returns once its changes are committed to SQLite.
    pub async fn mutate<T>(&self, f: impl FnOnce(&mut Txn) -> ApiResult<T>) -> ApiResult<T> {
        if self.broken.load(Ordering::Acquire) {
            return Err(ApiError::internal(
                "storage failed earlier; the lab API server must be restarted",
            ));
        }
        let (out, rx) = {
            let mut st = lock(&self.state);
            let mut txn = Txn {
                state: &mut st,
                pending: Vec::new(),
            };
            let out = f(&mut txn);
            let pending = std::mem::take(&mut txn.pending);
            if pending.is_empty() {
                return out;
            }
            // Changes made before an error are real (the index has them): persist them too.
            let (done, rx) = oneshot::channel();
            let sent = lock(&self.writer)
                .as_ref()
                .map(|w| w.send(WriteJob { pending, done }).is_ok())
                .unwrap_or(false);
            if !sent {
                self.broken.store(true, Ordering::Release);
                return Err(ApiError::internal("the storage writer has stopped"));
            }
            (out, rx)
        };
        match rx.await {
            Ok(Ok(())) => out,
            Ok(Err(e)) => Err(ApiError::internal(format!("storage: {e}"))),
            Err(_) => Err(ApiError::internal("the storage writer has stopped")),
        }
    }

    /// Subscribes to events after `from` (exclusive). `None` → 410 (too old).
    pub fn subscribe_from(&self, from: u64) -> Result<Subscription, u64> {
        let w = lock(&self.hub.window);
        if from < w.compacted_through {
            return Err(w.compacted_through);
        }
        let rx = self.hub.tx.subscribe();
        let backlog = w.events.iter().filter(|e| e.rv > from).cloned().collect();
        Ok(Subscription { backlog, rx })
    }

    /// A consistent snapshot of one kind (filtered by `f`) plus a subscription to every later
    /// change.
    pub fn snapshot_and_subscribe(
        &self,
        res: usize,
        ns: Option<&str>,
        f: impl Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, u64, Subscription) {
        let st = lock(&self.state);
        let items = scan(&st, res, ns).filter(|v| f(v)).cloned().collect();
        let rv = st.rv;
        // Taken under the index lock: events still queued for the writer have rv ≤ `rv` and
        // are skipped by the watcher; later ones cannot be published before we subscribe.
        let w = lock(&self.hub.window);
        let rx = self.hub.tx.subscribe();
        let backlog = w.events.iter().filter(|e| e.rv > rv).cloned().collect();
        (items, rv, Subscription { backlog, rx })
    }

    pub fn current_rv(&self) -> u64 {
        lock(&self.state).rv
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        lock(&self.writer).take();
        if let Some(t) = lock(&self.writer_thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The objects of one kind, optionally in one namespace, in key order.
pub fn scan<'a>(
    st: &'a State,
    res: usize,
    ns: Option<&str>,
) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
    Box::new(scan_after(st, res, ns, None).map(|(_, v)| v))
}

/// Like [`scan`], starting after `after` (a continue key): a page costs O(log n + page), not
/// a walk from the first object.
pub fn scan_after<'a>(
    st: &'a State,
    res: usize,
    ns: Option<&str>,
    after: Option<&Key>,
) -> Box<dyn Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a> {
    use std::ops::Bound;
    let Some(map) = st.objects.get(res) else {
        return Box::new(std::iter::empty());
    };
    let lo = match (after, ns) {
        (Some(k), _) => Bound::Excluded(k.clone()),
        (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    // The upper bound makes the range stop at the namespace's end without comparing keys
    // (namespace names never contain NUL), so counting what is left costs no object reads.
    let hi = match ns {
        Some(ns) => Bound::Excluded((format!("{ns}\u{0}"), String::new())),
        None => Bound::Unbounded,
    };
    if let (Bound::Excluded(a) | Bound::Included(a), Bound::Excluded(b)) = (&lo, &hi) {
        if a >= b {
            return Box::new(std::iter::empty());
        }
    }
    Box::new(map.range((lo, hi)))
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<WriteJob>,
    hub: Arc<Hub>,
    broken: Arc<AtomicBool>,
    registry: Arc<Registry>,
    window: usize,
) {
    let keys: Vec<String> = registry.defs().iter().map(|d| d.storage_key()).collect();
    let mut since_prune = 0usize;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        let mut rows = Vec::new();
        for job in &jobs {
            for p in &job.pending {
                let json = serde_json::to_string(p.obj.as_ref()).unwrap_or_else(|_| "{}".into());
                events.push(Arc::new(Event {
                    rv: p.rv,
                    res: p.res,
                    ns: p.ns.clone(),
                    etype: p.etype,
                    obj: p.obj.clone(),
                    prev: p.prev.clone(),
                    line: watch_line(p.etype, &json),
                }));
                rows.push((p, json));
            }
        }
        let result = write_batch(&mut conn, &keys, &rows);
        drop(rows);
        let result = match result {
            Ok(()) => {
                since_prune += events.len();
                if since_prune >= 1024 {
                    since_prune = 0;
                    if let Some(last) = events.last() {
                        let floor = last.rv.saturating_sub(window as u64) as i64;
                        if let Err(e) = conn.execute("DELETE FROM events WHERE rv <= ?1", [floor]) {
                            tracing::warn!(error = %e, "pruning the event log failed");
                        }
                    }
                }
                hub.publish(events);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "SQLite commit failed; refusing further writes");
                broken.store(true, Ordering::Release);
                Err(e.to_string())
            }
        };
        for job in jobs {
            // The requester may have gone away; its change is committed all the same.
            let _ = job.done.send(result.clone());
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    keys: &[String],
    rows: &[(&Pending, String)],
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO objects (res, ns, name, rv, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut del =
            tx.prepare_cached("DELETE FROM objects WHERE res = ?1 AND ns = ?2 AND name = ?3")?;
        let mut ev = tx.prepare_cached(
            "INSERT OR REPLACE INTO events (rv, type, res, ns, name, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut last = 0;
        for (p, json) in rows {
            let key = &keys[p.res];
            if p.etype == EventType::Deleted {
                del.execute(params![key, p.ns, p.name])?;
            } else {
                put.execute(params![key, p.ns, p.name, p.rv as i64, json])?;
            }
            ev.execute(params![
                p.rv as i64,
                p.etype.as_str(),
                key,
                p.ns,
                p.name,
                json
            ])?;
            last = p.rv;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (k, v) VALUES ('rv', ?1)",
            [last as i64],
        )?;
    }
    tx.commit()
}
