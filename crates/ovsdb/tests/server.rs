//! Transactions, typed errors and monitors against a real ovsdb-server.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ovsdb::{
    Atom, ClientConfig, Condition, ErrorKind, Event, Function, MonitorMethod, Mutation, Operation,
    Row, Transaction, TxnError, Uuid, Value, WaitUntil,
};

fn row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn txn_err(e: ovsdb::Error) -> TxnError {
    match e {
        ovsdb::Error::Txn(t) => t,
        other => panic!("expected a transaction error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_typed_errors() {
    if !have_tools("every_operation_and_typed_errors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let c = nb_client(srv.remote()).await;
    let db = "OVN_Northbound";

    // insert with uuid-name, referenced later in the same transaction; comment
    let mut t = Transaction::new(db);
    t.insert_named(
        "Logical_Switch_Port",
        "p1",
        row(&[
            ("name", "p1".into()),
            ("addresses", Value::set(["0a:58:0a:f4:00:05 10.244.0.5"])),
        ]),
    )
    .insert_named(
        "Logical_Switch",
        "ls",
        row(&[
            ("name", "sw0".into()),
            ("ports", Value::set([Atom::NamedUuid("p1".into())])),
        ]),
    )
    .comment("test: create sw0");
    let r = c.transact(&t).await.unwrap();
    assert_eq!(r.len(), 3);
    let p1 = r[0].uuid.unwrap();
    let ls = r[1].uuid.unwrap();

    // select
    let mut t = Transaction::new(db);
    t.select("Logical_Switch", vec![Condition::eq("name", "sw0")]);
    let r = c.transact(&t).await.unwrap();
    let rows = r[0].rows.as_ref().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["_uuid"].as_uuid(), Some(ls));
    assert_eq!(rows[0]["ports"].set_elements(), &[Atom::Uuid(p1)]);

    // update + mutate (map insert, integer add on a set-typed column is not allowed, so
    // use a map and a set)
    let mut t = Transaction::new(db);
    t.update(
        "Logical_Switch",
        vec![Condition::uuid(ls)],
        row(&[(
            "other_config",
            Value::string_map([("subnet", "10.244.0.0/24")]),
        )]),
    )
    .mutate(
        "Logical_Switch",
        vec![Condition::uuid(ls)],
        vec![Mutation::insert(
            "external_ids",
            Value::string_map([("owner", "me")]),
        )],
    )
    .mutate(
        "Logical_Switch_Port",
        vec![Condition::uuid(p1)],
        vec![Mutation::insert(
            "port_security",
            Value::set(["0a:58:0a:f4:00:05 10.244.0.5"]),
        )],
    );
    let r = c.transact(&t).await.unwrap();
    assert_eq!(
        (r[0].count, r[1].count, r[2].count),
        (Some(1), Some(1), Some(1))
    );

    // wait (==, satisfied) and wait (!=, times out immediately)
    let mut t = Transaction::new(db);
    t.wait(
        "Logical_Switch",
        vec![Condition::uuid(ls)],
        vec!["name".into()],
        WaitUntil::Equal,
        vec![row(&[("name", "sw0".into())])],
        Some(0),
    );
    c.transact(&t).await.unwrap();
    let mut t = Transaction::new(db);
    t.wait(
        "Logical_Switch",
        vec![Condition::uuid(ls)],
        vec!["name".into()],
        WaitUntil::NotEqual,
        vec![row(&[("name", "sw0".into())])],
        Some(0),
    );
    let e = txn_err(c.transact(&t).await.unwrap_err());
    assert!(
        matches!(
            &e,
            TxnError::Operation {
                index: 0,
                op: "wait",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), Some(&ErrorKind::TimedOut));

    // assert on a lock we do not hold → not owner
    let mut t = Transaction::new(db);
    t.assert_lock("some_lock");
    assert_eq!(
        txn_err(c.transact(&t).await.unwrap_err()).kind(),
        Some(&ErrorKind::NotOwner)
    );

    // abort → aborted
    let mut t = Transaction::new(db);
    t.comment("x").abort();
    let e = txn_err(c.transact(&t).await.unwrap_err());
    assert!(
        matches!(
            &e,
            TxnError::Operation {
                index: 1,
                op: "abort",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), Some(&ErrorKind::Aborted));

    // duplicate uuid-name
    let mut t = Transaction::new(db);
    t.insert_named("Logical_Switch", "x", Row::new())
        .insert_named("Logical_Switch", "x", Row::new());
    assert_eq!(
        txn_err(c.transact(&t).await.unwrap_err()).kind(),
        Some(&ErrorKind::DuplicateUuidName)
    );

    // constraint violation at commit: LSP names are a unique index. The error is the extra
    // trailing result (RFC 7047: ops beyond results).
    let mut t = Transaction::new(db);
    t.insert_named("Logical_Switch_Port", "dup", row(&[("name", "p1".into())]))
        .mutate(
            "Logical_Switch",
            vec![Condition::uuid(ls)],
            vec![Mutation::insert(
                "ports",
                Value::set([Atom::NamedUuid("dup".into())]),
            )],
        );
    let e = txn_err(c.transact(&t).await.unwrap_err());
    assert!(matches!(&e, TxnError::Commit(_)), "{e}");
    assert_eq!(e.kind(), Some(&ErrorKind::ConstraintViolation));

    // referential integrity: a strong reference to a row that does not exist
    let mut t = Transaction::new(db);
    t.mutate(
        "Logical_Switch",
        vec![Condition::uuid(ls)],
        vec![Mutation::insert("ports", Value::set([Uuid::from_u128(42)]))],
    );
    let e = txn_err(c.transact(&t).await.unwrap_err());
    assert_eq!(
        e.kind(),
        Some(&ErrorKind::ReferentialIntegrityViolation),
        "{e}"
    );

    // delete; count
    let mut t = Transaction::new(db);
    t.delete("Logical_Switch", vec![Condition::uuid(ls)]);
    assert_eq!(c.transact(&t).await.unwrap()[0].count, Some(1));
    // The port was only referenced by the switch: garbage-collected with it.
    let rows = witness_select(&srv.sock, db, "Logical_Switch_Port");
    assert_eq!(rows.as_array().map(Vec::len), Some(0), "{rows}");

    // Checked before sending: unknown table, unknown column, enum violation, wrong type,
    // immutable column, bad condition.
    let cases: Vec<(Operation, &str)> = vec![
        (
            Operation::Delete {
                table: "Nope".into(),
                conditions: vec![],
            },
            "Nope",
        ),
        (
            Operation::Insert {
                table: "Logical_Switch".into(),
                row: row(&[("frob", 1i64.into())]),
                uuid_name: None,
                uuid: None,
            },
            "Logical_Switch.frob",
        ),
        (
            Operation::Insert {
                table: "ACL".into(),
                row: row(&[("action", "explode".into())]),
                uuid_name: None,
                uuid: None,
            },
            "ACL.action",
        ),
        (
            Operation::Insert {
                table: "ACL".into(),
                row: row(&[("priority", "high".into())]),
                uuid_name: None,
                uuid: None,
            },
            "ACL.priority",
        ),
        (
            Operation::Select {
                table: "ACL".into(),
                conditions: vec![Condition::new("match", Function::Lt, 3i64)],
                columns: None,
            },
            "ACL.match",
        ),
    ];
    for (op, needle) in cases {
        let mut t = Transaction::new(db);
        t.push(op);
        match c.transact(&t).await {
            Err(e @ ovsdb::Error::Schema { .. }) => {
                assert!(e.to_string().contains(needle), "{e} should name {needle}")
            }
            other => panic!("expected a schema error naming {needle}, got {other:?}"),
        }
    }
}

/// Normalized rows of a table as our own `select` sees them (defaults stripped like the
/// cache stores them).
async fn select_all(c: &ovsdb::Client, table: &str) -> HashMap<Uuid, Row> {
    let schema = c.schema().unwrap();
    let ts = schema.table(table).unwrap();
    let mut t = Transaction::new("OVN_Northbound");
    t.select(table, vec![]);
    let r = c.transact(&t).await.unwrap();
    r[0].rows
        .clone()
        .unwrap()
        .into_iter()
        .map(|mut row| {
            let u = row.remove("_uuid").and_then(|v| v.as_uuid()).unwrap();
            row.remove("_version");
            ts.normalize_row(&mut row);
            row.retain(|c, v| !ts.columns[c].ty.is_default(v));
            (u, row)
        })
        .collect()
}

fn cache_all(c: &ovsdb::Client, table: &str) -> HashMap<Uuid, Row> {
    c.cache()
        .table_rows(table)
        .into_iter()
        .map(|(u, r)| (u, (*r).clone()))
        .collect()
}

/// A tiny deterministic PRNG so the test is reproducible without extra dependencies.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn random_txn(c: &ovsdb::Client, rng: &mut Lcg, step: usize) {
    let db = "OVN_Northbound";
    let switches = c.cache().table_rows("Logical_Switch");
    let mut t = Transaction::new(db);
    match rng.below(6) {
        0 | 1 => {
            let ports: Vec<Atom> = (0..rng.below(3))
                .map(|i| {
                    let n = format!("p{step}_{i}");
                    t.insert_named(
                        "Logical_Switch_Port",
                        n.clone(),
                        row(&[
                            ("name", n.clone().into()),
                            (
                                "addresses",
                                Value::set([format!("0a:58:00:00:00:{:02x}", i)]),
                            ),
                        ]),
                    );
                    Atom::NamedUuid(n)
                })
                .collect();
            t.insert(
                "Logical_Switch",
                row(&[
                    ("name", format!("sw{step}").into()),
                    ("ports", Value::set(ports)),
                    (
                        "external_ids",
                        Value::string_map([("k", "v"), ("step", step.to_string().as_str())]),
                    ),
                ]),
            );
        }
        2 if !switches.is_empty() => {
            let (u, _) = &switches[rng.below(switches.len() as u64) as usize];
            // map diff: same key new value, new key, and a key deleted
            t.mutate(
                "Logical_Switch",
                vec![Condition::uuid(*u)],
                vec![
                    Mutation::delete("external_ids", Value::set(["k"])),
                    Mutation::insert(
                        "other_config",
                        Value::string_map([("x", step.to_string().as_str())]),
                    ),
                ],
            );
        }
        3 if !switches.is_empty() => {
            let (u, _) = &switches[rng.below(switches.len() as u64) as usize];
            t.update(
                "Logical_Switch",
                vec![Condition::uuid(*u)],
                row(&[(
                    "external_ids",
                    Value::string_map([("k", "changed"), ("new", "1")]),
                )]),
            );
        }
        4 if !switches.is_empty() => {
            let (u, r) = &switches[rng.below(switches.len() as u64) as usize];
            let ports = r
                .get("ports")
                .map(|p| p.set_elements().to_vec())
                .unwrap_or_default();
            if let Some(p) = ports.first() {
                t.mutate(
                    "Logical_Switch",
                    vec![Condition::uuid(*u)],
                    vec![Mutation::delete("ports", Value::Set(vec![p.clone()]))],
                );
            } else {
                t.delete("Logical_Switch", vec![Condition::uuid(*u)]);
            }
        }
        _ if !switches.is_empty() => {
            let (u, _) = &switches[rng.below(switches.len() as u64) as usize];
            t.delete("Logical_Switch", vec![Condition::uuid(*u)]);
        }
        _ => {
            t.insert(
                "Logical_Switch",
                row(&[("name", format!("sw{step}").into())]),
            );
        }
    }
    // Another client may have deleted the row meanwhile: that is fine (count 0).
    c.transact(&t).await.unwrap();
}

async fn cache_matches_select(method: MonitorMethod) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let mut cfg = ClientConfig::new(vec![srv.remote()], "OVN_Northbound");
    cfg.monitor_method = method;
    cfg.monitor_tables = Some(vec!["Logical_Switch".into(), "Logical_Switch_Port".into()]);
    let a = ovsdb::Client::connect(cfg).await.unwrap();
    let b = nb_client(srv.remote()).await;
    let mut events = a.cache().subscribe();
    let mut mirror: HashMap<(String, Uuid), Arc<Row>> = HashMap::new();
    let mut rng = Lcg(0x5eed + method as u64);
    for step in 0..150 {
        let c = if rng.below(2) == 0 { &a } else { &b };
        random_txn(c, &mut rng, step).await;
    }
    // Barrier: a last write by `a`, visible in its own cache, orders after everything above.
    let mut t = Transaction::new("OVN_Northbound");
    t.insert("Logical_Switch", row(&[("name", "barrier".into())]));
    c_transact(&a, &t).await;
    eventually(10, "barrier row in cache", || {
        a.cache()
            .table_rows("Logical_Switch")
            .iter()
            .any(|(_, r)| r.get("name").and_then(Value::as_str) == Some("barrier"))
    })
    .await;
    for table in ["Logical_Switch", "Logical_Switch_Port"] {
        let want = select_all(&b, table).await;
        let got = cache_all(&a, table);
        assert_eq!(
            got, want,
            "{method:?}: cache of {table} differs from select"
        );
    }
    assert!(
        a.cache().len("Logical_Switch") > 3,
        "the random walk should leave some switches"
    );
    // The event stream replayed gives the cache too.
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Insert { table, uuid, new } => {
                assert!(
                    mirror.insert((table.to_string(), uuid), new).is_none(),
                    "insert of a known row"
                );
            }
            Event::Update {
                table,
                uuid,
                old,
                new,
            } => {
                let prev = mirror.insert((table.to_string(), uuid), new.clone());
                assert_eq!(
                    prev.as_deref(),
                    Some(&*old),
                    "update's old row differs from the last event"
                );
                assert_ne!(old, new, "update event without a change");
            }
            Event::Delete { table, uuid, old } => {
                assert_eq!(
                    mirror.remove(&(table.to_string(), uuid)).as_deref(),
                    Some(&*old)
                );
            }
        }
    }
    for table in ["Logical_Switch", "Logical_Switch_Port"] {
        let from_events: HashMap<Uuid, Row> = mirror
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, u), r)| (*u, (**r).clone()))
            .collect();
        assert_eq!(
            from_events,
            cache_all(&a, table),
            "{method:?}: events replayed differ from the cache"
        );
    }
    // Independent witness: ovsdb-client sees the same set of switches.
    let w = witness_select(&srv.sock, "OVN_Northbound", "Logical_Switch");
    let names: std::collections::BTreeSet<String> = w
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    let cached: std::collections::BTreeSet<String> = a
        .cache()
        .table_rows("Logical_Switch")
        .iter()
        .map(|(_, r)| {
            r.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(names, cached);
}

async fn c_transact(c: &ovsdb::Client, t: &Transaction) {
    c.transact(t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_equals_select_monitor_cond_since() {
    if have_tools("cache_equals_select_monitor_cond_since") {
        cache_matches_select(MonitorMethod::CondSince).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_equals_select_monitor_cond() {
    if have_tools("cache_equals_select_monitor_cond") {
        cache_matches_select(MonitorMethod::Cond).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_equals_select_plain_monitor() {
    if have_tools("cache_equals_select_plain_monitor") {
        cache_matches_select(MonitorMethod::Plain).await;
    }
}

/// After a server restart, the cache is made right again and emits events only for the rows
/// that changed while the client was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_emits_only_what_changed() {
    if !have_tools("reconnect_emits_only_what_changed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::standalone(dir.path(), NB_SCHEMA);
    let c = nb_client(srv.remote()).await;
    let mut t = Transaction::new("OVN_Northbound");
    for i in 0..20 {
        t.insert(
            "Logical_Switch",
            row(&[("name", format!("keep{i}").into())]),
        );
    }
    t.insert("Logical_Switch", row(&[("name", "to-change".into())]));
    t.insert("Logical_Switch", row(&[("name", "to-delete".into())]));
    c.transact(&t).await.unwrap();
    eventually(10, "22 switches cached", || {
        c.cache().len("Logical_Switch") == 22
    })
    .await;
    let connects = c.connect_count();
    let mut events = c.cache().subscribe();

    // Change the database while no server runs, with the offline tool.
    srv.kill();
    let offline = serde_json::json!(["OVN_Northbound",
        {"op": "update", "table": "Logical_Switch", "where": [["name", "==", "to-change"]],
         "row": {"external_ids": ["map", [["changed", "yes"]]]}},
        {"op": "delete", "table": "Logical_Switch", "where": [["name", "==", "to-delete"]]},
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "added"}}]);
    let out = std::process::Command::new("ovsdb-tool")
        .arg("transact")
        .arg(&srv.db)
        .arg(offline.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.start();

    eventually(15, "reconnect", || c.connect_count() > connects).await;
    let mut got: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 3 {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("events")
            .unwrap();
        let name = |r: &Row| {
            r.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        got.push(match &e {
            Event::Insert { new, .. } => ("insert".into(), name(new)),
            Event::Update { new, .. } => ("update".into(), name(new)),
            Event::Delete { old, .. } => ("delete".into(), name(old)),
        });
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("delete".to_string(), "to-delete".to_string()),
            ("insert".to_string(), "added".to_string()),
            ("update".to_string(), "to-change".to_string())
        ]
    );
    // Nothing else: no events for the 20 unchanged rows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(events.try_recv().is_err(), "unexpected extra event");
    let want = select_all(&c, "Logical_Switch").await;
    assert_eq!(cache_all(&c, "Logical_Switch"), want);
    let changed: BTreeMap<String, String> = c
        .cache()
        .table_rows("Logical_Switch")
        .iter()
        .find(|(_, r)| r.get("name").and_then(Value::as_str) == Some("to-change"))
        .map(|(_, r)| r["external_ids"].to_string_map())
        .unwrap();
    assert_eq!(changed.get("changed").map(String::as_str), Some("yes"));
}

/// A transaction in flight when the server dies reports "outcome unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_transaction_reports_outcome_unknown() {
    if !have_tools("in_flight_transaction_reports_outcome_unknown") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::standalone(dir.path(), NB_SCHEMA);
    let c = nb_client(srv.remote()).await;
    // A wait that blocks for 10 s on the server, so it is surely in flight when we kill it.
    let mut t = Transaction::new("OVN_Northbound");
    t.wait(
        "Logical_Switch",
        vec![],
        vec!["name".into()],
        WaitUntil::NotEqual,
        vec![],
        Some(10_000),
    );
    let c2 = c.clone();
    let h = tokio::spawn(async move { c2.transact(&t).await });
    eventually(10, "transaction in flight", || c.requests_in_flight() == 1).await;
    srv.kill();
    let r = tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(ovsdb::Error::OutcomeUnknown(_))), "{r:?}");
}

/// `transact_checked`: after "outcome unknown" the cache decides whether to send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_unknown_is_settled_by_the_cache() {
    if !have_tools("outcome_unknown_is_settled_by_the_cache") {
        return;
    }
    for committed_while_away in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut srv = Server::standalone(dir.path(), NB_SCHEMA);
        let c = nb_client(srv.remote()).await;
        // Blocks on the server until a switch named "gate" exists, then inserts "payload".
        let mut t = Transaction::new("OVN_Northbound");
        t.wait(
            "Logical_Switch",
            vec![Condition::eq("name", "gate")],
            vec!["name".into()],
            WaitUntil::NotEqual,
            vec![],
            Some(10_000),
        )
        .insert("Logical_Switch", row(&[("name", "payload".into())]));
        let has = |name: &'static str| {
            move |cache: &ovsdb::Cache| {
                cache
                    .table_rows("Logical_Switch")
                    .iter()
                    .any(|(_, r)| r.get("name").and_then(Value::as_str) == Some(name))
            }
        };
        let c2 = c.clone();
        let t2 = t.clone();
        let h = tokio::spawn(async move { c2.transact_checked(&t2, 5, has("payload")).await });
        eventually(10, "transaction in flight", || c.requests_in_flight() == 1).await;
        srv.kill();
        let mut ops = vec![
            serde_json::json!({"op": "insert", "table": "Logical_Switch", "row": {"name": "gate"}}),
        ];
        if committed_while_away {
            ops.push(serde_json::json!({"op": "insert", "table": "Logical_Switch", "row": {"name": "payload"}}));
        }
        let mut q = vec![serde_json::json!("OVN_Northbound")];
        q.extend(ops);
        let out = std::process::Command::new("ovsdb-tool")
            .arg("transact")
            .arg(&srv.db)
            .arg(serde_json::Value::Array(q).to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        srv.start();
        let r = tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Committed while away: not sent again (None); otherwise sent again and answered.
        assert_eq!(r.is_none(), committed_while_away);
        let rows = witness_select(&srv.sock, "OVN_Northbound", "Logical_Switch");
        let payloads = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == "payload")
            .count();
        assert_eq!(payloads, 1, "applied exactly once");
    }
}
