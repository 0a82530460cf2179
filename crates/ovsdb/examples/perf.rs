//! Quick figures for the client against a local ovsdb-server (the project's benchmark
//! proper lives in bench/ovsdb-bench). Run: `cargo run --release -p ovsdb --example perf`.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovsdb::{Atom, Client, ClientConfig, Mutation, Remote, Row, Transaction, Value};

/// Counts live heap bytes, to measure the cache exactly rather than via RSS.
struct Counting;
static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;
fn live() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

struct Srv(Child);
impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &std::path::Path) -> (Srv, std::path::PathBuf) {
    let db = dir.join("nb.db");
    let ok = Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg("/usr/share/ovn/ovn-nb.ovsschema")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ovsdb-tool create failed");
    let sock = dir.join("nb.sock");
    let child = Command::new("ovsdb-server")
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!("--unixctl={}", dir.join("nb.ctl").display()))
        .arg(format!("--log-file={}", dir.join("nb.log").display()))
        .arg("-vconsole:off")
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ovsdb-server");
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    (Srv(child), sock)
}

fn lsp_txn(prefix: &str, n: usize) -> Transaction {
    let mut t = Transaction::new("OVN_Northbound");
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}_{i}");
        let mut r = Row::new();
        let mac = format!(
            "0a:58:0a:{:02x}:{:02x}:{:02x} 10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        r.insert("name".into(), Value::from(name.as_str()));
        r.insert("addresses".into(), Value::set([mac.as_str()]));
        r.insert("port_security".into(), Value::set([mac.as_str()]));
        r.insert(
            "external_ids".into(),
            Value::string_map([("namespace", "default"), ("pod", name.as_str())]),
        );
        r.insert(
            "options".into(),
            Value::string_map([
                ("requested-chassis", "node1"),
                ("iface-id-ver", "8d5b6c2e-1b1e-4c1d-9a4e-5b5f3c0a9f00"),
            ]),
        );
        let un = format!("p{i}");
        t.insert_named("Logical_Switch_Port", un.clone(), r);
        names.push(Atom::NamedUuid(un));
    }
    let mut ls = Row::new();
    ls.insert("name".into(), Value::from(prefix));
    t.insert_named("Logical_Switch", "ls", ls);
    t.mutate(
        "Logical_Switch",
        vec![ovsdb::Condition::new(
            "_uuid",
            ovsdb::Function::Eq,
            Atom::NamedUuid("ls".into()),
        )],
        vec![Mutation::insert("ports", Value::Set(names))],
    );
    t
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_srv, sock) = server(dir.path());
    let remote = Remote::Unix(sock.clone());
    let mut cfg = ClientConfig::new(vec![remote.clone()], "OVN_Northbound");
    cfg.monitor_tables = Some(vec![]);
    let c = Client::connect(cfg).await.expect("connect");

    // 1. one transaction inserting 10,000 ports: client vs raw pre-serialized bytes.
    {
        let t = lsp_txn("a", 10_000);
        let t0 = Instant::now();
        c.transact(&t).await.expect("txn");
        let ours = t0.elapsed();
        let t = lsp_txn("b", 10_000);
        let mut raw = Vec::new();
        raw.extend_from_slice(br#"{"id":1,"method":"transact","params":"#);
        let mut params = vec![serde_json::json!("OVN_Northbound")];
        for op in &t.operations {
            params.push(serde_json::to_value(op).expect("op"));
        }
        serde_json::to_writer(&mut raw, &params).expect("params");
        raw.extend_from_slice(b"}");
        let sock = sock.clone();
        let floor = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
            let t0 = Instant::now();
            s.write_all(&raw).expect("write");
            let mut buf = vec![0u8; 1 << 20];
            let mut f = ovsdb::Framer::new(1 << 30);
            loop {
                let n = s.read(&mut buf).expect("read");
                f.extend(&buf[..n]);
                if f.next_frame().expect("frame").is_some() {
                    break;
                }
            }
            t0.elapsed()
        })
        .join()
        .expect("floor thread");
        println!(
            "10k-LSP txn: client {ours:?}, raw floor {floor:?}, ratio {:.2}",
            ours.as_secs_f64() / floor.as_secs_f64()
        );
    }

    // 2. 1,000 single-row transactions, one after another.
    let t0 = Instant::now();
    for i in 0..1000 {
        let mut t = Transaction::new("OVN_Northbound");
        let mut r = Row::new();
        r.insert("name".into(), Value::from(format!("single{i}")));
        t.insert("Logical_Switch", r);
        c.transact(&t).await.expect("txn");
    }
    println!("1000 single-row txns: {:?}", t0.elapsed());

    // 3. initial monitor sync of ~100k rows.
    for b in 0..8 {
        c.transact(&lsp_txn(&format!("bulk{b}"), 10_000))
            .await
            .expect("bulk");
    }
    let wire = phases(remote.clone()).await;
    let before = rss_kib();
    let live0 = live();
    let t0 = Instant::now();
    let mut cfg = ClientConfig::new(vec![remote], "OVN_Northbound");
    cfg.monitor_tables = Some(vec!["Logical_Switch_Port".into(), "Logical_Switch".into()]);
    cfg.connect_timeout = Duration::from_secs(120);
    let m = Client::connect(cfg).await.expect("monitor");
    let n = m.cache().len("Logical_Switch_Port");
    println!("initial sync of {n} LSPs: {:?}", t0.elapsed());
    let after = rss_kib();
    let heap = live() - live0;
    let json: usize = m
        .cache()
        .table_rows("Logical_Switch_Port")
        .iter()
        .map(|(_, r)| serde_json::to_vec(&**r).map(|v| v.len()).unwrap_or(0))
        .sum();
    println!(
        "cache heap {} KiB; monitor reply {} KiB (ratio {:.2}); rows re-serialized {} KiB (ratio {:.2})",
        heap / 1024,
        wire / 1024,
        heap as f64 / wire as f64,
        json / 1024,
        heap as f64 / json as f64
    );
    println!(
        "cache RSS growth ~{} KiB for rows of {} KiB JSON: ratio {:.2}",
        after - before,
        json / 1024,
        (after - before) as f64 * 1024.0 / json as f64
    );
}

async fn phases(remote: Remote) -> usize {
    if let Remote::Unix(p) = &remote {
        let p = p.clone();
        let floor = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            let t0 = Instant::now();
            s.write_all(br#"{"id":1,"method":"monitor_cond","params":["OVN_Northbound","x",{"Logical_Switch_Port":[{}],"Logical_Switch":[{}]}]}"#).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut f = ovsdb::Framer::new(1 << 30);
            let mut first = None;
            loop {
                let n = s.read(&mut buf).unwrap();
                first.get_or_insert(t0.elapsed());
                f.extend(&buf[..n]);
                if f.next_frame().unwrap().is_some() {
                    break;
                }
            }
            (first, t0.elapsed())
        })
        .join()
        .unwrap();
        println!(
            "phase: raw floor: first byte after {:?}, whole reply {:?}",
            floor.0, floor.1
        );
    }
    let s = ovsdb::Stream::connect(&remote, None).await.unwrap();
    let (conn, _n) = ovsdb::Connection::start(s, ovsdb::RpcConfig::default());
    let t0 = Instant::now();
    let frame = conn
        .call_raw("monitor_cond", &serde_json::json!(["OVN_Northbound", "x", {"Logical_Switch_Port": [{}], "Logical_Switch": [{}]}]))
        .await
        .unwrap();
    println!(
        "phase: reply of {} bytes received in {:?}",
        frame.len(),
        t0.elapsed()
    );
    let t0 = Instant::now();
    let u: ovsdb::update::TableUpdates<ovsdb::update::RowUpdate2> =
        ovsdb::rpc::decode_result("m", &frame).unwrap();
    println!("phase: decoded in {:?}", t0.elapsed());
    let cache = ovsdb::Cache::new();
    let t0 = Instant::now();
    cache.apply(
        ovsdb::update::Updates::V2(u),
        ovsdb::ApplyMode::Snapshot,
        &["Logical_Switch_Port".into(), "Logical_Switch".into()],
    );
    println!("phase: applied in {:?}", t0.elapsed());
    frame.len()
}
