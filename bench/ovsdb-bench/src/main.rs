//! `cargo run --release -p ovsdb-bench [-- --quick] [--no-python] [--runs N] [--phases abc]`
//!
//! Against one ovsdb-server with the OVN Northbound schema, compares ovnk's OVSDB client with
//! the floor (the same pre-serialized request over a raw unix socket, reply read only to its
//! end) and with the OVS Python IDL, on:
//!   (a) one transaction inserting 10,000 Logical_Switch_Ports (target: ≤ 1.2× the floor);
//!   (b) 1,000 single-port transactions, one after another (target: ≥ 2× faster than Python);
//!   (c) the initial monitor sync of 100,000 ports (target: ≥ 2× faster than Python) and the
//!       client's heap per cached row (target: ≤ 2× the rows' JSON size).
//! The database is emptied between runs. Prints a table of figures and ratios.

mod alloc;
mod python;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use benchkit::raw::RawConn;
use benchkit::thousands;
use ovn_models::nb::{LogicalSwitch, LogicalSwitchPort};
use ovsdb::{Client, ClientConfig, Model, Remote};
use testkit::OvsdbServer;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

struct Opts {
    bulk: usize,
    single: usize,
    sync: usize,
    runs: usize,
    python: bool,
    phases: String,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        bulk: 10_000,
        single: 1_000,
        sync: 100_000,
        runs: 3,
        python: true,
        phases: "abc".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.bulk = 1_000;
                o.single = 100;
                o.sync = 10_000;
                o.runs = 1;
            }
            "--no-python" => o.python = false,
            "--runs" => o.runs = args.next().context("--runs N")?.parse()?,
            "--phases" => o.phases = args.next().context("--phases abc")?,
            other => {
                bail!("unknown argument {other}; use --quick, --no-python, --runs N, --phases abc")
            }
        }
    }
    o.runs = o.runs.max(1);
    Ok(o)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt_d(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

struct Bench {
    server: OvsdbServer,
    schema: String,
    remote: String,
    raw: RawConn,
    next_id: u64,
}

impl Bench {
    /// Runs a transaction over the raw connection (setup and reset; never timed).
    fn raw_txn(&mut self, txn: &ovsdb::Transaction) -> Result<()> {
        self.next_id += 1;
        let bytes = workload::request_bytes(txn, self.next_id)?;
        self.raw.round_trip(&bytes)?;
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        self.raw_txn(&workload::reset())?;
        // Keep the database file small so every run starts from the same state.
        let _ = self.server.appctl(&["ovsdb-server/compact"]);
        Ok(())
    }

    fn python(&self, phase: &str, n: usize) -> Result<python::PyResult> {
        python::run(&self.remote, &self.schema, phase, n)
    }
}

async fn client(remote: &str, monitor: &[&str]) -> Result<Client> {
    let mut cfg = ClientConfig::new(vec![remote.parse::<Remote>()?], workload::DB);
    cfg.monitor_tables = Some(monitor.iter().map(|t| t.to_string()).collect());
    cfg.models = vec![
        (LogicalSwitch::TABLE, LogicalSwitch::COLUMNS),
        (LogicalSwitchPort::TABLE, LogicalSwitchPort::COLUMNS),
    ];
    cfg.connect_timeout = Duration::from_secs(120);
    cfg.request_timeout = Duration::from_secs(120);
    Ok(Client::connect(cfg).await?)
}

struct Row {
    label: String,
    ovnk: String,
    floor: String,
    python: String,
    ratio: String,
    target: String,
    pass: Option<bool>,
}

fn verdict(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "-",
    }
}

fn main() -> Result<()> {
    let t0 = Instant::now();
    let progress = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let o = parse_args()?;
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", testkit::OVN_NB_SCHEMA]) {
        bail!("ovsdb-server and the OVN NB schema are needed");
    }
    let with_python = o.python && python::available();
    if o.python && !with_python {
        println!(
            "note: {} has no ovs.db.idl; Python IDL column skipped",
            python::PYTHON
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = OvsdbServer::start(testkit::OVN_NB_SCHEMA)?;
    let raw = RawConn::connect(server.socket_path())?;
    let mut b = Bench {
        remote: server.remote(),
        schema: testkit::OVN_NB_SCHEMA.to_string(),
        server,
        raw,
        next_id: 0,
    };
    let mut rows = Vec::new();

    let mut build_a = None;
    let mut bare_b = None;
    if o.phases.contains('a') {
        // (a) one transaction with `bulk` ports.
        progress(&format!(
            "(a) one transaction inserting {} ports ...",
            o.bulk
        ));
        let txn = workload::switch_with_ports(workload::SWITCH, 0, o.bulk);
        let bytes = workload::request_bytes(&txn, 1_000_000)?;
        // Floor and client runs alternate, so that a change in machine load hits both.
        let (mut floor, mut ovnk, mut build) = (Vec::new(), Vec::new(), Vec::new());
        let c = rt.block_on(client(&b.remote, &[]))?;
        for _ in 0..o.runs {
            b.reset()?;
            let t = Instant::now();
            b.raw.round_trip(&bytes)?;
            floor.push(t.elapsed());

            b.reset()?;
            let t = Instant::now();
            let txn = workload::switch_with_ports(workload::SWITCH, 0, o.bulk);
            let built = t.elapsed();
            let res = rt.block_on(c.transact(&txn))?;
            ovnk.push(t.elapsed() - built);
            build.push(built);
            if res.len() != o.bulk + 1 {
                bail!("expected {} results, got {}", o.bulk + 1, res.len());
            }
        }
        drop(c);
        let py = if with_python {
            b.reset()?;
            Some(b.python("bulk", o.bulk)?)
        } else {
            None
        };
        let (ovnk_a, floor_a) = (median(ovnk), median(floor));
        let r = ovnk_a.as_secs_f64() / floor_a.as_secs_f64();
        rows.push(Row {
            label: format!("(a) 1 txn, {} port inserts", thousands(o.bulk)),
            ovnk: fmt_d(ovnk_a),
            floor: fmt_d(floor_a),
            python: py
                .as_ref()
                .map_or("-".into(), |p| fmt_d(Duration::from_secs_f64(p.seconds))),
            ratio: format!("ovnk/floor {r:.2}×"),
            target: "≤ 1.20× floor".into(),
            pass: Some(r <= 1.2),
        });
        let build = median(build);
        build_a = Some((
            build,
            (ovnk_a + build).as_secs_f64() / floor_a.as_secs_f64(),
        ));
    }
    if o.phases.contains('b') {
        // (b) `single` transactions of one port each, sequentially.
        progress(&format!("(b) {} single-port transactions ...", o.single));
        let setup = workload::switch_with_ports(workload::SWITCH, 1_000_000, 0);
        let requests: Vec<Vec<u8>> = (0..o.single)
            .map(|i| workload::request_bytes(&workload::add_port(i), i as u64))
            .collect::<Result<_>>()?;
        let c = rt.block_on(client(
            &b.remote,
            &[LogicalSwitch::TABLE, LogicalSwitchPort::TABLE],
        ))?;
        // The same client work without a monitor: how much of (b) is applying own updates.
        let bare = rt.block_on(client(&b.remote, &[]))?;
        let (mut floor, mut ovnk, mut ovnk_bare) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..o.runs {
            b.reset()?;
            b.raw_txn(&setup)?;
            let t = Instant::now();
            rt.block_on(async {
                for i in 0..o.single {
                    bare.transact(&workload::add_port(i)).await?;
                }
                Ok::<_, ovsdb::Error>(())
            })?;
            ovnk_bare.push(t.elapsed());

            b.reset()?;
            b.raw_txn(&setup)?;
            let t = Instant::now();
            for r in &requests {
                b.raw.round_trip(r)?;
            }
            floor.push(t.elapsed());

            b.reset()?;
            b.raw_txn(&setup)?;
            let t = Instant::now();
            rt.block_on(async {
                for i in 0..o.single {
                    c.transact(&workload::add_port(i)).await?;
                }
                Ok::<_, ovsdb::Error>(())
            })?;
            ovnk.push(t.elapsed());
        }
        drop(bare);
        let (floor_b, ovnk_b) = (median(floor), median(ovnk));
        bare_b = Some(median(ovnk_bare));
        drop(c);
        let py = if with_python {
            b.reset()?;
            b.raw_txn(&setup)?;
            Some(b.python("single", o.single)?)
        } else {
            None
        };
        let py_b = py.as_ref().map(|p| p.seconds / ovnk_b.as_secs_f64());
        rows.push(Row {
            label: format!("(b) {} single-port txns", thousands(o.single)),
            ovnk: fmt_d(ovnk_b),
            floor: fmt_d(floor_b),
            python: py
                .as_ref()
                .map_or("-".into(), |p| fmt_d(Duration::from_secs_f64(p.seconds))),
            ratio: py_b.map_or("-".into(), |r| format!("python/ovnk {r:.1}×")),
            target: "≥ 2× faster than Python".into(),
            pass: py_b.map(|r| r >= 2.0),
        });
    }
    if o.phases.contains('c') {
        // (c) initial monitor sync of `sync` ports (in switches of 10,000).
        progress(&format!("(c) populating {} ports ...", o.sync));
        b.reset()?;
        let per = 10_000.min(o.sync);
        for k in 0..o.sync.div_ceil(per) {
            let n = per.min(o.sync - k * per);
            b.raw_txn(&workload::switch_with_ports(
                &format!("bench{k}"),
                k * per,
                n,
            ))?;
        }
        let _ = b.server.appctl(&["ovsdb-server/compact"]);
        progress("(c) initial sync: floor ...");
        let monitor_req = serde_json::to_vec(&serde_json::json!({
            "id": "m", "method": "monitor_cond_since",
            "params": [workload::DB, "bench",
                       {"Logical_Switch": [{}], "Logical_Switch_Port": [{}]},
                       "00000000-0000-0000-0000-000000000000"]}))?;
        let (mut floor, mut json_bytes) = (Vec::new(), 0);
        let (mut ovnk, mut heap, mut cached) = (Vec::new(), Vec::new(), 0usize);
        for _ in 0..o.runs.min(2) {
            // A fresh connection per run: a monitor id is per connection.
            let mut conn = RawConn::connect(b.server.socket_path())?;
            let t = Instant::now();
            json_bytes = conn.round_trip(&monitor_req)?;
            floor.push(t.elapsed());
            drop(conn);

            progress("(c) initial sync: ovnk ...");
            let before = alloc::live_bytes();
            let t = Instant::now();
            let c = rt.block_on(client(
                &b.remote,
                &[LogicalSwitch::TABLE, LogicalSwitchPort::TABLE],
            ))?;
            ovnk.push(t.elapsed());
            heap.push(alloc::live_bytes() - before);
            cached = c.cache().len(LogicalSwitch::TABLE) + c.cache().len(LogicalSwitchPort::TABLE);
            drop(c);
            // Let the connection task see the drop and free the cache before the next run.
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
            let left = alloc::live_bytes() - before;
            if left > (1 << 20) {
                eprintln!("note: {left} bytes still allocated after dropping the client");
            }
        }
        heap.sort();
        let heap = heap[heap.len() / 2];
        let expected_rows = o.sync + o.sync.div_ceil(per);
        if cached != expected_rows {
            bail!("the cache holds {cached} rows, expected {expected_rows}");
        }
        progress("(c) initial sync: Python IDL ...");
        let py = if with_python {
            Some(b.python("sync", o.sync)?)
        } else {
            None
        };
        let (ovnk_c, floor_c) = (median(ovnk), median(floor));
        let py_c = py.as_ref().map(|p| p.seconds / ovnk_c.as_secs_f64());
        rows.push(Row {
            label: format!("(c) initial sync, {} rows", thousands(cached)),
            ovnk: fmt_d(ovnk_c),
            floor: fmt_d(floor_c),
            python: py
                .as_ref()
                .map_or("-".into(), |p| fmt_d(Duration::from_secs_f64(p.seconds))),
            ratio: py_c.map_or("-".into(), |r| format!("python/ovnk {r:.1}×")),
            target: "≥ 2× faster than Python".into(),
            pass: py_c.map(|r| r >= 2.0),
        });
        let per_row = heap as f64 / cached as f64;
        let json_per_row = json_bytes as f64 / cached as f64;
        let mem_ratio = per_row / json_per_row;
        rows.push(Row {
            label: "    memory per cached row".into(),
            ovnk: format!("{per_row:.0} B"),
            floor: format!("{json_per_row:.0} B JSON"),
            python: py.as_ref().map_or("-".into(), |p| {
                format!(
                    "{:.0} B RSS",
                    p.rss_delta_bytes as f64 / p.rows.max(1) as f64
                )
            }),
            ratio: format!("ovnk/JSON {mem_ratio:.2}×"),
            target: "≤ 2× the JSON".into(),
            pass: Some(mem_ratio <= 2.0),
        });
    }
    let version =
        std::process::Command::new(testkit::find_binary("ovsdb-server").context("ovsdb-server")?)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
    println!();
    println!(
        "OVSDB client benchmark — {version}, OVN_Northbound schema, {} CPUs, median of {} run(s)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.runs
    );
    println!(
        "{:<32} {:>10} {:>12} {:>12}  {:<20} {:<24} verdict",
        "phase", "ovnk", "floor (raw)", "Python IDL", "ratio", "target"
    );
    for r in &rows {
        println!(
            "{:<32} {:>10} {:>12} {:>12}  {:<20} {:<24} {}",
            r.label,
            r.ovnk,
            r.floor,
            r.python,
            r.ratio,
            r.target,
            verdict(r.pass)
        );
    }
    println!();
    if let Some((build, r)) = build_a {
        println!(
            "(a) ovnk = client.transact() of a prebuilt transaction (schema check, encode, send, \
             decode the reply);\n    building it from typed models took {} more ({r:.2}× the floor \
             with it). Floor = the same request bytes, pre-serialized.",
            fmt_d(build)
        );
    }
    if let Some(bare) = bare_b {
        println!(
            "(b) ovnk and the Python IDL both monitor Logical_Switch + Logical_Switch_Port while \
             writing; the floor does not.\n    The same ovnk client without a monitor: {}.",
            fmt_d(bare)
        );
    }
    println!(
        "\
         (c) ovnk = connect + get_schema + monitor_cond_since until the cache holds every row. \
         Memory: live heap growth\n    (counting allocator) / rows; JSON = monitor reply bytes / \
         rows; Python: RSS growth / rows."
    );
    Ok(())
}
