//! Crash at random points during a 1,000-pod burst, 10 times, then restart: exactly the
//! desired state in NB and no address used twice.
//!
//! In-process variant of "SIGKILL the controller": the controller's tasks are aborted at a
//! random moment (a transaction may be in flight, annotations may be written without their
//! LSP yet) and its NB connection dropped; the next controller starts from what the API
//! (the in-memory fake) and NB hold, as a restarted process would.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{node, pod, FakeKube, Stack};
use ovnk_controller::{kube_io::initial_sync, Controller, ControllerConfig, KubeOps};

const NODES: usize = 8;
const PODS: usize = 1000;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

async fn controller(nb: &str, kube: Arc<FakeKube>) -> Arc<Controller> {
    let mut cfg = ControllerConfig::with_cluster_subnets(&["10.244.0.0/16/24"]);
    cfg.nb_remotes = vec![nb.to_string()];
    let ops: Arc<dyn KubeOps> = kube;
    ovnk_controller::build(&cfg, ops).await.expect("controller")
}

fn feed(ctl: &Arc<Controller>, kube: &FakeKube, alive: &BTreeSet<usize>) {
    let nodes: Vec<_> = (0..NODES)
        .map(|i| {
            let n = format!("n{i}");
            node(
                &n,
                i as u8 + 1,
                Stack::V4,
                kube.annotations_of(&format!("node/{n}")),
            )
        })
        .collect();
    let pods: Vec<_> = alive
        .iter()
        .map(|i| {
            let p = format!("p{i}");
            pod(
                "ns",
                &p,
                &format!("n{}", i % NODES),
                kube.annotations_of(&format!("pod/ns/{p}")),
            )
        })
        .collect();
    initial_sync(ctl, &nodes, &pods, &["ns".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_burst_ten_times_then_exact_state() {
    if !testkit::require_env(&[
        "ovsdb-server",
        "ovsdb-tool",
        "ovn-nbctl",
        testkit::OVN_NB_SCHEMA,
    ]) {
        return;
    }
    let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).expect("NB server");
    let nb = server.remote();
    let kube = Arc::new(FakeKube::default());
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let mut alive: BTreeSet<usize> = (0..PODS).collect();
    let mut next_pod = PODS;

    for round in 0..10 {
        // Churn between crashes: some pods go, new ones come.
        if round > 0 {
            for _ in 0..30 {
                let victim = rng.next(next_pod as u64) as usize;
                alive.remove(&victim);
            }
            for _ in 0..30 {
                alive.insert(next_pod);
                next_pod += 1;
            }
        }
        let ctl = controller(&nb, kube.clone()).await;
        feed(&ctl, &kube, &alive);
        let c2 = ctl.clone();
        let work = tokio::spawn(async move { c2.settle().await });
        let kill_after = Duration::from_millis(rng.next(150));
        tokio::time::sleep(kill_after).await;
        work.abort();
        let _ = work.await;
        println!(
            "round {round}: killed after {kill_after:?}, {} transactions sent",
            ctl.nb().transaction_count()
        );
        drop(ctl);
    }

    // Restart for good.
    let ctl = controller(&nb, kube.clone()).await;
    feed(&ctl, &kube, &alive);
    ctl.settle().await;
    ctl.settle().await;

    // Every live pod: annotated, exactly one LSP with the annotated address; no stale LSPs.
    let mut seen_ips: HashMap<String, String> = HashMap::new();
    let mut want_lsps: BTreeMap<String, String> = BTreeMap::new();
    for i in &alive {
        let p = format!("p{i}");
        let net = common::pod_net(&kube, "ns", &p);
        let ip = net.v4().unwrap().addr().to_string();
        if let Some(other) = seen_ips.insert(ip.clone(), p.clone()) {
            panic!("{ip} is used by {other} and {p}");
        }
        want_lsps.insert(format!("ns_{p}"), format!("{} {ip}", net.mac_address));
    }
    let out = common::nbctl(
        &nb,
        &[
            "--format=csv",
            "--no-headings",
            "--columns=name,addresses",
            "list",
            "Logical_Switch_Port",
        ],
    );
    let mut have: BTreeMap<String, String> = BTreeMap::new();
    for line in out.lines() {
        let (name, addr) = line.split_once(',').unwrap();
        if name.starts_with("ns_") {
            let addr = addr
                .trim_matches('"')
                .trim_matches(|c| c == '[' || c == ']');
            let addr = addr.trim_matches('\\').trim_matches('"').to_string();
            assert!(
                have.insert(name.to_string(), addr).is_none(),
                "two LSPs named {name}"
            );
        }
    }
    assert_eq!(have.len(), want_lsps.len(), "pod LSP count");
    for (name, addr) in &want_lsps {
        let got = have.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert!(got.contains(addr.as_str()), "{name}: {got} vs {addr}");
    }
    // Every LSP is linked into exactly one switch (none orphaned, none twice).
    let ports = common::nbctl(
        &nb,
        &["--bare", "--columns=ports", "list", "Logical_Switch"],
    );
    let linked: Vec<&str> = ports.split_whitespace().collect();
    let uniq: BTreeSet<&str> = linked.iter().copied().collect();
    assert_eq!(linked.len(), uniq.len(), "an LSP is on two switches");

    // And the next restart writes nothing.
    drop(ctl);
    let ctl = controller(&nb, kube.clone()).await;
    feed(&ctl, &kube, &alive);
    ctl.settle().await;
    ctl.settle().await;
    assert_eq!(ctl.nb().transaction_count(), 0);
}
