//! Shared helpers: the real shim binary, a stand-in for ovn-controller's
//! `ovn-installed` marking, a lab API server, and exec of the shim.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovsdb::{Client, ClientConfig, Condition, Event, Mutation, Remote, Transaction, Value};
use tokio::io::AsyncWriteExt;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The real `ovn-k8s-cni-overlay`, built into this target dir if it is not there yet.
pub fn shim_binary() -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> dir")
        .to_path_buf();
    let bin = profile_dir.join("ovn-k8s-cni-overlay");
    if !bin.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "ovnk-cni", "--bin", "ovn-k8s-cni-overlay"])
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().and_then(|s| s.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build for the shim");
        assert!(st.success(), "building ovn-k8s-cni-overlay failed");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// What the shim printed and its exit status.
#[derive(Debug)]
pub struct ShimRun {
    pub code: i32,
    pub stdout: String,
    pub json: serde_json::Value,
}

pub async fn exec_shim(bin: &Path, env: &[(&str, &str)], stdin: &str) -> ShimRun {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shim");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes()).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("shim finished within 60 s")
        .expect("shim output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    ShimRun {
        code: out.status.code().unwrap_or(-1),
        stdout,
        json,
    }
}

/// The network configuration the agent installs, with a socket and timeouts.
pub fn netconf(socket: &Path, version: &str, add_timeout: f64) -> String {
    serde_json::json!({
        "cniVersion": version,
        "name": "ovn-kubernetes",
        "type": "ovn-k8s-cni-overlay",
        "serverSocket": socket.display().to_string(),
        "addTimeoutSeconds": add_timeout,
        "timeoutSeconds": 20,
    })
    .to_string()
}

/// Stands in for ovn-controller: marks `ovn-installed=true` on interfaces whose
/// `iface-id` is in `allowed` (all when `allowed` holds "*").
pub struct FakeOvnController {
    pub allowed: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOvnController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOvnController {
    pub async fn start(socket: &Path, allowed: &[&str]) -> FakeOvnController {
        let mut cfg = ClientConfig::new(vec![Remote::Unix(socket.to_path_buf())], "Open_vSwitch");
        cfg.monitor_tables = Some(vec!["Interface".into()]);
        let client = Client::connect(cfg)
            .await
            .expect("fake ovn-controller connects");
        let allowed: Arc<Mutex<BTreeSet<String>>> =
            Arc::new(Mutex::new(allowed.iter().map(|s| s.to_string()).collect()));
        let mut events = client.cache().subscribe();
        let a = allowed.clone();
        let task = tokio::spawn(async move {
            let mark = |row: &ovsdb::Row| -> Option<String> {
                let ids = row.get("external_ids")?.to_string_map();
                let id = ids.get("iface-id")?;
                if ids.contains_key("ovn-installed") {
                    return None;
                }
                let ok = a.lock().ok()?;
                (ok.contains("*") || ok.contains(id)).then(|| {
                    row.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
            };
            // Rows present before we subscribed.
            let mut todo: Vec<String> = client
                .cache()
                .table_rows("Interface")
                .iter()
                .filter_map(|(_, r)| mark(r))
                .collect();
            loop {
                for name in todo.drain(..) {
                    let mut txn = Transaction::new("Open_vSwitch");
                    txn.mutate(
                        "Interface",
                        vec![Condition::eq("name", name.as_str())],
                        vec![Mutation::insert(
                            "external_ids",
                            Value::string_map([("ovn-installed", "true")]),
                        )],
                    );
                    let _ = client.transact(&txn).await;
                }
                match events.recv().await {
                    Some(Event::Insert { new, .. }) | Some(Event::Update { new, .. }) => {
                        todo.extend(mark(&new));
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
        FakeOvnController { allowed, task }
    }
}

/// `ovs-vsctl --no-wait` against a database, as an independent witness.
pub fn vsctl(db: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .arg("--no-wait")
        .arg("--timeout=10")
        .args(args)
        .output()
        .expect("run ovs-vsctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A lab API server and a kube-rs client for it.
pub async fn apiserver(dir: &Path) -> (lab_apiserver::Server, kube::Client) {
    let server = lab_apiserver::Server::start(lab_apiserver::Config::new(dir.join("api")))
        .await
        .expect("lab apiserver starts");
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    let client = kube::Client::try_from(cfg).expect("kube client");
    (server, client)
}

/// Creates a Node object with annotations.
pub async fn create_node(client: &kube::Client, name: &str, ann: BTreeMap<String, String>) {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": ann}
    }))
    .expect("node json");
    api.create(&Default::default(), &node)
        .await
        .expect("create node");
}

/// Creates a pod bound to `node`, optionally with its pod-networks annotation; returns its UID.
pub async fn create_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    pod_networks: Option<String>,
) -> String {
    use k8s_openapi::api::core::v1::Pod;
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    let mut ann = BTreeMap::new();
    if let Some(p) = pod_networks {
        ann.insert(ovnk_annotations::POD_NETWORKS.to_string(), p);
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "annotations": ann},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1"}]}
    }))
    .expect("pod json");
    let made = api
        .create(&Default::default(), &pod)
        .await
        .expect("create pod");
    made.metadata.uid.unwrap_or_default()
}

/// The pod-networks annotation of a pod at `ip` in a /24 with gateway .1.
pub fn pod_networks(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    let gw = std::net::Ipv4Addr::new(o[0], o[1], o[2], 1);
    let net = ovnk_annotations::PodNetwork {
        ip_addresses: vec![format!("{ip}/24").parse().expect("ip")],
        mac_address: ovnk_annotations::MacAddr::from_ip(ip.into()),
        gateway_ips: vec![gw.into()],
        routes: vec![],
        tunnel_id: 0,
        role: None,
    };
    ovnk_annotations::render_pod_networks(&ovnk_annotations::PodNetworks::with_default(net))
}

/// Named network namespaces made by a test (`<prefix>-<pid>-<tag>`, lo up), deleted on
/// drop, also when a check failed.
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    pub fn new(prefix: &str) -> Self {
        Namespaces {
            prefix: prefix.to_string(),
            names: Vec::new(),
        }
    }

    pub fn add(&mut self, tag: &str) -> String {
        let name = format!("{}-{}-{tag}", self.prefix, std::process::id());
        let _ = ovnk_netns::delete_named(&name);
        ovnk_netns::create_named(&name).expect("create netns");
        self.names.push(name.clone());
        let out = std::process::Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "lo up in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ovnk_netns::delete_named(n);
        }
    }
}
