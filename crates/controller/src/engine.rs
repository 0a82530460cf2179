//! The reconcile engine: diff desired rows against the NB cache rows an owner has, and plan
//! one minimal, batched transaction.
//!
//! Generic over tables (Services and NetworkPolicy will reuse it). Rules:
//! * a desired row is matched with the cache by `external_ids:k8s.ovn.org/id`;
//! * a row missing from the cache is inserted with a named uuid; rows that live in a parent's
//!   set column (`Logical_Switch.ports`, `Logical_Router.nat`, …) are linked with a `mutate
//!   insert` on the parent, also by named uuid when the parent is inserted in the same
//!   transaction — never by rewriting the whole column, so concurrent writers of other
//!   children of the same parent are not clobbered;
//! * a drifted column is rewritten (`update`), or for big sets/maps changed by a little,
//!   patched with `mutate delete/insert` so a 10,000-address set is not resent whole;
//! * rows ovnk owns (by ownership `external_ids`) for the owner but no longer desired are
//!   removed: root rows by `delete`, non-root rows by `mutate delete` from every parent
//!   column that references them (OVSDB garbage-collects them);
//! * nothing differs → no operation at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ovsdb::schema::{DatabaseSchema, Max};
use ovsdb::{Atom, Row, Uuid, Value};
use serde_json::{json, Value as Json};

use crate::rows::{owner_of, DesiredRow, Owner, ParentLink, RowKey};

/// Parent set columns a row may be linked into besides its primary parent; a link there
/// that the row's owner no longer wants is removed (only from parents ovnk owns).
pub const LINK_COLUMNS: &[(&str, &str)] = &[
    ("Port_Group", "ports"),
    ("Port_Group", "acls"),
    ("Logical_Switch", "acls"),
    ("Load_Balancer_Group", "load_balancer"),
    ("Logical_Switch", "load_balancer"),
    ("Logical_Router", "load_balancer"),
];

/// The monitored NB rows, indexed by ownership. Fed by the NB client's monitor.
#[derive(Debug)]
pub struct NbCache {
    schema: DatabaseSchema,
    controller: String,
    // Rows shared with the ovsdb client's cache (no copy per update).
    tables: HashMap<String, HashMap<Uuid, Arc<Row>>>,
    by_id: HashMap<(String, String), BTreeSet<Uuid>>,
    by_owner: HashMap<Owner, BTreeSet<(String, String)>>,
    /// child uuid → parents (table, uuid, column) holding it in a reference column.
    referrers: HashMap<Uuid, BTreeSet<(String, Uuid, String)>>,
    /// table → its columns that reference rows (precomputed from the schema).
    ref_cols: HashMap<String, Vec<String>>,
    /// Owners that lost a row since the last [`NbCache::take_deleted_owners`].
    deleted_owners: BTreeSet<Owner>,
}

impl NbCache {
    /// `controller`: this controller's owner name (`default-network-controller`).
    pub fn new(schema: DatabaseSchema, controller: &str) -> Self {
        let ref_cols = schema
            .tables
            .iter()
            .map(|(name, t)| {
                let cols = t
                    .columns
                    .iter()
                    .filter(|(_, c)| c.ty.key.ref_table.is_some())
                    .map(|(n, _)| n.clone())
                    .collect();
                (name.clone(), cols)
            })
            .collect();
        NbCache {
            ref_cols,
            schema,
            controller: controller.to_string(),
            tables: HashMap::new(),
            by_id: HashMap::new(),
            by_owner: HashMap::new(),
            referrers: HashMap::new(),
            deleted_owners: BTreeSet::new(),
        }
    }

    /// Owners whose rows were deleted (by anyone) since the last call: the controller
    /// re-plans them, which repairs hand deletions while it runs and is a no-op otherwise.
    pub fn take_deleted_owners(&mut self) -> Vec<Owner> {
        std::mem::take(&mut self.deleted_owners)
            .into_iter()
            .collect()
    }

    pub fn schema(&self) -> &DatabaseSchema {
        &self.schema
    }

    /// Drops every row (before a fresh monitor snapshot).
    pub fn clear(&mut self) {
        self.tables.clear();
        self.by_id.clear();
        self.by_owner.clear();
        self.referrers.clear();
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid).map(|r| &**r)
    }

    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|t| t.iter().map(|(u, r)| (u, &**r)))
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, |t| t.len())
    }

    /// The uuid of the (first) row with primary id `key`.
    pub fn lookup(&self, key: &RowKey) -> Option<Uuid> {
        self.by_id
            .get(&(key.table.to_string(), key.id.clone()))
            .and_then(|s| s.iter().next().copied())
    }

    /// Every owner that has rows in the cache.
    pub fn owners(&self) -> Vec<Owner> {
        self.by_owner.keys().cloned().collect()
    }

    /// Inserts, replaces (`Some`) or removes (`None`) one row; `row` is normalized here.
    pub fn apply(&mut self, table: &str, uuid: Uuid, row: Option<Row>) {
        let row = row.map(|mut r| {
            if let Some(ts) = self.schema.tables.get(table) {
                ts.normalize_row(&mut r);
            }
            Arc::new(r)
        });
        self.apply_shared(table, uuid, row);
    }

    /// As [`Self::apply`] for a row already normalized (the ovsdb client cache's rows).
    pub fn apply_shared(&mut self, table: &str, uuid: Uuid, row: Option<Arc<Row>>) {
        if let Some(old) = self.tables.get_mut(table).and_then(|t| t.remove(&uuid)) {
            if row.is_none() {
                if let Some((owner, _)) = owner_of(&old, &self.controller) {
                    self.deleted_owners.insert(owner);
                }
            }
            self.unindex(table, uuid, &old);
        }
        if let Some(row) = row {
            self.index(table, uuid, &row);
            self.tables
                .entry(table.to_string())
                .or_default()
                .insert(uuid, row);
        }
    }

    fn ref_cols(&self, table: &str) -> Vec<String> {
        self.ref_cols.get(table).cloned().unwrap_or_default()
    }

    fn index(&mut self, table: &str, uuid: Uuid, row: &Row) {
        if let Some((owner, id)) = owner_of(row, &self.controller) {
            self.by_id
                .entry((table.to_string(), id.clone()))
                .or_default()
                .insert(uuid);
            self.by_owner
                .entry(owner)
                .or_default()
                .insert((table.to_string(), id));
        }
        for col in self.ref_cols(table) {
            if let Some(v) = row.get(&col) {
                for a in v.set_elements() {
                    if let Some(child) = a.as_uuid() {
                        self.referrers.entry(child).or_default().insert((
                            table.to_string(),
                            uuid,
                            col.clone(),
                        ));
                    }
                }
            }
        }
    }

    fn unindex(&mut self, table: &str, uuid: Uuid, row: &Row) {
        if let Some((owner, id)) = owner_of(row, &self.controller) {
            let k = (table.to_string(), id);
            let now_empty = match self.by_id.get_mut(&k) {
                Some(s) => {
                    s.remove(&uuid);
                    s.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.by_id.remove(&k);
                if let Some(set) = self.by_owner.get_mut(&owner) {
                    set.remove(&k);
                    if set.is_empty() {
                        self.by_owner.remove(&owner);
                    }
                }
            }
        }
        for col in self.ref_cols(table) {
            if let Some(v) = row.get(&col) {
                for a in v.set_elements() {
                    if let Some(child) = a.as_uuid() {
                        if let Some(s) = self.referrers.get_mut(&child) {
                            s.remove(&(table.to_string(), uuid, col.clone()));
                            if s.is_empty() {
                                self.referrers.remove(&child);
                            }
                        }
                    }
                }
            }
        }
    }

    fn normalize(&self, table: &str, column: &str, v: Value) -> Value {
        match self
            .schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
        {
            Some(c) => c.ty.normalize(v),
            None => v,
        }
    }

    fn default_of(&self, table: &str, column: &str) -> Value {
        self.schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
            .map_or_else(Value::empty, |c| c.ty.default_value())
    }

    fn is_unlimited(&self, table: &str, column: &str) -> bool {
        self.schema
            .tables
            .get(table)
            .and_then(|t| t.columns.get(column))
            .is_some_and(|c| c.ty.max == Max::Unlimited)
    }

    fn is_root(&self, table: &str) -> bool {
        self.schema.tables.get(table).is_none_or(|t| t.is_root)
    }
}

/// Why an owner's rows could not be planned (it is retried later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{table} row {id} needs parent {parent_table} {parent_id}, which does not exist yet")]
    MissingParent {
        table: &'static str,
        id: String,
        parent_table: &'static str,
        parent_id: String,
    },
    #[error("table {0} is not in the NB schema")]
    UnknownTable(String),
}

/// A planned transaction: the operations and, per owner, what it changes.
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<Json>,
    /// Owners whose rows are in `ops` (or already correct).
    pub planned: Vec<Owner>,
    /// Owners left out, with why.
    pub failed: Vec<(Owner, PlanError)>,
    pub inserts: usize,
    pub updates: usize,
    pub deletes: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn where_uuid(u: &UuidRef) -> Json {
    json!([["_uuid", "==", u.atom()]])
}

/// A row reference inside a transaction: an existing row or one inserted earlier in it.
#[derive(Debug, Clone)]
enum UuidRef {
    Real(Uuid),
    Named(String),
}

impl UuidRef {
    fn atom(&self) -> Atom {
        match self {
            UuidRef::Real(u) => Atom::Uuid(*u),
            UuidRef::Named(n) => Atom::NamedUuid(n.clone()),
        }
    }
}

/// One child added to / removed from a parent's set column. Collected over the whole batch
/// and merged into one `mutate` per (parent, column, direction): ovsdb-server copies the
/// set on every mutate, so 500 single-element mutates on `ovn_cluster_router` would cost
/// quadratic time.
#[derive(Debug, Clone)]
struct Link {
    table: String,
    parent: UuidRef,
    column: String,
    insert: bool,
    child: Atom,
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Plans one transaction for `groups` (each owner with all of its desired rows). Owners
/// are processed parents-first (cluster, nodes, namespaces, pods) so a child can link to a
/// parent inserted in the same transaction.
pub fn plan(cache: &NbCache, groups: &[(Owner, Vec<DesiredRow>)]) -> Plan {
    let mut order: Vec<&(Owner, Vec<DesiredRow>)> = groups.iter().collect();
    order.sort_by(|a, b| {
        a.0.kind
            .cmp(&b.0.kind)
            .then_with(|| a.0.name.cmp(&b.0.name))
    });
    let mut plan = Plan::default();
    let mut named: HashMap<RowKey, String> = HashMap::new();
    let mut next_name = 0usize;
    let mut all_links: Vec<Link> = Vec::new();
    let mut deletes: Vec<Json> = Vec::new();
    for (owner, rows) in order {
        let mut ops = Vec::new();
        let mut links = Vec::new();
        let mut dels = Vec::new();
        let mut local_named = Vec::new();
        let mut counts = (0, 0, 0);
        match plan_owner(
            cache,
            owner,
            rows,
            &named,
            &mut next_name,
            (&mut ops, &mut links, &mut dels),
            &mut local_named,
            &mut counts,
        ) {
            Ok(()) => {
                named.extend(local_named);
                plan.ops.extend(ops);
                all_links.extend(links);
                deletes.extend(dels);
                plan.planned.push(owner.clone());
                plan.inserts += counts.0;
                plan.updates += counts.1;
                plan.deletes += counts.2;
            }
            Err(e) => plan.failed.push((owner.clone(), e)),
        }
    }
    // Inserts into parents first (every named row exists by now), then removals.
    for insert in [true, false] {
        let mut groups: Vec<(String, String, UuidRef, String, Vec<Atom>)> = Vec::new();
        let mut at: HashMap<(String, String, String), usize> = HashMap::new();
        for l in all_links.iter().filter(|l| l.insert == insert) {
            let pk = match &l.parent {
                UuidRef::Real(u) => u.to_string(),
                UuidRef::Named(n) => format!("named:{n}"),
            };
            let k = (l.table.clone(), pk, l.column.clone());
            match at.get(&k) {
                Some(i) => groups[*i].4.push(l.child.clone()),
                None => {
                    at.insert(k.clone(), groups.len());
                    groups.push((k.0, k.1, l.parent.clone(), k.2, vec![l.child.clone()]));
                }
            }
        }
        let verb = if insert { "insert" } else { "delete" };
        for (table, _, parent, column, children) in groups {
            plan.ops.push(
                json!({"op": "mutate", "table": table, "where": where_uuid(&parent),
                "mutations": [[column, verb, to_json(&Value::set(children))]]}),
            );
        }
    }
    plan.ops.extend(deletes);
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_owner(
    cache: &NbCache,
    owner: &Owner,
    rows: &[DesiredRow],
    named: &HashMap<RowKey, String>,
    next_name: &mut usize,
    (ops, links, deletes): (&mut Vec<Json>, &mut Vec<Link>, &mut Vec<Json>),
    local_named: &mut Vec<(RowKey, String)>,
    counts: &mut (usize, usize, usize),
) -> Result<(), PlanError> {
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let resolve = |key: &RowKey, local: &[(RowKey, String)]| -> Option<UuidRef> {
        if let Some(u) = cache.lookup(key) {
            return Some(UuidRef::Real(u));
        }
        named
            .get(key)
            .or_else(|| local.iter().find(|(k, _)| k == key).map(|(_, n)| n))
            .map(|n| UuidRef::Named(n.clone()))
    };
    for d in rows {
        let table = d.key.table;
        if !cache.schema.tables.contains_key(table) {
            return Err(PlanError::UnknownTable(table.to_string()));
        }
        wanted.insert((table.to_string(), d.key.id.clone()));
        let mut parents: Vec<(UuidRef, &ParentLink)> = Vec::new();
        for p in d.parent.iter().chain(d.also_in.iter()) {
            let r = resolve(&p.parent, local_named).ok_or_else(|| PlanError::MissingParent {
                table,
                id: d.key.id.clone(),
                parent_table: p.parent.table,
                parent_id: p.parent.id.clone(),
            })?;
            parents.push((r, p));
        }
        // Reference columns given by key become uuid sets (named when inserted in this txn).
        let mut columns = d.columns.clone();
        for (col, keys) in &d.refs {
            let mut atoms = Vec::with_capacity(keys.len());
            for k in keys {
                let r = resolve(k, local_named).ok_or_else(|| PlanError::MissingParent {
                    table,
                    id: d.key.id.clone(),
                    parent_table: k.table,
                    parent_id: k.id.clone(),
                })?;
                atoms.push(r.atom());
            }
            columns.insert(col.to_string(), Value::set(atoms));
        }
        match cache.lookup(&d.key) {
            Some(uuid) => {
                let have = cache.row(table, &uuid);
                let mut set_cols = serde_json::Map::new();
                let mut mutations = Vec::new();
                for (col, want) in &columns {
                    let want = cache.normalize(table, col, want.clone());
                    let current = have
                        .and_then(|r| r.get(col).cloned())
                        .unwrap_or_else(|| cache.default_of(table, col));
                    if current == want {
                        continue;
                    }
                    match small_patch(cache, table, col, &current, &want) {
                        Some(m) => mutations.extend(m),
                        None => {
                            set_cols.insert(col.clone(), to_json(&want));
                        }
                    }
                }
                let u = UuidRef::Real(uuid);
                if !set_cols.is_empty() {
                    ops.push(json!({"op": "update", "table": table, "where": where_uuid(&u), "row": set_cols}));
                }
                if !mutations.is_empty() {
                    ops.push(json!({"op": "mutate", "table": table, "where": where_uuid(&u), "mutations": mutations}));
                }
                if !set_cols.is_empty() || !mutations.is_empty() {
                    counts.1 += 1;
                }
                let referrers = cache.referrers.get(&uuid);
                for (pref, p) in &parents {
                    // Link a child that is new to this parent, or that a hand edit unlinked.
                    let linked = match pref {
                        UuidRef::Real(pu) => referrers.is_some_and(|r| {
                            r.contains(&(p.parent.table.to_string(), *pu, p.column.to_string()))
                        }),
                        UuidRef::Named(_) => false,
                    };
                    if !linked {
                        links.push(Link {
                            table: p.parent.table.to_string(),
                            parent: pref.clone(),
                            column: p.column.to_string(),
                            insert: true,
                            child: Atom::Uuid(uuid),
                        });
                        counts.1 += 1;
                    }
                }
                // Unlink from parents of ours that no longer want it (a pod no longer
                // selected by a policy leaves its port group).
                for (pt, pu, col) in referrers.into_iter().flatten() {
                    if !LINK_COLUMNS.contains(&(pt.as_str(), col.as_str())) {
                        continue;
                    }
                    let wanted_here = parents.iter().any(|(pref, p)| {
                        matches!(pref, UuidRef::Real(x) if x == pu)
                            && p.parent.table == pt
                            && p.column == col
                    });
                    let ours = cache
                        .row(pt, pu)
                        .is_some_and(|r| owner_of(r, &cache.controller).is_some());
                    if !wanted_here && ours {
                        links.push(Link {
                            table: pt.clone(),
                            parent: UuidRef::Real(*pu),
                            column: col.clone(),
                            insert: false,
                            child: Atom::Uuid(uuid),
                        });
                        counts.1 += 1;
                    }
                }
            }
            None => {
                let name = format!("r{}", *next_name);
                *next_name += 1;
                let mut row = serde_json::Map::new();
                for (col, v) in &columns {
                    let v = cache.normalize(table, col, v.clone());
                    if v != cache.default_of(table, col) {
                        row.insert(col.clone(), to_json(&v));
                    }
                }
                ops.push(json!({"op": "insert", "table": table, "row": row, "uuid-name": name}));
                counts.0 += 1;
                for (pref, p) in parents {
                    links.push(Link {
                        table: p.parent.table.to_string(),
                        parent: pref,
                        column: p.column.to_string(),
                        insert: true,
                        child: Atom::NamedUuid(name.clone()),
                    });
                }
                local_named.push((d.key.clone(), name));
            }
        }
    }

    // Stale rows: owned by this owner, not desired (and duplicates of desired ids).
    if let Some(have) = cache.by_owner.get(owner) {
        for (table, id) in have {
            let uuids = match cache.by_id.get(&(table.clone(), id.clone())) {
                Some(s) => s,
                None => continue,
            };
            let keep_first = wanted.contains(&(table.clone(), id.clone()));
            for (i, uuid) in uuids.iter().enumerate() {
                if keep_first && i == 0 {
                    continue;
                }
                counts.2 += 1;
                let u = UuidRef::Real(*uuid);
                if cache.is_root(table) {
                    deletes.push(json!({"op": "delete", "table": table, "where": where_uuid(&u)}));
                } else {
                    for (pt, pu, col) in cache.referrers.get(uuid).into_iter().flatten() {
                        links.push(Link {
                            table: pt.clone(),
                            parent: UuidRef::Real(*pu),
                            column: col.clone(),
                            insert: false,
                            child: Atom::Uuid(*uuid),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// `mutate` operations turning `current` into `want` when that is much smaller than
/// rewriting the column; None when a plain `update` is better.
fn small_patch(
    cache: &NbCache,
    table: &str,
    col: &str,
    current: &Value,
    want: &Value,
) -> Option<Vec<Json>> {
    if !cache.is_unlimited(table, col) {
        return None;
    }
    match (current, want) {
        (Value::Set(have), Value::Set(w)) => {
            let have_s: BTreeSet<&Atom> = have.iter().collect();
            let want_s: BTreeSet<&Atom> = w.iter().collect();
            let add: Vec<Atom> = want_s.difference(&have_s).map(|a| (*a).clone()).collect();
            let del: Vec<Atom> = have_s.difference(&want_s).map(|a| (*a).clone()).collect();
            if (add.len() + del.len()) * 4 > w.len().max(1) {
                return None;
            }
            let mut m = Vec::new();
            if !del.is_empty() {
                m.push(json!([col, "delete", to_json(&Value::Set(del))]));
            }
            if !add.is_empty() {
                m.push(json!([col, "insert", to_json(&Value::Set(add))]));
            }
            Some(m)
        }
        (Value::Map(have), Value::Map(w)) => {
            let have_m: BTreeMap<&Atom, &Atom> = have.iter().map(|(k, v)| (k, v)).collect();
            let want_m: BTreeMap<&Atom, &Atom> = w.iter().map(|(k, v)| (k, v)).collect();
            let del: Vec<Atom> = have_m
                .iter()
                .filter(|(k, v)| want_m.get(*k) != Some(*v))
                .map(|(k, _)| (*k).clone())
                .collect();
            let add: Vec<(Atom, Atom)> = want_m
                .iter()
                .filter(|(k, v)| have_m.get(*k) != Some(*v))
                .map(|(k, v)| ((*k).clone(), (*v).clone()))
                .collect();
            if (add.len() + del.len()) * 4 > w.len().max(1) {
                return None;
            }
            let mut m = Vec::new();
            if !del.is_empty() {
                m.push(json!([col, "delete", to_json(&Value::Set(del))]));
            }
            if !add.is_empty() {
                m.push(json!([col, "insert", to_json(&Value::Map(add))]));
            }
            Some(m)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;
    use crate::desired::{self, PodState, LS, LSP};
    use crate::rows::NetworkInfo;
    use ovnk_annotations::MacAddr;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json_str(ovn_schema()).unwrap()
    }

    fn ovn_schema() -> &'static str {
        include_str!("../../ovn-models/schemas/ovn-nb.ovsschema")
    }

    fn pod(name: &str, ip: &str) -> PodState {
        let ipn: ipnet::IpNet = ip.parse().unwrap();
        PodState {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: "n1".into(),
            ips: vec![ipn],
            mac: MacAddr::from_ip(ipn.addr()),
        }
    }

    /// Applies a plan's effect to the cache as the server would (inserts get fresh uuids).
    fn commit(cache: &mut NbCache, plan: &Plan) {
        let mut names: HashMap<String, Uuid> = HashMap::new();
        let parse_uuid = |j: &Json, names: &HashMap<String, Uuid>| -> Uuid {
            let a = &j[0][2];
            match a[0].as_str().unwrap() {
                "uuid" => a[1].as_str().unwrap().parse().unwrap(),
                _ => names[a[1].as_str().unwrap()],
            }
        };
        for op in &plan.ops {
            let table = op["table"].as_str().unwrap().to_string();
            match op["op"].as_str().unwrap() {
                "insert" => {
                    let u = Uuid::from_u128(
                        names.len() as u128 + 1000 + cache.len(&table) as u128 * 7919,
                    );
                    names.insert(op["uuid-name"].as_str().unwrap().into(), u);
                    let row: Row =
                        serde_json::from_value(resolve_named(op["row"].clone(), &names)).unwrap();
                    cache.apply(&table, u, Some(row));
                }
                "update" | "mutate" => {
                    let u = parse_uuid(&op["where"], &names);
                    let mut row = cache.row(&table, &u).unwrap().clone();
                    if op["op"] == "update" {
                        let upd: Row =
                            serde_json::from_value(resolve_named(op["row"].clone(), &names))
                                .unwrap();
                        row.extend(upd);
                    } else {
                        for m in op["mutations"].as_array().unwrap() {
                            let col = m[0].as_str().unwrap();
                            let mut arg = m[2].clone();
                            // named-uuid atoms → the uuids assigned above
                            if let Some(items) = arg.get_mut(1).and_then(|x| x.as_array_mut()) {
                                for it in items.iter_mut() {
                                    if it[0] == "named-uuid" {
                                        let n = names[it[1].as_str().unwrap()];
                                        *it = json!(["uuid", n.to_string()]);
                                    }
                                }
                            }
                            let arg: Value = serde_json::from_value(arg).unwrap();
                            let cur = row.get(col).cloned().unwrap_or_default();
                            let mut atoms: BTreeSet<Atom> =
                                cur.set_elements().iter().cloned().collect();
                            for a in arg.set_elements() {
                                if m[1] == "insert" {
                                    atoms.insert(a.clone());
                                } else {
                                    atoms.remove(a);
                                }
                            }
                            row.insert(col.into(), Value::Set(atoms.into_iter().collect()));
                        }
                    }
                    cache.apply(&table, u, Some(row));
                }
                "delete" => {
                    let u = parse_uuid(&op["where"], &names);
                    cache.apply(&table, u, None);
                }
                other => panic!("unexpected op {other}"),
            }
        }
    }

    /// `["named-uuid", n]` anywhere in `j` → the uuid assigned to `n`.
    fn resolve_named(j: Json, names: &HashMap<String, Uuid>) -> Json {
        match j {
            Json::Array(a) if a.len() == 2 && a[0] == "named-uuid" => {
                json!(["uuid", names[a[1].as_str().unwrap()].to_string()])
            }
            Json::Array(a) => Json::Array(a.into_iter().map(|x| resolve_named(x, names)).collect()),
            Json::Object(o) => Json::Object(
                o.into_iter()
                    .map(|(k, v)| (k, resolve_named(v, names)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn node_group(cfg: &crate::config::Resolved) -> (Owner, Vec<DesiredRow>) {
        let n = desired::NodeState {
            name: "n1".into(),
            node_id: 2,
            subnets: vec!["10.244.1.0/24".parse().unwrap()],
            join_ips: vec!["100.64.0.2/16".parse().unwrap()],
            chassis_id: None,
            gateway: None,
        };
        (
            Owner::node("n1"),
            desired::node_rows(&NetworkInfo::default_network(), cfg, &n),
        )
    }

    #[test]
    fn insert_then_nothing_then_stale_delete() {
        let net = NetworkInfo::default_network();
        let cfg = ControllerConfig::default().resolve().unwrap();
        let mut cache = NbCache::new(schema(), &net.controller_name());
        let groups = vec![
            (Owner::cluster(), desired::cluster_rows(&net, &cfg)),
            node_group(&cfg),
            (
                Owner::pod("ns", "a"),
                desired::pod_rows(&net, &pod("a", "10.244.1.3/24")),
            ),
        ];
        let p = plan(&cache, &groups);
        assert!(p.failed.is_empty(), "{:?}", p.failed);
        assert_eq!(p.inserts, groups.iter().map(|g| g.1.len()).sum::<usize>());
        // Children are linked by named uuid in the same transaction.
        assert!(p.ops.iter().any(|o| o["op"] == "mutate"
            && o["table"] == LS
            && o["mutations"][0][2][1][0][0] == "named-uuid"));
        commit(&mut cache, &p);
        // Level-driven: same desired state → nothing to write.
        let again = plan(&cache, &groups);
        assert!(again.is_empty(), "{:?}", again.ops);

        // The pod goes: its LSP is unlinked from the node switch (not deleted: non-root).
        let gone = vec![(Owner::pod("ns", "a"), Vec::new())];
        let p = plan(&cache, &gone);
        assert_eq!(p.ops.len(), 1, "{:?}", p.ops);
        assert_eq!(p.ops[0]["op"], "mutate");
        assert_eq!(p.ops[0]["mutations"][0][1], "delete");
        assert_eq!(p.deletes, 1);
    }

    #[test]
    fn drift_is_fixed_with_minimal_ops() {
        let net = NetworkInfo::default_network();
        let cfg = ControllerConfig::default().resolve().unwrap();
        let mut cache = NbCache::new(schema(), &net.controller_name());
        let ips: Vec<std::net::IpAddr> = (3..200)
            .map(|i| format!("10.244.1.{i}").parse().unwrap())
            .collect();
        let groups = vec![(
            Owner::namespace("ns"),
            desired::namespace_rows(&net, &cfg, "ns", &ips),
        )];
        let p0 = plan(&cache, &groups);
        commit(&mut cache, &p0);
        // One more address: a mutate insert of one element, not the whole set.
        let mut more = ips.clone();
        more.push("10.244.1.250".parse().unwrap());
        let g2 = vec![(
            Owner::namespace("ns"),
            desired::namespace_rows(&net, &cfg, "ns", &more),
        )];
        let p = plan(&cache, &g2);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.ops[0]["op"], "mutate");
        assert_eq!(
            p.ops[0]["mutations"][0][2],
            json!(["set", ["10.244.1.250"]])
        );
        // A hand-edited scalar column is rewritten with an update.
        let (u, row) = cache
            .rows("Address_Set")
            .map(|(u, r)| (*u, r.clone()))
            .next()
            .unwrap();
        let mut row = row;
        row.insert("name".into(), Value::from("tampered"));
        cache.apply("Address_Set", u, Some(row));
        let p = plan(&cache, &groups);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.ops[0]["op"], "update");
    }

    #[test]
    fn child_without_parent_fails_only_that_owner() {
        let net = NetworkInfo::default_network();
        let cfg = ControllerConfig::default().resolve().unwrap();
        let cache = NbCache::new(schema(), &net.controller_name());
        let groups = vec![
            (Owner::cluster(), desired::cluster_rows(&net, &cfg)),
            (
                Owner::pod("ns", "a"),
                desired::pod_rows(&net, &pod("a", "10.244.1.3/24")),
            ),
        ];
        let p = plan(&cache, &groups);
        assert_eq!(p.planned, vec![Owner::cluster()]);
        assert_eq!(p.failed.len(), 1);
        assert!(p.failed[0].1.to_string().contains("Node:n1:switch"));
    }

    #[test]
    fn duplicate_and_foreign_rows() {
        let net = NetworkInfo::default_network();
        let cfg = ControllerConfig::default().resolve().unwrap();
        let mut cache = NbCache::new(schema(), &net.controller_name());
        let groups = vec![(Owner::cluster(), desired::cluster_rows(&net, &cfg))];
        let p0 = plan(&cache, &groups);
        commit(&mut cache, &p0);
        // A second row with the same ovnk id (e.g. a crashed earlier writer) is deleted;
        // a row without ovnk ownership is never touched.
        let (_, cr) = cache
            .rows("Logical_Router")
            .map(|(u, r)| (*u, r.clone()))
            .next()
            .unwrap();
        cache.apply("Logical_Router", Uuid::from_u128(1), Some(cr));
        let mut foreign = Row::new();
        foreign.insert("name".into(), Value::from("someone-elses"));
        cache.apply(LS, Uuid::from_u128(2), Some(foreign));
        let p = plan(&cache, &groups);
        let deletes: Vec<&Json> = p.ops.iter().filter(|o| o["op"] == "delete").collect();
        assert_eq!(deletes.len(), 1, "{:?}", p.ops);
        assert_eq!(deletes[0]["table"], "Logical_Router");
        assert!(!p.ops.iter().any(|o| o["table"] == LS || o["table"] == LSP));
    }
}
