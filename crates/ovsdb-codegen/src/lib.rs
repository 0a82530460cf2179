//! Generates typed Rust models from an OVSDB schema (`.ovsschema`).
//!
//! One struct per table, one field per column, typed from the column's type:
//!
//! | column type                         | Rust type                                |
//! |-------------------------------------|------------------------------------------|
//! | exactly one atom                    | `String`, `i64`, `f64`, `bool`, `Uuid`   |
//! | zero or one atom (`min 0, max 1`)   | `Option<T>`                              |
//! | set                                 | `BTreeSet<T>` (`Vec<f64>` for reals)     |
//! | map                                 | `BTreeMap<K, V>`                         |
//! | string with an `enum` (not in maps) | a generated enum with an `Other(String)` |
//!
//! Every struct has `uuid` (the row's `_uuid`) and `extra`, which carries the columns the
//! schema used for generation does not know: rows from a newer server keep them when read
//! and written back. Enums keep unknown values in `Other` for the same reason.
//! Each struct implements [`ovsdb::Model`]; `TABLES` lists every (table, columns) pair for
//! [`ovsdb::check_models`], so that a server lacking a column is a start-up error.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ovsdb::{AtomicType, BaseType, ColumnSchema, ColumnType, DatabaseSchema, Max, RefType};

/// Rust keywords that may appear as column names (`type`, `match`, ...): fields get a `_`
/// suffix instead of a raw identifier so call sites stay readable.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
    "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
    "true", "try", "type", "unsafe", "use", "where", "while", "yield", "abstract", "become", "do",
    "final", "macro", "override", "priv", "typeof", "unsized", "virtual",
];

/// Field names the generator itself uses in every struct.
const RESERVED_FIELDS: &[&str] = &["uuid", "extra"];

/// `Logical_Switch_Port` → `LogicalSwitchPort`, `ACL` → `Acl`, `QoS` → `QoS`.
pub fn camel_case(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        let Some(first) = chars.next() else { continue };
        out.push(first.to_ascii_uppercase());
        let rest: String = chars.collect();
        // An all-caps word (ACL, NB, DHCP) reads better as Acl, Nb, Dhcp.
        if rest.chars().all(|c| !c.is_ascii_lowercase()) {
            out.push_str(&rest.to_ascii_lowercase());
        } else {
            out.push_str(&rest);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}

/// A column name as a Rust field name.
pub fn field_name(column: &str) -> String {
    let mut f: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if f.is_empty() || f.starts_with(|c: char| c.is_ascii_digit()) {
        f.insert(0, '_');
    }
    if KEYWORDS.contains(&f.as_str()) || RESERVED_FIELDS.contains(&f.as_str()) {
        f.push('_');
    }
    f
}

/// `external_ids` → `COL_EXTERNAL_IDS` (prefixed: never clashes with TABLE/COLUMNS).
fn const_name(column: &str) -> String {
    let mut c: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    c.insert_str(0, "COL_");
    c
}

/// A string enum generated for one column.
struct EnumDef {
    name: String,
    table: String,
    column: String,
    /// (variant, wire value), in schema (sorted) order.
    variants: Vec<(String, String)>,
}

fn enum_variants(values: &[String]) -> Vec<(String, String)> {
    let mut used = BTreeSet::new();
    values
        .iter()
        .map(|v| {
            let mut name = camel_case(v);
            if name == "Other" {
                name = "OtherValue".into();
            }
            // Values differing only in punctuation (ovn-ic / ovn_ic) still get distinct arms.
            let base = name.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}{n}");
                n += 1;
            }
            (name, v.clone())
        })
        .collect()
}

fn string_enum_values(b: &BaseType) -> Option<Vec<String>> {
    if b.atomic != AtomicType::String {
        return None;
    }
    let e = b.enum_values.as_ref()?;
    e.iter().map(|a| a.as_str().map(str::to_owned)).collect()
}

fn atomic_rust(a: AtomicType) -> &'static str {
    match a {
        AtomicType::Integer => "i64",
        AtomicType::Real => "f64",
        AtomicType::Boolean => "bool",
        AtomicType::String => "String",
        AtomicType::Uuid => "Uuid",
    }
}

/// How one column is represented.
struct Field {
    column: String,
    field: String,
    ty: String,
    doc: String,
}

fn describe_base(b: &BaseType) -> String {
    let mut s = b.atomic.name().to_string();
    if let Some(t) = &b.ref_table {
        let weak = if b.ref_type == RefType::Weak {
            " (weak)"
        } else {
            ""
        };
        let _ = write!(s, " → {t}{weak}");
    }
    if let Some(e) = &b.enum_values {
        let vals: Vec<String> = e.iter().map(|a| a.to_string()).collect();
        let _ = write!(s, " in {{{}}}", vals.join(", "));
    }
    match (b.min_integer, b.max_integer) {
        (None, None) => {}
        (lo, hi) => {
            let lo = lo.map_or(String::new(), |v| v.to_string());
            let hi = hi.map_or(String::new(), |v| v.to_string());
            let _ = write!(s, " [{lo}..={hi}]");
        }
    }
    s
}

fn describe(ty: &ColumnType) -> String {
    let max = match ty.max {
        Max::Unlimited => "∞".to_string(),
        Max::Limited(m) => m.to_string(),
    };
    match &ty.value {
        Some(v) => format!(
            "map {} → {} ({}..{max})",
            describe_base(&ty.key),
            describe_base(v),
            ty.min
        ),
        None if ty.is_scalar() => describe_base(&ty.key),
        None if ty.is_optional() => format!("optional {}", describe_base(&ty.key)),
        None => format!("set of {} ({}..{max})", describe_base(&ty.key), ty.min),
    }
}

fn column_field(
    table: &str,
    col: &ColumnSchema,
    struct_names: &BTreeSet<String>,
    enums: &mut Vec<EnumDef>,
) -> Field {
    let ty = &col.ty;
    let mut enum_type = || -> Option<String> {
        let values = string_enum_values(&ty.key)?;
        let mut name = format!("{}{}", camel_case(table), camel_case(&col.name));
        // Table `A_B` + column `c` and table `A` + column `b_c` both give `ABC`; so can a table.
        while struct_names.contains(&name) || enums.iter().any(|e| e.name == name) {
            name.push_str("Enum");
        }
        enums.push(EnumDef {
            name: name.clone(),
            table: table.to_owned(),
            column: col.name.clone(),
            variants: enum_variants(&values),
        });
        Some(name)
    };
    let rust = match &ty.value {
        Some(v) => {
            let k = atomic_rust(ty.key.atomic);
            if k == "f64" {
                // f64 has no total order, so it cannot key a BTreeMap; keep the raw value.
                "Value".to_string()
            } else {
                format!("BTreeMap<{k}, {}>", atomic_rust(v.atomic))
            }
        }
        None => {
            let base = enum_type().unwrap_or_else(|| atomic_rust(ty.key.atomic).to_string());
            if ty.is_scalar() {
                base
            } else if ty.is_optional() {
                format!("Option<{base}>")
            } else if base == "f64" {
                "Vec<f64>".to_string()
            } else {
                format!("BTreeSet<{base}>")
            }
        }
    };
    let mut doc = format!("`{}`: {}", col.name, describe(ty));
    if col.ephemeral {
        doc.push_str(", ephemeral");
    }
    if !col.mutable {
        doc.push_str(", immutable");
    }
    Field {
        column: col.name.clone(),
        field: field_name(&col.name),
        ty: rust,
        doc,
    }
}

fn rust_str(s: &str) -> String {
    format!("{s:?}")
}

/// Writes the Rust module for one database schema. `source` names the schema file in the
/// header so readers know how to regenerate.
pub fn generate(schema: &DatabaseSchema, source: &str) -> String {
    let mut out = String::new();
    let cksum = schema.cksum.as_deref().unwrap_or("none");
    let _ = writeln!(
        out,
        "// @generated by ovsdb-codegen from {source} ({} {}, cksum {cksum}).\n\
         // Do not edit: regenerate with `cargo run -p ovsdb-codegen -- {source} <this file>`.",
        schema.name, schema.version
    );
    let _ = writeln!(
        out,
        "\n//! Typed rows of the `{}` database, schema version {}.\n",
        schema.name, schema.version
    );
    out.push_str(
        "#![allow(clippy::all, unused_imports)]\n\n\
         use std::collections::{BTreeMap, BTreeSet};\n\
         use std::fmt;\n\n\
         use ovsdb::model::extra_columns;\n\
         use ovsdb::{\n    get_column, Atom, DatabaseSchema, FromAtom, FromValue, Model, ModelError, Row,\n    \
         SchemaMismatch, ToAtom, ToValue, Uuid, Value, ValueError,\n};\n\n",
    );
    let _ = writeln!(
        out,
        "/// The database name.\npub const DATABASE: &str = {};",
        rust_str(&schema.name)
    );
    let _ = writeln!(
        out,
        "/// The schema version the models were generated from.\npub const SCHEMA_VERSION: &str = {};\n",
        rust_str(&schema.version)
    );

    let mut enums = Vec::new();
    let mut structs = Vec::new();
    // `Foo_Bar` and `FooBar` would both be `FooBar`: later ones get a `Table` suffix.
    let mut struct_names = BTreeSet::new();
    let names: Vec<String> = schema
        .tables
        .keys()
        .map(|t| {
            let mut n = camel_case(t);
            while !struct_names.insert(n.clone()) {
                n.push_str("Table");
            }
            n
        })
        .collect();
    for ((tname, table), sname) in schema.tables.iter().zip(names) {
        let fields: Vec<Field> = table
            .columns
            .values()
            .map(|c| column_field(tname, c, &struct_names, &mut enums))
            .collect();
        structs.push((tname.clone(), sname, table, fields));
    }

    out.push_str("/// Every table with the columns its model reads and writes, for [`ovsdb::check_models`].\n");
    out.push_str("pub const TABLES: &[(&str, &[&str])] = &[\n");
    for (_, sname, _, _) in &structs {
        let _ = writeln!(out, "    ({sname}::TABLE, {sname}::COLUMNS),");
    }
    out.push_str("];\n\n");
    out.push_str(
        "/// Checks that `schema` (the live server's) has every table and column of these models.\n\
         pub fn check_schema(schema: &DatabaseSchema) -> Result<(), SchemaMismatch> {\n    \
         ovsdb::check_models(schema, TABLES)\n}\n",
    );

    out.push_str(
        "\n/// Reads `row` of `table` through its model and writes it back (`None` for a table these\n\
         /// models lack): exactly what a model keeps of a row, for tests and debugging.\n\
         pub fn reencode_row(table: &str, uuid: Uuid, row: &Row) -> Option<Result<Row, ModelError>> {\n    \
         Some(match table {\n",
    );
    for (tname, sname, _, _) in &structs {
        let _ = writeln!(
            out,
            "        {} => {sname}::from_row(uuid, row).map(|m| m.to_row()),",
            rust_str(tname)
        );
    }
    out.push_str("        _ => return None,\n    })\n}\n");

    for (tname, sname, table, fields) in &structs {
        out.push('\n');
        let mut notes = Vec::new();
        if table.is_root {
            notes.push("root table".to_string());
        }
        if let Some(m) = table.max_rows {
            notes.push(format!("at most {m} rows"));
        }
        for ix in &table.indexes {
            notes.push(format!("unique ({})", ix.join(", ")));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let _ = writeln!(out, "/// A row of `{tname}`{notes}.");
        out.push_str("#[derive(Debug, Clone, PartialEq, Default)]\n");
        let _ = writeln!(out, "pub struct {sname} {{");
        out.push_str("    /// The row's `_uuid`.\n    pub uuid: Uuid,\n");
        for f in fields {
            let _ = writeln!(out, "    /// {}\n    pub {}: {},", f.doc, f.field, f.ty);
        }
        out.push_str(
            "    /// Columns unknown to this schema version (a newer server's), kept so that\n    \
             /// writing the row back does not drop them.\n    pub extra: Row,\n}\n\n",
        );

        let _ = writeln!(out, "impl Model for {sname} {{");
        let _ = writeln!(out, "    const TABLE: &'static str = {};", rust_str(tname));
        out.push_str("    const COLUMNS: &'static [&'static str] = &[\n");
        for f in fields {
            let _ = writeln!(out, "        {},", rust_str(&f.column));
        }
        out.push_str("    ];\n\n");
        out.push_str("    fn uuid(&self) -> Uuid {\n        self.uuid\n    }\n\n");
        out.push_str("    fn from_row(uuid: Uuid, row: &Row) -> Result<Self, ModelError> {\n");
        out.push_str("        Ok(Self {\n            uuid,\n");
        for f in fields {
            let _ = writeln!(
                out,
                "            {}: get_column(Self::TABLE, uuid, row, {})?,",
                f.field,
                rust_str(&f.column)
            );
        }
        out.push_str(
            "            extra: extra_columns(row, Self::COLUMNS),\n        })\n    }\n\n",
        );
        out.push_str("    fn to_row(&self) -> Row {\n        let mut row = self.extra.clone();\n");
        for f in fields {
            let _ = writeln!(
                out,
                "        row.insert({}.to_owned(), self.{}.to_value());",
                rust_str(&f.column),
                f.field
            );
        }
        out.push_str("        row\n    }\n}\n\n");

        let _ = writeln!(out, "impl {sname} {{");
        for f in fields {
            // Column names for conditions and mutations, so a typo is a compile error.
            let _ = writeln!(
                out,
                "    /// Column `{}`.\n    pub const {}: &'static str = {};",
                f.column,
                const_name(&f.column),
                rust_str(&f.column)
            );
        }
        out.push_str(
            "\n    /// The columns that differ from their default, plus `extra`: what an insert needs\n    \
             /// to send (the server fills in the defaults).\n    \
             pub fn to_insert_row(&self) -> Row {\n        let mut row = self.extra.clone();\n",
        );
        for (f, col) in fields.iter().zip(table.columns.values()) {
            // A set of at least one element has no empty default: always send it.
            if col.ty.min >= 1 && !col.ty.is_scalar() {
                let _ = writeln!(
                    out,
                    "        row.insert({}.to_owned(), self.{}.to_value());",
                    rust_str(&f.column),
                    f.field
                );
            } else {
                let _ = writeln!(
                    out,
                    "        if !is_default(&self.{}) {{\n            row.insert({}.to_owned(), self.{}.to_value());\n        }}",
                    f.field,
                    rust_str(&f.column),
                    f.field
                );
            }
        }
        out.push_str("        row\n    }\n}\n");
    }

    out.push_str(
        "\nfn is_default<T: Default + PartialEq>(v: &T) -> bool {\n    *v == T::default()\n}\n",
    );
    for e in &enums {
        out.push('\n');
        write_enum(&mut out, e);
    }
    out
}

fn write_enum(out: &mut String, e: &EnumDef) {
    let n = &e.name;
    let _ = writeln!(
        out,
        "/// Values of `{}.{}`; `Other` keeps a value this schema version does not list\n\
         /// (a newer server's), and the empty string of a missing column.",
        e.table, e.column
    );
    out.push_str("#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]\n");
    let _ = writeln!(out, "pub enum {n} {{");
    for (v, wire) in &e.variants {
        let _ = writeln!(out, "    /// `{wire}`\n    {v},");
    }
    out.push_str("    /// Any other value, as sent.\n    Other(String),\n}\n\n");

    let _ = writeln!(out, "impl {n} {{");
    let all: Vec<String> = e
        .variants
        .iter()
        .map(|(v, _)| format!("Self::{v}"))
        .collect();
    let _ = writeln!(
        out,
        "    /// The values this schema version knows.\n    pub const ALL: &'static [{n}] = &[{}];\n",
        all.join(", ")
    );
    out.push_str("    /// The value as written in the database.\n    pub fn as_str(&self) -> &str {\n        match self {\n");
    for (v, wire) in &e.variants {
        let _ = writeln!(out, "            Self::{v} => {},", rust_str(wire));
    }
    out.push_str("            Self::Other(s) => s,\n        }\n    }\n}\n\n");

    let _ = writeln!(
        out,
        "impl From<&str> for {n} {{\n    fn from(s: &str) -> Self {{\n        match s {{"
    );
    for (v, wire) in &e.variants {
        let _ = writeln!(out, "            {} => Self::{v},", rust_str(wire));
    }
    out.push_str("            other => Self::Other(other.to_owned()),\n        }\n    }\n}\n\n");

    let _ = writeln!(
        out,
        "impl Default for {n} {{\n    fn default() -> Self {{\n        Self::Other(String::new())\n    }}\n}}\n"
    );
    let _ = writeln!(
        out,
        "impl fmt::Display for {n} {{\n    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {{\n        \
         f.write_str(self.as_str())\n    }}\n}}\n"
    );
    let _ = writeln!(
        out,
        "impl FromAtom for {n} {{\n    fn from_atom(a: &Atom) -> Result<Self, ValueError> {{\n        \
         String::from_atom(a).map(|s| Self::from(s.as_str()))\n    }}\n}}\n"
    );
    let _ = writeln!(
        out,
        "impl ToAtom for {n} {{\n    fn to_atom(&self) -> Atom {{\n        Atom::String(self.as_str().to_owned())\n    }}\n}}\n"
    );
    let _ = writeln!(
        out,
        "impl FromValue for {n} {{\n    fn from_value(v: &Value) -> Result<Self, ValueError> {{\n        \
         String::from_value(v).map(|s| Self::from(s.as_str()))\n    }}\n}}\n"
    );
    let _ = writeln!(
        out,
        "impl ToValue for {n} {{\n    fn to_value(&self) -> Value {{\n        Value::Atom(self.to_atom())\n    }}\n}}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(camel_case("Logical_Switch_Port"), "LogicalSwitchPort");
        assert_eq!(camel_case("ACL"), "Acl");
        assert_eq!(camel_case("QoS"), "QoS");
        assert_eq!(camel_case("allow-related"), "AllowRelated");
        assert_eq!(camel_case("dnat_and_snat"), "DnatAndSnat");
        assert_eq!(camel_case("802.1q"), "V8021q");
        assert_eq!(field_name("type"), "type_");
        assert_eq!(field_name("match"), "match_");
        assert_eq!(field_name("uuid"), "uuid_");
        assert_eq!(field_name("external_ids"), "external_ids");
    }

    #[test]
    fn colliding_table_names_get_distinct_structs() {
        let schema = DatabaseSchema::from_json_str(
            r#"{"name":"T","version":"1","tables":{
                "Foo_Bar":{"columns":{"a":{"type":"string"}}},
                "FooBar":{"columns":{"b":{"type":"string"}}}}}"#,
        )
        .expect("schema");
        let code = generate(&schema, "t");
        assert!(code.contains("pub struct FooBar {"), "{code}");
        assert!(code.contains("pub struct FooBarTable {"), "{code}");
    }

    #[test]
    fn enum_variants_are_distinct() {
        let v = enum_variants(&["ovn-ic".into(), "ovn_ic".into(), "other".into()]);
        let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["OvnIc", "OvnIc2", "OtherValue"]);
    }

    #[test]
    fn column_types_map_to_rust_types() {
        let schema = DatabaseSchema::from_json_str(
            r#"{"name":"T","version":"1.0.0","tables":{"A":{"columns":{
                "s":{"type":"string"},
                "o":{"type":{"key":"integer","min":0,"max":1}},
                "set":{"type":{"key":{"type":"uuid","refTable":"A"},"min":0,"max":"unlimited"}},
                "reals":{"type":{"key":"real","min":0,"max":4}},
                "m":{"type":{"key":"string","value":"integer","min":0,"max":"unlimited"}},
                "e":{"type":{"key":{"type":"string","enum":["set",["a-b","c"]]}}},
                "type":{"type":"boolean"}}}}}"#,
        )
        .expect("schema");
        let code = generate(&schema, "t.ovsschema");
        for want in [
            "pub s: String,",
            "pub o: Option<i64>,",
            "pub set: BTreeSet<Uuid>,",
            "pub reals: Vec<f64>,",
            "pub m: BTreeMap<String, i64>,",
            "pub e: AE,",
            "pub type_: bool,",
            "pub enum AE {",
            "pub const COL_TYPE: &'static str = \"type\";",
            "\"a-b\" => Self::AB,",
            "row.insert(\"type\".to_owned(), self.type_.to_value());",
        ] {
            assert!(code.contains(want), "missing {want:?} in:\n{code}");
        }
    }
}
