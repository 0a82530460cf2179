//! Lab stand-in for the kubelet (one per lab node), network part only: a pod's "sandbox"
//! is a network namespace wired by the REAL CNI plugin, its "container" the lab responder.
//!
//! - Watches the pods bound to its node (`spec.nodeName` field selector).
//! - For a pod that is not hostNetwork: creates its namespace (`<prefix>pod-<hash>`, see
//!   [`state::pod_netns_name`]), brings `lo` up, runs CNI ADD with the plugin and config
//!   of the node's CNI conf dir (inside the node's namespace, as a runtime would), starts
//!   the responder in the pod's namespace under the [`Supervisor`] and sets the pod's
//!   status (Running, pod IPs from the CNI result, host IPs, conditions). A failing ADD
//!   becomes a `FailedCreatePodSandBox` Event plus a not-ready status carrying the
//!   plugin's message, and is retried with backoff.
//! - Pods deleted, or Succeeded/Failed: stop the responder, CNI DEL (with the ADD result
//!   as `prevResult`), delete the namespace.
//! - hostNetwork pods: no sandbox; Running with the node's IPs.
//!
//! Restart-safe: what it set up is recorded in `<lab dir>/kubelet/<node>.json` (also how
//! `ovnk lab exec` finds a pod's namespace: [`find_pod`]); on start it compares that with
//! the pods listed from the API server: a pod whose namespace still exists is not ADDed
//! again, a pod whose namespace is gone (lab down/up) is set up again, and sandboxes of
//! pods that no longer exist are torn down (DEL first).
//!
//! Pods with a `deletionTimestamp` (held by finalizers) keep running until they are gone,
//! so that EndpointSlices can show them as terminating.
//!
//! Wiring one node (the lab bring-up):
//! ```text
//! let mut cfg = KubeletConfig::new("node1", vec![node_ip], "ovnk-lab-", &lab_dir);
//! cfg.node_netns = Some(node_ns.clone());            // Arc<NetNs> of the node
//! cfg.cni_bin_dir = bin_dir; cfg.cni_conf_dir = conf_dir;  // where `ovnk node` installs them
//! cfg.responder = Some(ResponderProgram { program: ovnk_exe, args: vec!["lab".into(), "responder".into()] });
//! cfg.supervisor = supervisor.clone();               // so `lab down` stops responders too
//! tokio::spawn(kubelet::run(client.clone(), cfg));
//! ```
//! `ovnk lab exec <ns>/<pod>` finds the namespace with [`find_pod`]; `lab down` can call
//! [`remove_sandboxes`] per node, or delete every namespace starting with the prefix.

mod cni;
mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use ovnk_netns::NetNs;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::daemon::{DaemonSpec, Supervisor};

pub use cni::{example_conflist, load_network_config, parse_network_config, NetworkConfig};
pub use state::{
    container_id, find_pod, pod_netns_name, state_path, NodeState, PodSandbox, SandboxPhase,
};

/// The interface name inside every pod.
pub const POD_IFNAME: &str = "eth0";
/// The component named in Events and status messages.
pub const COMPONENT: &str = "lab-kubelet";
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Every known pod is checked again this often (namespace still there, responder up).
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("kubelet state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("CNI configuration {path}: {reason}")]
    CniConfig { path: PathBuf, reason: String },
    #[error("no CNI configuration in {0} yet (is the node agent running?)")]
    NoCniConfig(PathBuf),
    #[error("pod {pod}: CNI {command}: {reason}")]
    Cni {
        pod: String,
        command: String,
        reason: String,
    },
    #[error("pod {pod}: {reason}")]
    Pod { pod: String, reason: String },
    #[error(transparent)]
    NetNs(#[from] ovnk_netns::NetNsError),
    #[error("pod {pod}: Kubernetes API: {source}")]
    Api { pod: String, source: kube::Error },
    #[error("responder of pod {pod}: {reason}")]
    Responder { pod: String, reason: String },
}

/// The program each pod runs: `program args… --name <pod> --tcp <port>… --udp <port>…`.
#[derive(Debug, Clone)]
pub struct ResponderProgram {
    pub program: PathBuf,
    /// Placed before the per-pod arguments, e.g. `["lab", "responder"]`.
    pub args: Vec<OsString>,
}

/// One node's kubelet.
#[derive(Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// The node's addresses (hostIP/hostIPs; podIPs of hostNetwork pods), primary first.
    pub node_ips: Vec<IpAddr>,
    /// Prefix of every namespace of this lab (e.g. `ovnk-lab-`); pod namespaces are
    /// `<prefix>pod-<12 hex>`, so keep it under 48 characters.
    pub netns_prefix: String,
    /// State files and responder logs/pidfiles go under `<lab_dir>/kubelet/`.
    pub lab_dir: PathBuf,
    /// The node's namespace, where the CNI plugin runs; `None` = the kubelet's own.
    pub node_netns: Option<Arc<NetNs>>,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// `None`: pods get a namespace and addresses but run nothing.
    pub responder: Option<ResponderProgram>,
    /// Supervises the responders (the lab's supervisor, so `lab down` stops them too).
    pub supervisor: Supervisor,
    /// Bound on one plugin run.
    pub cni_timeout: Duration,
}

impl std::fmt::Debug for KubeletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletConfig")
            .field("node_name", &self.node_name)
            .field("node_ips", &self.node_ips)
            .field("netns_prefix", &self.netns_prefix)
            .field("lab_dir", &self.lab_dir)
            .field("cni_bin_dir", &self.cni_bin_dir)
            .field("cni_conf_dir", &self.cni_conf_dir)
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

impl KubeletConfig {
    pub fn new(node_name: &str, node_ips: Vec<IpAddr>, netns_prefix: &str, lab_dir: &Path) -> Self {
        KubeletConfig {
            node_name: node_name.to_string(),
            node_ips,
            netns_prefix: netns_prefix.to_string(),
            lab_dir: lab_dir.to_path_buf(),
            node_netns: None,
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            responder: None,
            supervisor: Supervisor::new(),
            cni_timeout: Duration::from_secs(150),
        }
    }

    fn state_path(&self) -> PathBuf {
        state_path(&self.lab_dir, &self.node_name)
    }

    fn pod_dir(&self) -> PathBuf {
        state::kubelet_dir(&self.lab_dir).join(&self.node_name)
    }

    /// Log and pidfile of a pod's responder.
    pub fn responder_files(&self, namespace: &str, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.pod_dir();
        (
            dir.join(format!("{namespace}_{name}.log")),
            dir.join(format!("{namespace}_{name}.pid")),
        )
    }

    fn daemon_name(&self, key: &str) -> String {
        format!("pod/{}/{key}", self.node_name)
    }
}

/// What the kubelet wants for one pod key.
#[derive(Debug, Clone)]
enum Want {
    Absent,
    HostNetwork(Box<Pod>),
    Sandbox(Box<Pod>),
}

fn want_of(pod: Pod) -> Want {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return Want::Absent;
    }
    let host = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host {
        Want::HostNetwork(Box::new(pod))
    } else {
        Want::Sandbox(Box::new(pod))
    }
}

struct KeyEntry {
    want: Want,
    generation: u64,
    running: bool,
    notify: Arc<Notify>,
}

struct Shared {
    cfg: KubeletConfig,
    client: Client,
    state: Mutex<NodeState>,
    keys: Mutex<HashMap<String, KeyEntry>>,
}

impl Shared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyEntry>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sandbox(&self, key: &str) -> Option<PodSandbox> {
        self.lock_state().pods.get(key).cloned()
    }

    fn save_sandbox(&self, key: &str, sb: Option<PodSandbox>) -> Result<(), KubeletError> {
        let mut st = self.lock_state();
        match sb {
            Some(sb) => st.pods.insert(key.to_string(), sb),
            None => st.pods.remove(key),
        };
        st.save(&self.cfg.state_path())
    }

    /// Records what is wanted for `key`; true when the caller must start its worker.
    fn set_want(&self, key: &str, want: Want) -> bool {
        let mut keys = self.lock_keys();
        let e = keys.entry(key.to_string()).or_insert_with(|| KeyEntry {
            want: Want::Absent,
            generation: 0,
            running: false,
            notify: Arc::new(Notify::new()),
        });
        e.want = want;
        e.generation += 1;
        if e.running {
            e.notify.notify_one();
            false
        } else {
            e.running = true;
            true
        }
    }
}

/// Runs the kubelet of `cfg.node_name` until the future is dropped. Only a state file
/// that cannot be read is fatal; API and CNI errors are retried with backoff.
pub async fn run(client: Client, cfg: KubeletConfig) -> Result<(), KubeletError> {
    let st = NodeState::load(&cfg.state_path())?;
    let node = cfg.node_name.clone();
    let shared = Arc::new(Shared {
        cfg,
        client: client.clone(),
        state: Mutex::new(st),
        keys: Mutex::new(HashMap::new()),
    });
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
    let mut workers = tokio::task::JoinSet::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    let spawn = |workers: &mut tokio::task::JoinSet<()>, key: String| {
        workers.spawn(worker(shared.clone(), key));
    };
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(Event::Init) => listing = Some(HashSet::new()),
                    Ok(Event::InitApply(pod)) | Ok(Event::Apply(pod)) => {
                        let Some(key) = pod_key(&pod) else { continue };
                        if let Some(l) = listing.as_mut() {
                            l.insert(key.clone());
                        }
                        if shared.set_want(&key, want_of(pod)) {
                            spawn(&mut workers, key);
                        }
                    }
                    Ok(Event::Delete(pod)) => {
                        let Some(key) = pod_key(&pod) else { continue };
                        if shared.set_want(&key, Want::Absent) {
                            spawn(&mut workers, key);
                        }
                    }
                    Ok(Event::InitDone) => {
                        // Everything known but not listed is gone: tear it down.
                        let listed = listing.take().unwrap_or_default();
                        let mut known: BTreeSet<String> =
                            shared.lock_state().pods.keys().cloned().collect();
                        known.extend(shared.lock_keys().keys().cloned());
                        for key in known.into_iter().filter(|k| !listed.contains(k)) {
                            if shared.set_want(&key, Want::Absent) {
                                spawn(&mut workers, key);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(node = %node, "pod watch: {e}"),
                }
            }
            _ = resync.tick() => {
                let keys: Vec<(String, Want)> = shared
                    .lock_keys()
                    .iter()
                    .map(|(k, e)| (k.clone(), e.want.clone()))
                    .collect();
                for (key, want) in keys {
                    if shared.set_want(&key, want) {
                        spawn(&mut workers, key);
                    }
                }
            }
            Some(_) = workers.join_next(), if !workers.is_empty() => {}
        }
    }
}

fn pod_key(pod: &Pod) -> Option<String> {
    Some(format!(
        "{}/{}",
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?
    ))
}

/// Converges one pod key, retrying with backoff, until nothing new is wanted.
async fn worker(shared: Arc<Shared>, key: String) {
    let mut backoff = BACKOFF_START;
    loop {
        let (want, generation, notify) = {
            let keys = shared.lock_keys();
            let Some(e) = keys.get(&key) else { return };
            (e.want.clone(), e.generation, e.notify.clone())
        };
        match converge(&shared, &key, &want).await {
            Ok(()) => {
                backoff = BACKOFF_START;
                let mut keys = shared.lock_keys();
                let Some(e) = keys.get_mut(&key) else { return };
                if e.generation == generation {
                    e.running = false;
                    if matches!(e.want, Want::Absent) {
                        keys.remove(&key);
                    }
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(node = %shared.cfg.node_name, pod = %key, "{e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = notify.notified() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn converge(shared: &Shared, key: &str, want: &Want) -> Result<(), KubeletError> {
    match want {
        Want::Absent => {
            if let Some(sb) = shared.sandbox(key) {
                teardown(shared, &sb).await?;
            }
            Ok(())
        }
        Want::HostNetwork(pod) => {
            if let Some(sb) = shared.sandbox(key) {
                teardown(shared, &sb).await?;
            }
            let ips = shared.cfg.node_ips.clone();
            set_status(shared, pod, Ok(&ips)).await
        }
        Want::Sandbox(pod) => {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if let Some(sb) = shared.sandbox(key) {
                let netns_there = netns_path(&sb.netns).exists();
                if sb.uid == uid && sb.phase == SandboxPhase::Ready && netns_there {
                    return run_pod(shared, pod, &sb).await;
                }
                if sb.uid == uid && sb.phase == SandboxPhase::Ready {
                    // Namespace gone (lab down/up): the old attachment went with the node's
                    // OVS; set the pod up afresh (it keeps its IPs through its annotation).
                    tracing::info!(pod = %key, netns = %sb.netns, "pod namespace is gone; setting the pod up again");
                    stop_responder(shared, &sb).await;
                    shared.save_sandbox(key, None)?;
                } else {
                    // Another pod of the same name, or a crash in the middle of ADD.
                    teardown(shared, &sb).await?;
                }
            }
            match setup(shared, pod).await {
                Ok(sb) => run_pod(shared, pod, &sb).await,
                Err(e) => {
                    let msg = e.to_string();
                    record_event(
                        &shared.client,
                        pod,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {msg}"),
                    )
                    .await;
                    if let Err(se) = set_status(shared, pod, Err(&msg)).await {
                        tracing::warn!(pod = %key, "status: {se}");
                    }
                    Err(e)
                }
            }
        }
    }
}

/// Starts the pod's "container" (the responder) in its ready sandbox and reports the
/// pod Running; a responder that cannot be started leaves the pod not ready, with an
/// Event saying why, and is retried.
async fn run_pod(shared: &Shared, pod: &Pod, sb: &PodSandbox) -> Result<(), KubeletError> {
    if let Err(e) = ensure_responder(shared, pod, sb).await {
        let msg = e.to_string();
        record_event(&shared.client, pod, "Warning", "Failed", &msg).await;
        if let Err(se) = set_status(shared, pod, Err(&msg)).await {
            tracing::warn!(pod = %sb.key(), "status: {se}");
        }
        return Err(e);
    }
    set_status(shared, pod, Ok(&sb.ips)).await
}

fn pod_name_of(pod: &Pod) -> (String, String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Creates the namespace and runs ADD; on failure, cleans up (DEL, namespace) before
/// returning the error.
async fn setup(shared: &Shared, pod: &Pod) -> Result<PodSandbox, KubeletError> {
    let cfg = &shared.cfg;
    let (namespace, name, uid) = pod_name_of(pod);
    let key = format!("{namespace}/{name}");
    let config = load_network_config(&cfg.cni_conf_dir)?
        .ok_or_else(|| KubeletError::NoCniConfig(cfg.cni_conf_dir.clone()))?;
    let mut sb = PodSandbox {
        node: cfg.node_name.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        netns: pod_netns_name(&cfg.netns_prefix, &namespace, &name, &uid),
        container_id: container_id(&namespace, &name, &uid),
        phase: SandboxPhase::Creating,
        ips: Vec::new(),
        result: None,
    };
    // Recorded first: a crash from here on is cleaned up by the next start.
    shared.save_sandbox(&key, Some(sb.clone()))?;
    ovnk_netns::delete_named(&sb.netns)?;
    let ns = ovnk_netns::create_named(&sb.netns)?;
    let attempt = async {
        loopback_up(&ns).await.map_err(|reason| KubeletError::Pod {
            pod: key.clone(),
            reason: format!("bringing up lo in {}: {reason}", sb.netns),
        })?;
        let netns_path = netns_path(&sb.netns);
        let inv = invocation(cfg, &config, &sb, &netns_path);
        match cni::invoke(&inv, "ADD", None).await? {
            cni::PluginOutcome::Success(result) => {
                let ips = cni::result_ips(&key, &result)?;
                Ok((result, ips))
            }
            cni::PluginOutcome::Failed(msg) => Err(KubeletError::Cni {
                pod: key.clone(),
                command: "ADD".into(),
                reason: msg,
            }),
        }
    };
    match attempt.await {
        Ok((result, ips)) => {
            sb.phase = SandboxPhase::Ready;
            sb.ips = ips;
            sb.result = Some(result);
            shared.save_sandbox(&key, Some(sb.clone()))?;
            tracing::info!(pod = %key, netns = %sb.netns, ips = ?sb.ips, "pod sandbox ready");
            Ok(sb)
        }
        Err(e) => {
            // As a runtime does after a failed ADD: DEL (best effort), drop the sandbox.
            if let Err(de) = cni_del(shared, &sb, &config).await {
                tracing::debug!(pod = %key, "cleanup after failed ADD: {de}");
            }
            ovnk_netns::delete_named(&sb.netns)?;
            shared.save_sandbox(&key, None)?;
            Err(e)
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(ovnk_netns::NETNS_RUN_DIR).join(name)
}

fn invocation<'a>(
    cfg: &'a KubeletConfig,
    config: &'a NetworkConfig,
    sb: &'a PodSandbox,
    netns_path: &'a Path,
) -> cni::Invocation<'a> {
    cni::Invocation {
        bin_dir: &cfg.cni_bin_dir,
        node_netns: cfg.node_netns.as_ref(),
        config,
        container_id: &sb.container_id,
        netns_path,
        ifname: POD_IFNAME,
        pod_namespace: &sb.namespace,
        pod_name: &sb.name,
        pod_uid: &sb.uid,
        timeout: cfg.cni_timeout,
    }
}

async fn cni_del(
    shared: &Shared,
    sb: &PodSandbox,
    config: &NetworkConfig,
) -> Result<(), KubeletError> {
    // The namespace may already be gone; CNI allows DEL with the path anyway.
    let netns_path = netns_path(&sb.netns);
    let inv = invocation(&shared.cfg, config, sb, &netns_path);
    match cni::invoke(&inv, "DEL", sb.result.as_ref()).await? {
        cni::PluginOutcome::Success(_) => Ok(()),
        cni::PluginOutcome::Failed(msg) => Err(KubeletError::Cni {
            pod: sb.key(),
            command: "DEL".into(),
            reason: msg,
        }),
    }
}

/// Stops the responder, runs DEL, deletes the namespace, forgets the sandbox.
async fn teardown(shared: &Shared, sb: &PodSandbox) -> Result<(), KubeletError> {
    stop_responder(shared, sb).await;
    match load_network_config(&shared.cfg.cni_conf_dir)? {
        Some(config) => cni_del(shared, sb, &config).await?,
        // Without a configuration there is no plugin to ask; the node agent is gone too.
        None => tracing::warn!(pod = %sb.key(), "no CNI configuration; skipping CNI DEL"),
    }
    ovnk_netns::delete_named(&sb.netns)?;
    shared.save_sandbox(&sb.key(), None)?;
    tracing::info!(pod = %sb.key(), netns = %sb.netns, "pod sandbox removed");
    Ok(())
}

async fn loopback_up(ns: &NetNs) -> Result<(), String> {
    use rtnetlink::LinkUnspec;
    let handle = ns.rtnetlink().map_err(|e| e.to_string())?;
    // `lo` is always index 1 in a new namespace.
    handle
        .link()
        .set(LinkUnspec::new_with_index(1).up().build())
        .execute()
        .await
        .map_err(|e| e.to_string())
}

/// The ports a pod's responder serves: its containerPorts (TCP/UDP), else 80 on both.
pub fn responder_ports(pod: &Pod) -> (Vec<u16>, Vec<u16>) {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    for c in containers {
        for p in c.ports.iter().flatten() {
            let Ok(port) = u16::try_from(p.container_port) else {
                continue;
            };
            if port == 0 {
                continue;
            }
            match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => tcp.insert(port),
                "UDP" => udp.insert(port),
                _ => false,
            };
        }
    }
    if tcp.is_empty() && udp.is_empty() {
        tcp.insert(80);
        udp.insert(80);
    }
    (tcp.into_iter().collect(), udp.into_iter().collect())
}

async fn ensure_responder(shared: &Shared, pod: &Pod, sb: &PodSandbox) -> Result<(), KubeletError> {
    let cfg = &shared.cfg;
    let Some(prog) = &cfg.responder else {
        return Ok(());
    };
    let key = sb.key();
    let dname = cfg.daemon_name(&key);
    if cfg.supervisor.status().iter().any(|s| s.name == dname) {
        return Ok(());
    }
    let (log, pidfile) = cfg.responder_files(&sb.namespace, &sb.name);
    // A responder left by an earlier kubelet process would hold the ports.
    stop_stale(&pidfile).await;
    let ns = NetNs::named(&sb.netns)?;
    let (tcp, udp) = responder_ports(pod);
    let mut spec = DaemonSpec::new(&dname, &prog.program, log, pidfile)
        .args(prog.args.iter().cloned())
        .arg("--name")
        .arg(&sb.name)
        .in_netns(Arc::new(ns));
    for p in tcp {
        spec = spec.arg("--tcp").arg(p.to_string());
    }
    for p in udp {
        spec = spec.arg("--udp").arg(p.to_string());
    }
    cfg.supervisor
        .start(spec)
        .await
        .map_err(|e| KubeletError::Responder {
            pod: key,
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Stops the process a supervisor recorded in `pidfile` (pid and program), if it still
/// runs that program.
async fn stop_stale(pidfile: &Path) {
    let pidfile = pidfile.to_path_buf();
    // Blocking: waits for the old process to exit.
    let _ = tokio::task::spawn_blocking(move || crate::daemon::stop_by_pidfile_recorded(&pidfile))
        .await;
}

async fn stop_responder(shared: &Shared, sb: &PodSandbox) {
    let cfg = &shared.cfg;
    cfg.supervisor.stop(&cfg.daemon_name(&sb.key())).await;
    let (_, pidfile) = cfg.responder_files(&sb.namespace, &sb.name);
    stop_stale(&pidfile).await;
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<&str>,
    old: &Value,
) -> Value {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some(status)
            })
        })
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(Time(Timestamp::now())));
    let mut c = json!({"type": type_, "status": status, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The status of a pod whose sandbox went away with its node (`ovnk lab down`): not
/// ready, its containers being created again. It keeps its IPs (the annotation holds them).
pub fn sandbox_lost_status(pod: &Pod, node_ips: &[IpAddr]) -> Value {
    desired_status(
        pod,
        node_ips,
        Err("the node restarted; the pod's sandbox is being set up again"),
    )
}

/// The status the kubelet reports: Running with `ips`, or Pending with the setup error.
fn desired_status(pod: &Pod, node_ips: &[IpAddr], outcome: Result<&[IpAddr], &str>) -> Value {
    let old = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({}));
    let now = json!(Time(Timestamp::now()));
    let start = old.get("startTime").cloned().unwrap_or_else(|| now.clone());
    let ready = outcome.is_ok();
    let (reason, message) = match outcome {
        Ok(_) => (None, None),
        Err(m) => (Some("ContainersNotReady"), Some(m)),
    };
    let old_statuses = old.get("containerStatuses").and_then(Value::as_array);
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let state = if ready {
                // Keep startedAt across updates.
                let since = old_statuses
                    .and_then(|a| {
                        a.iter()
                            .find(|s| s.get("name").and_then(Value::as_str) == Some(&c.name))
                    })
                    .and_then(|s| s.pointer("/state/running/startedAt").cloned())
                    .unwrap_or_else(|| now.clone());
                json!({"running": {"startedAt": since}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": ready,
                "started": ready,
                "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    let mut st = json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": [
            condition("PodScheduled", true, None, None, &old),
            condition("Initialized", true, None, None, &old),
            condition("ContainersReady", ready, reason, message, &old),
            condition("Ready", ready, reason, message, &old),
        ],
        "hostIP": node_ips.first().map(|i| i.to_string()),
        "hostIPs": node_ips.iter().map(|i| json!({"ip": i.to_string()})).collect::<Vec<_>>(),
        "startTime": start,
        "containerStatuses": containers,
        "qosClass": old.get("qosClass").cloned().unwrap_or_else(|| json!("BestEffort")),
    });
    if let Ok(ips) = outcome {
        st["podIP"] = json!(ips.first().map(|i| i.to_string()));
        st["podIPs"] = json!(ips
            .iter()
            .map(|i| json!({"ip": i.to_string()}))
            .collect::<Vec<_>>());
    }
    st
}

/// Whether `current` already says everything `want` says (so no write is needed).
fn status_covers(current: &Value, want: &Value) -> bool {
    match (current, want) {
        (Value::Object(c), Value::Object(w)) => w.iter().all(|(k, wv)| match c.get(k) {
            Some(cv) => status_covers(cv, wv),
            // Absent and null say the same.
            None => wv.is_null(),
        }),
        (Value::Array(c), Value::Array(w)) => {
            c.len() == w.len() && c.iter().zip(w).all(|(cv, wv)| status_covers(cv, wv))
        }
        (c, w) => c == w,
    }
}

async fn set_status(
    shared: &Shared,
    pod: &Pod,
    outcome: Result<&Vec<IpAddr>, &str>,
) -> Result<(), KubeletError> {
    let (namespace, name, _) = pod_name_of(pod);
    let want = desired_status(pod, &shared.cfg.node_ips, outcome.map(Vec::as_slice));
    let current = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({}));
    if status_covers(&current, &want) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    match api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": want})),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: its DELETED event follows.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(KubeletError::Api {
            pod: format!("{namespace}/{name}"),
            source,
        }),
    }
}

/// Records a core/v1 Event about `pod` (repeats bump the count of one Event per reason).
/// Failures are only logged: an Event is never worth failing the pod's handling.
async fn record_event(client: &Client, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let (namespace, name, uid) = pod_name_of(pod);
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), &namespace);
    // Object names are limited to 253 characters; pod names may use all of them.
    let stem: String = name.chars().take(200).collect();
    let ev_name = format!("{stem}.{:016x}", state::fnv1a(&[&uid, reason]));
    let now = Time(Timestamp::now());
    let ev = CoreEvent {
        metadata: ObjectMeta {
            name: Some(ev_name.clone()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(uid),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        event_time: None::<MicroTime>,
        reporting_component: Some(COMPONENT.into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        ..Default::default()
    };
    let res = match api.create(&PostParams::default(), &ev).await {
        Err(kube::Error::Api(s)) if s.code == 409 => match api.get(&ev_name).await {
            Ok(old) => {
                let patch = json!({
                    "count": old.count.unwrap_or(1) + 1,
                    "lastTimestamp": now,
                    "message": message,
                });
                api.patch(&ev_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        },
        r => r.map(|_| ()),
    };
    if let Err(e) = res {
        tracing::warn!(pod = %format!("{namespace}/{name}"), reason, "cannot record Event: {e}");
    }
}

/// Tears down every sandbox recorded for `node` without asking the API server or the CNI
/// plugin (for `ovnk lab down`): stops responders by pidfile and deletes the namespaces.
/// The state file is kept, so the next `lab up` sets the same pods up again.
pub fn remove_sandboxes(cfg: &KubeletConfig) -> Result<usize, KubeletError> {
    let st = NodeState::load(&cfg.state_path())?;
    for sb in st.pods.values() {
        let (_, pidfile) = cfg.responder_files(&sb.namespace, &sb.name);
        let _ = crate::daemon::stop_by_pidfile_recorded(&pidfile);
        ovnk_netns::delete_named(&sb.netns)?;
    }
    Ok(st.pods.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    fn pod_with_ports(ports: &[(i32, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("d".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(p, proto)| ContainerPort {
                                container_port: *p,
                                protocol: Some(proto.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn responder_ports_follow_container_ports() {
        assert_eq!(responder_ports(&pod_with_ports(&[])), (vec![80], vec![80]));
        assert_eq!(
            responder_ports(&pod_with_ports(&[
                (8080, "TCP"),
                (53, "UDP"),
                (53, "TCP"),
                (9, "SCTP")
            ])),
            (vec![53, 8080], vec![53])
        );
    }

    #[test]
    fn status_is_written_once() {
        let mut pod = pod_with_ports(&[]);
        let node: Vec<IpAddr> = vec!["172.18.0.2".parse().unwrap()];
        let ips: Vec<IpAddr> = vec!["10.244.0.5".parse().unwrap()];
        let want = desired_status(&pod, &node, Ok(&ips));
        assert_eq!(want["phase"], "Running");
        assert_eq!(want["podIPs"], json!([{"ip": "10.244.0.5"}]));
        assert_eq!(want["hostIP"], "172.18.0.2");
        assert!(!status_covers(&json!({}), &want));
        // Once the server holds it, the same desired status needs no write.
        pod.status = serde_json::from_value(want.clone()).ok();
        let again = desired_status(&pod, &node, Ok(&ips));
        let current = serde_json::to_value(pod.status.as_ref().unwrap()).unwrap();
        assert!(status_covers(&current, &again), "{current}\n{again}");
        // A failure flips readiness and carries the message.
        let failed = desired_status(&pod, &node, Err("CNI error 7: bad"));
        assert!(!status_covers(&current, &failed));
        assert_eq!(failed["conditions"][3]["message"], "CNI error 7: bad");
    }
}
