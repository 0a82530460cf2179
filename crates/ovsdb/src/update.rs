//! Monitor updates (RFC 7047 §4.1.6 `update`, and ovsdb-server's `update2`/`update3`),
//! decoded straight from the wire into rows without an intermediate JSON tree.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::model::Row;
use crate::value::{Uuid, Value};

thread_local! {
    /// Column names seen by this thread's decoder: each name is allocated once and shared
    /// by every decoded (and cached) row.
    static NAMES: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
}

/// Returns the shared `Arc<str>` for a column name.
pub fn intern(name: &str) -> Arc<str> {
    NAMES.with(|n| {
        let mut n = n.borrow_mut();
        if let Some(a) = n.get(name) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(name);
        // Bounded: a hostile peer sending endless distinct names must not grow it forever.
        if n.len() < 65_536 {
            n.insert(a.clone());
        }
        a
    })
}

/// A row as it comes in an update: (column, value) pairs in wire order, with interned
/// column names, decoded without building a map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireRow(pub Vec<(Arc<str>, Value)>);

impl WireRow {
    /// The value of a column (linear search: rows have few columns).
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0
            .iter()
            .rev()
            .find(|(c, _)| &**c == column)
            .map(|(_, v)| v)
    }
    /// As a [`Row`] (a later duplicate column wins, as in a JSON object).
    pub fn into_row(self) -> Row {
        self.0
            .into_iter()
            .map(|(c, v)| (c.to_string(), v))
            .collect()
    }
}

impl<'de> Deserialize<'de> for WireRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<WireRow, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(Name(k)) = m.next_key()? {
                    v.push((k, m.next_value::<Value>()?));
                }
                Ok(WireRow(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A column name decoded straight into its interned form.
struct Name(Arc<str>);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name(intern(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One row's change in an `update` (v1) notification: `old` and/or `new`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RowUpdate1 {
    #[serde(default)]
    pub old: Option<WireRow>,
    #[serde(default)]
    pub new: Option<WireRow>,
}

/// One row's change in an `update2`/`update3` notification.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum RowUpdate2 {
    /// Present when the monitor started (non-default columns only).
    Initial(WireRow),
    /// A new row (non-default columns only).
    Insert(WireRow),
    /// Changed columns: a diff (see [`crate::Value::apply_diff`]).
    Modify(WireRow),
    Delete(IgnoredAny),
}

/// `{table: {uuid: RowUpdate}}`
pub type TableUpdates<R> = HashMap<String, HashMap<Uuid, R>>;

/// All updates of one notification or monitor reply, in either protocol version.
#[derive(Debug, Clone)]
pub enum Updates {
    V1(TableUpdates<RowUpdate1>),
    V2(TableUpdates<RowUpdate2>),
}

impl Updates {
    pub fn is_empty(&self) -> bool {
        match self {
            Updates::V1(t) => t.values().all(HashMap::is_empty),
            Updates::V2(t) => t.values().all(HashMap::is_empty),
        }
    }
}

#[derive(Deserialize)]
struct Params<P> {
    params: P,
}

/// A decoded notification.
#[derive(Debug)]
pub enum Notice {
    /// `update` / `update2`: [monitor id, updates]
    Update {
        monitor_id: serde_json::Value,
        updates: Updates,
    },
    /// `update3`: [monitor id, last transaction id, updates]
    Update3 {
        monitor_id: serde_json::Value,
        last_txn_id: String,
        updates: Updates,
    },
    /// Anything else (`locked`, `stolen`, ...): method name only.
    Other(String),
}

/// A notification that could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed {method} notification: {msg}")]
pub struct NoticeError {
    pub method: String,
    pub msg: String,
}

/// Decodes a notification frame by method.
pub fn decode_notice(method: &str, frame: &[u8]) -> Result<Notice, NoticeError> {
    let err = |e: serde_json::Error| NoticeError {
        method: method.to_owned(),
        msg: e.to_string(),
    };
    Ok(match method {
        "update" => {
            let p: Params<(serde_json::Value, TableUpdates<RowUpdate1>)> =
                serde_json::from_slice(frame).map_err(err)?;
            Notice::Update {
                monitor_id: p.params.0,
                updates: Updates::V1(p.params.1),
            }
        }
        "update2" => {
            let p: Params<(serde_json::Value, TableUpdates<RowUpdate2>)> =
                serde_json::from_slice(frame).map_err(err)?;
            Notice::Update {
                monitor_id: p.params.0,
                updates: Updates::V2(p.params.1),
            }
        }
        "update3" => {
            let p: Params<(serde_json::Value, String, TableUpdates<RowUpdate2>)> =
                serde_json::from_slice(frame).map_err(err)?;
            Notice::Update3 {
                monitor_id: p.params.0,
                last_txn_id: p.params.1,
                updates: Updates::V2(p.params.2),
            }
        }
        other => Notice::Other(other.to_owned()),
    })
}

/// The reply of `monitor_cond_since`: `[found, last_txn_id, updates2]`.
#[derive(Debug, Deserialize)]
pub struct CondSinceReply(pub bool, pub String, pub TableUpdates<RowUpdate2>);
