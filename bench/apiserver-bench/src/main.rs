//! Benchmark of the lab API server (run: `cargo run --release -p apiserver-bench`).
//!
//! The server runs in a child process (this binary re-executed with `--serve`), so its memory
//! is measured alone and client and server compete for the cores as in the lab.
//!
//! 1. Watch fan-out: W raw-HTTP watchers on the pods of a namespace while N pods are created
//!    (32 in flight); per pod, the latency from the create being acknowledged (and from it being
//!    sent) until *every* watcher has seen its ADDED event. Baseline: 1 watcher, 2,000 pods.
//! 2. List: the namespace grown to 50,000 pods; time of one full list (raw JSON, no limit), of
//!    a paginated list (limit=500, as kube-rs watchers do), and the server's RSS around it.
//!    Baseline: the same list at 10,000 pods (scaling ratio, ideal 5.0).
//!
//! Knobs for investigating: `APISERVER_BENCH_QUICK=1` skips the paced 10k run (the table's
//! paced rows then show an unpaced run); `APISERVER_BENCH_HOLD=<secs>` keeps the server with
//! its 50k pods up that long before the table, printing the kubeconfig to probe it with.

use anyhow::{anyhow, bail, Context, Result};
use benchkit::{percentile_of, pid_status_kib};
use bytes::BytesMut;
use http_body_util::BodyExt;
use kube::Client;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "bench";
const IN_FLIGHT: usize = 32;
/// Creates per second for the latency runs: about a quarter of what the server sustains here,
/// so the figure is fan-out latency rather than queueing in a saturated machine.
const RATE: f64 = 500.0;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let dir = args.get(2).context("--serve DIR")?;
        return serve(Path::new(dir));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// Child mode: run the server until stdin closes.
fn serve(dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = lab_apiserver::Server::start(lab_apiserver::Config::new(dir)).await?;
        println!("{}", server.local_addr());
        // The parent closes our stdin to stop us.
        let mut buf = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut buf)).await;
        server.shutdown().await;
        Ok(())
    })
}

struct ServerProc {
    child: std::process::Child,
}

impl ServerProc {
    fn rss_kib(&self) -> u64 {
        pid_status_kib(self.child.id(), "VmRSS")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Closing stdin asks for a clean stop; kill (our own child, by pid) if it lingers.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(dir: &Path) -> Result<ServerProc> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("--serve")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    if line.trim().is_empty() {
        bail!("the server child did not start");
    }
    Ok(ServerProc { child })
}

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

async fn request(
    c: &Client,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, bytes::Bytes)> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))?;
    let resp = c.send(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code, bytes))
}

fn pod_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/app:1.0",
                                 "ports": [{"containerPort": 8080}]}],
                 "nodeName": format!("node-{}", i % 10)}
    }))
    .unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    object: LineObj,
}
#[derive(serde::Deserialize)]
struct LineObj {
    metadata: LineMeta,
}
#[derive(serde::Deserialize)]
struct LineMeta {
    #[serde(default)]
    name: String,
}

/// One raw watch: records when each `bench-<i>` ADDED event arrived (ns since `t0`).
async fn watcher(
    c: Client,
    rv: String,
    n: usize,
    t0: Instant,
    ready: Arc<AtomicU64>,
) -> Result<Vec<u64>> {
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=600"
    ))
    .body(kube::client::Body::empty())?;
    let resp = c.send(req).await?;
    ready.fetch_add(1, Ordering::SeqCst);
    let mut body = resp.into_body();
    let mut seen = vec![0u64; n];
    let mut got = 0;
    let mut buf = BytesMut::new();
    while got < n {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .map_err(|_| anyhow!("watch stalled after {got} of {n} events"))?
            .ok_or_else(|| anyhow!("watch ended after {got} of {n} events"))??;
        let now = t0.elapsed().as_nanos() as u64;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            let ev: Line = serde_json::from_slice(&line[..pos])?;
            if ev.kind != "ADDED" {
                continue;
            }
            if let Some(i) = ev
                .object
                .metadata
                .name
                .strip_prefix("bench-")
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|i| *i < n)
            {
                if seen[i] == 0 {
                    seen[i] = now.max(1);
                    got += 1;
                }
            }
        }
    }
    Ok(seen)
}

/// Creates pods `from..to` with up to `IN_FLIGHT` concurrent requests, at most `rate` per
/// second when given; returns (sent, acked) ns since t0 per pod.
async fn create_pods(
    c: &Client,
    from: usize,
    to: usize,
    t0: Instant,
    rate: Option<f64>,
) -> Result<Vec<(u64, u64)>> {
    let next = Arc::new(AtomicU64::new(from as u64));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let c = c.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= to {
                    break;
                }
                if let Some(r) = rate {
                    let at = start + Duration::from_secs_f64((i - from) as f64 / r);
                    tokio::time::sleep_until(at).await;
                }
                let body = pod_body(i);
                let sent = t0.elapsed().as_nanos() as u64;
                let (code, resp) =
                    request(&c, "POST", &format!("/api/v1/namespaces/{NS}/pods"), body).await?;
                let acked = t0.elapsed().as_nanos() as u64;
                if code != 201 {
                    bail!(
                        "create bench-{i}: {code} {}",
                        String::from_utf8_lossy(&resp)
                    );
                }
                out.push((i, sent, acked));
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut times = vec![(0u64, 0u64); to - from];
    for t in tasks {
        for (i, s, a) in t.await?? {
            times[i - from] = (s, a);
        }
    }
    Ok(times)
}

/// Percentile `p` (in percent) of `sorted`; NaN when empty.
fn pct(sorted: &[f64], p: f64) -> f64 {
    percentile_of(sorted, p / 100.0).unwrap_or(f64::NAN)
}

struct FanOut {
    ack_p50: f64,
    ack_p99: f64,
    send_p50: f64,
    send_p99: f64,
    creates_per_s: f64,
}

async fn fan_out(c: &Client, watchers: usize, n: usize, rate: Option<f64>) -> Result<FanOut> {
    let (code, list) = request(
        c,
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods?limit=1"),
        vec![],
    )
    .await?;
    if code != 200 {
        bail!("list: {code}");
    }
    let v: serde_json::Value = serde_json::from_slice(&list)?;
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let t0 = Instant::now();
    let ready = Arc::new(AtomicU64::new(0));
    let mut ws = Vec::new();
    for _ in 0..watchers {
        ws.push(tokio::spawn(watcher(
            c.clone(),
            rv.clone(),
            n,
            t0,
            ready.clone(),
        )));
    }
    while ready.load(Ordering::SeqCst) < watchers as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let times = create_pods(c, 0, n, t0, rate).await?;
    let create_secs = start.elapsed().as_secs_f64();
    let mut all_seen = vec![0u64; n];
    for w in ws {
        let seen = w.await??;
        for (a, s) in all_seen.iter_mut().zip(seen) {
            *a = (*a).max(s);
        }
    }
    let mut from_ack: Vec<f64> = Vec::with_capacity(n);
    let mut from_send: Vec<f64> = Vec::with_capacity(n);
    for (i, (sent, acked)) in times.iter().enumerate() {
        let seen = all_seen[i];
        // The server publishes an event before it answers the create, so "seen before
        // acknowledged" is common and counts as 0.
        from_ack.push(seen.saturating_sub(*acked) as f64 / 1e6);
        from_send.push(seen.saturating_sub(*sent) as f64 / 1e6);
    }
    from_ack.sort_by(f64::total_cmp);
    from_send.sort_by(f64::total_cmp);
    Ok(FanOut {
        ack_p50: pct(&from_ack, 50.0),
        ack_p99: pct(&from_ack, 99.0),
        send_p50: pct(&from_send, 50.0),
        send_p99: pct(&from_send, 99.0),
        creates_per_s: n as f64 / create_secs,
    })
}

struct ListRun {
    secs: f64,
    mib: f64,
    items: usize,
    rss_before_mib: f64,
    rss_peak_mib: f64,
}

async fn list_all(c: &Client, server: &ServerProc) -> Result<ListRun> {
    let pid = server.child.id();
    let rss_before = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(pid_status_kib(pid, "VmRSS"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let start = Instant::now();
    let (code, body) = request(c, "GET", &format!("/api/v1/namespaces/{NS}/pods"), vec![]).await?;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    if code != 200 {
        bail!("list: {code}");
    }
    let items = count_items(&body)?;
    Ok(ListRun {
        secs,
        mib: body.len() as f64 / 1048576.0,
        items,
        rss_before_mib: rss_before as f64 / 1024.0,
        rss_peak_mib: peak.load(Ordering::SeqCst) as f64 / 1024.0,
    })
}

fn count_items(body: &[u8]) -> Result<usize> {
    #[derive(serde::Deserialize)]
    struct L {
        items: Vec<serde::de::IgnoredAny>,
    }
    Ok(serde_json::from_slice::<L>(body)?.items.len())
}

async fn paged_list(c: &Client) -> Result<(f64, usize)> {
    let start = Instant::now();
    let mut cont = String::new();
    let mut n = 0;
    loop {
        let mut path = format!("/api/v1/namespaces/{NS}/pods?limit=500");
        if !cont.is_empty() {
            path.push_str("&continue=");
            path.push_str(&cont);
        }
        let (code, body) = request(c, "GET", &path, vec![]).await?;
        if code != 200 {
            bail!("paged list: {code}");
        }
        #[derive(serde::Deserialize)]
        struct M {
            #[serde(rename = "continue", default)]
            cont: String,
        }
        #[derive(serde::Deserialize)]
        struct L {
            metadata: M,
            items: Vec<serde::de::IgnoredAny>,
        }
        let l: L = serde_json::from_slice(&body)?;
        n += l.items.len();
        if l.metadata.cont.is_empty() {
            break;
        }
        cont = l.metadata.cont;
    }
    Ok((start.elapsed().as_secs_f64(), n))
}

async fn reset_namespace(c: &Client) -> Result<()> {
    let _ = request(c, "DELETE", &format!("/api/v1/namespaces/{NS}"), vec![]).await?;
    loop {
        let (code, _) = request(c, "GET", &format!("/api/v1/namespaces/{NS}"), vec![]).await?;
        if code == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = serde_json::to_vec(&serde_json::json!({"metadata": {"name": NS}}))?;
    let (code, resp) = request(c, "POST", "/api/v1/namespaces", body).await?;
    if code != 201 {
        bail!(
            "create namespace: {code} {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

async fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    let server = spawn_server(&data)?;
    let c = client(&data.join("kubeconfig")).await?;
    println!("lab API server benchmark (server in a child process; 2-core machine shared by client and server)");

    let quick = std::env::var("APISERVER_BENCH_QUICK").is_ok();
    reset_namespace(&c).await?;
    let base = fan_out(&c, 1, 2_000, Some(RATE)).await?;
    reset_namespace(&c).await?;
    let sat = fan_out(&c, 10, 10_000, None).await?;
    reset_namespace(&c).await?;
    let fan = if quick {
        fan_out(&c, 10, 10_000, None).await?
    } else {
        fan_out(&c, 10, 10_000, Some(RATE)).await?
    };

    let l10 = list_all(&c, &server).await?;
    let t0 = Instant::now();
    create_pods(&c, 10_000, 50_000, t0, None).await?;
    let grow = 40_000.0 / t0.elapsed().as_secs_f64();
    let l50 = list_all(&c, &server).await?;
    let (paged_secs, paged_n) = paged_list(&c).await?;
    if let Some(secs) = std::env::var("APISERVER_BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "holding the server for probing: {}",
            data.join("kubeconfig").display()
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    if l50.items != 50_000 || paged_n != 50_000 {
        bail!("expected 50000 pods, listed {} / {paged_n}", l50.items);
    }

    let ratio = |a: f64, b: f64| {
        if b < 0.01 {
            "—".to_string()
        } else {
            format!("{:.2}", a / b)
        }
    };
    println!();
    println!("| figure | value | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| fan-out p50, create acknowledged → all 10 watchers saw it (10k pods at {RATE:.0}/s) | {:.2} ms | {:.2} ms (1 watcher, 2k pods) | {} | — |",
        fan.ack_p50, base.ack_p50, ratio(fan.ack_p50, base.ack_p50)
    );
    println!(
        "| fan-out p99, create acknowledged → all 10 watchers saw it | {:.2} ms | {:.2} ms | {} | ≤ 5 ms: {} |",
        fan.ack_p99,
        base.ack_p99,
        ratio(fan.ack_p99, base.ack_p99),
        verdict(fan.ack_p99 <= 5.0)
    );
    println!(
        "| fan-out p50 / p99, create sent → all 10 watchers saw it (includes the SQLite commit) | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {} | — |",
        fan.send_p50, fan.send_p99, base.send_p50, base.send_p99, ratio(fan.send_p99, base.send_p99)
    );
    println!(
        "| saturated: fan-out p50 / p99 after ack, {IN_FLIGHT} creates in flight, no pacing | {:.2} / {:.2} ms | — | — | — |",
        sat.ack_p50, sat.ack_p99
    );
    println!(
        "| saturated: creates/s with 10 watchers streaming (each committed before the answer) | {:.0} | — | — | — |",
        sat.creates_per_s
    );
    println!("| creates/s growing 10k → 50k pods, no watchers | {grow:.0} | — | — | — |");
    println!(
        "| list 50,000 pods, one request ({:.0} MiB JSON) | {:.3} s | {:.3} s (10,000 pods) | {:.2} (linear = 5.0) | — |",
        l50.mib, l50.secs, l10.secs, l50.secs / l10.secs.max(1e-9)
    );
    println!("| list 50,000 pods, limit=500 pages | {paged_secs:.3} s | — | — | — |");
    println!(
        "| server RSS during the 50k list: before → peak (delta) | {:.0} → {:.0} MiB (+{:.0} MiB) | +{:.0} MiB (10k list) | — | — |",
        l50.rss_before_mib,
        l50.rss_peak_mib,
        l50.rss_peak_mib - l50.rss_before_mib,
        l10.rss_peak_mib - l10.rss_before_mib
    );
    drop(server);
    Ok(())
}
