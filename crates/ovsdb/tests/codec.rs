//! Framer, JSON-RPC session and update decoding against hand-made input: random chunkings,
//! malformed/truncated/oversized messages, a misbehaving peer. No server needed.

use std::sync::Arc;
use std::time::Duration;

use ovsdb::framer::{FrameError, Framer};
use ovsdb::rpc::{Connection, RpcConfig, RpcError};
use ovsdb::update::{decode_notice, Notice, Updates};
use ovsdb::{ApplyMode, Cache, CacheError, DatabaseSchema, Event, Uuid, Value};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn frames_of(framer: &mut Framer) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn framer_handles_strings_escapes_and_whitespace() {
    let msgs = [
        r#"{"a":"}{]["}"#,
        r#"{"b":"\"}\\"}"#,
        r#"[1,{"c":[2,3]},"\\\""]"#,
        r#"{"d":"é ☃ \u00e9"}"#,
    ];
    let stream = format!(" \n{}\r\n{}{}\t{}", msgs[0], msgs[1], msgs[2], msgs[3]);
    let mut f = Framer::new(1024);
    f.extend(stream.as_bytes());
    let got = frames_of(&mut f).unwrap();
    let got: Vec<&str> = got
        .iter()
        .map(|g| std::str::from_utf8(g).unwrap())
        .collect();
    assert_eq!(got, msgs);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn framer_rejects_oversized_and_garbage() {
    let mut f = Framer::new(16);
    f.extend(br#"{"a":"0123456789abcdef"}"#);
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge { max: 16 }));
    // An incomplete message that is already too big is refused without waiting for its end.
    let mut f = Framer::new(16);
    f.extend(br#"{"a":"0123456789abcdef"#);
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge { max: 16 }));
    let mut f = Framer::new(1024);
    f.extend(b"{}x{}");
    assert_eq!(f.next_frame().unwrap().as_deref(), Some(&b"{}"[..]));
    assert_eq!(f.next_frame(), Err(FrameError::Garbage { byte: b'x' }));
    let mut f = Framer::new(1 << 20);
    f.extend(&[b'['; 5000]);
    assert!(matches!(f.next_frame(), Err(FrameError::TooDeep(_))));
}

fn arb_atom() -> impl Strategy<Value = ovsdb::Atom> {
    prop_oneof![
        any::<i64>().prop_map(ovsdb::Atom::Integer),
        (-1e12f64..1e12).prop_map(ovsdb::Atom::Real),
        any::<bool>().prop_map(ovsdb::Atom::Boolean),
        ".{0,12}".prop_map(ovsdb::Atom::String),
        any::<u128>().prop_map(|u| ovsdb::Atom::Uuid(Uuid::from_u128(u))),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_atom().prop_map(Value::Atom),
        prop::collection::vec(arb_atom(), 0..5).prop_map(Value::set),
        prop::collection::vec((arb_atom(), arb_atom()), 0..5).prop_map(Value::map),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of messages, cut into any chunks, comes out exactly as it went in, and
    /// each value decodes back to itself.
    #[test]
    fn framer_reassembles_any_chunking(values in prop::collection::vec(arb_value(), 1..8), cuts in prop::collection::vec(1usize..64, 1..40)) {
        let msgs: Vec<Vec<u8>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::to_vec(&serde_json::json!({"id": i, "result": v})).unwrap())
            .collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.iter().copied().chain(*b"\n")).collect();
        let mut f = Framer::new(1 << 20);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut ci = 0;
        while pos < stream.len() {
            let n = cuts[ci % cuts.len()].min(stream.len() - pos);
            ci += 1;
            f.extend(&stream[pos..pos + n]);
            pos += n;
            got.extend(frames_of(&mut f).unwrap());
        }
        prop_assert_eq!(&got, &msgs);
        for (g, v) in got.iter().zip(&values) {
            #[derive(serde::Deserialize)]
            struct R { result: Value }
            let r: R = serde_json::from_slice(g).unwrap();
            prop_assert_eq!(&r.result, v);
        }
    }

    /// Random bytes never panic the framer or the decoders; errors are errors.
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..50) {
        let mut f = Framer::new(256);
        for c in data.chunks(chunk) {
            f.extend(c);
            match frames_of(&mut f) {
                Ok(frames) => {
                    for fr in frames {
                        let _ = serde_json::from_slice::<Value>(&fr);
                        let _ = decode_notice("update2", &fr);
                        let _ = decode_notice("update", &fr);
                        let _ = decode_notice("update3", &fr);
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// update2 "modify" diffs, computed the way ovsdb-server does, turn the old value into the
    /// new one: sets by symmetric difference, maps per key.
    #[test]
    fn modify_diffs_reproduce_the_new_value(
        a in prop::collection::btree_set(0i64..20, 0..10),
        b in prop::collection::btree_set(0i64..20, 0..10),
        m1 in prop::collection::btree_map(0i64..10, 0i64..3, 0..8),
        m2 in prop::collection::btree_map(0i64..10, 0i64..3, 0..8),
    ) {
        let diff = Value::set(a.symmetric_difference(&b).copied());
        prop_assert_eq!(Value::set(a.iter().copied()).apply_diff(&diff), Value::set(b.iter().copied()));
        let mut d = Vec::new();
        for (k, v) in &m1 {
            match m2.get(k) {
                None => d.push((*k, *v)),
                Some(v2) if v2 != v => d.push((*k, *v2)),
                _ => {}
            }
        }
        for (k, v) in &m2 {
            if !m1.contains_key(k) {
                d.push((*k, *v));
            }
        }
        let old = Value::map(m1.iter().map(|(k, v)| (*k, *v)));
        prop_assert_eq!(old.apply_diff(&Value::map(d)), Value::map(m2.iter().map(|(k, v)| (*k, *v))));
    }

    /// Truncating a valid message never yields a frame.
    #[test]
    fn truncated_messages_wait_for_more(v in arb_value(), cut in 0usize..1000) {
        let m = serde_json::to_vec(&serde_json::json!({"id": 1, "result": v})).unwrap();
        let cut = cut % m.len();
        let mut f = Framer::new(1 << 20);
        f.extend(&m[..cut]);
        prop_assert_eq!(f.next_frame(), Ok(None));
        f.extend(&m[cut..]);
        prop_assert_eq!(f.next_frame(), Ok(Some(m.clone())));
    }
}

/// The peer side of a socket pair, reading whole messages.
struct Peer {
    s: UnixStream,
    f: Framer,
}

impl Peer {
    async fn recv(&mut self) -> serde_json::Value {
        loop {
            if let Some(fr) = self.f.next_frame().unwrap() {
                return serde_json::from_slice(&fr).unwrap();
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut buf))
                .await
                .expect("peer read timed out")
                .unwrap();
            assert!(n > 0, "client closed");
            self.f.extend(&buf[..n]);
        }
    }
    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }
}

fn pair(
    cfg: RpcConfig,
) -> (
    Connection,
    tokio::sync::mpsc::UnboundedReceiver<ovsdb::rpc::Notification>,
    Peer,
) {
    let (a, b) = UnixStream::pair().unwrap();
    let (c, n) = Connection::start(a, cfg);
    (
        c,
        n,
        Peer {
            s: b,
            f: Framer::new(1 << 20),
        },
    )
}

#[tokio::test]
async fn answers_echo_and_matches_pipelined_replies() {
    let (c, mut notes, mut p) = pair(RpcConfig {
        probe_interval: None,
        ..Default::default()
    });
    p.send(br#"{"id":"echo","method":"echo","params":["x",1]}"#)
        .await;
    let r = p.recv().await;
    assert_eq!(
        r,
        serde_json::json!({"id": "echo", "result": ["x", 1], "error": null})
    );

    // 50 calls in flight, answered in reverse order.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.call::<_, serde_json::Value>("m", &serde_json::json!([i]))
                    .await
            })
        })
        .collect();
    let mut reqs = Vec::new();
    for _ in 0..50 {
        reqs.push(p.recv().await);
    }
    for r in reqs.iter().rev() {
        let reply = serde_json::json!({"id": r["id"], "result": r["params"][0], "error": null});
        p.send(reply.to_string().as_bytes()).await;
    }
    for (i, h) in calls.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), serde_json::json!(i));
    }
    // A notification is passed on; a server error is typed.
    p.send(br#"{"id":null,"method":"update2","params":["m",{}]}"#)
        .await;
    let n = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.method, "update2");
    let c2 = c.clone();
    let h = tokio::spawn(async move {
        c2.call::<_, serde_json::Value>("nope", &serde_json::json!([]))
            .await
    });
    let r = p.recv().await;
    p.send(
        format!(
            r#"{{"id":{},"result":null,"error":"unknown method"}}"#,
            r["id"]
        )
        .as_bytes(),
    )
    .await;
    let e = h.await.unwrap().unwrap_err();
    assert!(e.is_unknown_method(), "{e}");
    assert!(matches!(e, RpcError::Server { ref method, .. } if method == "nope"));
}

async fn expect_closed(c: &Connection, needle: &str) {
    let why = tokio::time::timeout(Duration::from_secs(5), c.closed())
        .await
        .expect("connection not closed");
    assert!(
        why.contains(needle),
        "closed because {why:?}, expected {needle:?}"
    );
}

#[tokio::test]
async fn malformed_message_closes_with_clear_error() {
    let (c, _n, mut p) = pair(RpcConfig {
        probe_interval: None,
        ..Default::default()
    });
    let c2 = c.clone();
    let h = tokio::spawn(async move {
        c2.call::<_, serde_json::Value>("m", &serde_json::json!([]))
            .await
    });
    let _ = p.recv().await;
    p.send(br#"{"id":1,"result":tru}"#).await;
    expect_closed(&c, "malformed JSON-RPC message").await;
    assert!(matches!(h.await.unwrap(), Err(RpcError::ConnectionLost(_))));
    // Calls after close fail at once.
    assert!(matches!(
        c.call::<_, serde_json::Value>("m", &serde_json::json!([]))
            .await,
        Err(RpcError::ConnectionLost(_))
    ));
}

#[tokio::test]
async fn oversized_message_closes_with_clear_error() {
    let (c, _n, mut p) = pair(RpcConfig {
        probe_interval: None,
        max_message: 1000,
    });
    let big = format!(
        r#"{{"id":null,"method":"update2","params":["{}"]}}"#,
        "x".repeat(5000)
    );
    p.send(big.as_bytes()).await;
    expect_closed(&c, "maximum size of 1000 bytes").await;
}

#[tokio::test]
async fn garbage_closes_and_peer_close_is_reported() {
    let (c, _n, mut p) = pair(RpcConfig {
        probe_interval: None,
        ..Default::default()
    });
    p.send(b"hello").await;
    expect_closed(&c, "unexpected byte").await;
    let (c, _n, p) = pair(RpcConfig {
        probe_interval: None,
        ..Default::default()
    });
    drop(p);
    expect_closed(&c, "closed by server").await;
}

#[tokio::test]
async fn inactivity_probe_sends_echo_then_gives_up() {
    let (c, _n, mut p) = pair(RpcConfig {
        probe_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    });
    let r = p.recv().await;
    assert_eq!(r["method"], "echo");
    // Answering keeps the session alive through another probe round.
    p.send(format!(r#"{{"id":{},"result":[],"error":null}}"#, r["id"]).as_bytes())
        .await;
    let r = p.recv().await;
    assert_eq!(r["method"], "echo");
    assert!(c.closed_reason().is_none());
    // Silence now: the session is dropped.
    expect_closed(&c, "inactivity probe").await;
}

fn nb() -> Option<Arc<DatabaseSchema>> {
    let p = "/usr/share/ovn/ovn-nb.ovsschema";
    if !std::path::Path::new(p).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {p} is missing"
        );
        eprintln!("SKIP: {p} missing");
        return None;
    }
    Some(Arc::new(DatabaseSchema::from_file(p).unwrap()))
}

fn notice_updates(method: &str, json: &str) -> Updates {
    match decode_notice(method, json.as_bytes()).unwrap() {
        Notice::Update { updates, .. } => updates,
        Notice::Update3 {
            updates,
            last_txn_id,
            ..
        } => {
            assert_eq!(last_txn_id, "11111111-1111-1111-1111-111111111111");
            updates
        }
        Notice::Other(m) => panic!("unexpected {m}"),
    }
}

const U1: &str = "9b5c2b5e-0d4a-4d34-8d0e-000000000001";
const P1: &str = "9b5c2b5e-0d4a-4d34-8d0e-0000000000aa";
const P2: &str = "9b5c2b5e-0d4a-4d34-8d0e-0000000000bb";

#[test]
fn update2_and_update3_are_applied_exactly() {
    let Some(schema) = nb() else { return };
    let cache = Cache::new();
    cache.set_schema(schema);
    let mut ev = cache.subscribe();
    let tables = vec!["Logical_Switch".to_string()];
    let u = notice_updates(
        "update2",
        &format!(
            r#"{{"id":null,"method":"update2","params":["m",{{"Logical_Switch":{{"{U1}":{{"insert":{{"name":"sw","ports":["uuid","{P1}"],"external_ids":["map",[["a","1"],["b","2"]]],"future_column":7}}}}}}}}]}}"#
        ),
    );
    assert_eq!(cache.apply(u, ApplyMode::Delta, &tables).0, 1);
    let u1 = Uuid::parse_str(U1).unwrap();
    let row = cache.row("Logical_Switch", u1).unwrap();
    // one-element set sent as a bare atom is normalized to a set
    assert_eq!(row["ports"], Value::set([Uuid::parse_str(P1).unwrap()]));
    // unknown column kept as it came
    assert_eq!(row["future_column"], Value::from(7i64));
    // modify: set symmetric difference and map per-key rules, in update3
    let u = notice_updates(
        "update3",
        &format!(
            r#"{{"id":null,"method":"update3","params":["m","11111111-1111-1111-1111-111111111111",{{"Logical_Switch":{{"{U1}":{{"modify":{{"ports":["set",[["uuid","{P1}"],["uuid","{P2}"]]],"external_ids":["map",[["a","1"],["b","3"],["c","4"]]],"_version":["uuid","{P2}"]}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    let row = cache.row("Logical_Switch", u1).unwrap();
    assert_eq!(row["ports"], Value::set([Uuid::parse_str(P2).unwrap()]));
    assert_eq!(
        row["external_ids"],
        Value::string_map([("b", "3"), ("c", "4")])
    );
    assert!(!row.contains_key("_version"));
    // modify that empties a set removes the column (default)
    let u = notice_updates(
        "update2",
        &format!(
            r#"{{"id":null,"method":"update2","params":["m",{{"Logical_Switch":{{"{U1}":{{"modify":{{"ports":["uuid","{P2}"]}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    assert!(!cache
        .row("Logical_Switch", u1)
        .unwrap()
        .contains_key("ports"));
    // delete
    let u = notice_updates(
        "update2",
        &format!(
            r#"{{"id":null,"method":"update2","params":["m",{{"Logical_Switch":{{"{U1}":{{"delete":null}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    assert!(cache.row("Logical_Switch", u1).is_none());
    let kinds: Vec<&str> = std::iter::from_fn(|| ev.try_recv().ok())
        .map(|e| match e {
            Event::Insert { .. } => "insert",
            Event::Update { .. } => "update",
            Event::Delete { .. } => "delete",
        })
        .collect();
    assert_eq!(kinds, ["insert", "update", "update", "delete"]);
}

#[test]
fn update_v1_and_bad_updates() {
    let Some(schema) = nb() else { return };
    let cache = Cache::new();
    cache.set_schema(schema);
    let tables = vec!["Logical_Switch".to_string()];
    let u = notice_updates(
        "update",
        &format!(
            r#"{{"id":null,"method":"update","params":["m",{{"Logical_Switch":{{"{U1}":{{"new":{{"name":"a","ports":["set",[]],"other_config":["map",[]]}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    let u1 = Uuid::parse_str(U1).unwrap();
    let row = cache.row("Logical_Switch", u1).unwrap();
    assert_eq!(row.len(), 1, "defaults are not stored: {row:?}");
    let u = notice_updates(
        "update",
        &format!(
            r#"{{"id":null,"method":"update","params":["m",{{"Logical_Switch":{{"{U1}":{{"old":{{"name":"a"}},"new":{{"name":"b"}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    assert_eq!(
        cache.row("Logical_Switch", u1).unwrap()["name"],
        Value::from("b")
    );
    let u = notice_updates(
        "update",
        &format!(
            r#"{{"id":null,"method":"update","params":["m",{{"Logical_Switch":{{"{U1}":{{"old":{{"name":"b"}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &tables);
    assert!(cache.row("Logical_Switch", u1).is_none());

    // Unknown table and modify of an unknown row: typed errors, the rest still applied.
    let u = notice_updates(
        "update2",
        &format!(
            r#"{{"id":null,"method":"update2","params":["m",{{"No_Such":{{"{U1}":{{"insert":{{}}}}}},"Logical_Switch":{{"{P1}":{{"modify":{{"name":"x"}}}},"{P2}":{{"insert":{{"name":"ok"}}}}}}}}]}}"#
        ),
    );
    let (n, errors) = cache.apply(u, ApplyMode::Delta, &tables);
    assert_eq!(n, 1);
    assert!(
        errors.contains(&CacheError::UnknownTable("No_Such".into())),
        "{errors:?}"
    );
    assert!(errors
        .iter()
        .any(|e| matches!(e, CacheError::UnknownRow { table, .. } if table == "Logical_Switch")));

    // Malformed notifications are errors naming the method.
    for bad in [
        r#"{"id":null,"method":"update2","params":["m",{"Logical_Switch":{"not-a-uuid":{"insert":{}}}}]}"#,
        r#"{"id":null,"method":"update2","params":["m",{"Logical_Switch":{"9b5c2b5e-0d4a-4d34-8d0e-000000000001":{"explode":{}}}}]}"#,
        r#"{"id":null,"method":"update2","params":["m"]}"#,
        r#"{"id":null,"method":"update3","params":["m",{}]}"#,
        r#"{"id":null,"method":"update","params":["m",{"T":{"9b5c2b5e-0d4a-4d34-8d0e-000000000001":{"new":{"c":["bogus",1]}}}}]}"#,
    ] {
        let m: serde_json::Value = serde_json::from_str(bad).unwrap();
        let method = m["method"].as_str().unwrap();
        let e = decode_notice(method, bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(method), "{e}");
    }
}

#[test]
fn snapshot_diff_emits_only_changes() {
    let Some(schema) = nb() else { return };
    let cache = Cache::new();
    cache.set_schema(schema);
    let tables = vec![
        "Logical_Switch".to_string(),
        "Logical_Switch_Port".to_string(),
    ];
    let snap = |rows: &str| {
        notice_updates(
            "update2",
            &format!(r#"{{"id":null,"method":"update2","params":["m",{rows}]}}"#),
        )
    };
    cache.apply(
        snap(&format!(r#"{{"Logical_Switch":{{"{U1}":{{"initial":{{"name":"a"}}}},"{P1}":{{"initial":{{"name":"b"}}}}}}}}"#)),
        ApplyMode::Snapshot,
        &tables,
    );
    let mut ev = cache.subscribe();
    // Same contents again: no events at all.
    let (n, _) = cache.apply(
        snap(&format!(r#"{{"Logical_Switch":{{"{U1}":{{"initial":{{"name":"a"}}}},"{P1}":{{"initial":{{"name":"b"}}}}}}}}"#)),
        ApplyMode::Snapshot,
        &tables,
    );
    assert_eq!(n, 0);
    // One changed, one gone, one new; an absent table means empty.
    let (n, _) = cache.apply(
        snap(&format!(r#"{{"Logical_Switch":{{"{U1}":{{"initial":{{"name":"a2"}}}},"{P2}":{{"initial":{{"name":"c"}}}}}}}}"#)),
        ApplyMode::Snapshot,
        &tables,
    );
    assert_eq!(n, 3);
    let mut kinds: Vec<String> = std::iter::from_fn(|| ev.try_recv().ok())
        .map(|e| match e {
            Event::Insert { uuid, .. } => format!("insert {uuid}"),
            Event::Update { uuid, .. } => format!("update {uuid}"),
            Event::Delete { uuid, .. } => format!("delete {uuid}"),
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            format!("delete {P1}"),
            format!("insert {P2}"),
            format!("update {U1}")
        ]
    );
}

#[test]
fn duplicate_columns_in_a_row_keep_the_last_value() {
    let Some(schema) = nb() else { return };
    let cache = Cache::new();
    cache.set_schema(schema);
    let u = notice_updates(
        "update2",
        &format!(
            r#"{{"id":null,"method":"update2","params":["m",{{"Logical_Switch":{{"{U1}":{{"insert":{{"name":"first","ports":["set",[]],"name":"second","_version":["uuid","{P1}"]}}}}}}}}]}}"#
        ),
    );
    cache.apply(u, ApplyMode::Delta, &["Logical_Switch".to_string()]);
    let row = cache
        .row("Logical_Switch", Uuid::parse_str(U1).unwrap())
        .unwrap();
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(row["name"], Value::from("second"));
}
