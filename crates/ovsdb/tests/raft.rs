//! A 3-member Raft NB cluster whose leader is killed while a writer commits 1,000
//! transactions: nothing acknowledged is lost, nothing is applied twice, and the writer
//! continues within 5 s.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ovsdb::{
    Client, ClientConfig, Condition, ErrorKind, Row, Transaction, TxnError, Value, WaitUntil,
};

fn tool(args: &[&str]) {
    let out = Command::new("ovsdb-tool")
        .args(args)
        .output()
        .expect("ovsdb-tool");
    assert!(
        out.status.success(),
        "ovsdb-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Insert of a uniquely named switch, guarded so that a second delivery cannot apply twice:
/// the `wait` fails ("timed out") when the name already exists.
fn guarded_insert(name: &str) -> Transaction {
    let mut t = Transaction::new("OVN_Northbound");
    t.wait(
        "Logical_Switch",
        vec![Condition::eq("name", name)],
        vec!["name".into()],
        WaitUntil::Equal,
        vec![],
        Some(0),
    );
    let mut row = Row::new();
    row.insert("name".into(), Value::from(name));
    t.insert("Logical_Switch", row);
    t
}

/// Three NB servers forming one Raft cluster over unix sockets in `d`.
fn cluster(d: &Path) -> Vec<Server> {
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    tool(&[
        "create-cluster",
        &p("s1.db"),
        NB_SCHEMA,
        &format!("unix:{}", p("r1.raft")),
    ]);
    for i in 2..=3 {
        tool(&[
            "join-cluster",
            &p(&format!("s{i}.db")),
            "OVN_Northbound",
            &format!("unix:{}", p(&format!("r{i}.raft"))),
            &format!("unix:{}", p("r1.raft")),
        ]);
    }
    let servers: Vec<Server> = (1..=3)
        .map(|i| {
            Server::with_db(
                d,
                d.join(format!("s{i}.db")),
                &format!("s{i}"),
                vec![],
                vec![],
            )
        })
        .collect();
    // Joining takes a moment; a test that removes a member before the others joined would
    // leave no quorum. ovs-appctl is only the test's witness here.
    let t0 = std::time::Instant::now();
    for s in &servers {
        loop {
            let out = Command::new("ovs-appctl")
                .arg("-t")
                .arg(s.sock.with_extension("ctl"))
                .args(["cluster/status", "OVN_Northbound"])
                .output()
                .expect("ovs-appctl");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Status: cluster member")
                && text.contains("Leader: ")
                && !text.contains("Leader: unknown")
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "cluster did not form:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    servers
}

fn leader_cfg(remotes: Vec<ovsdb::Remote>) -> ClientConfig {
    let mut cfg = ClientConfig::new(remotes, "OVN_Northbound");
    cfg.leader_only = true;
    cfg.monitor_tables = Some(vec!["Logical_Switch".into()]);
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.connect_timeout = Duration::from_secs(20);
    cfg
}

/// The leader hands over leadership without dying (it leaves the cluster): the client,
/// watching `_Server.Database`, moves to the new leader and keeps writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_client_follows_leader_change() {
    if !have_tools("raft_client_follows_leader_change") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let servers = cluster(dir.path());
    let remotes: Vec<ovsdb::Remote> = servers.iter().map(|s| s.remote()).collect();
    let c = Client::connect(leader_cfg(remotes.clone()))
        .await
        .expect("connect");
    c.transact(&guarded_insert("before")).await.unwrap();
    let old = c.current_remote().unwrap();
    let idx = remotes.iter().position(|r| *r == old).unwrap();
    let ctl = servers[idx].sock.with_extension("ctl");
    let out = Command::new("ovs-appctl")
        .arg("-t")
        .arg(&ctl)
        .args(["cluster/leave", "OVN_Northbound"])
        .output()
        .expect("ovs-appctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = std::time::Instant::now();
    while c.current_remote().is_none_or(|r| r == old) {
        if t0.elapsed() > Duration::from_secs(15) {
            let mut diag = format!(
                "still on {:?} (old leader {old}), connects {}\n",
                c.current_remote(),
                c.connect_count()
            );
            for s in &servers {
                let out = Command::new("ovs-appctl")
                    .arg("-t")
                    .arg(s.sock.with_extension("ctl"))
                    .args(["cluster/status", "OVN_Northbound"])
                    .output()
                    .unwrap();
                diag.push_str(&format!(
                    "{}: {}{}\n",
                    s.sock.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            panic!("client did not move to a new leader:\n{diag}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.transact_retry(&guarded_insert("after"), 50)
        .await
        .unwrap();
    assert_eq!(c.cache().len("Logical_Switch"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_killed_during_1000_transactions() {
    if !have_tools("raft_leader_killed_during_1000_transactions") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let servers = cluster(dir.path());
    let remotes: Vec<ovsdb::Remote> = servers.iter().map(|s| s.remote()).collect();
    let socks: Vec<std::path::PathBuf> = servers.iter().map(|s| s.sock.clone()).collect();
    let servers = Arc::new(Mutex::new(servers));
    let c = Client::connect(leader_cfg(remotes.clone()))
        .await
        .expect("connect to the cluster leader");

    const N: usize = 1000;
    const KILL_AT: usize = 300;
    let mut acked = Vec::with_capacity(N);
    let mut max_gap = Duration::ZERO;
    let mut last_ack = Instant::now();
    let mut retries = 0;
    // The killer runs beside the writer so that the kill lands while a transaction is in
    // flight, not neatly between two.
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (progress, servers, c) = (progress.clone(), servers.clone(), c.clone());
        let remotes = remotes.clone();
        std::thread::spawn(move || {
            while progress.load(Ordering::SeqCst) < KILL_AT {
                std::thread::sleep(Duration::from_micros(200));
            }
            let leader = c.current_remote().expect("connected to a leader");
            let idx = remotes.iter().position(|r| *r == leader).unwrap();
            servers.lock().unwrap()[idx].kill();
            idx
        })
    };
    for i in 0..N {
        let name = format!("w{i:04}");
        let t = guarded_insert(&name);
        let mut retried = false;
        loop {
            match c.transact(&t).await {
                Ok(_) => break,
                Err(ovsdb::Error::Txn(TxnError::Operation {
                    index: 0,
                    ref error,
                    ..
                })) if retried && error.kind == ErrorKind::TimedOut => {
                    // The earlier attempt did commit: the guard says the row exists.
                    break;
                }
                Err(e) if e.is_transient() => {
                    retried = true;
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("transaction {name}: {e}"),
            }
        }
        acked.push(name);
        progress.store(i + 1, Ordering::SeqCst);
        max_gap = max_gap.max(last_ack.elapsed());
        last_ack = Instant::now();
    }
    let killed = killer.join().unwrap();
    println!("raft: {N} txns, {retries} retries, longest pause between commits {max_gap:?}");
    assert!(
        max_gap < Duration::from_secs(5),
        "writer stalled for {max_gap:?}"
    );

    // Witness: read from a surviving member with ovsdb-client.
    let alive = (killed + 1) % 3;
    let rows = witness_select(&socks[alive], "OVN_Northbound", "Logical_Switch");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.as_array().unwrap() {
        *counts
            .entry(r["name"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for name in &acked {
        assert_eq!(
            counts.get(name).copied(),
            Some(1),
            "{name} lost or duplicated"
        );
    }
    assert_eq!(counts.len(), N);
    // The client's cache (resynced after the failover) agrees.
    eventually(10, "cache has every row", || {
        c.cache().len("Logical_Switch") == N
    })
    .await;
    // In a cluster the monitor resumed from the last transaction id after the failover.
    assert!(
        c.resume_count() >= 1,
        "monitor was not resumed with monitor_cond_since"
    );
}
