//! The models against real ovsdb-servers of three NB schema versions: the one they were
//! generated from (OVN 23.03), a newer one (7.18.0) and an older one (5.35.1).

mod common;

use std::path::PathBuf;

use common::{live_schema, select_all, transact, uuid_json};
use ovn_models::nb;
use ovsdb::{Atom, Model, Value};
use serde_json::json;
use testkit::OvsdbServer;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn have_ovsdb() -> bool {
    testkit::require_env(&["ovsdb-server", "ovsdb-tool"])
}

const NB: &str = "OVN_Northbound";

#[test]
fn rows_written_by_the_server_round_trip_through_the_models() {
    if !have_ovsdb() {
        return;
    }
    let server = OvsdbServer::start(path("schemas/ovn-nb.ovsschema")).expect("server");
    let sock = server.socket_path();
    transact(
        sock,
        NB,
        json!([
            {"op": "insert", "table": "Logical_Switch_Port", "uuid-name": "p", "row": {
                "name": "ns_pod", "addresses": ["set", ["0a:58:0a:f4:00:05 10.244.0.5"]],
                "port_security": "0a:58:0a:f4:00:05 10.244.0.5",
                "options": ["map", [["requested-chassis", "node1"], ["iface-id-ver", "u1"]]],
                "external_ids": ["map", [["namespace", "ns"], ["pod", "true"]]],
                "tag_request": 5, "enabled": true}},
            {"op": "insert", "table": "Logical_Switch", "row": {
                "name": "node1", "ports": ["set", [["named-uuid", "p"]]],
                "other_config": ["map", [["subnet", "10.244.0.0/24"]]]}},
            {"op": "insert", "table": "ACL", "uuid-name": "a", "row": {
                "priority": 1001, "direction": "to-lport", "match": "ip4.src == $a",
                "action": "allow-related", "severity": "info", "log": true, "name": "acl1"}},
            {"op": "insert", "table": "Port_Group", "row": {
                "name": "pg", "acls": ["named-uuid", "a"], "ports": ["named-uuid", "p"]}},
            {"op": "insert", "table": "Load_Balancer", "row": {
                "name": "Service_ns/web_TCP_cluster",
                "vips": ["map", [["10.96.0.10:80", "10.244.0.5:8080,10.244.1.5:8080"]]],
                "protocol": "tcp", "selection_fields": ["set", ["ip_dst", "ip_src"]]}},
            {"op": "insert", "table": "NB_Global", "row": {"name": "", "options": ["map", [["e2e", "1"]]]}}
        ]),
    );
    let schema = live_schema(sock, NB);
    nb::check_schema(&schema).expect("the schema the models came from");
    let mut rows = 0;
    for (table, _) in nb::TABLES {
        for (uuid, row) in select_all(sock, &schema, table) {
            let back = nb::reencode_row(table, uuid, &row)
                .expect("model")
                .expect("row parses");
            assert_eq!(back, row, "{table} {uuid}");
            rows += 1;
        }
    }
    assert_eq!(rows, 6);

    let (uuid, row) = select_all(sock, &schema, "Logical_Switch_Port").remove(0);
    let lsp = nb::LogicalSwitchPort::from_row(uuid, &row).expect("lsp");
    assert_eq!(lsp.name, "ns_pod");
    assert_eq!(lsp.tag_request, Some(5));
    assert_eq!(lsp.enabled, Some(true));
    assert_eq!(
        lsp.options.get("requested-chassis").map(String::as_str),
        Some("node1")
    );
    assert!(lsp.port_security.contains("0a:58:0a:f4:00:05 10.244.0.5"));
    let (_, row) = select_all(sock, &schema, "ACL").remove(0);
    let acl = nb::Acl::from_row(uuid, &row).expect("acl");
    assert_eq!(
        (acl.action, acl.severity),
        (nb::AclAction::AllowRelated, Some(nb::AclSeverity::Info))
    );
    let (_, row) = select_all(sock, &schema, "Logical_Switch").remove(0);
    let ls = nb::LogicalSwitch::from_row(uuid, &row).expect("ls");
    assert_eq!(ls.ports.into_iter().collect::<Vec<_>>(), [lsp.uuid]);
}

#[test]
fn a_newer_server_is_accepted_and_its_columns_and_values_survive_a_write_back() {
    if !have_ovsdb() {
        return;
    }
    let server =
        OvsdbServer::start(path("tests/fixtures/ovn-nb-7.18.0.ovsschema")).expect("server");
    let sock = server.socket_path();
    let schema = live_schema(sock, NB);
    assert_eq!(schema.version, "7.18.0");
    nb::check_schema(&schema).expect("a newer schema has every column the models need");

    // "pass" is an ACL action and "tier" a column that OVN 23.03 does not know.
    let r = transact(
        sock,
        NB,
        // ACL is not a root table: a Port_Group must hold it or the server drops it.
        json!([{"op": "insert", "table": "ACL", "uuid-name": "a", "row": {
            "priority": 10, "direction": "from-lport", "match": "1", "action": "pass",
            "tier": 2, "external_ids": ["map", [["owner", "x"]]]}},
            {"op": "insert", "table": "Port_Group", "row": {"name": "pg", "acls": ["named-uuid", "a"]}}]),
    );
    let uuid_s = r[0]["uuid"][1].as_str().expect("uuid").to_string();
    let (uuid, row) = select_all(sock, &schema, "ACL").remove(0);
    assert_eq!(uuid.to_string(), uuid_s);
    let mut acl = nb::Acl::from_row(uuid, &row).expect("acl from a newer server");
    assert_eq!(acl.action, nb::AclAction::Other("pass".into()));
    assert_eq!(acl.extra.get("tier"), Some(&Value::Atom(Atom::Integer(2))));
    assert_eq!(acl.to_row(), row);

    // Write the whole row back with one change: nothing the old model does not know is lost.
    acl.external_ids.insert("owner".into(), "y".into());
    let mut new_row = serde_json::to_value(acl.to_row()).expect("row json");
    new_row.as_object_mut().expect("object").remove("_uuid");
    transact(
        sock,
        NB,
        json!([{"op": "update", "table": "ACL", "where": [["_uuid", "==", uuid_json(uuid)]], "row": new_row}]),
    );
    let (_, after) = select_all(sock, &schema, "ACL").remove(0);
    assert_eq!(after.get("tier"), Some(&Value::Atom(Atom::Integer(2))));
    assert_eq!(after.get("action"), Some(&Value::from("pass")));
    assert_eq!(after, acl.to_row());
}

#[test]
fn an_older_server_lacking_columns_is_a_clear_start_up_error() {
    if !have_ovsdb() {
        return;
    }
    let server =
        OvsdbServer::start(path("tests/fixtures/ovn-nb-5.35.1.ovsschema")).expect("server");
    let schema = live_schema(server.socket_path(), NB);
    assert_eq!(schema.version, "5.35.1");
    let err = nb::check_schema(&schema).expect_err("5.35.1 lacks columns of 7.0.0");

    // The error names exactly what is missing: compare with the two schema files.
    let ours = ovsdb::DatabaseSchema::from_json_str(ovn_models::schemas::NB).expect("ours");
    let mut tables = Vec::new();
    let mut columns = Vec::new();
    for (t, ts) in &ours.tables {
        match schema.table(t) {
            None => tables.push(t.clone()),
            Some(old) => columns.extend(
                ts.columns
                    .keys()
                    .filter(|c| old.column(c).is_none())
                    .map(|c| (t.clone(), c.clone())),
            ),
        }
    }
    assert_eq!(err.missing_tables, tables);
    assert_eq!(err.missing_columns, columns);
    let msg = err.to_string();
    for want in [
        "OVN_Northbound",
        "Static_MAC_Binding",
        "Copp.name",
        "Logical_Switch_Port.mirror_rules",
    ] {
        assert!(msg.contains(want), "{msg:?} does not name {want}");
    }
}

/// What ovnk does at start-up: connect with the models it uses; a mismatch is fatal.
async fn connect_with_models(remote: &str) -> Result<ovsdb::Client, ovsdb::Error> {
    let mut cfg = ovsdb::ClientConfig::new(vec![remote.parse().expect("remote")], NB);
    cfg.models = nb::TABLES.to_vec();
    cfg.monitor_tables = Some(vec!["ACL".into(), "Port_Group".into()]);
    cfg.connect_timeout = std::time::Duration::from_secs(20);
    ovsdb::Client::connect(cfg).await
}

#[tokio::test]
async fn the_client_refuses_an_older_server_at_connect_naming_what_is_missing() {
    if !have_ovsdb() {
        return;
    }
    let server =
        OvsdbServer::start(path("tests/fixtures/ovn-nb-5.35.1.ovsschema")).expect("server");
    let err = match connect_with_models(&server.remote()).await {
        Ok(_) => panic!("connected to a server lacking columns the models use"),
        Err(e) => e,
    };
    assert!(matches!(err, ovsdb::Error::SchemaMismatch(_)), "{err:?}");
    let msg = err.to_string();
    for want in [
        "Static_MAC_Binding",
        "Copp.name",
        "Logical_Switch_Port.mirror_rules",
    ] {
        assert!(msg.contains(want), "{msg:?} does not name {want}");
    }
}

#[tokio::test]
async fn the_client_accepts_a_newer_server_and_its_cache_yields_typed_rows() {
    if !have_ovsdb() {
        return;
    }
    let server =
        OvsdbServer::start(path("tests/fixtures/ovn-nb-7.18.0.ovsschema")).expect("server");
    let client = connect_with_models(&server.remote())
        .await
        .expect("a newer server is accepted");
    let mut txn = ovsdb::Transaction::new(NB);
    let acl = nb::Acl {
        priority: 10,
        direction: nb::AclDirection::FromLport,
        match_: "1".into(),
        action: nb::AclAction::Other("pass".into()),
        extra: [("tier".to_string(), Value::from(3i64))].into(),
        ..Default::default()
    };
    txn.insert_named("ACL", "a", acl.to_insert_row());
    let pg = nb::PortGroup {
        name: "pg".into(),
        ..Default::default()
    };
    let mut row = pg.to_insert_row();
    row.insert("acls".into(), Value::set([Atom::NamedUuid("a".into())]));
    txn.insert("Port_Group", row);
    client
        .transact(&txn)
        .await
        .expect("insert through the client");

    // The monitor delivers the row; the typed view keeps the newer server's value and column.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let acls = loop {
        let acls: Vec<nb::Acl> = client.cache().rows().expect("typed rows");
        if !acls.is_empty() || std::time::Instant::now() > deadline {
            break acls;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(acls.len(), 1);
    assert_eq!(acls[0].action, nb::AclAction::Other("pass".into()));
    assert_eq!(
        acls[0].extra.get("tier"),
        Some(&Value::Atom(Atom::Integer(3)))
    );
    assert_eq!(acls[0].priority, 10);
}
