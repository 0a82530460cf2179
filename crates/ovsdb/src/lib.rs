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
//! ```
//! use ovsdb::{Value, Atom};
//! let v: Value = serde_json::from_str(r#"["map",[["b","2"],["a","1"]]]"#).unwrap();
//! assert_eq!(v.map_get("a"), Some(&Atom::from("1")));
//! assert_eq!(serde_json::to_string(&v).unwrap(), r#"["map",[["a","1"],["b","2"]]]"#);
//! ```

pub mod model;
pub mod schema;
pub mod value;

pub use model::{check_model, check_models, get_column, Model, ModelError, Row, SchemaMismatch};
pub use schema::{
    AtomicType, BaseType, ColumnSchema, ColumnType, DatabaseSchema, Max, RefType, SchemaError,
    SchemaParseError, TableSchema,
};
pub use value::{Atom, FromAtom, FromValue, ToAtom, ToValue, Uuid, Value, ValueError};
