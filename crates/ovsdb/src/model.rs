//! Rows and the [`Model`] trait that typed (generated) row structs implement.

use std::collections::BTreeMap;
use std::fmt;

use crate::schema::DatabaseSchema;
use crate::value::{FromValue, Uuid, Value, ValueError};

/// One row: column name → value, without `_uuid` (kept beside it) and usually without
/// `_version`.
///
/// A row may omit columns that hold their default value (the empty set/map, 0, "", false):
/// `update2`/`update3` notifications do, and the cache keeps rows that way to stay compact.
/// Readers must therefore treat a missing column as its default; [`get_column`] does.
/// Columns unknown to the client's schema are kept as they came.
pub type Row = BTreeMap<String, Value>;

/// A row that could not be turned into a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{table} row {uuid}: column {column}: {source}")]
    Column {
        table: &'static str,
        column: String,
        uuid: Uuid,
        #[source]
        source: ValueError,
    },
    #[error("{table} row {uuid}: {msg}")]
    Other {
        table: &'static str,
        uuid: Uuid,
        msg: String,
    },
}

/// A typed view of the rows of one table (implemented by the generated models).
pub trait Model: Sized + Clone + Send + Sync + 'static {
    /// The table's name.
    const TABLE: &'static str;
    /// Columns this model needs; compared with the live schema at connect time.
    const COLUMNS: &'static [&'static str];
    /// The row's `_uuid`.
    fn uuid(&self) -> Uuid;
    /// Builds the model from a row. Missing columns take their default value; columns the
    /// model does not know are kept (in an `extra` field) rather than dropped.
    fn from_row(uuid: Uuid, row: &Row) -> Result<Self, ModelError>;
    /// Every column including the extra ones, without `_uuid`.
    fn to_row(&self) -> Row;
}

/// Reads one column of a row as `T`, taking `T::default()` when the column is absent.
/// Meant for generated `from_row` code.
pub fn get_column<T: FromValue + Default>(
    table: &'static str,
    uuid: Uuid,
    row: &Row,
    column: &str,
) -> Result<T, ModelError> {
    match row.get(column) {
        None => Ok(T::default()),
        Some(v) => T::from_value(v).map_err(|source| ModelError::Column {
            table,
            column: column.to_owned(),
            uuid,
            source,
        }),
    }
}

/// The columns of `row` that are not in `known` (kept by models as their `extra`).
pub fn extra_columns(row: &Row, known: &[&str]) -> Row {
    row.iter()
        .filter(|(k, _)| {
            k.as_str() != "_uuid" && k.as_str() != "_version" && !known.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The client's models need tables or columns that the server's schema lacks.
#[derive(Debug, Clone, PartialEq, Default, thiserror::Error)]
pub struct SchemaMismatch {
    pub database: String,
    pub missing_tables: Vec<String>,
    /// (table, column)
    pub missing_columns: Vec<(String, String)>,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schema of database {:?} does not match the client's models:",
            self.database
        )?;
        if !self.missing_tables.is_empty() {
            write!(f, " missing tables: {}", self.missing_tables.join(", "))?;
            if !self.missing_columns.is_empty() {
                f.write_str(";")?;
            }
        }
        if !self.missing_columns.is_empty() {
            let cols: Vec<String> = self
                .missing_columns
                .iter()
                .map(|(t, c)| format!("{t}.{c}"))
                .collect();
            write!(f, " missing columns: {}", cols.join(", "))?;
        }
        Ok(())
    }
}

/// Checks that every table and column the models need exists in `schema`. Extra tables,
/// columns or enum values on the server are fine. The error names everything missing.
pub fn check_models(
    schema: &DatabaseSchema,
    tables: &[(&str, &[&str])],
) -> Result<(), SchemaMismatch> {
    let mut m = SchemaMismatch {
        database: schema.name.clone(),
        ..Default::default()
    };
    for (t, cols) in tables {
        match schema.tables.get(*t) {
            None => m.missing_tables.push((*t).to_owned()),
            Some(ts) => {
                for c in *cols {
                    if *c != "_uuid" && *c != "_version" && !ts.columns.contains_key(*c) {
                        m.missing_columns.push(((*t).to_owned(), (*c).to_owned()));
                    }
                }
            }
        }
    }
    if m.missing_tables.is_empty() && m.missing_columns.is_empty() {
        Ok(())
    } else {
        Err(m)
    }
}

/// [`check_models`] for one model type.
pub fn check_model<M: Model>(schema: &DatabaseSchema) -> Result<(), SchemaMismatch> {
    check_models(schema, &[(M::TABLE, M::COLUMNS)])
}
