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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use benchkit::{controller, desired_groups, node, percentile, status_kib, FloorDb, MemKube};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ovnk_controller::rows::{Owner, OwnerKind};
use ovnk_controller::{kube_io::initial_sync, Controller};

/// Keys per transaction: this variable overrides the controller's default (500).
const BATCH_ENV: Option<&str> = Some("CONTROLLER_BENCH_BATCH");

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

async fn run_size(nodes: usize, pods: usize) -> Result<()> {
    println!("== {nodes} nodes, {pods} pods ==");
    let namespaces: Vec<String> = (0..100).map(|i| format!("ns{i}")).collect();
    let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let kube = Arc::new(MemKube::default());
    let rss0 = status_kib("VmHWM");

    // Topology first (nodes), then the fresh pod burst.
    let ctl = controller(&server.remote(), kube.clone(), BATCH_ENV).await?;
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
    let rss = status_kib("VmHWM");
    println!(
        "peak RSS {} MiB; {:.1} KiB per pod over the start (target ≤ 20 KiB)",
        rss / 1024,
        (rss.saturating_sub(rss0)) as f64 / pods as f64
    );
    drop(ctl);

    // Resync: every pod annotated, empty NB.
    let server2 = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let ctl2 = controller(&server2.remote(), kube.clone(), BATCH_ENV).await?;
    let node_objs = kube.nodes(nodes)?;
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
    let floor_db = FloorDb::start().await?;
    let plan = floor_db.plan(&desired_groups(&ctl2, |_| true));
    let n_ops = plan.ops.len();
    let floor = floor_db.transact(plan.ops).await?;
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
