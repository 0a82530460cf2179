//! `cargo run --release -p policy-bench [-- --namespaces 240 --pods 10 --policies 20]`
//!
//! NetworkPolicy at the size of a published OpenShift scale test (240 namespaces × 10 pods
//! × 20 policies = 4,800 policies) against a real ovsdb-server with the NB schema (no
//! northd: this measures the controller and the database). Kubernetes writes go to an
//! in-memory stand-in. Pods carry their `k8s.ovn.org/pod-networks` annotation from the
//! start (made by an untimed allocation pass), so no allocation round trip is measured.
//! * cold start: a new controller on an empty NB with every namespace, pod and policy in
//!   its initial lists (`apply_initial`) → time until NB converged, NB rows per table,
//!   rows/s, and the floor: ovsdb-server committing the same rows in one raw transaction;
//! * policy latency: ~200 new policies one at a time on the converged cluster,
//!   `policy_applied` → the commit hook reports the policy's owner (p50/p99);
//! * peak RSS (VmHWM);
//! * a light profile: desired-row computation per owner kind, a no-op re-plan of the
//!   whole cluster, and the dirty keys the initial lists fan out to.
//!
//! `MemKube`, `node`, the controller and the floor come from `benchkit`, shared with the
//! other benches.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use benchkit::{
    controller, desired_groups, node, percentile, status_kib, thousands, FloorDb, MemKube,
    CLUSTER_SUBNETS,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ovnk_controller::kube_io::{apply_initial, InitialLists};
use ovnk_controller::rows::{Owner, OwnerKind};
use ovnk_controller::{Controller, ControllerConfig};
use serde_json::{json, Value as Json};

const TEAMS: usize = 12;
/// Keys per transaction: this variable overrides the controller's default.
const BATCH_ENV: Option<&str> = Some("POLICY_BENCH_BATCH");

// ---------------------------------------------------------------------- the cluster

struct Args {
    namespaces: usize,
    pods: usize,
    policies: usize,
    nodes: usize,
    new_policies: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        namespaces: 240,
        pods: 10,
        policies: 20,
        nodes: 0,
        new_policies: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || -> Result<usize> {
            it.next()
                .ok_or_else(|| anyhow!("{flag} wants a number"))?
                .parse()
                .with_context(|| flag.clone())
        };
        match flag.as_str() {
            "--namespaces" => a.namespaces = val()?,
            "--pods" => a.pods = val()?,
            "--policies" => a.policies = val()?,
            "--nodes" => a.nodes = val()?,
            "--new-policies" => a.new_policies = val()?,
            "-h" | "--help" => {
                println!(
                    "policy-bench [--namespaces 240] [--pods 10 (per namespace)] \
                     [--policies 20 (per namespace)] [--nodes 20] [--new-policies 200]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if a.namespaces == 0 {
        bail!("--namespaces must be at least 1");
    }
    if a.nodes == 0 {
        // ≤ 200 pods per node (each node has a /24).
        a.nodes = 20.max((a.namespaces * a.pods + 6).div_ceil(200));
    }
    Ok(a)
}

/// Infrastructure namespaces the tenants' policies refer to: (name, labels, pod labels).
const INFRA: &[(&str, &str, &str)] = &[
    (
        "openshift-dns",
        "",
        "dns.operator.openshift.io/daemonset-dns=default",
    ),
    (
        "openshift-ingress",
        "network.openshift.io/policy-group=ingress",
        "ingresscontroller.operator.openshift.io/deployment-ingresscontroller=default",
    ),
    (
        "openshift-monitoring",
        "network.openshift.io/policy-group=monitoring",
        "app.kubernetes.io/name=prometheus",
    ),
];
const INFRA_PODS: usize = 2;

fn ns_name(k: usize) -> String {
    format!("ns-{k:03}")
}

fn kv(s: &str) -> Option<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
}

fn namespaces(a: &Args) -> Vec<Namespace> {
    let mk = |name: String, mut labels: BTreeMap<String, String>| {
        labels.insert("kubernetes.io/metadata.name".into(), name.clone());
        Namespace {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    };
    let mut v: Vec<Namespace> = (0..a.namespaces)
        .map(|k| {
            let name = ns_name(k);
            let mut l = BTreeMap::new();
            l.insert("ns".to_string(), name.clone());
            l.insert("team".to_string(), format!("t{}", k % TEAMS));
            l.insert(
                "env".to_string(),
                if k.is_multiple_of(2) { "prod" } else { "dev" }.to_string(),
            );
            mk(name, l)
        })
        .collect();
    for (name, labels, _) in INFRA {
        v.push(mk(name.to_string(), kv(labels).into_iter().collect()));
    }
    v
}

const TIERS: [&str; 3] = ["web", "api", "db"];

/// Every pod's (namespace, name, labels, containerPorts).
fn pod_specs(a: &Args) -> Vec<(String, String, Json, Json)> {
    let mut v = Vec::new();
    for k in 0..a.namespaces {
        for i in 0..a.pods {
            let tier = TIERS[i % 3];
            // `http` is 8080 on web pods and 8000 on api pods: named ports resolve per pod.
            let mut ports = vec![
                json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}),
                json!({"containerPort": 7000 + (i % 3) as i32}),
            ];
            match tier {
                "web" => ports.push(json!({"name": "http", "containerPort": 8080})),
                "api" => ports.push(json!({"name": "http", "containerPort": 8000})),
                _ => ports.push(json!({"name": "pg", "containerPort": 5432, "protocol": "TCP"})),
            }
            v.push((
                ns_name(k),
                format!("{tier}-{i}"),
                json!({"app": format!("a{}", i % 5), "tier": tier,
                       "pod-template-hash": format!("h{}", i % 2)}),
                Json::Array(ports),
            ));
        }
    }
    for (ns, _, pod_labels) in INFRA {
        for i in 0..INFRA_PODS {
            let (k, val) = kv(pod_labels).unwrap_or_default();
            let ports = if *ns == "openshift-dns" {
                json!([{"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                       {"name": "dns-tcp", "containerPort": 5353, "protocol": "TCP"}])
            } else {
                json!([{"name": "https", "containerPort": 443}])
            };
            v.push((
                ns.to_string(),
                format!("infra-{i}"),
                json!({ k: val }),
                ports,
            ));
        }
    }
    v
}

fn pod(
    spec: &(String, String, Json, Json),
    idx: usize,
    nodes: usize,
    annotations: BTreeMap<String, String>,
) -> Result<Pod> {
    let (ns, name, labels, ports) = spec;
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                     "labels": labels},
        "spec": {"nodeName": format!("node{}", idx % nodes),
                 "containers": [{"name": "main", "image": "registry/app:1", "ports": ports}]},
    }))?;
    p.metadata.annotations = Some(annotations);
    Ok(p)
}

fn np(ns: &str, name: &str, spec: Json) -> Result<NetworkPolicy> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-np-{ns}-{name}")},
        "spec": spec,
    }))?)
}

fn app(n: usize) -> String {
    format!("a{}", n % 5)
}

/// Policy `j` of namespace `k`: twenty templates in the style of a multi-tenant OpenShift
/// cluster (deny by default, allow same namespace / ingress / monitoring / DNS, per-app
/// rules); a namespace with more than twenty cycles through them with shifted values.
fn policy(k: usize, j: usize, n_ns: usize) -> Result<NetworkPolicy> {
    let ns = ns_name(k);
    let round = j / 20;
    let sfx = if round == 0 {
        String::new()
    } else {
        format!("-{round}")
    };
    let (name, spec) = match j % 20 {
        0 => (
            "default-deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        1 => (
            "allow-same-namespace",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
        2 => (
            "allow-from-openshift-ingress",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
                {"matchLabels": {"network.openshift.io/policy-group": "ingress"}}}]}]}),
        ),
        3 => (
            "allow-from-openshift-monitoring",
            json!({"podSelector": {}, "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels":
                    {"network.openshift.io/policy-group": "monitoring"}}}],
                "ports": [{"protocol": "TCP", "port": "metrics"}]}]}),
        ),
        4 => (
            "allow-dns",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                "to": [{"namespaceSelector": {"matchLabels":
                          {"kubernetes.io/metadata.name": "openshift-dns"}},
                        "podSelector": {"matchLabels":
                          {"dns.operator.openshift.io/daemonset-dns": "default"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53},
                          {"protocol": "UDP", "port": 5353 + round as i32}]}]}),
        ),
        5 => (
            "allow-egress-same-namespace",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {}}]}]}),
        ),
        j @ 6..=10 => (
            ["app-a0", "app-a1", "app-a2", "app-a3", "app-a4"][j - 6],
            json!({"podSelector": {"matchLabels": {"app": app(j + round)}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": app(j + 1)}}}],
                                "ports": [{"protocol": "TCP", "port": 8080 + round as i32}]}]}),
        ),
        11 => (
            "web-from-partner-team",
            json!({"podSelector": {"matchLabels": {"tier": "web"}},
                   "ingress": [{"from": [{"namespaceSelector":
                       {"matchLabels": {"team": format!("t{}", (k + 1 + round) % TEAMS)}}}],
                       "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}]}),
        ),
        12 => (
            "web-from-corporate-net",
            json!({"podSelector": {"matchLabels": {"tier": "web"}},
                   "ingress": [{"from": [
                        {"ipBlock": {"cidr": "192.168.0.0/16",
                                     "except": ["192.168.1.0/24", format!("192.168.{}.0/24", 2 + round)]}},
                        {"ipBlock": {"cidr": "172.16.0.0/12"}}],
                       "ports": [{"protocol": "TCP", "port": 443}]}]}),
        ),
        13 => (
            "db-from-api",
            json!({"podSelector": {"matchLabels": {"tier": "db"}},
                   "ingress": [{"from": [{"podSelector": {"matchExpressions":
                        [{"key": "tier", "operator": "In", "values": ["api"]}]}}],
                       "ports": [{"port": "pg"}]}]}),
        ),
        14 => (
            "api-from-web",
            json!({"podSelector": {"matchLabels": {"tier": "api"}},
                   "ingress": [{"from": [
                        {"podSelector": {"matchLabels": {"tier": "web"}}},
                        {"namespaceSelector": {"matchLabels": {"env": "prod"}},
                         "podSelector": {"matchLabels": {"tier": "web"}}}],
                       "ports": [{"port": "http"}, {"port": 8443}]}]}),
        ),
        15 => (
            "api-egress-to-team",
            json!({"podSelector": {"matchLabels": {"tier": "api"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector":
                       {"matchLabels": {"team": format!("t{}", (k + 2 + round) % TEAMS)}}}],
                       "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}]}),
        ),
        16 => (
            "app-from-non-db",
            json!({"podSelector": {"matchExpressions":
                        [{"key": "app", "operator": "In", "values": [app(round), app(round + 1)]}]},
                   "ingress": [{"from": [{"podSelector": {"matchExpressions":
                        [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}],
                       "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9100},
                                 {"protocol": "UDP", "port": 9000}]}]}),
        ),
        17 => (
            "egress-to-internet",
            json!({"podSelector": {"matchLabels": {"app": app(k + round)}},
                   "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                "except": ["10.128.0.0/9", "172.30.0.0/16", "169.254.169.254/32"]}}],
                               "ports": [{"protocol": "TCP", "port": 443}]}]}),
        ),
        18 => (
            "public-web",
            json!({"podSelector": {"matchLabels": {"tier": "web", "app": app(k + round)}},
                   "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}),
        ),
        _ => (
            "from-neighbour-a0",
            json!({"podSelector": {"matchLabels": {"app": app(round)}},
                   "ingress": [{"from": [{
                        "namespaceSelector": {"matchLabels": {"ns": ns_name((k + 1 + round) % n_ns)}},
                        "podSelector": {"matchLabels": {"app": "a0"}}}],
                       "ports": [{"protocol": "TCP", "port": 5000}]}]}),
        ),
    };
    np(&ns, &format!("{name}{sfx}"), spec)
}

/// The `n`th policy of the latency phase: selects some existing pods; even ones reuse a
/// peer selector the namespace already has, odd ones bring a new one.
fn new_policy(n: usize, n_ns: usize) -> Result<NetworkPolicy> {
    let k = (n * 37) % n_ns;
    let from = if n.is_multiple_of(2) {
        json!([{"podSelector": {"matchLabels": {"tier": "web"}}}])
    } else {
        json!([{"namespaceSelector": {"matchLabels": {"team": format!("t{}", n % TEAMS)}},
                "podSelector": {"matchLabels": {"app": app(n + 3), "tier": TIERS[n % 3]}}}])
    };
    let ports = if n % 4 == 1 {
        json!([{"protocol": "TCP", "port": 8080}, {"port": "http"}])
    } else {
        json!([{"protocol": "TCP", "port": 6000 + n as i32, "endPort": 6010 + n as i32}])
    };
    np(
        &ns_name(k),
        &format!("bench-new-{n}"),
        json!({"podSelector": {"matchLabels": {"app": app(n)}},
               "ingress": [{"from": from, "ports": ports}]}),
    )
}

// ---------------------------------------------------------------------- measuring

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn nanos_ms(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64 / 1e6
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

/// Rows per NB table in the controller's cache (non-empty tables) and their total.
fn nb_rows(ctl: &Controller) -> (Vec<(&'static str, usize)>, usize) {
    let cache = ctl.nb().cache();
    let v: Vec<(&'static str, usize)> = ovnk_controller::desired::TABLES
        .iter()
        .map(|t| (*t, cache.len(t)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total = v.iter().map(|(_, n)| n).sum();
    (v, total)
}

/// Port memberships and ACL references held by the NB port groups.
fn pg_members(ctl: &Controller) -> (usize, usize) {
    let cache = ctl.nb().cache();
    cache.rows("Port_Group").fold((0, 0), |(p, a), (_, row)| {
        (
            p + row.get("ports").map_or(0, |v| v.len()),
            a + row.get("acls").map_or(0, |v| v.len()),
        )
    })
}

fn breakdown(ctl: &Controller, label: &str) {
    println!(
        "  {label}: plan (desired rows + diff) {:.0} ms, waiting for NB replies {:.0} ms, \
         applying monitor updates {:.0} ms; {} transactions, {} operations",
        nanos_ms(&ctl.plan_nanos),
        nanos_ms(&ctl.nb().txn_nanos),
        nanos_ms(&ctl.nb().cache_nanos),
        ctl.nb().transaction_count(),
        thousands(ctl.nb().operations.load(Ordering::Relaxed) as usize),
    );
}

type Waiter = Mutex<Option<(Owner, tokio::sync::oneshot::Sender<Instant>)>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", testkit::OVN_NB_SCHEMA]) {
        return Ok(());
    }
    let a = parse_args()?;
    let cmd = format!(
        "cargo run --release -p policy-bench -- --namespaces {} --pods {} --policies {} --nodes {} --new-policies {}",
        a.namespaces, a.pods, a.policies, a.nodes, a.new_policies
    );
    let rss_start = status_kib("VmRSS");
    let ns_objs = namespaces(&a);
    let specs = pod_specs(&a);
    let mut policies = Vec::with_capacity(a.namespaces * a.policies);
    for k in 0..a.namespaces {
        for j in 0..a.policies {
            policies.push(policy(k, j, a.namespaces)?);
        }
    }
    println!("$ {cmd}");
    println!(
        "cluster: {} nodes, {} namespaces (+{} infra), {} pods ({} per namespace + {} infra), \
         {} NetworkPolicies ({} per namespace)",
        a.nodes,
        a.namespaces,
        INFRA.len(),
        thousands(specs.len()),
        a.pods,
        INFRA.len() * INFRA_PODS,
        thousands(policies.len()),
        a.policies
    );

    // ------------------------------------------------------------ untimed allocation pass
    // Nodes get subnets and pods addresses from a throwaway controller; only the
    // annotations it writes are kept (no NB reconcile).
    // Every generated object is valid: a warning is a bug in the benchmark or controller.
    let kube = Arc::new(MemKube::with_warning_limit(5));
    {
        let prep_db =
            testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
        let prep = controller(&prep_db.remote(), kube.clone(), BATCH_ENV).await?;
        let nodes: Vec<Node> = (0..a.nodes)
            .map(|i| node(i, BTreeMap::new()))
            .collect::<Result<_>>()?;
        let pods: Vec<Pod> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| pod(s, i, a.nodes, BTreeMap::new()))
            .collect::<Result<_>>()?;
        let t = Instant::now();
        apply_initial(
            &prep,
            InitialLists {
                nodes,
                pods,
                namespaces: ns_objs.clone(),
                ..Default::default()
            },
        );
        while kube.pods_annotated() < specs.len() {
            if t.elapsed() > Duration::from_secs(120) {
                bail!(
                    "allocation pass: {} of {} pods annotated after 120 s",
                    kube.pods_annotated(),
                    specs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "(untimed) allocation pass: {} pods annotated in {:.2?}",
            specs.len(),
            t.elapsed()
        );
        // Let the annotation tasks finish before the throwaway controller goes.
        while Arc::strong_count(&prep) > 1 && t.elapsed() < Duration::from_secs(130) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let nodes = kube.nodes(a.nodes)?;
    let pods: Vec<Pod> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| pod(s, i, a.nodes, kube.get(&format!("pod/{}/{}", s.0, s.1))))
        .collect::<Result<_>>()?;
    let writes_before = kube.writes.load(Ordering::Relaxed);
    // Generated objects, the stand-in's annotations and the runtime; the controller is extra.
    let rss_base = status_kib("VmRSS");

    // ------------------------------------------------------------ 1. cold start
    println!("\n1. cold start (empty NB, everything in the initial lists)");
    let db = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
    let ctl = controller(&db.remote(), kube.clone(), BATCH_ENV).await?;
    let t = Instant::now();
    apply_initial(
        &ctl,
        InitialLists {
            nodes: nodes.clone(),
            pods: pods.clone(),
            namespaces: ns_objs.clone(),
            policies: policies.clone(),
            ..Default::default()
        },
    );
    let applied = t.elapsed();
    ctl.settle().await;
    let cold = t.elapsed();
    if !ctl.is_idle() {
        bail!("settle returned with work left");
    }
    let (rows, total) = nb_rows(&ctl);
    let (members, acl_refs) = pg_members(&ctl);
    let rss_cold = status_kib("VmRSS");
    let hwm_cold = status_kib("VmHWM");
    println!(
        "  converged in {} (apply_initial into the index {}, reconcile {})",
        ms(cold),
        ms(applied),
        ms(cold - applied)
    );
    breakdown(&ctl, "where");
    println!(
        "  NB rows: {} in total = {:.0} rows/s",
        thousands(total),
        total as f64 / cold.as_secs_f64()
    );
    for (t, n) in &rows {
        println!("    {t:<28} {:>7}", thousands(*n));
    }
    println!(
        "    (port groups hold {} port memberships and {} ACL references)",
        thousands(members),
        thousands(acl_refs)
    );
    println!(
        "  Kubernetes writes during cold start: {} (want 0: every allocation was in the annotations); \
         warnings: {}",
        kube.writes.load(Ordering::Relaxed) - writes_before,
        kube.warnings.load(Ordering::Relaxed)
    );
    let cold_ok = cold <= Duration::from_secs(10);
    println!(
        "  target: cold start ≤ 10 s → {} ({})",
        verdict(cold_ok),
        ms(cold)
    );

    // The floor: the same rows in one raw transaction on another empty server.
    let floor_db = FloorDb::start().await?;
    let plan = floor_db.plan(&desired_groups(&ctl, |_| true));
    if !plan.failed.is_empty() {
        bail!("raw plan: {} owners failed to plan", plan.failed.len());
    }
    let (n_ops, n_ins) = (plan.ops.len(), plan.inserts);
    let floor = floor_db.transact(plan.ops).await?;
    println!(
        "  floor: ovsdb-server commits the same {} rows ({} operations) in one raw transaction \
         in {} = {:.0} rows/s; cold start / floor = {:.1}×",
        thousands(n_ins),
        thousands(n_ops),
        ms(floor),
        n_ins as f64 / floor.as_secs_f64(),
        cold.as_secs_f64() / floor.as_secs_f64()
    );
    drop(floor_db);

    // ------------------------------------------------------------ 2. per-policy latency
    println!(
        "\n2. policy create → ACLs committed, {} new policies one at a time",
        a.new_policies
    );
    let waiter: Arc<Waiter> = Arc::new(Mutex::new(None));
    let w2 = waiter.clone();
    ctl.set_commit_hook(move |owners: &[Owner]| {
        let now = Instant::now();
        if let Ok(mut w) = w2.lock() {
            if w.as_ref().is_some_and(|(o, _)| owners.contains(o)) {
                if let Some((_, tx)) = w.take() {
                    let _ = tx.send(now);
                }
            }
        }
    });
    let (plan0, txn0, tx0, ops0) = (
        ctl.plan_nanos.load(Ordering::Relaxed),
        ctl.nb().txn_nanos.load(Ordering::Relaxed),
        ctl.nb().transaction_count(),
        ctl.nb().operations.load(Ordering::Relaxed),
    );
    let loop_task = tokio::spawn(ctl.clone().run_reconciler());
    let mut lat = Vec::with_capacity(a.new_policies);
    for n in 0..a.new_policies {
        let p = new_policy(n, a.namespaces)?;
        let owner = Owner::policy(
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut w) = waiter.lock() {
            *w = Some((owner.clone(), tx));
        }
        let t = Instant::now();
        ctl.policy_applied(&p);
        let done = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| anyhow!("{owner}: not committed within 10 s"))?
            .map_err(|_| anyhow!("{owner}: commit hook dropped"))?;
        lat.push(done.saturating_duration_since(t));
        // Start the next one on a quiet controller.
        let t = Instant::now();
        while !ctl.is_idle() && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    loop_task.abort();
    let n_lat = lat.len().max(1) as f64;
    let mut sorted = lat.clone();
    sorted.sort();
    let (p50, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    println!(
        "  p50 {}  p90 {}  p99 {}  max {}",
        ms(p50),
        ms(percentile(&sorted, 0.9)),
        ms(p99),
        ms(sorted.last().copied().unwrap_or_default())
    );
    println!(
        "  per policy: plan {:.2} ms, NB round trip {:.2} ms, {:.1} transactions, {:.0} operations",
        (ctl.plan_nanos.load(Ordering::Relaxed) - plan0) as f64 / 1e6 / n_lat,
        (ctl.nb().txn_nanos.load(Ordering::Relaxed) - txn0) as f64 / 1e6 / n_lat,
        (ctl.nb().transaction_count() - tx0) as f64 / n_lat,
        (ctl.nb().operations.load(Ordering::Relaxed) - ops0) as f64 / n_lat,
    );
    let lat_ok = p99 <= Duration::from_millis(50);
    println!("  target: p99 ≤ 50 ms → {} ({})", verdict(lat_ok), ms(p99));

    // ------------------------------------------------------------ 3. memory
    let hwm = status_kib("VmHWM");
    println!("\n3. memory");
    println!(
        "  peak RSS (VmHWM) through cold start: {} MiB — RSS {} MiB at start, {} MiB with the \
         generated objects before the controller, {} MiB once converged",
        hwm_cold / 1024,
        rss_start / 1024,
        rss_base / 1024,
        rss_cold / 1024
    );
    println!(
        "  peak RSS of the whole run so far: {} MiB (adds the floor's one {}-operation \
         request and the latency phase)",
        hwm / 1024,
        thousands(n_ops)
    );

    // ------------------------------------------------------------ profile
    println!("\n(profile) where the planning time goes, on the converged cluster");
    let owners = ctl.index().all_owners();
    let mut per_kind: BTreeMap<OwnerKind, (usize, Duration, usize)> = BTreeMap::new();
    let mut groups = Vec::with_capacity(owners.len());
    {
        let idx = ctl.index();
        for o in owners {
            let t = Instant::now();
            let d = idx.desired(&o);
            let e = per_kind.entry(o.kind).or_default();
            e.0 += 1;
            e.1 += t.elapsed();
            e.2 += d.len();
            groups.push((o, d));
        }
    }
    for (k, (n, d, r)) in &per_kind {
        println!(
            "  desired rows, {:<14} {:>6} owners {:>8} rows  {:>9}  ({:.1} µs per owner)",
            k.as_str(),
            thousands(*n),
            thousands(*r),
            ms(*d),
            d.as_secs_f64() * 1e6 / *n as f64
        );
    }
    let t = Instant::now();
    let noop = {
        let cache = ctl.nb().cache();
        ovnk_controller::engine::plan(&cache, &groups)
    };
    println!(
        "  diff of all {} owners against the NB cache: {} ({} operations: want 0)",
        thousands(groups.len()),
        ms(t.elapsed()),
        noop.ops.len()
    );
    drop(groups);
    // The dirty keys the initial lists fan out to, in a fresh index.
    let cfg = ControllerConfig::with_cluster_subnets(&[CLUSTER_SUBNETS]);
    let mut idx = ovnk_controller::index::Index::new(
        ovnk_controller::rows::NetworkInfo::default_network(),
        cfg.resolve().map_err(|e| anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let mut dirty = Vec::new();
    let t = Instant::now();
    for n in &nodes {
        idx.apply_node(n, &mut dirty);
    }
    for n in &ns_objs {
        idx.apply_namespace(n, &mut dirty);
    }
    let (t_ns, d_ns) = (t.elapsed(), dirty.len());
    let t = Instant::now();
    for p in &policies {
        idx.apply_policy(p, &mut dirty);
    }
    let (t_pol, d_pol) = (t.elapsed(), dirty.len() - d_ns);
    let t = Instant::now();
    for p in &pods {
        idx.apply_pod(p, &mut dirty);
    }
    let (t_pod, d_pod) = (t.elapsed(), dirty.len() - d_ns - d_pol);
    let mut distinct: HashMap<&Owner, ()> = HashMap::new();
    for o in &dirty {
        distinct.insert(o, ());
    }
    println!(
        "  index: nodes+namespaces {} ({} dirty keys), policies {} ({} dirty keys), \
         pods {} ({} dirty keys, {:.0} per pod); {} distinct",
        ms(t_ns),
        thousands(d_ns),
        ms(t_pol),
        thousands(d_pol),
        ms(t_pod),
        thousands(d_pod),
        d_pod as f64 / pods.len().max(1) as f64,
        thousands(distinct.len())
    );

    println!("\nsummary ({cmd})");
    println!(
        "  cold start {} [{}], policy latency p50 {} p99 {} [{}], peak RSS {} MiB \
         through cold start ({} MiB whole run)",
        ms(cold),
        verdict(cold_ok),
        ms(p50),
        ms(p99),
        verdict(lat_ok),
        hwm_cold / 1024,
        hwm / 1024
    );
    drop(ctl);
    drop(db);
    Ok(())
}
