//! Client-level behaviour against a real ovsdb-server: typed cache views and indexes,
//! read-your-writes, and the schema check at connect.

mod common;

use std::collections::BTreeMap;

use common::*;
use ovsdb::{
    get_column, ClientConfig, Condition, IndexSpec, Model, ModelError, Mutation, Row, ToValue,
    Transaction, Uuid, Value,
};

/// A hand-written model (what ovn-models generates) of a few Logical_Switch columns.
#[derive(Debug, Clone, PartialEq, Default)]
struct Sw {
    uuid: Uuid,
    name: String,
    ports: Vec<Uuid>,
    external_ids: BTreeMap<String, String>,
    extra: Row,
}

impl Model for Sw {
    const TABLE: &'static str = "Logical_Switch";
    const COLUMNS: &'static [&'static str] = &["name", "ports", "external_ids"];
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn from_row(uuid: Uuid, row: &Row) -> Result<Self, ModelError> {
        Ok(Sw {
            uuid,
            name: get_column(Self::TABLE, uuid, row, "name")?,
            ports: get_column(Self::TABLE, uuid, row, "ports")?,
            external_ids: get_column(Self::TABLE, uuid, row, "external_ids")?,
            extra: ovsdb::model::extra_columns(row, Self::COLUMNS),
        })
    }
    fn to_row(&self) -> Row {
        let mut r = self.extra.clone();
        r.insert("name".into(), self.name.to_value());
        r.insert("ports".into(), self.ports.to_value());
        r.insert("external_ids".into(), self.external_ids.to_value());
        r
    }
}

fn sw(name: &str, owner: &str) -> Row {
    let mut r = Row::new();
    r.insert("name".into(), Value::from(name));
    r.insert("external_ids".into(), Value::string_map([("owner", owner)]));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_views_indexes_and_read_your_writes() {
    if !have_tools("typed_views_indexes_and_read_your_writes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let mut cfg = ClientConfig::new(vec![srv.remote()], "OVN_Northbound");
    cfg.models = vec![(Sw::TABLE, Sw::COLUMNS)];
    cfg.indexes = vec![
        (Sw::TABLE.into(), IndexSpec::Column("name".into())),
        (
            Sw::TABLE.into(),
            IndexSpec::MapKey {
                column: "external_ids".into(),
                key: "owner".into(),
            },
        ),
    ];
    let c = ovsdb::Client::connect(cfg).await.unwrap();
    let cache = c.cache();

    // Read-your-writes: right after transact returns, the cache shows the commit.
    let mut uuids = Vec::new();
    for i in 0..50 {
        let mut t = Transaction::new("OVN_Northbound");
        t.insert(
            Sw::TABLE,
            sw(&format!("s{i}"), if i % 2 == 0 { "even" } else { "odd" }),
        );
        let r = c.transact(&t).await.unwrap();
        let u = r[0].uuid.unwrap();
        let got = cache
            .get::<Sw>(u)
            .unwrap()
            .expect("row visible right after commit");
        assert_eq!(got.name, format!("s{i}"));
        uuids.push(u);
    }
    assert_eq!(cache.rows::<Sw>().unwrap().len(), 50);
    let s7 = cache.find::<Sw>("name", "s7").unwrap();
    assert_eq!(s7.len(), 1);
    assert_eq!(s7[0].uuid, uuids[7]);
    assert_eq!(
        cache
            .find_by_external_id::<Sw>("owner", "even")
            .unwrap()
            .len(),
        25
    );
    let owner = IndexSpec::MapKey {
        column: "external_ids".into(),
        key: "owner".into(),
    };
    let mut odd = cache.lookup_uuids(Sw::TABLE, &owner, &Value::from("odd"));
    odd.sort();
    let mut want: Vec<Uuid> = uuids.iter().skip(1).step_by(2).copied().collect();
    want.sort();
    assert_eq!(odd, want);

    // Index follows updates: s7 moves from odd to even.
    let mut t = Transaction::new("OVN_Northbound");
    t.mutate(
        Sw::TABLE,
        vec![Condition::uuid(uuids[7])],
        vec![
            Mutation::delete("external_ids", Value::set(["owner"])),
            Mutation::insert("external_ids", Value::string_map([("owner", "even")])),
        ],
    );
    c.transact(&t).await.unwrap();
    assert_eq!(
        cache
            .find_by_external_id::<Sw>("owner", "even")
            .unwrap()
            .len(),
        26
    );
    assert_eq!(
        cache
            .find_by_external_id::<Sw>("owner", "odd")
            .unwrap()
            .len(),
        24
    );
    // ... and deletes.
    let mut t = Transaction::new("OVN_Northbound");
    t.delete(Sw::TABLE, vec![Condition::eq("name", "s7")]);
    c.transact(&t).await.unwrap();
    assert!(cache.find::<Sw>("name", "s7").unwrap().is_empty());
    assert_eq!(
        cache
            .find_by_external_id::<Sw>("owner", "even")
            .unwrap()
            .len(),
        25
    );

    // The model round-trips through the server, extra columns included.
    let mut m = cache.get::<Sw>(uuids[3]).unwrap().unwrap();
    m.external_ids.insert("k".into(), "v".into());
    let mut t = Transaction::new("OVN_Northbound");
    t.update(Sw::TABLE, vec![Condition::uuid(m.uuid)], m.to_row());
    c.transact(&t).await.unwrap();
    assert_eq!(cache.get::<Sw>(uuids[3]).unwrap().unwrap(), m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_is_a_clear_startup_error() {
    if !have_tools("schema_mismatch_is_a_clear_startup_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let mut cfg = ClientConfig::new(vec![srv.remote()], "OVN_Northbound");
    cfg.models = vec![
        ("Logical_Switch", &["name", "no_such_column"]),
        ("No_Such_Table", &["x"]),
    ];
    let e = ovsdb::Client::connect(cfg).await.err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, ovsdb::Error::SchemaMismatch(_)), "{e:?}");
    assert!(
        msg.contains("Logical_Switch.no_such_column") && msg.contains("No_Such_Table"),
        "{msg}"
    );
    // Unknown database: also an error, not a hang.
    let mut cfg = ClientConfig::new(vec![srv.remote()], "Nope_DB");
    cfg.connect_timeout = std::time::Duration::from_secs(2);
    assert!(ovsdb::Client::connect(cfg).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_conditions_and_live_change() {
    if !have_tools("monitor_conditions_and_live_change") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let mut cfg = ClientConfig::new(vec![srv.remote()], "OVN_Northbound");
    cfg.monitor_tables = Some(vec![Sw::TABLE.into()]);
    cfg.monitor_where.insert(
        Sw::TABLE.into(),
        vec![Condition::includes(
            "external_ids",
            Value::string_map([("owner", "me")]),
        )],
    );
    let c = ovsdb::Client::connect(cfg).await.unwrap();
    let mut t = Transaction::new("OVN_Northbound");
    t.insert(Sw::TABLE, sw("mine", "me"))
        .insert(Sw::TABLE, sw("theirs", "them"));
    c.transact(&t).await.unwrap();
    let names = |c: &ovsdb::Client| {
        let mut v: Vec<String> = c
            .cache()
            .rows::<Sw>()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&c), ["mine"]);
    c.set_monitor_condition(Sw::TABLE, vec![Condition::eq("name", "theirs")])
        .await
        .unwrap();
    assert_eq!(names(&c), ["theirs"]);
    c.set_monitor_condition(Sw::TABLE, vec![]).await.unwrap();
    assert_eq!(names(&c), ["mine", "theirs"]);
    // Checked against the schema before sending.
    let e = c
        .set_monitor_condition(Sw::TABLE, vec![Condition::eq("nope", 1i64)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Logical_Switch.nope"), "{e}");
    // A reconnect keeps the current condition.
    c.set_monitor_condition(Sw::TABLE, vec![Condition::eq("name", "mine")])
        .await
        .unwrap();
    let n = c.connect_count();
    c.disconnect();
    eventually(10, "reconnect", || c.connect_count() > n).await;
    assert_eq!(names(&c), ["mine"]);
}

/// An old server (no monitor_cond_since/monitor_cond): the client falls back to `monitor`
/// and applies v1 `update`s. A scripted peer plays the server; no binaries needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_plain_monitor_on_old_servers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let schema = serde_json::json!({"name": "Test", "version": "1.0.0", "tables": {"T": {
        "columns": {"name": {"type": "string"},
                    "n": {"type": {"key": "integer", "min": 0, "max": "unlimited"}}},
        "isRoot": true}}});
    let u = "6f4b2a39-5d7e-4f0e-9a63-0c1c1f1f0001";
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut f = ovsdb::Framer::new(1 << 20);
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            f.extend(&buf[..n]);
            while let Some(fr) = f.next_frame().unwrap() {
                let m: serde_json::Value = serde_json::from_slice(&fr).unwrap();
                let method = m["method"].as_str().unwrap_or("").to_owned();
                seen2.lock().unwrap().push(method.clone());
                let id = m["id"].clone();
                let reply = match method.as_str() {
                    "get_schema" => serde_json::json!({"id": id, "result": schema, "error": null}),
                    "monitor" => {
                        let r = serde_json::json!({"id": id, "error": null, "result":
                            {"T": {u: {"new": {"name": "a", "n": ["set", [1, 2]]}}}}});
                        s.write_all(r.to_string().as_bytes()).await.unwrap();
                        serde_json::json!({"id": null, "method": "update", "params": [m["params"][1],
                            {"T": {u: {"old": {"name": "a"}, "new": {"name": "b", "n": ["set", [1, 2]]}}}}]})
                    }
                    "echo" => serde_json::json!({"id": id, "result": m["params"], "error": null}),
                    _ => serde_json::json!({"id": id, "result": null, "error": "unknown method"}),
                };
                s.write_all(reply.to_string().as_bytes()).await.unwrap();
            }
        }
    });
    let c = ovsdb::Client::connect(ClientConfig::new(vec![ovsdb::Remote::Unix(sock)], "Test"))
        .await
        .unwrap();
    let uuid = Uuid::parse_str(u).unwrap();
    eventually(5, "update applied", || {
        c.cache()
            .row("T", uuid)
            .is_some_and(|r| r.get("name").and_then(Value::as_str) == Some("b"))
    })
    .await;
    assert_eq!(
        c.cache().row("T", uuid).unwrap()["n"],
        Value::set([1i64, 2])
    );
    let methods = seen.lock().unwrap().clone();
    let mons: Vec<&str> = methods
        .iter()
        .map(String::as_str)
        .filter(|m| m.starts_with("monitor"))
        .collect();
    assert_eq!(mons, ["monitor_cond_since", "monitor_cond", "monitor"]);
}

#[test]
fn client_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<ovsdb::Client>();
    check::<std::sync::Arc<ovsdb::Cache>>();
    check::<ovsdb::Connection>();
}

/// Many tasks share one client; their requests are pipelined on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_client() {
    if !have_tools("many_tasks_share_one_client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let c = nb_client(srv.remote()).await;
    let tasks: Vec<_> = (0..40)
        .map(|k| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let mut t = Transaction::new("OVN_Northbound");
                    t.insert(Sw::TABLE, sw(&format!("t{k}_{i}"), "x"));
                    c.transact(&t).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.cache().len(Sw::TABLE), 1000);
    assert_eq!(c.connect_count(), 1);
    assert_eq!(
        witness_select(&srv.sock, "OVN_Northbound", Sw::TABLE)
            .as_array()
            .map(Vec::len),
        Some(1000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_names_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClientConfig::new(
        vec![ovsdb::Remote::Unix(dir.path().join("absent.sock"))],
        "OVN_Northbound",
    );
    cfg.connect_timeout = std::time::Duration::from_millis(500);
    let e = ovsdb::Client::connect(cfg).await.err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, ovsdb::Error::NotConnected(_)), "{e:?}");
    assert!(
        msg.contains("absent.sock") && msg.contains("connect"),
        "{msg}"
    );
}

/// OVSDB locks: one holder at a time, handed over on unlock, taken by steal, and
/// `assert` guards transactions with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_guard_transactions() {
    if !have_tools("locks_guard_transactions") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::standalone(dir.path(), NB_SCHEMA);
    let a = nb_client(srv.remote()).await;
    let b = nb_client(srv.remote()).await;
    let guarded = |name: &str| {
        let mut t = Transaction::new("OVN_Northbound");
        t.assert_lock("ovnk_leader")
            .insert(Sw::TABLE, sw(name, "x"));
        t
    };
    let a_held = a.lock("ovnk_leader").await.unwrap();
    assert!(*a_held.borrow());
    let mut b_held = b.lock("ovnk_leader").await.unwrap();
    assert!(!*b_held.borrow());
    a.transact(&guarded("by-a")).await.unwrap();
    let e = b.transact(&guarded("by-b")).await.unwrap_err();
    assert!(
        matches!(&e, ovsdb::Error::Txn(t) if t.kind() == Some(&ovsdb::ErrorKind::NotOwner)),
        "{e}"
    );
    // Handed over on unlock.
    a.unlock("ovnk_leader").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), b_held.wait_for(|h| *h))
        .await
        .expect("b gets the lock")
        .unwrap();
    b.transact(&guarded("by-b")).await.unwrap();
    // Stolen back.
    let a_held = a.steal("ovnk_leader").await.unwrap();
    assert!(*a_held.borrow());
    tokio::time::timeout(std::time::Duration::from_secs(5), b_held.wait_for(|h| !*h))
        .await
        .expect("b is told it was stolen")
        .unwrap();
    assert!(b.transact(&guarded("b-again")).await.is_err());
    assert!(a.lock("bad name").await.is_err());
    // Locks belong to a connection: after a reconnect the client asks again by itself.
    b.unlock("ovnk_leader").await.unwrap();
    let mut a_held = a_held;
    let n = a.connect_count();
    a.disconnect();
    eventually(10, "reconnect", || a.connect_count() > n).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), a_held.wait_for(|h| *h))
        .await
        .expect("lock held again after reconnect")
        .unwrap();
    a.transact(&guarded("by-a-again")).await.unwrap();
}

/// A server that accepts and hangs up at once is retried with growing backoff, not in a
/// tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_gets_backoff_not_a_tight_loop() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("flap.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let mut cfg = ClientConfig::new(vec![ovsdb::Remote::Unix(sock)], "OVN_Northbound");
    cfg.connect_timeout = std::time::Duration::from_millis(1500);
    let e = ovsdb::Client::connect(cfg)
        .await
        .err()
        .expect("cannot connect");
    assert!(matches!(e, ovsdb::Error::NotConnected(_)), "{e}");
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    // 50 ms doubling with jitter: about 5 attempts in 1.5 s; a tight loop would be hundreds.
    assert!((2..=12).contains(&n), "{n} connection attempts in 1.5 s");
}
