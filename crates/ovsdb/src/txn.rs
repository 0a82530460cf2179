//! Transactions (RFC 7047 §5.2): operations, a builder, schema checks, and typed results.

use std::fmt;

use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};

use crate::model::Row;
use crate::schema::{is_id, AtomicType, DatabaseSchema, SchemaError, TableSchema};
use crate::value::{Atom, Uuid, Value};

/// Condition functions (RFC 7047 §5.1 `<function>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// `[column, function, value]`
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Value>) -> Self {
        Condition {
            column: column.into(),
            function,
            value: value.into(),
        }
    }
    /// `column == value`
    pub fn eq(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Eq, value)
    }
    /// `_uuid == uuid`
    pub fn uuid(uuid: Uuid) -> Self {
        Self::new("_uuid", Function::Eq, uuid)
    }
    /// `column includes value` (e.g. a map containing a key/value pair).
    pub fn includes(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Includes, value)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.column)?;
        t.serialize_element(self.function.as_str())?;
        t.serialize_element(&self.value)?;
        t.end()
    }
}

/// Mutators (RFC 7047 §5.1 `<mutator>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// `[column, mutator, value]`
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Value>) -> Self {
        Mutation {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }
    /// Adds elements to a set or pairs to a map.
    pub fn insert(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Mutator::Insert, value)
    }
    /// Removes elements from a set, or from a map pairs (a map) or keys (a set of keys).
    pub fn delete(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Mutator::Delete, value)
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.column)?;
        t.serialize_element(self.mutator.as_str())?;
        t.serialize_element(&self.value)?;
        t.end()
    }
}

/// `wait` "until".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One database operation (RFC 7047 §5.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
        /// ovsdb-server extension: a caller-chosen UUID for the new row.
        uuid: Option<Uuid>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Comment(String),
    Assert {
        lock: String,
    },
}

impl Operation {
    /// The `op` name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    /// The table the operation works on, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            _ => None,
        }
    }

    /// Checks the operation against the schema: tables and columns exist, values fit their
    /// types (enums, ranges, sizes), updated and mutated columns are mutable.
    pub fn check(&self, schema: &DatabaseSchema) -> Result<(), SchemaError> {
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
                ..
            } => {
                if let Some(n) = uuid_name.as_deref().filter(|n| !is_id(n)) {
                    return Err(SchemaError::InvalidId {
                        what: "uuid-name",
                        name: n.to_owned(),
                    });
                }
                schema.check_row(table, row, false)?;
                check_named_refs(row)
            }
            Operation::Assert { lock } if !is_id(lock) => Err(SchemaError::InvalidId {
                what: "lock name",
                name: lock.clone(),
            }),
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let t = schema.table_or_err(table)?;
                check_conditions(t, conditions)?;
                for c in columns.iter().flatten() {
                    check_column_name(t, c)?;
                }
                Ok(())
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                let t = schema.table_or_err(table)?;
                check_conditions(t, conditions)?;
                t.check_row(row, true)
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                let t = schema.table_or_err(table)?;
                check_conditions(t, conditions)?;
                for m in mutations {
                    check_mutation(t, m)?;
                }
                Ok(())
            }
            Operation::Delete { table, conditions } => {
                check_conditions(schema.table_or_err(table)?, conditions)
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                rows,
                ..
            } => {
                let t = schema.table_or_err(table)?;
                check_conditions(t, conditions)?;
                for c in columns {
                    check_column_name(t, c)?;
                }
                for r in rows {
                    for (c, v) in r {
                        if c == "_uuid" || c == "_version" {
                            continue;
                        }
                        t.check_value(c, v)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Named-uuid references must be `<id>`s, or the server rejects the whole transaction
/// with a syntax error that does not say where.
fn check_named_refs(row: &Row) -> Result<(), SchemaError> {
    for v in row.values() {
        let atoms = v
            .set_elements()
            .iter()
            .chain(v.map_entries().iter().flat_map(|(k, v)| [k, v]));
        for a in atoms {
            if let Atom::NamedUuid(n) = a {
                if !is_id(n) {
                    return Err(SchemaError::InvalidId {
                        what: "named-uuid",
                        name: n.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn check_column_name(t: &TableSchema, c: &str) -> Result<(), SchemaError> {
    if c == "_uuid" || c == "_version" {
        return Ok(());
    }
    t.column_or_err(c).map(|_| ())
}

fn bad(t: &TableSchema, column: &str, msg: String) -> SchemaError {
    SchemaError::BadValue {
        table: t.name.clone(),
        column: column.to_owned(),
        msg,
    }
}

fn check_conditions(t: &TableSchema, conds: &[Condition]) -> Result<(), SchemaError> {
    for c in conds {
        if c.column == "_uuid" || c.column == "_version" {
            match c.value.as_atom() {
                Some(Atom::Uuid(_)) | Some(Atom::NamedUuid(_)) => continue,
                _ => {
                    return Err(bad(
                        t,
                        &c.column,
                        format!("condition value must be a uuid, found {}", c.value),
                    ))
                }
            }
        }
        let col = t.column_or_err(&c.column)?;
        let ty = &col.ty;
        match c.function {
            Function::Lt | Function::Le | Function::Gt | Function::Ge
                if !ty.is_scalar() && !ty.is_optional()
                    || !matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real) =>
            {
                return Err(bad(
                    t,
                    &c.column,
                    format!(
                        "function {} needs an integer or real column",
                        c.function.as_str()
                    ),
                ));
            }
            _ => {}
        }
        // Includes/excludes may name a subset, so only atoms are checked, not the size.
        check_atoms(
            t,
            &c.column,
            ty,
            &c.value,
            c.function == Function::Eq || c.function == Function::Ne,
        )?;
    }
    Ok(())
}

fn check_atoms(
    t: &TableSchema,
    column: &str,
    ty: &crate::schema::ColumnType,
    v: &Value,
    whole: bool,
) -> Result<(), SchemaError> {
    if whole {
        return ty.check(v).map_err(|m| bad(t, column, m));
    }
    match (v, &ty.value) {
        (Value::Map(m), Some(vt)) => {
            for (k, val) in m {
                ty.key.check_atom(k).map_err(|e| bad(t, column, e))?;
                vt.check_atom(val).map_err(|e| bad(t, column, e))?;
            }
            Ok(())
        }
        (Value::Map(m), None) if !m.is_empty() => Err(bad(
            t,
            column,
            "a map given for a column that is not a map".into(),
        )),
        _ => {
            for a in v.set_elements() {
                ty.key.check_atom(a).map_err(|e| bad(t, column, e))?;
            }
            Ok(())
        }
    }
}

fn check_mutation(t: &TableSchema, m: &Mutation) -> Result<(), SchemaError> {
    if m.column == "_uuid" || m.column == "_version" {
        return Err(SchemaError::ReadOnly {
            table: t.name.clone(),
            column: m.column.clone(),
        });
    }
    let col = t.column_or_err(&m.column)?;
    if !col.mutable {
        return Err(SchemaError::NotMutable {
            table: t.name.clone(),
            column: m.column.clone(),
        });
    }
    let ty = &col.ty;
    match m.mutator {
        Mutator::Insert => check_atoms(t, &m.column, ty, &m.value, false),
        Mutator::Delete => {
            if ty.is_map() {
                // Deleting from a map takes either a map of pairs or a set of keys.
                match &m.value {
                    Value::Map(_) => check_atoms(t, &m.column, ty, &m.value, false),
                    other => {
                        for a in other.set_elements() {
                            ty.key.check_atom(a).map_err(|e| bad(t, &m.column, e))?;
                        }
                        Ok(())
                    }
                }
            } else {
                check_atoms(t, &m.column, ty, &m.value, false)
            }
        }
        _ => {
            if !matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real) || ty.is_map() {
                return Err(bad(
                    t,
                    &m.column,
                    format!(
                        "mutator {} needs an integer or real column",
                        m.mutator.as_str()
                    ),
                ));
            }
            match m.value.as_atom() {
                Some(Atom::Integer(_)) | Some(Atom::Real(_)) => Ok(()),
                _ => Err(bad(
                    t,
                    &m.column,
                    format!(
                        "mutator {} needs a number, found {}",
                        m.mutator.as_str(),
                        m.value
                    ),
                )),
            }
        }
    }
}

struct RowSer<'a>(&'a Row);
impl Serialize for RowSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("op", self.name())?;
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
                uuid,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("row", &RowSer(row))?;
                if let Some(n) = uuid_name {
                    m.serialize_entry("uuid-name", n)?;
                }
                if let Some(u) = uuid {
                    m.serialize_entry("uuid", &Atom::Uuid(*u))?;
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                if let Some(c) = columns {
                    m.serialize_entry("columns", c)?;
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("row", &RowSer(row))?;
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, conditions } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("columns", columns)?;
                m.serialize_entry(
                    "until",
                    match until {
                        WaitUntil::Equal => "==",
                        WaitUntil::NotEqual => "!=",
                    },
                )?;
                let rows: Vec<RowSer<'_>> = rows.iter().map(RowSer).collect();
                m.serialize_entry("rows", &rows)?;
                if let Some(t) = timeout_ms {
                    m.serialize_entry("timeout", t)?;
                }
            }
            Operation::Commit { durable } => m.serialize_entry("durable", durable)?,
            Operation::Abort => {}
            Operation::Comment(c) => m.serialize_entry("comment", c)?,
            Operation::Assert { lock } => m.serialize_entry("lock", lock)?,
        }
        m.end()
    }
}

/// A transaction under construction: the database name and its operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub database: String,
    pub operations: Vec<Operation>,
}

impl Transaction {
    pub fn new(database: impl Into<String>) -> Self {
        Transaction {
            database: database.into(),
            operations: Vec::new(),
        }
    }

    pub fn push(&mut self, op: Operation) -> &mut Self {
        self.operations.push(op);
        self
    }
    pub fn insert(&mut self, table: impl Into<String>, row: Row) -> &mut Self {
        self.push(Operation::Insert {
            table: table.into(),
            row,
            uuid_name: None,
            uuid: None,
        })
    }
    /// Insert whose new row can be referenced later in the transaction as
    /// `Atom::NamedUuid(name)` (and whose result carries the real uuid).
    pub fn insert_named(
        &mut self,
        table: impl Into<String>,
        name: impl Into<String>,
        row: Row,
    ) -> &mut Self {
        self.push(Operation::Insert {
            table: table.into(),
            row,
            uuid_name: Some(name.into()),
            uuid: None,
        })
    }
    pub fn select(&mut self, table: impl Into<String>, conditions: Vec<Condition>) -> &mut Self {
        self.push(Operation::Select {
            table: table.into(),
            conditions,
            columns: None,
        })
    }
    pub fn update(
        &mut self,
        table: impl Into<String>,
        conditions: Vec<Condition>,
        row: Row,
    ) -> &mut Self {
        self.push(Operation::Update {
            table: table.into(),
            conditions,
            row,
        })
    }
    pub fn mutate(
        &mut self,
        table: impl Into<String>,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    ) -> &mut Self {
        self.push(Operation::Mutate {
            table: table.into(),
            conditions,
            mutations,
        })
    }
    pub fn delete(&mut self, table: impl Into<String>, conditions: Vec<Condition>) -> &mut Self {
        self.push(Operation::Delete {
            table: table.into(),
            conditions,
        })
    }
    /// `wait` until the rows matching `conditions`, restricted to `columns`, are
    /// (`Equal`) or are not (`NotEqual`) exactly `rows`; fails with `timed out` after
    /// `timeout_ms` (0 = check once).
    pub fn wait(
        &mut self,
        table: impl Into<String>,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    ) -> &mut Self {
        self.push(Operation::Wait {
            table: table.into(),
            conditions,
            columns,
            until,
            rows,
            timeout_ms,
        })
    }
    pub fn comment(&mut self, c: impl Into<String>) -> &mut Self {
        self.push(Operation::Comment(c.into()))
    }
    pub fn assert_lock(&mut self, lock: impl Into<String>) -> &mut Self {
        self.push(Operation::Assert { lock: lock.into() })
    }
    pub fn commit(&mut self, durable: bool) -> &mut Self {
        self.push(Operation::Commit { durable })
    }
    pub fn abort(&mut self) -> &mut Self {
        self.push(Operation::Abort)
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Checks every operation against the schema; the error names the operation index.
    pub fn check(&self, schema: &DatabaseSchema) -> Result<(), (usize, SchemaError)> {
        for (i, op) in self.operations.iter().enumerate() {
            op.check(schema).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

/// Serializes the `transact` params `[db, op...]` straight to JSON.
pub(crate) struct TransactParams<'a>(pub &'a Transaction);
impl Serialize for TransactParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.operations.len() + 1))?;
        q.serialize_element(&self.0.database)?;
        for op in &self.0.operations {
            q.serialize_element(op)?;
        }
        q.end()
    }
}

/// The kinds of error ovsdb-server reports for operations and commits (RFC 7047 and
/// ovsdb-server's additions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    ReferentialIntegrityViolation,
    ConstraintViolation,
    ResourcesExhausted,
    IoError,
    DuplicateUuidName,
    DomainError,
    RangeError,
    TimedOut,
    NotSupported,
    Aborted,
    NotOwner,
    NotAllowed,
    SyntaxError,
    UnknownDatabase,
    /// Raft: the transaction could not be committed on the cluster (e.g. leader lost); it
    /// may or may not have been applied.
    Cluster,
    /// Raft: the server is not (or no longer) the leader.
    NotLeader,
    Other(String),
}

impl ErrorKind {
    pub fn parse(s: &str) -> ErrorKind {
        match s {
            "referential integrity violation" => ErrorKind::ReferentialIntegrityViolation,
            "constraint violation" => ErrorKind::ConstraintViolation,
            "resources exhausted" => ErrorKind::ResourcesExhausted,
            "I/O error" => ErrorKind::IoError,
            "duplicate uuid-name" => ErrorKind::DuplicateUuidName,
            "domain error" => ErrorKind::DomainError,
            "range error" => ErrorKind::RangeError,
            "timed out" => ErrorKind::TimedOut,
            "not supported" => ErrorKind::NotSupported,
            "aborted" => ErrorKind::Aborted,
            "not owner" => ErrorKind::NotOwner,
            "not allowed" | "permission error" => ErrorKind::NotAllowed,
            "syntax error" | "unknown column" | "unknown table" => ErrorKind::SyntaxError,
            "unknown database" => ErrorKind::UnknownDatabase,
            "cluster error" => ErrorKind::Cluster,
            "not leader" => ErrorKind::NotLeader,
            other => ErrorKind::Other(other.to_owned()),
        }
    }
}

/// One error object from the server: `{"error": ..., "details": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsdbError {
    pub kind: ErrorKind,
    pub error: String,
    pub details: Option<String>,
}

impl fmt::Display for OvsdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        if let Some(d) = &self.details {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpResult {
    /// insert: the new row's uuid.
    pub uuid: Option<Uuid>,
    /// update, mutate, delete: rows affected.
    pub count: Option<u64>,
    /// select: the rows (including `_uuid` and `_version`).
    pub rows: Option<Vec<Row>>,
}

/// Why a transaction did not commit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TxnError {
    /// Operation `index` (an `op` on `table`) failed; later operations were not executed.
    #[error("operation {index} ({op}{}) failed: {error}", table.as_deref().map(|t| format!(" on {t}")).unwrap_or_default())]
    Operation {
        index: usize,
        op: &'static str,
        table: Option<String>,
        error: OvsdbError,
    },
    /// Every operation succeeded but the commit failed (the extra trailing result).
    #[error("commit failed: {0}")]
    Commit(OvsdbError),
    /// The reply does not have the shape RFC 7047 prescribes.
    #[error("malformed transact reply: {0}")]
    Malformed(String),
}

impl TxnError {
    /// The server's error, if any.
    pub fn ovsdb_error(&self) -> Option<&OvsdbError> {
        match self {
            TxnError::Operation { error, .. } | TxnError::Commit(error) => Some(error),
            TxnError::Malformed(_) => None,
        }
    }
    pub fn kind(&self) -> Option<&ErrorKind> {
        self.ovsdb_error().map(|e| &e.kind)
    }
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default)]
    uuid: Option<Value>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    rows: Option<Vec<Row>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    details: Option<String>,
}

#[derive(Deserialize)]
struct TransactReply {
    result: Vec<Option<RawResult>>,
}

/// Interprets a whole transact reply message (RFC 7047 §4.1.3): one result per operation
/// (null for operations not executed after a failure), plus a trailing error entry when all
/// operations succeeded but the commit failed.
pub fn parse_transact_reply(txn: &Transaction, frame: &[u8]) -> Result<Vec<OpResult>, TxnError> {
    let raw = serde_json::from_slice::<TransactReply>(frame)
        .map_err(|e| TxnError::Malformed(e.to_string()))?
        .result;
    let n = txn.operations.len();
    if raw.len() < n {
        return Err(TxnError::Malformed(format!(
            "{} results for {n} operations",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (i, r) in raw.into_iter().enumerate() {
        let Some(r) = r else {
            // Not executed: a previous operation must have failed; that one was reported.
            if i < n {
                return Err(TxnError::Malformed(format!(
                    "operation {i} not executed but no earlier error"
                )));
            }
            continue;
        };
        if let Some(e) = r.error {
            let error = OvsdbError {
                kind: ErrorKind::parse(&e),
                error: e,
                details: r.details,
            };
            if i >= n {
                return Err(TxnError::Commit(error));
            }
            let op = &txn.operations[i];
            return Err(TxnError::Operation {
                index: i,
                op: op.name(),
                table: op.table().map(str::to_owned),
                error,
            });
        }
        if i < n {
            out.push(OpResult {
                uuid: r.uuid.as_ref().and_then(Value::as_uuid),
                count: r.count,
                rows: r.rows,
            });
        }
    }
    Ok(out)
}
