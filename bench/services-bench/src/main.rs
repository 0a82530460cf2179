//! `cargo run --release -p services-bench [-- --services N --endpoints M --nodes K --runs R]`
//!
//! Services at scale against a real ovsdb-server with the OVN NB schema (no northd: this
//! measures the controller and the database). Kubernetes writes go to an in-memory
//! stand-in. A synthetic cluster of K nodes (default 5) with N Services (default 5,000)
//! of M endpoints each (default 5) spread over the nodes; every 10th Service is a NodePort
//! (so it also has one balancer per node), the rest ClusterIP. Figures:
//! * (a) cold start: the node topology already programmed, every Service and EndpointSlice
//!   arrives at once (`Controller::service_applied` / `slice_applied`) → every
//!   Load_Balancer committed; against the floor: the same operations (inserts of the same
//!   Load_Balancer rows and their attachment to the group, switches and routers) sent as
//!   one pre-serialized JSON-RPC `transact` over a plain unix socket to a server in the
//!   same starting state. Cold start and floor alternate `--runs` times (default 3);
//!   the medians are the figures. Also: a restarted controller (`apply_initial` with nodes,
//!   Services and slices) on an empty NB.
//! * (b) endpoint change → NB: one EndpointSlice changes (an endpoint added, or removed
//!   again) while the reconcile loop runs; time until the commit hook reports that Service
//!   committed; 200 changes, p50/p99 (target p99 ≤ 20 ms).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use benchkit::raw::RawConn;
use benchkit::{controller, desired_groups, percentile, FloorDb, MemKube};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ovnk_controller::kube_io::{apply_initial, initial_sync, InitialLists};
use ovnk_controller::rows::{Owner, OwnerKind};
use ovnk_controller::Controller;

const LB: &str = "Load_Balancer";

/// Inconsistencies seen while measuring (the controller's cache behind what the server
/// committed): reported at the end, after the figures, and the run fails.
static PROBLEMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn problem(p: String) {
    eprintln!("PROBLEM: {p}");
    if let Ok(mut v) = PROBLEMS.lock() {
        v.push(p);
    }
}
const NAMESPACES: usize = 50;

// ------------------------------------------------------------------ the cluster

#[derive(Clone, Copy)]
struct Size {
    nodes: usize,
    services: usize,
    endpoints: usize,
    /// Cold start / floor pairs.
    runs: usize,
}

fn ns_of(i: usize) -> String {
    format!("ns{}", i % NAMESPACES)
}

fn is_node_port(i: usize) -> bool {
    i.is_multiple_of(10)
}

fn service(i: usize) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
    let np = is_node_port(i);
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc{i}")),
            namespace: Some(ns_of(i)),
            uid: Some(format!("svc-uid-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(if np { "NodePort" } else { "ClusterIP" }.into()),
            cluster_ip: Some(ip.to_string()),
            cluster_ips: Some(vec![ip.to_string()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                node_port: np.then_some(30000 + (i / 10) as i32 % 2768),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Endpoint `e` of service `i`: a pod address and the node it runs on.
fn endpoint(size: Size, i: usize, e: usize) -> Endpoint {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * 8 + e) as u32 + 2);
    Endpoint {
        addresses: vec![ip.to_string()],
        node_name: Some(format!("node{}", (i + e) % size.nodes)),
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        ..Default::default()
    }
}

fn slice(size: Size, i: usize, endpoints: usize) -> EndpointSlice {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/service-name".to_string(), format!("svc{i}"));
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc{i}-ipv4-0")),
            namespace: Some(ns_of(i)),
            labels: Some(labels),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some((0..endpoints).map(|e| endpoint(size, i, e)).collect()),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

fn namespaces() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("ns{i}")).collect()
}

fn backend_count(vips: &str) -> usize {
    // `vips` as ovn-nbctl prints it (`"vip"="b1,b2"`) or one value from the cache (`b1,b2`).
    let list = vips.rsplit('=').next().unwrap_or(vips).trim_matches('"');
    list.split(',').filter(|b| !b.is_empty()).count()
}

/// The backends of a balancer's (single) VIP in the controller's cache.
fn cache_backends(ctl: &Controller, name: &str) -> Option<String> {
    let cache = ctl.nb().cache();
    let found = cache
        .rows(LB)
        .find(|(_, r)| r.get("name").and_then(|v| v.as_str()) == Some(name))
        .map(|(_, r)| {
            r.get("vips")
                .map(|v| v.to_string_map())
                .and_then(|m| m.into_values().next())
                .unwrap_or_default()
        });
    found
}

/// Every Load_Balancer row the synthetic cluster should have, by name.
fn expected_lb_names(size: Size) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..size.services {
        let p = format!("Service_{}/svc{i}_TCP", ns_of(i));
        v.push(format!("{p}_cluster"));
        if is_node_port(i) {
            v.extend((0..size.nodes).map(|n| format!("{p}_node_router+switch_node{n}")));
        }
    }
    v
}

/// name → vips of every Load_Balancer, read by `ovn-nbctl` (diagnostics only).
fn nbctl_lbs(server: &testkit::OvsdbServer) -> Result<BTreeMap<String, String>> {
    let out = std::process::Command::new("ovn-nbctl")
        .arg(format!("--db=unix:{}", server.socket_path().display()))
        .args([
            "--format=csv",
            "--data=bare",
            "--no-headings",
            "--columns=name,vips",
            "list",
            "Load_Balancer",
        ])
        .output()
        .context("ovn-nbctl")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

async fn wait_for_lbs(nb: &ovnk_controller::nb::Nb, want: usize, what: &str) -> Result<()> {
    let t = Instant::now();
    while nb.cache().len(LB) < want {
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "{what}: {} Load_Balancer rows in the cache, expected {want}",
                nb.cache().len(LB)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A controller with the node topology programmed; then every Service and slice at once,
/// timed until every Load_Balancer is committed.
async fn cold_start(
    size: Size,
    kube: &Arc<MemKube>,
    nss: &[String],
    services: &[Service],
    slices: &[EndpointSlice],
    want_lbs: usize,
) -> Result<(Arc<Controller>, testkit::OvsdbServer, Duration)> {
    let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let ctl = controller(&server.remote(), kube.clone(), None).await?;
    let node_objs = kube.nodes(size.nodes)?;
    initial_sync(&ctl, &node_objs, &[], nss);
    ctl.settle().await;
    let tx0 = ctl.nb().transaction_count();
    let (plan0, txn0, cache0) = (
        ctl.plan_nanos.load(Ordering::Relaxed),
        ctl.nb().txn_nanos.load(Ordering::Relaxed),
        ctl.nb().cache_nanos.load(Ordering::Relaxed),
    );
    let t = Instant::now();
    for s in services {
        ctl.service_applied(s);
    }
    for s in slices {
        ctl.slice_applied(s);
    }
    ctl.settle().await;
    let cold = t.elapsed();
    let txns = ctl.nb().transaction_count() - tx0;
    let lbs = ctl.nb().cache().len(LB);
    if lbs != want_lbs {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        problem(format!(
            "cold start: {lbs} Load_Balancer rows in the controller's cache after settle(), \
             expected {want_lbs}; ovn-nbctl 1 s later: {} rows",
            nbctl_lbs(&server)?.len()
        ));
    }
    let since = |now: u64, before: u64| now.saturating_sub(before) as f64 / 1e6;
    println!(
        "    cold start: {} services + slices → {lbs} Load_Balancer rows committed in {} = {:.0} services/s, {txns} transactions (planning {:.0} ms, NB round trips {:.0} ms, cache updates {:.0} ms)",
        services.len(),
        secs(cold),
        services.len() as f64 / cold.as_secs_f64(),
        since(ctl.plan_nanos.load(Ordering::Relaxed), plan0),
        since(ctl.nb().txn_nanos.load(Ordering::Relaxed), txn0),
        since(ctl.nb().cache_nanos.load(Ordering::Relaxed), cache0),
    );
    Ok((ctl, server, cold))
}

/// The floor: a server in the same starting state (topology, no balancers), then the
/// operations the controller's engine plans for every Service's rows, as one
/// pre-serialized `transact` over a plain unix socket.
async fn floor(
    size: Size,
    kube: &Arc<MemKube>,
    nss: &[String],
    ctl: &Controller,
    want_lbs: usize,
) -> Result<Duration> {
    let floor_server =
        testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    {
        let topo = controller(&floor_server.remote(), Arc::new(MemKube::default()), None).await?;
        let nodes_annotated = kube.nodes(size.nodes)?;
        initial_sync(&topo, &nodes_annotated, &[], nss);
        topo.settle().await;
    }
    let floor_db = FloorDb::connect(floor_server).await?;
    let plan = floor_db.plan(&desired_groups(ctl, |o| o.kind == OwnerKind::Service));
    if !plan.failed.is_empty() {
        bail!(
            "floor plan: {} owners failed: {:?}",
            plan.failed.len(),
            &plan.failed[..1]
        );
    }
    let n_ops = plan.ops.len();
    let inserts = plan.inserts;
    let mut params = vec![serde_json::Value::String("OVN_Northbound".into())];
    params.extend(plan.ops);
    let request = serde_json::to_vec(&serde_json::json!({
        "method": "transact",
        "params": params,
        "id": 1,
    }))?;
    let mut conn = RawConn::connect(floor_db.socket_path())?;
    let t = Instant::now();
    let (reply, reply_size) = conn.round_trip_excerpt(&request)?;
    let floor = t.elapsed();
    let reply_text = String::from_utf8_lossy(&reply);
    if reply_text.contains("\"error\":\"") || reply_text.contains("\"error\": \"") {
        bail!("floor transaction failed: {reply_text}");
    }
    wait_for_lbs(floor_db.nb(), want_lbs, "floor").await?;
    println!(
        "    floor: one raw transaction of the same {n_ops} operations ({inserts} inserts, {:.1} MB request, {:.1} kB reply) committed in {}",
        request.len() as f64 / 1e6,
        reply_size as f64 / 1e3,
        secs(floor)
    );
    Ok(floor)
}

async fn run(size: Size) -> Result<()> {
    let np = (0..size.services).filter(|i| is_node_port(*i)).count();
    // The cluster's own `kubernetes` service is not in this synthetic cluster: every LB is ours.
    let want_lbs = size.services + np * size.nodes;
    println!(
        "== {} nodes, {} services × {} endpoints ({} NodePort, {} ClusterIP) → {} Load_Balancer rows ==",
        size.nodes,
        size.services,
        size.endpoints,
        np,
        size.services - np,
        want_lbs
    );
    let kube = Arc::new(MemKube::default());
    let nss = namespaces();
    let services: Vec<Service> = (0..size.services).map(service).collect();
    let slices: Vec<EndpointSlice> = (0..size.services)
        .map(|i| slice(size, i, size.endpoints))
        .collect();

    // ---------------------------------------------------------------- (a) cold start
    // Cold start and floor alternate, `runs` times; medians are the figures.
    let mut colds = Vec::new();
    let mut floors = Vec::new();
    let mut last = None;
    for run in 1..=size.runs {
        let (ctl, server, cold) =
            cold_start(size, &kube, &nss, &services, &slices, want_lbs).await?;
        let floor = floor(size, &kube, &nss, &ctl, want_lbs).await?;
        println!(
            "    run {run}: cold start {} / floor {} = {:.2}×",
            secs(cold),
            secs(floor),
            cold.as_secs_f64() / floor.as_secs_f64()
        );
        colds.push(cold);
        floors.push(floor);
        last = Some((ctl, server));
    }
    let (ctl, server) = last.ok_or_else(|| anyhow!("no run"))?;
    colds.sort();
    floors.sort();
    let (cold, floor) = (percentile(&colds, 0.5), percentile(&floors, 0.5));
    println!(
        "(a) cold start, median of {}: {} = {:.0} services/s; floor {}; cold start / floor = {:.2}×",
        size.runs,
        secs(cold),
        size.services as f64 / cold.as_secs_f64(),
        secs(floor),
        cold.as_secs_f64() / floor.as_secs_f64()
    );

    // ------------------------------------------------- (b) endpoint change → NB latency
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<Owner>)>();
    ctl.set_commit_hook(move |owners: &[Owner]| {
        let _ = tx.send((Instant::now(), owners.to_vec()));
    });
    let loop_task = tokio::spawn(ctl.clone().run_reconciler());
    let mut lat = Vec::new();
    let rounds = 200;
    let mut changed: BTreeMap<usize, bool> = BTreeMap::new();
    let mut stale: Vec<(String, usize, Option<String>)> = Vec::new();
    for k in 0..rounds {
        // Spread over the services; every other round of a service removes what the
        // previous one added.
        let i = (k * 7919) % size.services;
        let grow = !changed.get(&i).copied().unwrap_or(false);
        changed.insert(i, grow);
        let n = if grow {
            size.endpoints + 1
        } else {
            size.endpoints
        };
        let sl = slice(size, i, n);
        let owner = Owner::service(&ns_of(i), &format!("svc{i}"));
        while rx.try_recv().is_ok() {}
        let t = Instant::now();
        ctl.slice_applied(&sl);
        let done = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((at, owners))) if owners.contains(&owner) => break at,
                Ok(Some(_)) => continue,
                Ok(None) => bail!("commit hook channel closed"),
                Err(_) => bail!("service {owner:?}: change not committed within 10 s"),
            }
        };
        lat.push(done.duration_since(t));
        let name = format!("Service_{}/svc{i}_TCP_cluster", ns_of(i));
        let had = cache_backends(&ctl, &name);
        if had.as_deref().map(backend_count) != Some(n) {
            stale.push((name, n, had));
        }
    }
    loop_task.abort();
    // Read-your-writes: once the hook reported a service committed, the controller's own
    // cache should show its new backends; the server (ovn-nbctl) is the witness.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_server = nbctl_lbs(&server)?;
    let server_wrong: Vec<&String> = stale
        .iter()
        .filter(|(name, want, _)| on_server.get(name).map(|v| backend_count(v)) != Some(*want))
        .map(|(name, _, _)| name)
        .collect();
    if !stale.is_empty() {
        let (name, want, had) = &stale[0];
        problem(format!(
            "in {} of {rounds} changes the commit hook reported the service committed while the \
             controller's NB cache still had the old backends (e.g. {name}: want {want} backends, \
             cache had {had:?}); on the server ovn-nbctl shows {} of them wrong",
            stale.len(),
            server_wrong.len()
        ));
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "(b) endpoint change → Load_Balancer committed, {rounds} changes at {} services: p50 {} p99 {} max {} — target p99 ≤ 20 ms: {}",
        size.services,
        ms(p50),
        ms(p99),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        if p99 <= Duration::from_millis(20) {
            "MET"
        } else {
            "NOT MET"
        }
    );
    drop(ctl);
    drop(server);

    // ----------------------------------------------- restart: everything on an empty NB
    let server2 = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let ctl2 = controller(&server2.remote(), kube.clone(), None).await?;
    let nodes_annotated = kube.nodes(size.nodes)?;
    let lists = InitialLists {
        nodes: nodes_annotated,
        namespaces: nss
            .iter()
            .map(|n| k8s_openapi::api::core::v1::Namespace {
                metadata: ObjectMeta {
                    name: Some(n.clone()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect(),
        services: services.clone(),
        slices: slices.clone(),
        ..Default::default()
    };
    let t = Instant::now();
    apply_initial(&ctl2, lists);
    ctl2.settle().await;
    let restart = t.elapsed();
    let lbs = ctl2.nb().cache().len(LB);
    if lbs != want_lbs {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let have = nbctl_lbs(&server2)?;
        let missing: Vec<String> = expected_lb_names(size)
            .into_iter()
            .filter(|n| !have.contains_key(n))
            .collect();
        problem(format!(
            "restart: {lbs} Load_Balancer rows in the controller's cache after settle(), \
             expected {want_lbs}; ovn-nbctl 1 s later: {} rows, {} missing, e.g. {:?}; \
             controller idle: {}",
            have.len(),
            missing.len(),
            &missing[..missing.len().min(10)],
            ctl2.is_idle()
        ));
    }
    println!(
        "    restart (apply_initial: nodes + services + slices, empty NB): converged in {}, {} transactions",
        secs(restart),
        ctl2.nb().transaction_count()
    );
    Ok(())
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| anyhow!("{name} needs a value"))?
            .parse()
            .with_context(|| name.to_string()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", testkit::OVN_NB_SCHEMA]) {
        return Ok(());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = Size {
        nodes: arg(&args, "--nodes", 5)?,
        services: arg(&args, "--services", 5_000)?,
        endpoints: arg(&args, "--endpoints", 5)?,
        runs: arg(&args, "--runs", 3)?,
    };
    if size.nodes == 0 || size.services == 0 || size.endpoints == 0 || size.runs == 0 {
        bail!("--nodes, --services, --endpoints and --runs must be positive");
    }
    run(size).await?;
    let problems = PROBLEMS.lock().map(|v| v.clone()).unwrap_or_default();
    if !problems.is_empty() {
        bail!(
            "{} inconsistencies (figures above are still the server's commit times):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(())
}
