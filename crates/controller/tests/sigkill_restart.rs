//! SIGKILL for real: the controller runs in a child process (this test binary re-executed),
//! writing its "Kubernetes" annotations to an append-only file; the parent kills it with
//! SIGKILL at a random moment during a 1,000-pod burst (the first round creates 1,000 pods,
//! each later one deletes 500 and creates 500), 10 times, then restarts it for good
//! and checks NB holds exactly the desired state with no address used twice.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{node, pod, Stack};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::ObjectReference;
use ovnk_controller::{kube_io::initial_sync, ControllerConfig, KubeOps};

const NODES: usize = 8;

/// Annotation writes appended as `key\tannotation\tvalue` lines; a write "returns" once
/// the line is in the file, so a killed process never loses an acknowledged write.
struct FileKube {
    file: Mutex<std::fs::File>,
}

impl FileKube {
    fn append(&self, key: &str, k: &str, v: &str) -> Result<(), String> {
        let mut f = self.file.lock().map_err(|e| e.to_string())?;
        let line = format!("{key}\t{k}\t{}\n", v.replace('\n', " "));
        f.write_all(line.as_bytes()).map_err(|e| e.to_string())
    }
}

impl KubeOps for FileKube {
    fn annotate_node(
        &self,
        name: &str,
        a: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let mut r = Ok(());
        for (k, v) in &a {
            r = r.and(self.append(&format!("node/{name}"), k, v));
        }
        async move { r }.boxed()
    }
    fn annotate_pod(
        &self,
        ns: &str,
        name: &str,
        _uid: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let r = self.append(&format!("pod/{ns}/{name}"), key, &value);
        async move { r }.boxed()
    }
    fn warn(&self, _o: ObjectReference, _r: &str, _m: String) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}

fn read_state(path: &Path) -> HashMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut m: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for line in text.lines() {
        // A line cut by the kill is incomplete: ignore it (the write never returned).
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        if parts.len() == 3 && parts[2].ends_with('}')
            || parts.len() == 3 && !parts[2].starts_with('{')
        {
            m.entry(parts[0].to_string())
                .or_default()
                .insert(parts[1].to_string(), parts[2].to_string());
        }
    }
    m
}

fn pods_of(path: &Path) -> BTreeSet<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn run_controller(
    nb: &str,
    state: &Path,
    pods_file: &Path,
) -> Arc<ovnk_controller::Controller> {
    let known = read_state(state);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state)
        .expect("state file");
    let kube: Arc<dyn KubeOps> = Arc::new(FileKube {
        file: Mutex::new(file),
    });
    let mut cfg = ControllerConfig::with_cluster_subnets(&["10.244.0.0/16/24"]);
    cfg.nb_remotes = vec![nb.to_string()];
    let ctl = ovnk_controller::build(&cfg, kube)
        .await
        .expect("controller");
    let get = |k: &str| known.get(k).cloned().unwrap_or_default();
    let nodes: Vec<_> = (0..NODES)
        .map(|i| {
            node(
                &format!("n{i}"),
                i as u8 + 1,
                Stack::V4,
                get(&format!("node/n{i}")),
            )
        })
        .collect();
    let pods: Vec<_> = pods_of(pods_file)
        .iter()
        .map(|i| {
            pod(
                "ns",
                &format!("p{i}"),
                &format!("n{}", i % NODES),
                get(&format!("pod/ns/p{i}")),
            )
        })
        .collect();
    initial_sync(&ctl, &nodes, &pods, &["ns".to_string()]);
    ctl
}

/// The child: runs the controller until killed (only when spawned by the parent test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_during_burst as a child process"]
async fn child_controller_process() {
    let nb = std::env::var("CTRL_CHILD_NB").expect("CTRL_CHILD_NB");
    let state = PathBuf::from(std::env::var("CTRL_CHILD_STATE").expect("CTRL_CHILD_STATE"));
    let pods = PathBuf::from(std::env::var("CTRL_CHILD_PODS").expect("CTRL_CHILD_PODS"));
    let ctl = run_controller(&nb, &state, &pods).await;
    ctl.settle().await;
    ctl.settle().await;
    println!("CHILD-SETTLED");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_burst_ten_times_then_exact_state() {
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
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("annotations.log");
    let pods_file = dir.path().join("pods.txt");
    let exe = std::env::current_exe().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    let mut alive: BTreeSet<usize> = (0..1000).collect();
    let mut next = 1000;
    for round in 0..10 {
        // Every round is a 1,000-pod burst: 500 pods go, 500 new ones come.
        if round > 0 {
            let old: Vec<usize> = alive.iter().copied().take(500).collect();
            for v in old {
                alive.remove(&v);
            }
            for _ in 0..500 {
                alive.insert(next);
                next += 1;
            }
        }
        let list: Vec<String> = alive.iter().map(|i| i.to_string()).collect();
        std::fs::write(&pods_file, list.join("\n")).unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_controller_process",
                "--nocapture",
            ])
            .env("CTRL_CHILD_NB", &nb)
            .env("CTRL_CHILD_STATE", &state)
            .env("CTRL_CHILD_PODS", &pods_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        // Child start-up (connect, initial lists) takes some tens of ms; kill somewhere in
        // the burst that follows.
        let wait = Duration::from_millis(100 + rnd(400));
        let t = Instant::now();
        while t.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL"); // std's kill() sends SIGKILL
        let _ = child.wait();
        let annotated = read_state(&state)
            .keys()
            .filter(|k| k.starts_with("pod/"))
            .count();
        let lsps = common::nbctl(
            &nb,
            &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
        )
        .lines()
        .filter(|l| l.starts_with("ns_"))
        .count();
        println!(
            "round {round}: SIGKILL after {wait:?}: {annotated} pods annotated so far, {lsps} pod LSPs in NB, {} pods alive",
            alive.len()
        );
    }
    // Restart for good, in-process, and check.
    let list: Vec<String> = alive.iter().map(|i| i.to_string()).collect();
    std::fs::write(&pods_file, list.join("\n")).unwrap();
    let ctl = run_controller(&nb, &state, &pods_file).await;
    ctl.settle().await;
    ctl.settle().await;
    let known = read_state(&state);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for i in &alive {
        let a = known
            .get(&format!("pod/ns/p{i}"))
            .and_then(|m| m.get(ovnk_annotations::POD_NETWORKS))
            .unwrap_or_else(|| panic!("p{i} not annotated"));
        let net = ovnk_annotations::parse_pod_networks(a).unwrap();
        let d = net.default_network().unwrap();
        let ip = d.v4().unwrap().addr().to_string();
        if let Some(o) = seen.insert(ip.clone(), *i) {
            panic!("{ip} used by p{o} and p{i}");
        }
        want.insert(format!("ns_p{i}"), format!("{} {ip}", d.mac_address));
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
    let have: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(n, _)| n.starts_with("ns_"))
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "pod LSPs differ from the live pods"
    );
    for (n, a) in &want {
        assert!(have[n].contains(a.as_str()), "{n}: {} vs {a}", have[n]);
    }
    drop(ctl);
    let ctl = run_controller(&nb, &state, &pods_file).await;
    ctl.settle().await;
    ctl.settle().await;
    assert_eq!(
        ctl.nb().transaction_count(),
        0,
        "restart after convergence wrote to NB"
    );
}
