//! Database schemas (RFC 7047 §3.2): parsed from `get_schema` replies or `.ovsschema` files,
//! and used to check every operation before it is sent and to normalize decoded values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value as Json;

use crate::value::{Atom, Value};

/// A schema that could not be parsed; names the table and column where it went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid schema{}: {msg}", at_str(.table, .column))]
pub struct SchemaParseError {
    pub table: Option<String>,
    pub column: Option<String>,
    pub msg: String,
}

fn at_str(table: &Option<String>, column: &Option<String>) -> String {
    match (table, column) {
        (Some(t), Some(c)) => format!(" at {t}.{c}"),
        (Some(t), None) => format!(" at table {t}"),
        _ => String::new(),
    }
}

/// A value or operation that does not fit the schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("unknown column {table}.{column}")]
    UnknownColumn { table: String, column: String },
    #[error("{table}.{column}: {msg}")]
    BadValue {
        table: String,
        column: String,
        msg: String,
    },
    #[error("{table}.{column}: column is not mutable")]
    NotMutable { table: String, column: String },
    #[error("invalid {what} {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidId { what: &'static str, name: String },
    #[error("{table}.{column}: column is read-only ({column} cannot be written)")]
    ReadOnly { table: String, column: String },
}

/// True for an RFC 7047 `<id>` (uuid-names, lock names): `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_id(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The four atomic types (plus uuid) of RFC 7047.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    pub fn parse(s: &str) -> Option<AtomicType> {
        Some(match s {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Strong references keep the referenced row alive; weak ones are removed when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefType {
    #[default]
    Strong,
    Weak,
}

/// A base type: an atomic type plus its constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    pub atomic: AtomicType,
    /// Allowed values, sorted (from the schema's `"enum"`).
    pub enum_values: Option<Vec<Atom>>,
    pub min_integer: Option<i64>,
    pub max_integer: Option<i64>,
    pub min_real: Option<f64>,
    pub max_real: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub ref_table: Option<String>,
    pub ref_type: RefType,
}

impl BaseType {
    pub fn new(atomic: AtomicType) -> BaseType {
        BaseType {
            atomic,
            enum_values: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    /// The default atom of this type (0, 0.0, false, "", all-zero uuid).
    pub fn default_atom(&self) -> Atom {
        match self.atomic {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(uuid::Uuid::nil()),
        }
    }

    /// Converts an atom decoded without a schema to this type where the wire form is
    /// ambiguous (ovsdb-server prints a real with no fraction as a JSON integer).
    pub fn normalize_atom(&self, a: Atom) -> Atom {
        match (self.atomic, a) {
            (AtomicType::Real, Atom::Integer(i)) => Atom::Real(i as f64),
            (_, a) => a,
        }
    }

    /// Checks one atom against this base type. The message says what is wrong.
    pub fn check_atom(&self, a: &Atom) -> Result<(), String> {
        let ok_type = matches!(
            (self.atomic, a),
            (AtomicType::Integer, Atom::Integer(_))
                | (AtomicType::Real, Atom::Real(_))
                | (AtomicType::Real, Atom::Integer(_))
                | (AtomicType::Boolean, Atom::Boolean(_))
                | (AtomicType::String, Atom::String(_))
                | (AtomicType::Uuid, Atom::Uuid(_))
                | (AtomicType::Uuid, Atom::NamedUuid(_))
        );
        if !ok_type {
            return Err(format!(
                "expected {}, found {} {a}",
                self.atomic,
                a.type_name()
            ));
        }
        if let Some(e) = &self.enum_values {
            let a2 = self.normalize_atom(a.clone());
            if e.binary_search(&a2).is_err() {
                let allowed: Vec<String> = e.iter().map(|x| x.to_string()).collect();
                return Err(format!(
                    "{a} is not one of the allowed values [{}]",
                    allowed.join(", ")
                ));
            }
        }
        match a {
            Atom::Integer(i)
                if self.min_integer.is_some_and(|m| *i < m)
                    || self.max_integer.is_some_and(|m| *i > m) =>
            {
                return Err(format!(
                    "integer {i} out of range [{}, {}]",
                    self.min_integer.map_or("-inf".into(), |m| m.to_string()),
                    self.max_integer.map_or("inf".into(), |m| m.to_string())
                ));
            }
            Atom::Real(r)
                if self.min_real.is_some_and(|m| *r < m)
                    || self.max_real.is_some_and(|m| *r > m) =>
            {
                return Err(format!("real {r} out of range"));
            }
            Atom::String(s) => {
                let n = s.chars().count() as u64;
                if self.min_length.is_some_and(|m| n < m) || self.max_length.is_some_and(|m| n > m)
                {
                    return Err(format!("string of length {n} out of allowed length range"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn parse(j: &Json) -> Result<BaseType, String> {
        match j {
            Json::String(s) => AtomicType::parse(s)
                .map(BaseType::new)
                .ok_or_else(|| format!("unknown atomic type {s:?}")),
            Json::Object(o) => {
                let ty = o
                    .get("type")
                    .and_then(Json::as_str)
                    .ok_or("base type without \"type\"")?;
                let atomic =
                    AtomicType::parse(ty).ok_or_else(|| format!("unknown atomic type {ty:?}"))?;
                let mut b = BaseType::new(atomic);
                if let Some(e) = o.get("enum") {
                    let v: Value = serde_json::from_value(e.clone())
                        .map_err(|err| format!("bad enum: {err}"))?;
                    let mut atoms: Vec<Atom> = v
                        .set_elements()
                        .iter()
                        .map(|a| b.normalize_atom(a.clone()))
                        .collect();
                    atoms.sort();
                    atoms.dedup();
                    b.enum_values = Some(atoms);
                }
                let int = |k: &str| -> Result<Option<i64>, String> {
                    o.get(k)
                        .map(|v| v.as_i64().ok_or_else(|| format!("{k} must be an integer")))
                        .transpose()
                };
                let real = |k: &str| -> Result<Option<f64>, String> {
                    o.get(k)
                        .map(|v| v.as_f64().ok_or_else(|| format!("{k} must be a number")))
                        .transpose()
                };
                let uint = |k: &str| -> Result<Option<u64>, String> {
                    o.get(k)
                        .map(|v| {
                            v.as_u64()
                                .ok_or_else(|| format!("{k} must be a non-negative integer"))
                        })
                        .transpose()
                };
                b.min_integer = int("minInteger")?;
                b.max_integer = int("maxInteger")?;
                b.min_real = real("minReal")?;
                b.max_real = real("maxReal")?;
                b.min_length = uint("minLength")?;
                b.max_length = uint("maxLength")?;
                if let Some(t) = o.get("refTable") {
                    b.ref_table = Some(t.as_str().ok_or("refTable must be a string")?.to_owned());
                }
                if let Some(t) = o.get("refType") {
                    b.ref_type = match t.as_str() {
                        Some("strong") => RefType::Strong,
                        Some("weak") => RefType::Weak,
                        _ => return Err(format!("bad refType {t}")),
                    };
                }
                Ok(b)
            }
            other => Err(format!("bad base type {other}")),
        }
    }
}

/// Maximum number of elements of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Max {
    Limited(u64),
    Unlimited,
}

/// A column type: key (and for maps value) base types, and min/max element counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    pub max: Max,
}

impl ColumnType {
    /// Exactly one atom (min 1, max 1, no value type): sent and cached as a bare atom.
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == Max::Limited(1)
    }
    /// Zero or one atom.
    pub fn is_optional(&self) -> bool {
        self.value.is_none() && self.min == 0 && self.max == Max::Limited(1)
    }
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }
    /// A set of any size other than exactly one.
    pub fn is_set(&self) -> bool {
        self.value.is_none() && !self.is_scalar()
    }

    /// The default value of a column of this type (RFC 7047 §4.1.3 `insert`).
    pub fn default_value(&self) -> Value {
        if self.is_scalar() {
            Value::Atom(self.key.default_atom())
        } else if self.min == 1 {
            Value::Set(vec![self.key.default_atom()])
        } else if self.is_map() {
            Value::Map(Vec::new())
        } else {
            Value::empty()
        }
    }

    /// Brings a value decoded without schema into the canonical form for this type:
    /// a scalar column holds `Value::Atom`, a set column `Value::Set`, a map column
    /// `Value::Map` (also when empty); reals printed as integers become reals.
    pub fn normalize(&self, v: Value) -> Value {
        let needs_real = self.key.atomic == AtomicType::Real
            || self
                .value
                .as_ref()
                .is_some_and(|b| b.atomic == AtomicType::Real);
        let v = if needs_real {
            match v {
                Value::Atom(a) => Value::Atom(self.key.normalize_atom(a)),
                Value::Set(s) => {
                    let mut s: Vec<Atom> =
                        s.into_iter().map(|a| self.key.normalize_atom(a)).collect();
                    s.sort();
                    s.dedup();
                    Value::Set(s)
                }
                Value::Map(m) => {
                    let vb = self.value.as_ref().unwrap_or(&self.key);
                    let mut v = Value::Map(
                        m.into_iter()
                            .map(|(k, v)| (self.key.normalize_atom(k), vb.normalize_atom(v)))
                            .collect(),
                    );
                    v.canonicalize();
                    v
                }
            }
        } else {
            v
        };
        if self.is_map() {
            match v {
                Value::Set(s) if s.is_empty() => Value::Map(Vec::new()),
                v => v,
            }
        } else if self.is_scalar() {
            match v {
                Value::Set(mut s) if s.len() == 1 => Value::Atom(s.remove(0)),
                v => v,
            }
        } else {
            match v {
                Value::Atom(a) => Value::Set(vec![a]),
                v => v,
            }
        }
    }

    /// True when `v` is this type's default (an insert may then omit the column).
    pub fn is_default(&self, v: &Value) -> bool {
        match v {
            Value::Atom(a) => self.is_scalar() && *a == self.key.default_atom(),
            Value::Set(s) => {
                (s.is_empty() && self.min == 0)
                    || (self.min == 1 && s.len() == 1 && s[0] == self.key.default_atom())
            }
            Value::Map(m) => m.is_empty() && self.min == 0,
        }
    }

    /// Checks a whole value: shape, element count, every atom.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        let n = v.len() as u64;
        match (v, &self.value) {
            (Value::Map(m), Some(vt)) => {
                for (k, val) in m {
                    self.key
                        .check_atom(k)
                        .map_err(|e| format!("map key: {e}"))?;
                    vt.check_atom(val).map_err(|e| format!("map value: {e}"))?;
                }
            }
            (Value::Map(m), None) if !m.is_empty() => {
                return Err("a map given for a column that is not a map".into())
            }
            (Value::Set(s), Some(_)) if !s.is_empty() => {
                return Err("a set given for a map column".into())
            }
            (Value::Atom(a), Some(_)) => return Err(format!("atom {a} given for a map column")),
            (Value::Atom(a), None) => self.key.check_atom(a)?,
            (Value::Set(s), None) => {
                for a in s {
                    self.key.check_atom(a)?;
                }
            }
            _ => {}
        }
        let max_ok = match self.max {
            Max::Unlimited => true,
            Max::Limited(m) => n <= m,
        };
        if n < self.min || !max_ok {
            let max = match self.max {
                Max::Unlimited => "unlimited".to_string(),
                Max::Limited(m) => m.to_string(),
            };
            return Err(format!(
                "{n} elements, but the column allows {} to {max}",
                self.min
            ));
        }
        Ok(())
    }

    fn parse(j: &Json) -> Result<ColumnType, String> {
        match j {
            Json::String(_) => Ok(ColumnType {
                key: BaseType::parse(j)?,
                value: None,
                min: 1,
                max: Max::Limited(1),
            }),
            Json::Object(o) => {
                let key = BaseType::parse(o.get("key").ok_or("type without \"key\"")?)?;
                let value = o.get("value").map(BaseType::parse).transpose()?;
                let min = match o.get("min") {
                    None => 1,
                    Some(m) => m.as_u64().ok_or("min must be 0 or 1")?,
                };
                let max = match o.get("max") {
                    None => Max::Limited(1),
                    Some(Json::String(s)) if s == "unlimited" => Max::Unlimited,
                    Some(m) => Max::Limited(
                        m.as_u64()
                            .ok_or("max must be a positive integer or \"unlimited\"")?,
                    ),
                };
                Ok(ColumnType {
                    key,
                    value,
                    min,
                    max,
                })
            }
            other => Err(format!("bad column type {other}")),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: ColumnType,
    pub ephemeral: bool,
    pub mutable: bool,
}

/// One table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    pub columns: BTreeMap<String, ColumnSchema>,
    pub max_rows: Option<u64>,
    pub is_root: bool,
    /// Sets of columns whose values are unique across the table.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.get(name)
    }

    /// Checks a column value (names table and column in the error).
    pub fn check_value(&self, column: &str, v: &Value) -> Result<(), SchemaError> {
        let c = self.column_or_err(column)?;
        c.ty.check(v).map_err(|msg| SchemaError::BadValue {
            table: self.name.clone(),
            column: column.to_owned(),
            msg,
        })
    }

    /// The column's schema, or the error naming it; `_uuid`/`_version` are not in `columns`.
    pub fn column_or_err(&self, column: &str) -> Result<&ColumnSchema, SchemaError> {
        self.columns
            .get(column)
            .ok_or_else(|| SchemaError::UnknownColumn {
                table: self.name.clone(),
                column: column.to_owned(),
            })
    }

    /// Checks a row that will be written: every column must exist, fit its type, and (for an
    /// update) be mutable.
    pub fn check_row(&self, row: &crate::model::Row, for_update: bool) -> Result<(), SchemaError> {
        for (col, v) in row {
            if col == "_uuid" || col == "_version" {
                return Err(SchemaError::ReadOnly {
                    table: self.name.clone(),
                    column: col.clone(),
                });
            }
            let c = self.column_or_err(col)?;
            c.ty.check(v).map_err(|msg| SchemaError::BadValue {
                table: self.name.clone(),
                column: col.clone(),
                msg,
            })?;
            if for_update && !c.mutable {
                return Err(SchemaError::NotMutable {
                    table: self.name.clone(),
                    column: col.clone(),
                });
            }
        }
        Ok(())
    }

    /// Normalizes a decoded row in place (see [`ColumnType::normalize`]); columns unknown to
    /// this schema are kept as decoded.
    pub fn normalize_row(&self, row: &mut crate::model::Row) {
        for (col, v) in row.iter_mut() {
            if let Some(c) = self.columns.get(col) {
                let taken = std::mem::take(v);
                *v = c.ty.normalize(taken);
            }
        }
    }

    fn parse(name: &str, j: &Json) -> Result<TableSchema, SchemaParseError> {
        let err = |column: Option<&str>, msg: String| SchemaParseError {
            table: Some(name.to_owned()),
            column: column.map(str::to_owned),
            msg,
        };
        let o = j
            .as_object()
            .ok_or_else(|| err(None, "table is not an object".into()))?;
        let cols = o
            .get("columns")
            .and_then(Json::as_object)
            .ok_or_else(|| err(None, "table without \"columns\"".into()))?;
        let mut columns = BTreeMap::new();
        for (cname, cj) in cols {
            let co = cj
                .as_object()
                .ok_or_else(|| err(Some(cname), "column is not an object".into()))?;
            let ty = ColumnType::parse(
                co.get("type")
                    .ok_or_else(|| err(Some(cname), "column without \"type\"".into()))?,
            )
            .map_err(|m| err(Some(cname), m))?;
            let flag = |k: &str, d: bool| co.get(k).and_then(Json::as_bool).unwrap_or(d);
            columns.insert(
                cname.clone(),
                ColumnSchema {
                    name: cname.clone(),
                    ty,
                    ephemeral: flag("ephemeral", false),
                    mutable: flag("mutable", true),
                },
            );
        }
        let mut indexes = Vec::new();
        if let Some(ix) = o.get("indexes") {
            let arr = ix
                .as_array()
                .ok_or_else(|| err(None, "indexes must be an array".into()))?;
            for one in arr {
                let cols: Option<Vec<String>> = one
                    .as_array()
                    .map(|a| a.iter().map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or(None);
                indexes.push(cols.ok_or_else(|| err(None, format!("bad index {one}")))?);
            }
        }
        Ok(TableSchema {
            name: name.to_owned(),
            columns,
            max_rows: o.get("maxRows").and_then(Json::as_u64),
            is_root: o.get("isRoot").and_then(Json::as_bool).unwrap_or(false),
            indexes,
        })
    }
}

/// A whole database schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
}

impl DatabaseSchema {
    /// Parses a schema from its JSON form (a `get_schema` result or an `.ovsschema` file).
    pub fn from_json(j: &Json) -> Result<DatabaseSchema, SchemaParseError> {
        let err = |msg: &str| SchemaParseError {
            table: None,
            column: None,
            msg: msg.to_owned(),
        };
        let o = j
            .as_object()
            .ok_or_else(|| err("schema is not a JSON object"))?;
        let name = o
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| err("schema without \"name\""))?
            .to_owned();
        let version = o
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        let tj = o
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| err("schema without \"tables\""))?;
        let mut tables = BTreeMap::new();
        for (tname, t) in tj {
            tables.insert(tname.clone(), TableSchema::parse(tname, t)?);
        }
        Ok(DatabaseSchema {
            name,
            version,
            cksum: o.get("cksum").and_then(Json::as_str).map(str::to_owned),
            tables,
        })
    }

    pub fn from_json_str(s: &str) -> Result<DatabaseSchema, SchemaParseError> {
        let j: Json = serde_json::from_str(s).map_err(|e| SchemaParseError {
            table: None,
            column: None,
            msg: format!("not JSON: {e}"),
        })?;
        Self::from_json(&j)
    }

    /// Reads an `.ovsschema` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<DatabaseSchema, SchemaParseError> {
        let p = path.as_ref();
        let s = std::fs::read_to_string(p).map_err(|e| SchemaParseError {
            table: None,
            column: None,
            msg: format!("cannot read {}: {e}", p.display()),
        })?;
        Self::from_json_str(&s)
    }

    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(name)
    }

    pub fn table_or_err(&self, name: &str) -> Result<&TableSchema, SchemaError> {
        self.tables
            .get(name)
            .ok_or_else(|| SchemaError::UnknownTable(name.to_owned()))
    }

    /// Checks one column value of one table.
    pub fn check_value(&self, table: &str, column: &str, v: &Value) -> Result<(), SchemaError> {
        self.table_or_err(table)?.check_value(column, v)
    }

    /// Checks a row to be inserted (`for_update` false) or used in an update (true).
    pub fn check_row(
        &self,
        table: &str,
        row: &crate::model::Row,
        for_update: bool,
    ) -> Result<(), SchemaError> {
        self.table_or_err(table)?.check_row(row, for_update)
    }
}
