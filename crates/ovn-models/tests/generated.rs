//! The checked-in models are what the generator writes, and they keep every bit of a row.

use std::collections::BTreeMap;

use ovn_models::{nb, sb, schemas, vswitch};
use ovsdb::{Atom, AtomicType, BaseType, ColumnType, DatabaseSchema, Max, Model, Row, Uuid, Value};

type Check = fn(&DatabaseSchema) -> Result<(), ovsdb::SchemaMismatch>;
type Reencode = fn(&str, Uuid, &Row) -> Option<Result<Row, ovsdb::ModelError>>;

fn databases() -> [(&'static str, &'static str, &'static str, Reencode); 3] {
    [
        (
            "ovn-nb",
            schemas::NB,
            include_str!("../src/nb.rs"),
            nb::reencode_row,
        ),
        (
            "ovn-sb",
            schemas::SB,
            include_str!("../src/sb.rs"),
            sb::reencode_row,
        ),
        (
            "vswitch",
            schemas::VSWITCH,
            include_str!("../src/vswitch.rs"),
            vswitch::reencode_row,
        ),
    ]
}

fn parse(text: &str) -> DatabaseSchema {
    DatabaseSchema::from_json_str(text).expect("checked-in schema parses")
}

#[test]
fn generated_code_is_current() {
    for (file, schema, code, _) in databases() {
        let label = format!("crates/ovn-models/schemas/{file}.ovsschema");
        let fresh = ovsdb_codegen::generate(&parse(schema), &label);
        assert!(
            fresh == code,
            "the checked-in models for {file} differ from the generator's output; run\n  \
             cargo run -p ovsdb-codegen -- {label} crates/ovn-models/src/<module>.rs"
        );
    }
}

/// A valid, non-default atom of type `b` (the `i`th of a few distinct ones).
fn sample_atom(b: &BaseType, i: usize) -> Atom {
    if let Some(e) = &b.enum_values {
        return e[i % e.len()].clone();
    }
    match b.atomic {
        AtomicType::Integer => {
            let lo = b.min_integer.unwrap_or(0);
            let hi = b.max_integer.unwrap_or(i64::MAX);
            Atom::Integer(lo.saturating_add(1 + i as i64).min(hi))
        }
        AtomicType::Real => Atom::Real(1.5 + i as f64),
        AtomicType::Boolean => Atom::Boolean(i.is_multiple_of(2)),
        AtomicType::String => Atom::String(format!("v{i}")),
        AtomicType::Uuid => Atom::Uuid(Uuid::from_u128(0x1000 + i as u128)),
    }
}

fn sample_value(ty: &ColumnType) -> Value {
    if ty.is_scalar() {
        return Value::Atom(sample_atom(&ty.key, 0));
    }
    let n = match ty.max {
        Max::Unlimited => 2,
        Max::Limited(m) => m.min(2) as usize,
    };
    match &ty.value {
        Some(v) => Value::map((0..n).map(|i| (sample_atom(&ty.key, i), sample_atom(v, i)))),
        None => Value::set((0..n).map(|i| sample_atom(&ty.key, i))),
    }
}

#[test]
fn full_rows_round_trip_with_unknown_columns() {
    let mut tables = 0;
    for (file, schema, _, reencode) in databases() {
        let schema = parse(schema);
        for (name, table) in &schema.tables {
            let mut row: Row = table
                .columns
                .iter()
                .map(|(c, cs)| (c.clone(), sample_value(&cs.ty)))
                .collect();
            row.insert("zz_from_the_future".into(), Value::string_map([("k", "v")]));
            row.insert("zz_count".into(), Value::Atom(Atom::Integer(7)));
            let uuid = Uuid::from_u128(42);
            let back = reencode(name, uuid, &row)
                .unwrap_or_else(|| panic!("{file}: no model for {name}"))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(back, row, "{file}: {name} does not round-trip");
            tables += 1;
        }
    }
    assert!(tables > 70, "only {tables} tables checked");
}

#[test]
fn sparse_rows_read_missing_columns_as_defaults() {
    for (file, schema, _, reencode) in databases() {
        let schema = parse(schema);
        for (name, table) in &schema.tables {
            let back = reencode(name, Uuid::nil(), &Row::new())
                .expect("model")
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            for (c, cs) in &table.columns {
                // A set of at least one element has no empty default to omit.
                if cs.ty.min == 1 && !cs.ty.is_scalar() {
                    continue;
                }
                assert_eq!(
                    back.get(c),
                    Some(&cs.ty.default_value()),
                    "{file}: {name}.{c}"
                );
            }
            assert_eq!(
                back.len(),
                table.columns.len(),
                "{file}: {name} writes every column"
            );
        }
    }
}

#[test]
fn typed_fields_and_enums() {
    let uuid = Uuid::from_u128(9);
    let mut row = Row::new();
    row.insert("action".into(), Value::from("allow-related"));
    row.insert("severity".into(), Value::set(["info"]));
    row.insert("priority".into(), Value::from(1001i64));
    row.insert("match".into(), Value::from("ip4.src == 10.0.0.1"));
    row.insert(
        "external_ids".into(),
        Value::string_map([("k8s.ovn.org/owner", "ns/pol")]),
    );
    let acl = nb::Acl::from_row(uuid, &row).expect("acl");
    assert_eq!(acl.uuid(), uuid);
    assert_eq!(acl.action, nb::AclAction::AllowRelated);
    assert_eq!(acl.severity, Some(nb::AclSeverity::Info));
    assert_eq!(acl.priority, 1001);
    assert_eq!(acl.match_, "ip4.src == 10.0.0.1");
    assert_eq!(
        acl.external_ids
            .get("k8s.ovn.org/owner")
            .map(String::as_str),
        Some("ns/pol")
    );
    assert!(acl.extra.is_empty());

    // A value a newer server knows ("pass" arrived in a later OVN) is kept, not rejected.
    row.insert("action".into(), Value::from("pass"));
    let acl = nb::Acl::from_row(uuid, &row).expect("acl");
    assert_eq!(acl.action, nb::AclAction::Other("pass".into()));
    assert_eq!(acl.to_row().get("action"), Some(&Value::from("pass")));
    assert_eq!(nb::AclAction::from("drop"), nb::AclAction::Drop);
    assert_eq!(nb::AclAction::Drop.to_string(), "drop");
    assert!(nb::AclAction::ALL.contains(&nb::AclAction::AllowStateless));

    let lsp = nb::LogicalSwitchPort {
        name: "ns_pod".into(),
        addresses: ["0a:58:0a:f4:00:05 10.244.0.5".to_string()].into(),
        options: BTreeMap::from([("requested-chassis".to_string(), "node1".to_string())]),
        tag_request: Some(5),
        ..Default::default()
    };
    let back = nb::LogicalSwitchPort::from_row(lsp.uuid, &lsp.to_row()).expect("lsp");
    assert_eq!(back, lsp);
}

#[test]
fn malformed_rows_are_errors_naming_table_column_and_row() {
    let uuid = Uuid::from_u128(0xabc);
    let mut row = Row::new();
    row.insert("name".into(), Value::from(5i64));
    let err = nb::LogicalSwitch::from_row(uuid, &row).expect_err("integer name");
    let msg = err.to_string();
    for want in [
        "Logical_Switch",
        "name",
        &uuid.to_string(),
        "expected string",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    let mut row = Row::new();
    row.insert("tag_request".into(), Value::set([1i64, 2]));
    let msg = nb::LogicalSwitchPort::from_row(uuid, &row)
        .expect_err("two tags")
        .to_string();
    assert!(msg.contains("tag_request"), "{msg}");
}

#[test]
fn installed_schemas_satisfy_the_models() {
    // The machine's own OVN/OVS (when installed) must accept what we generated.
    let pairs: [(&str, Check); 3] = [
        (testkit::OVN_NB_SCHEMA, nb::check_schema),
        (testkit::OVN_SB_SCHEMA, sb::check_schema),
        (testkit::VSWITCH_SCHEMA, vswitch::check_schema),
    ];
    if !testkit::require_env(&pairs.map(|(p, _)| p)) {
        return;
    }
    for (path, check) in pairs {
        let s = DatabaseSchema::from_file(path).expect("installed schema parses");
        check(&s).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn insert_rows_carry_only_non_default_columns() {
    let lsp = nb::LogicalSwitchPort {
        name: "ns_pod".into(),
        addresses: ["0a:58:0a:f4:00:05 10.244.0.5".to_string()].into(),
        enabled: Some(false),
        ..Default::default()
    };
    let row = lsp.to_insert_row();
    let cols: Vec<&str> = row.keys().map(String::as_str).collect();
    // `enabled = false` is not the default (the empty set), so it is sent.
    assert_eq!(cols, ["addresses", "enabled", "name"]);
    assert_eq!(
        nb::LogicalSwitchPort::from_row(lsp.uuid, &row).expect("lsp"),
        lsp
    );

    // `networks` must hold at least one element, so it is always sent.
    let lrp = nb::LogicalRouterPort::default();
    let cols: Vec<String> = lrp.to_insert_row().into_keys().collect();
    assert_eq!(cols, ["networks"]);

    let mut acl = nb::Acl::default();
    acl.extra.insert("tier".into(), Value::from(1i64));
    assert_eq!(acl.to_insert_row().len(), 1, "extra columns are sent too");
}
