//! The monitor cache: rows per table (compact: default-valued columns are not stored),
//! secondary indexes, typed views and a stream of change events.
//!
//! All mutation happens under a short `std` lock that is never held across an `.await`.
//! Subscribers get every event on their own unbounded channel (no lag, no loss).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::mpsc;

use crate::model::{Model, ModelError, Row};
use crate::schema::{DatabaseSchema, TableSchema};
use crate::update::{RowUpdate1, RowUpdate2, Updates, WireRow};
use crate::value::{Uuid, Value};

/// A change seen in the cache.
#[derive(Debug, Clone)]
pub enum Event {
    Insert {
        table: Arc<str>,
        uuid: Uuid,
        new: Arc<Row>,
    },
    Update {
        table: Arc<str>,
        uuid: Uuid,
        old: Arc<Row>,
        new: Arc<Row>,
    },
    Delete {
        table: Arc<str>,
        uuid: Uuid,
        old: Arc<Row>,
    },
}

impl Event {
    pub fn table(&self) -> &str {
        match self {
            Event::Insert { table, .. }
            | Event::Update { table, .. }
            | Event::Delete { table, .. } => table,
        }
    }
    pub fn uuid(&self) -> Uuid {
        match self {
            Event::Insert { uuid, .. }
            | Event::Update { uuid, .. }
            | Event::Delete { uuid, .. } => *uuid,
        }
    }
}

/// A secondary index of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexSpec {
    /// By a whole column value, e.g. `name`.
    Column(String),
    /// By the value of one key of a map column, e.g. `external_ids:k8s.ovn.org/owner`.
    MapKey { column: String, key: String },
}

impl IndexSpec {
    fn key_of(&self, row: &CompactRow) -> Option<Value> {
        match self {
            IndexSpec::Column(c) => row.get(c).cloned(),
            IndexSpec::MapKey { column, key } => row
                .get(column)
                .and_then(|m| m.map_get(key))
                .map(|a| Value::Atom(a.clone())),
        }
    }
}

/// Updates that do not fit the cache (they are skipped; the rest is applied).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    #[error("update for table {0:?}, which is not in the schema")]
    UnknownTable(String),
    #[error("{table}: modify of row {uuid}, which is not in the cache")]
    UnknownRow { table: String, uuid: Uuid },
}

/// A cached row, stored compactly: columns sorted by (interned) name, in one exact-size
/// allocation. [`Row`]s are built from it on demand (reads, events), which keeps the cache
/// close to the size of the rows' JSON.
#[derive(Debug, Clone, PartialEq)]
struct CompactRow(Box<[(Arc<str>, Value)]>);

impl CompactRow {
    fn get(&self, col: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(c, _)| (**c).cmp(col))
            .ok()
            .map(|i| &self.0[i].1)
    }
    fn to_row(&self) -> Row {
        self.0
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect()
    }
}

/// Decoded vectors grow by doubling; cached values keep exactly what they hold.
fn shrink(v: &mut Value) {
    match v {
        Value::Set(s) => s.shrink_to_fit(),
        Value::Map(m) => m.shrink_to_fit(),
        Value::Atom(_) => {}
    }
}

#[derive(Default)]
struct TableCache {
    rows: HashMap<Uuid, CompactRow>,
    indexes: Vec<(IndexSpec, HashMap<Value, BTreeSet<Uuid>>)>,
}

impl TableCache {
    fn index_add(&mut self, uuid: Uuid, row: &CompactRow) {
        for (spec, ix) in &mut self.indexes {
            if let Some(k) = spec.key_of(row) {
                ix.entry(k).or_default().insert(uuid);
            }
        }
    }
    fn index_remove(&mut self, uuid: Uuid, row: &CompactRow) {
        for (spec, ix) in &mut self.indexes {
            if let Some(k) = spec.key_of(row) {
                if let Some(set) = ix.get_mut(&k) {
                    set.remove(&uuid);
                    if set.is_empty() {
                        ix.remove(&k);
                    }
                }
            }
        }
    }
    fn put(&mut self, uuid: Uuid, row: CompactRow) -> Option<CompactRow> {
        let old = self.rows.remove(&uuid);
        if let Some(o) = &old {
            self.index_remove(uuid, o);
        }
        self.index_add(uuid, &row);
        self.rows.insert(uuid, row);
        old
    }
    fn remove(&mut self, uuid: Uuid) -> Option<CompactRow> {
        let old = self.rows.remove(&uuid);
        if let Some(o) = &old {
            self.index_remove(uuid, o);
        }
        old
    }
}

#[derive(Default)]
struct State {
    schema: Option<Arc<DatabaseSchema>>,
    tables: HashMap<String, TableCache>,
    table_names: HashMap<String, Arc<str>>,
    specs: Vec<(String, IndexSpec)>,
}

/// How a batch of updates relates to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Changes since the cache's state (notifications, a resumed monitor).
    Delta,
    /// The complete contents of the given tables (a fresh monitor's initial reply): rows not
    /// in it are deleted, and only real differences produce events.
    Snapshot,
}

/// The row cache of one database.
#[derive(Default)]
pub struct Cache {
    state: RwLock<State>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
}

/// Turns a decoded row into its cached form: `_uuid`/`_version` dropped, values normalized
/// to their column type, default values left out (see `model::Row`), columns sorted.
fn compact(ts: Option<&TableSchema>, w: WireRow) -> CompactRow {
    let mut v = w.0;
    v.retain_mut(|(c, val)| {
        if &**c == "_uuid" || &**c == "_version" {
            return false;
        }
        if let Some(cs) = ts.and_then(|t| t.columns.get(&**c)) {
            let taken = std::mem::take(val);
            *val = cs.ty.normalize(taken);
            if cs.ty.is_default(val) {
                return false;
            }
        }
        shrink(val);
        true
    });
    // Stable sort, then keep the last of duplicate names (as a JSON object would): dedup_by
    // removes the later element, so it first hands its value to the earlier one.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|later, earlier| {
        let dup = later.0 == earlier.0;
        if dup {
            std::mem::swap(&mut later.1, &mut earlier.1);
        }
        dup
    });
    CompactRow(v.into_boxed_slice())
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        match self.state.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Sets the schema used to normalize rows (done by the client at connect).
    pub fn set_schema(&self, schema: Arc<DatabaseSchema>) {
        self.write().schema = Some(schema);
    }

    pub fn schema(&self) -> Option<Arc<DatabaseSchema>> {
        self.read().schema.clone()
    }

    /// Adds a secondary index (built over the rows already cached).
    pub fn add_index(&self, table: &str, spec: IndexSpec) {
        let mut st = self.write();
        if st.specs.iter().any(|(t, s)| t == table && *s == spec) {
            return;
        }
        st.specs.push((table.to_owned(), spec.clone()));
        let tc = st.tables.entry(table.to_owned()).or_default();
        let mut ix: HashMap<Value, BTreeSet<Uuid>> = HashMap::new();
        for (u, r) in &tc.rows {
            if let Some(k) = spec.key_of(r) {
                ix.entry(k).or_default().insert(*u);
            }
        }
        tc.indexes.push((spec, ix));
    }

    /// A new subscriber receives every event from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subs().push(tx);
        rx
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<Event>>> {
        match self.subscribers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut subs = self.subs();
        subs.retain(|s| !s.is_closed());
        for s in subs.iter() {
            for e in &events {
                let _ = s.send(e.clone());
            }
        }
    }

    /// Applies updates; `tables` lists the monitored tables (needed for snapshots, where a
    /// table absent from the reply is empty). Returns the number of rows changed (= events
    /// emitted to subscribers) and the problems found (the rest is applied regardless).
    pub fn apply(
        &self,
        updates: Updates,
        mode: ApplyMode,
        tables: &[String],
    ) -> (usize, Vec<CacheError>) {
        let mut errors = Vec::new();
        let mut ch = Changes {
            events: Vec::new(),
            count: 0,
            want: {
                let mut subs = self.subs();
                subs.retain(|s| !s.is_closed());
                !subs.is_empty()
            },
        };
        let mut st = self.write();
        let st = &mut *st;
        let schema = st.schema.clone();
        let mut seen: HashMap<String, HashMap<Uuid, CompactRow>> = HashMap::new();
        // A snapshot of a table we hold no rows of (the first sync) needs no diff: insert
        // directly instead of collecting the rows first.
        let mut direct: HashSet<String> = HashSet::new();
        match updates {
            Updates::V1(t) => {
                for (table, rows) in t {
                    let Some(ts) = schema_table(&schema, &table, &mut errors) else {
                        continue;
                    };
                    let name = table_name(&mut st.table_names, &table);
                    let mode = if mode == ApplyMode::Snapshot
                        && st.tables.get(&table).is_none_or(|t| t.rows.is_empty())
                    {
                        direct.insert(table.clone());
                        ApplyMode::Delta
                    } else {
                        mode
                    };
                    for (uuid, RowUpdate1 { old, new }) in rows {
                        match (new, mode) {
                            (Some(new), ApplyMode::Snapshot) => {
                                seen.entry(table.clone())
                                    .or_default()
                                    .insert(uuid, compact(ts, new));
                            }
                            (Some(new), ApplyMode::Delta) => {
                                put_row(st, &name, uuid, compact(ts, new), &mut ch);
                            }
                            (None, ApplyMode::Delta) if old.is_some() => {
                                del_row(st, &name, uuid, &mut ch);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Updates::V2(t) => {
                for (table, rows) in t {
                    let Some(ts) = schema_table(&schema, &table, &mut errors) else {
                        continue;
                    };
                    let name = table_name(&mut st.table_names, &table);
                    let mode = if mode == ApplyMode::Snapshot
                        && st.tables.get(&table).is_none_or(|t| t.rows.is_empty())
                    {
                        direct.insert(table.clone());
                        ApplyMode::Delta
                    } else {
                        mode
                    };
                    for (uuid, u) in rows {
                        match (u, mode) {
                            (
                                RowUpdate2::Initial(r) | RowUpdate2::Insert(r),
                                ApplyMode::Snapshot,
                            ) => {
                                seen.entry(table.clone())
                                    .or_default()
                                    .insert(uuid, compact(ts, r));
                            }
                            (RowUpdate2::Initial(r) | RowUpdate2::Insert(r), ApplyMode::Delta) => {
                                put_row(st, &name, uuid, compact(ts, r), &mut ch);
                            }
                            (RowUpdate2::Modify(diff), ApplyMode::Delta) => {
                                let old = st.tables.get(&table).and_then(|t| t.rows.get(&uuid));
                                let Some(old) = old else {
                                    errors.push(CacheError::UnknownRow {
                                        table: table.clone(),
                                        uuid,
                                    });
                                    continue;
                                };
                                let new = modify_row(ts, old, diff);
                                put_row(st, &name, uuid, new, &mut ch);
                            }
                            (RowUpdate2::Delete(_), ApplyMode::Delta) => {
                                del_row(st, &name, uuid, &mut ch);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if mode == ApplyMode::Snapshot {
            for table in tables {
                if direct.contains(table) {
                    continue;
                }
                let mut new_rows = seen.remove(table).unwrap_or_default();
                let name = table_name(&mut st.table_names, table);
                let gone: Vec<Uuid> = st
                    .tables
                    .get(table)
                    .map(|t| {
                        t.rows
                            .keys()
                            .filter(|u| !new_rows.contains_key(u))
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                for u in gone {
                    del_row(st, &name, u, &mut ch);
                }
                for (u, r) in new_rows.drain() {
                    put_row(st, &name, u, r, &mut ch);
                }
            }
        }
        // Sent while still holding the write lock, so event order matches cache order.
        self.emit(std::mem::take(&mut ch.events));
        (ch.count, errors)
    }

    /// Drops every row (emitting deletes).
    pub fn clear(&self) {
        let mut ch = Changes {
            events: Vec::new(),
            count: 0,
            want: !self.subs().is_empty(),
        };
        let mut st = self.write();
        let tables: Vec<String> = st.tables.keys().cloned().collect();
        for t in tables {
            let name = table_name(&mut st.table_names, &t);
            let uuids: Vec<Uuid> = st
                .tables
                .get(&t)
                .map(|x| x.rows.keys().copied().collect())
                .unwrap_or_default();
            for u in uuids {
                del_row(&mut st, &name, u, &mut ch);
            }
        }
        self.emit(ch.events);
    }

    /// One row by table and uuid.
    pub fn row(&self, table: &str, uuid: Uuid) -> Option<Arc<Row>> {
        self.read()
            .tables
            .get(table)?
            .rows
            .get(&uuid)
            .map(|r| Arc::new(r.to_row()))
    }

    /// One column of one row, without building the whole row.
    pub fn column(&self, table: &str, uuid: Uuid, column: &str) -> Option<Value> {
        self.read()
            .tables
            .get(table)?
            .rows
            .get(&uuid)?
            .get(column)
            .cloned()
    }

    /// All rows of a table.
    pub fn table_rows(&self, table: &str) -> Vec<(Uuid, Arc<Row>)> {
        self.read()
            .tables
            .get(table)
            .map(|t| {
                t.rows
                    .iter()
                    .map(|(u, r)| (*u, Arc::new(r.to_row())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The uuids of a table's rows.
    pub fn uuids(&self, table: &str) -> Vec<Uuid> {
        self.read()
            .tables
            .get(table)
            .map(|t| t.rows.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Number of rows of a table.
    pub fn len(&self, table: &str) -> usize {
        self.read().tables.get(table).map_or(0, |t| t.rows.len())
    }

    /// True when no table has rows.
    pub fn is_empty(&self) -> bool {
        self.read().tables.values().all(|t| t.rows.is_empty())
    }

    /// Rows whose indexed key equals `key`; scans the table when no such index exists.
    pub fn lookup(&self, table: &str, spec: &IndexSpec, key: &Value) -> Vec<(Uuid, Arc<Row>)> {
        let st = self.read();
        let Some(t) = st.tables.get(table) else {
            return Vec::new();
        };
        if let Some((_, ix)) = t.indexes.iter().find(|(s, _)| s == spec) {
            return ix
                .get(key)
                .map(|set| {
                    set.iter()
                        .filter_map(|u| t.rows.get(u).map(|r| (*u, Arc::new(r.to_row()))))
                        .collect()
                })
                .unwrap_or_default();
        }
        t.rows
            .iter()
            .filter(|(_, r)| spec.key_of(r).as_ref() == Some(key))
            .map(|(u, r)| (*u, Arc::new(r.to_row())))
            .collect()
    }

    /// Uuids of the rows whose indexed key equals `key` (no rows are built); scans the
    /// table when no such index exists.
    pub fn lookup_uuids(&self, table: &str, spec: &IndexSpec, key: &Value) -> Vec<Uuid> {
        let st = self.read();
        let Some(t) = st.tables.get(table) else {
            return Vec::new();
        };
        if let Some((_, ix)) = t.indexes.iter().find(|(s, _)| s == spec) {
            return ix
                .get(key)
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default();
        }
        t.rows
            .iter()
            .filter(|(_, r)| spec.key_of(r).as_ref() == Some(key))
            .map(|(u, _)| *u)
            .collect()
    }

    /// Typed: every row of `M`'s table.
    pub fn rows<M: Model>(&self) -> Result<Vec<M>, ModelError> {
        let st = self.read();
        let Some(t) = st.tables.get(M::TABLE) else {
            return Ok(Vec::new());
        };
        t.rows
            .iter()
            .map(|(u, r)| M::from_row(*u, &r.to_row()))
            .collect()
    }

    /// Typed: one row by uuid.
    pub fn get<M: Model>(&self, uuid: Uuid) -> Result<Option<M>, ModelError> {
        let st = self.read();
        match st.tables.get(M::TABLE).and_then(|t| t.rows.get(&uuid)) {
            Some(r) => M::from_row(uuid, &r.to_row()).map(Some),
            None => Ok(None),
        }
    }

    /// Typed: rows whose `column` equals `value` (uses an index if one was added).
    pub fn find<M: Model>(
        &self,
        column: &str,
        value: impl Into<Value>,
    ) -> Result<Vec<M>, ModelError> {
        self.lookup(
            M::TABLE,
            &IndexSpec::Column(column.to_owned()),
            &value.into(),
        )
        .into_iter()
        .map(|(u, r)| M::from_row(u, &r))
        .collect()
    }

    /// Typed: rows whose `external_ids[key] == value`.
    pub fn find_by_external_id<M: Model>(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<M>, ModelError> {
        let spec = IndexSpec::MapKey {
            column: "external_ids".into(),
            key: key.into(),
        };
        self.lookup(M::TABLE, &spec, &Value::from(value))
            .into_iter()
            .map(|(u, r)| M::from_row(u, &r))
            .collect()
    }
}

/// What one `apply` changed: a count, and the events when someone listens.
struct Changes {
    events: Vec<Event>,
    count: usize,
    want: bool,
}

fn schema_table<'a>(
    schema: &'a Option<Arc<DatabaseSchema>>,
    table: &str,
    errors: &mut Vec<CacheError>,
) -> Option<Option<&'a TableSchema>> {
    match schema {
        None => Some(None),
        Some(s) => match s.tables.get(table) {
            Some(t) => Some(Some(t)),
            None => {
                errors.push(CacheError::UnknownTable(table.to_owned()));
                None
            }
        },
    }
}

fn table_name(names: &mut HashMap<String, Arc<str>>, table: &str) -> Arc<str> {
    if let Some(n) = names.get(table) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(table);
    names.insert(table.to_owned(), n.clone());
    n
}

fn modify_row(ts: Option<&TableSchema>, old: &CompactRow, diff: WireRow) -> CompactRow {
    let mut cols: Vec<(Arc<str>, Value)> = old.0.to_vec();
    for (col, d) in diff.0 {
        // ovsdb-server includes `_version` in modifications; like at insert, it is not kept.
        if &*col == "_version" || &*col == "_uuid" {
            continue;
        }
        let base = match cols.binary_search_by(|(c, _)| (**c).cmp(&*col)) {
            Ok(i) => Some(cols.remove(i).1),
            Err(_) => None,
        };
        let new = match ts.and_then(|t| t.columns.get(&*col)) {
            Some(cs) => {
                let d = cs.ty.normalize(d);
                let base = base.unwrap_or_else(|| cs.ty.default_value());
                let v = cs.ty.normalize(base.apply_diff(&d));
                (!cs.ty.is_default(&v)).then_some(v)
            }
            // Column unknown to our schema: keep it, applying the diff as best we can.
            None => Some(match base {
                Some(b) => b.apply_diff(&d),
                None => d,
            }),
        };
        if let Some(mut v) = new {
            shrink(&mut v);
            let i = match cols.binary_search_by(|(c, _)| (**c).cmp(&*col)) {
                Ok(i) | Err(i) => i,
            };
            cols.insert(i, (col, v));
        }
    }
    CompactRow(cols.into_boxed_slice())
}

fn put_row(st: &mut State, table: &Arc<str>, uuid: Uuid, compact: CompactRow, ch: &mut Changes) {
    if !st.tables.contains_key(&**table) {
        let indexes = st
            .specs
            .iter()
            .filter(|(t, _)| **t == **table)
            .map(|(_, s)| (s.clone(), HashMap::new()))
            .collect();
        st.tables.insert(
            table.to_string(),
            TableCache {
                rows: HashMap::new(),
                indexes,
            },
        );
    }
    let Some(tc) = st.tables.get_mut(&**table) else {
        return;
    };
    if tc.rows.get(&uuid) == Some(&compact) {
        return;
    }
    let new = ch.want.then(|| Arc::new(compact.to_row()));
    let old = tc.put(uuid, compact);
    ch.count += 1;
    let Some(new) = new else { return };
    match old {
        Some(old) => ch.events.push(Event::Update {
            table: table.clone(),
            uuid,
            old: Arc::new(old.to_row()),
            new,
        }),
        None => ch.events.push(Event::Insert {
            table: table.clone(),
            uuid,
            new,
        }),
    }
}

fn del_row(st: &mut State, table: &Arc<str>, uuid: Uuid, ch: &mut Changes) {
    if let Some(tc) = st.tables.get_mut(&**table) {
        if let Some(old) = tc.remove(uuid) {
            ch.count += 1;
            if ch.want {
                ch.events.push(Event::Delete {
                    table: table.clone(),
                    uuid,
                    old: Arc::new(old.to_row()),
                });
            }
        }
    }
}
