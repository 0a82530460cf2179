//! Monitor updates (RFC 7047 §4.1.6 `update`, and ovsdb-server's `update2`/`update3`),
//! decoded straight from the wire into rows without an intermediate JSON tree.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::model::Row;
use crate::value::Uuid;

/// One row's change in an `update` (v1) notification: `old` and/or `new`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RowUpdate1 {
    #[serde(default)]
    pub old: Option<Row>,
    #[serde(default)]
    pub new: Option<Row>,
}

/// One row's change in an `update2`/`update3` notification.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum RowUpdate2 {
    /// Present when the monitor started (non-default columns only).
    Initial(Row),
    /// A new row (non-default columns only).
    Insert(Row),
    /// Changed columns: a diff (see [`crate::Value::apply_diff`]).
    Modify(Row),
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
