//! Pure tests of values, schemas and models (no server needed).

use std::collections::{BTreeMap, BTreeSet};

use ovsdb::{check_models, Atom, DatabaseSchema, FromValue, SchemaError, ToValue, Uuid, Value};

fn v(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn atoms_decode_exactly() {
    assert_eq!(v("1"), Value::Atom(Atom::Integer(1)));
    assert_eq!(v("1.0"), Value::Atom(Atom::Real(1.0)));
    assert_eq!(
        v("-9223372036854775808"),
        Value::Atom(Atom::Integer(i64::MIN))
    );
    assert!(serde_json::from_str::<Value>("9223372036854775808").is_err());
    assert_eq!(v("true"), Value::Atom(Atom::Boolean(true)));
    assert_eq!(v(r#""x""#), Value::Atom(Atom::String("x".into())));
    let u = Uuid::parse_str("36a3e2a4-6f1d-4c3d-9b59-0a5f8f0f3a11").unwrap();
    assert_eq!(
        v(r#"["uuid","36a3e2a4-6f1d-4c3d-9b59-0a5f8f0f3a11"]"#),
        Value::Atom(Atom::Uuid(u))
    );
    assert_eq!(
        v(r#"["named-uuid","row1"]"#),
        Value::Atom(Atom::NamedUuid("row1".into()))
    );
    for bad in [
        r#"["uuid","nope"]"#,
        r#"["set"]"#,
        r#"["map",[["a"]]]"#,
        r#"["set",[["set",[]]]]"#,
        r#"["bogus",1]"#,
        r#"["uuid","36a3e2a4-6f1d-4c3d-9b59-0a5f8f0f3a11",1]"#,
        r#"{}"#,
        r#"null"#,
        r#"[]"#,
    ] {
        assert!(
            serde_json::from_str::<Value>(bad).is_err(),
            "{bad} must not decode"
        );
    }
}

#[test]
fn sets_and_maps_roundtrip_canonically() {
    let s = v(r#"["set",[3,1,2,1]]"#);
    assert_eq!(s, Value::set([1i64, 2, 3]));
    assert_eq!(serde_json::to_string(&s).unwrap(), r#"["set",[1,2,3]]"#);
    let m = v(r#"["map",[["b","2"],["a","1"]]]"#);
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"["map",[["a","1"],["b","2"]]]"#
    );
    assert_eq!(m.map_get("b").and_then(Atom::as_str), Some("2"));
    assert_eq!(m.map_get("c"), None);
    let u = Value::from(Uuid::nil());
    assert_eq!(
        serde_json::to_string(&u).unwrap(),
        r#"["uuid","00000000-0000-0000-0000-000000000000"]"#
    );
}

#[test]
fn update2_diffs() {
    // set: symmetric difference
    let old = Value::set(["a", "b"]);
    assert_eq!(
        old.apply_diff(&Value::set(["b", "c"])),
        Value::set(["a", "c"])
    );
    // map: absent → insert, same value → delete, different value → replace
    let old = Value::string_map([("k1", "v1"), ("k2", "v2"), ("k3", "v3")]);
    let diff = Value::string_map([("k1", "v1"), ("k2", "new"), ("k4", "v4")]);
    assert_eq!(
        old.apply_diff(&diff),
        Value::string_map([("k2", "new"), ("k3", "v3"), ("k4", "v4")])
    );
    // empty map arrives as an empty set
    assert_eq!(Value::empty().apply_diff(&diff), diff);
    // scalar: replaced
    assert_eq!(
        Value::from(1i64).apply_diff(&Value::from(2i64)),
        Value::from(2i64)
    );
}

#[test]
fn typed_conversions() {
    assert_eq!(String::from_value(&v(r#"["set",["x"]]"#)).unwrap(), "x");
    assert_eq!(
        Option::<i64>::from_value(&v(r#"["set",[]]"#)).unwrap(),
        None
    );
    assert!(Option::<i64>::from_value(&v(r#"["set",[1,2]]"#)).is_err());
    assert!(i64::from_value(&v(r#""x""#)).is_err());
    let m: BTreeMap<String, String> = FromValue::from_value(&v(r#"["map",[["a","1"]]]"#)).unwrap();
    assert_eq!(m.get("a").map(String::as_str), Some("1"));
    assert_eq!(m.to_value(), v(r#"["map",[["a","1"]]]"#));
    let s: BTreeSet<String> = FromValue::from_value(&v(r#"["set",["b","a"]]"#)).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(Some(5i64).to_value(), Value::set([5i64]));
}

fn nb() -> Option<DatabaseSchema> {
    let p = "/usr/share/ovn/ovn-nb.ovsschema";
    if !std::path::Path::new(p).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {p} is missing"
        );
        eprintln!("SKIP: {p} missing");
        return None;
    }
    Some(DatabaseSchema::from_file(p).unwrap())
}

#[test]
fn parses_nb_schema_and_checks_values() {
    let Some(s) = nb() else { return };
    assert_eq!(s.name, "OVN_Northbound");
    let lsp = s.table("Logical_Switch_Port").unwrap();
    assert!(!lsp.is_root);
    assert!(s.table("Logical_Switch").unwrap().is_root);
    assert!(
        s.table("Logical_Switch").unwrap().columns["ports"]
            .ty
            .key
            .ref_table
            .as_deref()
            == Some("Logical_Switch_Port")
    );
    let acl = s.table("ACL").unwrap();
    assert!(acl.columns["action"]
        .ty
        .key
        .enum_values
        .as_ref()
        .unwrap()
        .contains(&Atom::from("drop")));
    assert!(acl.columns["priority"].ty.key.max_integer == Some(32767));
    // enum violation names table and column
    let e = s
        .check_value("ACL", "action", &Value::from("explode"))
        .unwrap_err();
    assert!(
        matches!(&e, SchemaError::BadValue { table, column, .. } if table == "ACL" && column == "action"),
        "{e}"
    );
    assert!(e.to_string().contains("ACL.action"), "{e}");
    assert!(s
        .check_value("ACL", "priority", &Value::from(40000i64))
        .is_err());
    assert!(s.check_value("ACL", "priority", &Value::from("x")).is_err());
    assert!(s
        .check_value("ACL", "priority", &Value::from(100i64))
        .is_ok());
    assert!(matches!(
        s.check_value("ACL", "nope", &Value::empty()),
        Err(SchemaError::UnknownColumn { .. })
    ));
    assert!(matches!(
        s.check_value("Nope", "x", &Value::empty()),
        Err(SchemaError::UnknownTable(_))
    ));
    // normalization to the column's canonical shape
    let ty = &lsp.columns["name"].ty;
    assert_eq!(ty.normalize(v(r#"["set",["p"]]"#)), Value::from("p"));
    let ty = &lsp.columns["external_ids"].ty;
    assert_eq!(ty.normalize(Value::empty()), Value::Map(vec![]));
    let ty = &lsp.columns["tag"].ty;
    assert_eq!(ty.normalize(Value::from(5i64)), Value::set([5i64]));
}

#[test]
fn check_models_names_everything_missing() {
    let Some(s) = nb() else { return };
    assert!(check_models(
        &s,
        &[("Logical_Switch", &["name", "ports", "external_ids"])]
    )
    .is_ok());
    let e = check_models(
        &s,
        &[
            ("Logical_Switch", &["name", "frobs"]),
            ("No_Such", &["x"]),
            ("ACL", &["zap"]),
        ],
    )
    .unwrap_err();
    assert_eq!(e.missing_tables, vec!["No_Such".to_string()]);
    assert_eq!(e.missing_columns.len(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("No_Such") && msg.contains("Logical_Switch.frobs") && msg.contains("ACL.zap"),
        "{msg}"
    );
}

#[test]
fn bad_schema_is_an_error_naming_the_place() {
    let e = DatabaseSchema::from_json_str(
        r#"{"name":"X","tables":{"T":{"columns":{"c":{"type":"strng"}}}}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("T.c"), "{e}");
    assert!(DatabaseSchema::from_json_str("{").is_err());
}
