//! `cargo run --release -p controller-bench [-- 100x10000 500x50000]`
//!
//! A synthetic cluster (N nodes, P pods in 100 namespaces) against a real ovsdb-server with
//! the NB schema (no northd: this measures the controller and the database). Kubernetes
//! writes go to an in-memory stand-in so the figures are the controller's own. Per size:
//! * fresh: pods without annotations arrive at once → time until every LSP is committed,
//!   pods/s, transactions;
//! * single-pod latency: one new pod at a time, event → its LSP committed (p50/p99);
//! * resync: a new controller on an empty NB with every pod already annotated → time to
//!   converged NB, compared with ovsdb-server committing the same rows in one raw
//!   transaction (the floor);
//! * peak RSS of the process (VmHWM), per pod.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ovnk_annotations::{self as ann, GatewayMode, L3Gateway, L3GatewayConfig};
use ovnk_controller::rows::{Owner, OwnerKind};
use ovnk_controller::{kube_io::initial_sync, Controller, ControllerConfig, KubeOps};

#[derive(Default)]
struct MemKube {
    annotations: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl KubeOps for MemKube {
    fn annotate_node(
        &self,
        name: &str,
        a: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        if let Ok(mut m) = self.annotations.lock() {
            m.entry(format!("node/{name}")).or_default().extend(a);
        }
        async { Ok(()) }.boxed()
    }
    fn annotate_pod(
        &self,
        ns: &str,
        name: &str,
        _uid: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        if let Ok(mut m) = self.annotations.lock() {
            m.entry(format!("pod/{ns}/{name}"))
                .or_default()
                .insert(key.to_string(), value);
        }
        async { Ok(()) }.boxed()
    }
    fn warn(&self, o: ObjectReference, reason: &str, message: String) -> BoxFuture<'static, ()> {
        eprintln!("event {:?}/{:?}: {reason}: {message}", o.kind, o.name);
        async {}.boxed()
    }
}

impl MemKube {
    fn get(&self, key: &str) -> BTreeMap<String, String> {
        self.annotations
            .lock()
            .map(|m| m.get(key).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn node(i: usize, extra: BTreeMap<String, String>) -> Result<Node> {
    let name = format!("node{i}");
    let gw = L3Gateway {
        mode: GatewayMode::Shared,
        bridge_id: Some("breth0".into()),
        interface_id: Some(format!("breth0_{name}")),
        mac_address: ann::MacAddr([0x0a, 0, 0, 0, (i >> 8) as u8, i as u8]),
        ip_addresses: vec![format!("172.16.{}.{}/16", i / 250, i % 250 + 2).parse()?],
        next_hops: vec!["172.16.255.254".parse()?],
        node_port_enable: true,
        vlan_id: None,
        egress_gw: None,
    };
    let mut m = BTreeMap::new();
    m.insert("default".to_string(), L3GatewayConfig::Enabled(gw));
    let mut a = extra;
    a.insert(ann::NODE_CHASSIS_ID.into(), format!("chassis-{i}"));
    a.insert(
        ann::L3_GATEWAY_CONFIG.into(),
        ann::render_l3_gateway_config(&m),
    );
    Ok(Node {
        metadata: ObjectMeta {
            name: Some(name),
            uid: Some(format!("node-uid-{i}")),
            annotations: Some(a),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn pod(i: usize, nodes: usize, extra: BTreeMap<String, String>) -> Pod {
    let ns = format!("ns{}", i % 100);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod{i}")),
            namespace: Some(ns),
            uid: Some(format!("pod-uid-{i}")),
            annotations: Some(extra),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node{}", i % nodes)),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_key(i: usize) -> String {
    format!("pod/ns{}/pod{i}", i % 100)
}

fn rss_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn controller(nb: &str, kube: Arc<MemKube>) -> Result<Arc<Controller>> {
    let mut cfg = ControllerConfig::with_cluster_subnets(&["10.128.0.0/9/24"]);
    cfg.nb_remotes = vec![nb.to_string()];
    // Keys per transaction; env CONTROLLER_BENCH_BATCH overrides the default (500).
    if let Some(b) = std::env::var("CONTROLLER_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.max_batch = b;
    }
    let ops: Arc<dyn KubeOps> = kube;
    ovnk_controller::build(&cfg, ops)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// Where the time went: planning (desired rows + diff), waiting for NB replies, and
/// applying monitor events to the controller's cache.
fn breakdown(ctl: &Controller) {
    let ms = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "  breakdown: plan {:.0} ms, NB round trips {:.0} ms, cache updates {:.0} ms",
        ms(&ctl.plan_nanos),
        ms(&ctl.nb().txn_nanos),
        ms(&ctl.nb().cache_nanos)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run_size(nodes: usize, pods: usize) -> Result<()> {
    println!("== {nodes} nodes, {pods} pods ==");
    let namespaces: Vec<String> = (0..100).map(|i| format!("ns{i}")).collect();
    let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let kube = Arc::new(MemKube::default());
    let rss0 = rss_hwm_kib();

    // Topology first (nodes), then the fresh pod burst.
    let ctl = controller(&server.remote(), kube.clone()).await?;
    let node_objs: Vec<Node> = (0..nodes)
        .map(|i| node(i, BTreeMap::new()))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    initial_sync(&ctl, &node_objs, &[], &namespaces);
    ctl.settle().await;
    println!(
        "nodes: {nodes} programmed in {:.2?} ({} transactions)",
        t.elapsed(),
        ctl.nb().transaction_count()
    );
    let tx0 = ctl.nb().transaction_count();
    let t = Instant::now();
    for i in 0..pods {
        ctl.pod_applied(&pod(i, nodes, BTreeMap::new()));
    }
    ctl.settle().await;
    let fresh = t.elapsed();
    let lsps = ctl.nb().cache().len("Logical_Switch_Port");
    breakdown(&ctl);
    println!(
        "fresh: {pods} pods converged in {fresh:.2?} = {:.0} pods/s, {} transactions (LSPs in NB: {lsps})",
        pods as f64 / fresh.as_secs_f64(),
        ctl.nb().transaction_count() - tx0
    );

    // Single-pod latency at this size: event → LSP committed (reconciler loop running).
    let committed = Arc::new(AtomicUsize::new(0));
    let c2 = committed.clone();
    ctl.set_commit_hook(move |owners: &[Owner]| {
        if owners.iter().any(|o| o.kind == OwnerKind::Pod) {
            c2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let loop_task = tokio::spawn(ctl.clone().run_reconciler());
    let mut lat = Vec::new();
    for k in 0..200 {
        let i = pods + k;
        let before = committed.load(Ordering::SeqCst);
        let t = Instant::now();
        ctl.pod_applied(&pod(i, nodes, BTreeMap::new()));
        while committed.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
            if t.elapsed() > Duration::from_secs(10) {
                return Err(anyhow!("pod {i} not committed within 10 s"));
            }
        }
        lat.push(t.elapsed());
    }
    loop_task.abort();
    lat.sort();
    println!(
        "single pod: event → LSP committed p50 {:.2?} p99 {:.2?} (200 pods, target p99 ≤ 20 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let rss = rss_hwm_kib();
    println!(
        "peak RSS {} MiB; {:.1} KiB per pod over the start (target ≤ 20 KiB)",
        rss / 1024,
        (rss.saturating_sub(rss0)) as f64 / pods as f64
    );
    drop(ctl);

    // Resync: every pod annotated, empty NB.
    let server2 = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let ctl2 = controller(&server2.remote(), kube.clone()).await?;
    let node_objs: Vec<Node> = (0..nodes)
        .map(|i| node(i, kube.get(&format!("node/node{i}"))))
        .collect::<Result<_>>()?;
    let pod_objs: Vec<Pod> = (0..pods + 200)
        .map(|i| pod(i, nodes, kube.get(&pod_key(i))))
        .collect();
    let t = Instant::now();
    initial_sync(&ctl2, &node_objs, &pod_objs, &namespaces);
    ctl2.settle().await;
    let resync = t.elapsed();
    println!(
        "resync: converged in {resync:.2?}, {} transactions",
        ctl2.nb().transaction_count()
    );
    breakdown(&ctl2);

    // The floor: the same rows in one raw transaction on another empty server.
    let server3 = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let cfg = ControllerConfig {
        nb_remotes: vec![server3.remote()],
        ..Default::default()
    };
    let raw = ovnk_controller::nb::Nb::connect(&cfg, "default-network-controller")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let groups: Vec<_> = {
        let idx = ctl2.index();
        idx.all_owners()
            .into_iter()
            .map(|o| {
                let d = idx.desired(&o);
                (o, d)
            })
            .collect()
    };
    let plan = {
        let cache = raw.cache();
        ovnk_controller::engine::plan(&cache, &groups)
    };
    let n_ops = plan.ops.len();
    let t = Instant::now();
    raw.transact(plan.ops)
        .await
        .map_err(|e| anyhow!("raw transaction: {e}"))?;
    let floor = t.elapsed();
    println!(
        "raw: one transaction of the same {} operations committed in {floor:.2?}; resync/raw = {:.2}× (target ≤ 1.5×)",
        n_ops,
        resync.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", testkit::OVN_NB_SCHEMA]) {
        return Ok(());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<(usize, usize)> = if args.is_empty() {
        vec![(100, 10_000), (500, 50_000)]
    } else {
        args.iter()
            .map(|a| {
                let (n, p) = a
                    .split_once('x')
                    .ok_or_else(|| anyhow!("size {a:?}: want NODESxPODS"))?;
                Ok((n.parse()?, p.parse()?))
            })
            .collect::<Result<_>>()?
    };
    for (n, p) in sizes {
        run_size(n, p).await?;
    }
    Ok(())
}
