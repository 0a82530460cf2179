//! OVSDB (RFC 7047) client: values, codec, transactions, monitors, cache, connection manager.
//!
//! Layered like rust-netlink: pure types and codec apart from the IO.
//!
//! * [`value`] — [`Atom`], [`Value`] (atom / set / map) and their exact wire form via serde.
//!   Sets and maps are canonical (sorted, unique), so `==` means "same OVSDB value".
//!   [`FromValue`]/[`ToValue`] convert whole column values to Rust types
//!   (`String`, `i64`, `f64`, `bool`, [`Uuid`], `Option<T>`, `Vec<T>`, `BTreeSet<T>`,
//!   `BTreeMap<K, V>`), [`FromAtom`]/[`ToAtom`] single atoms.
//! * [`schema`] — [`DatabaseSchema`] → [`TableSchema`] → [`ColumnSchema`] → [`ColumnType`]
//!   (key/value [`BaseType`]s with enums, ranges, `refTable`/`refType`, min/max), parsed
//!   from `get_schema` or `.ovsschema` files; `check_*` helpers report errors naming the
//!   table and column; `normalize` turns a schema-less decoded value into the column's
//!   canonical form (scalar columns hold `Value::Atom`, sets `Value::Set`, maps `Value::Map`).
//! * [`model`] — [`Row`] (`BTreeMap<String, Value>`; a row may omit default-valued columns),
//!   the [`Model`] trait implemented by generated typed rows, [`get_column`] for generated
//!   `from_row` code, and [`check_models`] which compares the models' tables/columns with
//!   the live schema and names everything missing in a [`SchemaMismatch`].
//!
//! * [`framer`] / [`rpc`] — splitting a byte stream into JSON messages (bounded size) and the
//!   JSON-RPC session (pipelined ids, `echo` answered, inactivity probe).
//! * [`txn`] — [`Operation`]s, the [`Transaction`] builder, schema checks before sending,
//!   and typed results/errors ([`TxnError`] with [`ErrorKind`]).
//! * [`update`] / [`cache`] — `update`/`update2`/`update3` decoding and the [`Cache`] with
//!   indexes, typed views (`cache.rows::<M>()`, `get`, `find`) and [`Event`] streams.
//! * [`client`] — [`Client`]: remotes, TLS, leader-only mode, reconnect with backoff and
//!   jitter, monitor resume (`monitor_cond_since`) or resync-by-diff, transactions.
//!
//! Semantics callers rely on (details in the crate README):
//! * `Client::transact` checks every operation against the live schema first
//!   ([`Error::Schema`] names table and column), returns one [`OpResult`] per operation or a
//!   typed [`TxnError`], and returns only once the cache shows the commit (read-your-writes).
//! * A request in flight when the connection drops fails with [`Error::OutcomeUnknown`]; the
//!   caller decides: `transact_retry` for guarded (idempotent) transactions, or
//!   `transact_checked` which asks the resynced cache whether the first attempt took effect.
//! * Cache rows omit default-valued columns and keep columns unknown to the models; events
//!   go to every subscriber's unbounded channel, in cache order, and after a reconnect only
//!   for rows that really changed.
//!
//! ```
//! use ovsdb::{Value, Atom};
//! let v: Value = serde_json::from_str(r#"["map",[["b","2"],["a","1"]]]"#).unwrap();
//! assert_eq!(v.map_get("a"), Some(&Atom::from("1")));
//! assert_eq!(serde_json::to_string(&v).unwrap(), r#"["map",[["a","1"],["b","2"]]]"#);
//! ```

pub mod cache;
pub mod client;
pub mod framer;
pub mod model;
pub mod rpc;
pub mod schema;
pub mod stream;
pub mod txn;
pub mod unixctl;
pub mod update;
pub mod value;

pub use cache::{ApplyMode, Cache, CacheError, Event, IndexSpec};
pub use client::{Client, ClientConfig, Error, MonitorMethod};
pub use framer::{FrameError, Framer};
pub use rpc::{Connection, RpcConfig, RpcError};
pub use stream::{Remote, Stream, TlsFiles};
pub use txn::{
    Condition, ErrorKind, Function, Mutation, Mutator, OpResult, Operation, OvsdbError,
    Transaction, TxnError, WaitUntil,
};

pub use model::{check_model, check_models, get_column, Model, ModelError, Row, SchemaMismatch};
pub use schema::{
    AtomicType, BaseType, ColumnSchema, ColumnType, DatabaseSchema, Max, RefType, SchemaError,
    SchemaParseError, TableSchema,
};
pub use value::{Atom, FromAtom, FromValue, ToAtom, ToValue, Uuid, Value, ValueError};
