//! Bringing a whole lab up and down: the API server, OVN central, the underlay, every
//! node (its namespace, OVS, `breth0`, ovn-controller, `ovnk node`, the lab kubelet),
//! `ovnk controller`, the lab scheduler and the lab EndpointSlice controller.
//!
//! Everything the lab starts is either a child of one [`Supervisor`] (daemons, with
//! pidfiles under `<lab>/pids/`) or a task of the process that runs [`Lab::up`], so
//! `down` stops it all by pid, and a crashed lab is cleaned from its name alone
//! ([`cleanup`]): pidfiles, then every namespace with the lab's prefix.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ovnk_netns::NetNs;

use crate::daemon::{DaemonSpec, Supervisor};
use crate::daemons::{self, CentralRemotes};
use crate::layout::{LabLayout, NodeLayout};
use crate::LabError;

/// What `ovnk lab up` was asked for.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub name: String,
    pub nodes: usize,
    /// NB as a 3-member Raft cluster.
    pub nb_raft: bool,
    /// Use this API server instead of starting the lab's own.
    pub kubeconfig: Option<PathBuf>,
    /// The `ovnk` binary (the controller, node agents and responders are its subcommands).
    pub ovnk: PathBuf,
    /// Where labs keep their files.
    pub root: PathBuf,
}

/// Set to `dedicated` to give each gateway router its own underlay address and MAC
/// (LAB-gateway.md variant A) instead of sharing the node IP (variant B, the default).
pub const GATEWAY_MODE_ENV: &str = "OVNK_LAB_GATEWAY";

fn dedicated_gateway_router() -> bool {
    std::env::var(GATEWAY_MODE_ENV).is_ok_and(|v| v == "dedicated")
}

/// A running lab, owned by the process that brought it up.
pub struct Lab {
    pub layout: LabLayout,
    pub supervisor: Supervisor,
    pub kubeconfig: PathBuf,
    pub central: CentralRemotes,
    api: Option<lab_apiserver::Server>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _netns: Vec<Arc<NetNs>>,
}

/// A step of the bring-up, for progress output.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

fn setup_err(what: impl std::fmt::Display) -> LabError {
    LabError::Setup(what.to_string())
}

/// Is a supervisor of this lab alive?
pub fn running_supervisor(layout: &LabLayout) -> Option<i32> {
    let pid = crate::daemon::read_pidfile(&layout.supervisor_pidfile())
        .ok()?
        .pid?;
    (pid != std::process::id() as i32 && crate::daemon::process_matches(pid, "ovnk")).then_some(pid)
}

/// What is left of a lab that did not stop cleanly: daemons (by their pidfiles) and
/// namespaces (by prefix). Returns what it removed.
pub fn cleanup(layout: &LabLayout) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    // Daemons' and responders' pidfiles, wherever under the lab they were written.
    let mut stack = vec![layout.dir.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                if path != layout.api_dir() {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "pid")
                && path != layout.supervisor_pidfile()
                && crate::daemon::stop_by_pidfile_recorded(&path)?
            {
                removed.push(format!("process from {}", path.display()));
            }
        }
    }
    // Namespaces last: deleting one ends the userspace datapath's taps with it.
    for ns in ovnk_netns::list_named(&format!("{}-", layout.prefix)) {
        ovnk_netns::delete_named(&ns)?;
        removed.push(format!("namespace {ns}"));
    }
    for d in ["pids", "central", "nodes", "kubelet"] {
        let p = layout.dir.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| setup_err(format!("{}: {e}", p.display())))?;
        }
    }
    Ok(removed)
}

fn check_root() -> Result<(), LabError> {
    if nix::unistd::Uid::effective().is_root() {
        Ok(())
    } else {
        Err(setup_err(
            "the lab needs root (it creates network namespaces and runs OVS): run it with sudo",
        ))
    }
}

impl Lab {
    /// Brings the whole lab up and returns once every node is ready for pods.
    pub async fn up(opts: &LabOptions, progress: Progress<'_>) -> Result<Lab, LabError> {
        check_root()?;
        daemons::check_programs()?;
        let layout = LabLayout::with_root(&opts.name, opts.nodes, &opts.root).map_err(setup_err)?;
        if let Some(pid) = running_supervisor(&layout) {
            return Err(setup_err(format!(
                "lab {:?} is already running (pid {pid}); `ovnk lab down --name {}` first",
                layout.name, layout.name
            )));
        }
        let left = cleanup(&layout)?;
        if !left.is_empty() {
            progress(&format!(
                "cleaned {} leftovers of an earlier run of lab {:?}",
                left.len(),
                layout.name
            ));
        }
        std::fs::create_dir_all(&layout.dir)
            .map_err(|e| setup_err(format!("{}: {e}", layout.dir.display())))?;
        // Logs of the previous run were kept for a post-mortem; this run starts afresh.
        let _ = std::fs::remove_dir_all(layout.logs_dir());
        let sup = Supervisor::new();
        let mut lab = Lab {
            layout: layout.clone(),
            supervisor: sup.clone(),
            kubeconfig: PathBuf::new(),
            central: CentralRemotes {
                nb: vec![],
                sb: String::new(),
            },
            api: None,
            tasks: Vec::new(),
            _netns: Vec::new(),
        };
        match lab.bring_up(opts, progress).await {
            Ok(()) => Ok(lab),
            Err(e) => {
                progress(&format!("bring-up failed: {e}; stopping what was started"));
                lab.shutdown().await;
                Err(e)
            }
        }
    }

    async fn bring_up(
        &mut self,
        opts: &LabOptions,
        progress: Progress<'_>,
    ) -> Result<(), LabError> {
        let t0 = Instant::now();
        let layout = self.layout.clone();
        let step = |msg: &str| progress(&format!("[{:>5.1}s] {msg}", t0.elapsed().as_secs_f64()));

        // 1. The Kubernetes API.
        self.kubeconfig = match &opts.kubeconfig {
            Some(k) => {
                step(&format!("using the API server of {}", k.display()));
                k.clone()
            }
            None => {
                let server =
                    lab_apiserver::Server::start(lab_apiserver::Config::new(layout.api_dir()))
                        .await
                        .map_err(|e| setup_err(format!("lab API server: {e}")))?;
                step(&format!("lab API server on {}", server.url()));
                let k = server.kubeconfig_path().to_path_buf();
                self.api = Some(server);
                k
            }
        };
        let kube = kube_client(&self.kubeconfig).await?;
        // The controller's leader-election Lease lives here, as in OVN-Kubernetes.
        ensure_namespace(&kube, "ovn-kubernetes").await?;

        // 2. OVN central.
        self.central = daemons::start_central(&layout, &self.supervisor, opts.nb_raft).await?;
        step(&format!(
            "OVN central: NB{} + SB + ovn-northd",
            if opts.nb_raft { " (3-member Raft)" } else { "" }
        ));

        // 3. Underlay and nodes.
        let underlay = Arc::new(crate::network::create_underlay(&layout).await?);
        self._netns.push(underlay.clone());
        step(&format!(
            "underlay {} ({}/24, gateway .1)",
            layout.underlay_netns(),
            layout.underlay_net
        ));
        let mut node_ns = BTreeMap::new();
        for node in &layout.nodes {
            let ns = Arc::new(ovnk_netns::create_named(&node.netns)?);
            crate::network::attach_node(&underlay, node, &ns).await?;
            daemons::start_node_ovs(&layout, node, &ns, &self.supervisor).await?;
            crate::network::configure_gateway_bridge(&layout, node, &ns).await?;
            daemons::start_ovn_controller(&layout, node, &ns, &self.supervisor).await?;
            register_node(&kube, node).await?;
            step(&format!(
                "node {} ({}): OVS (userspace datapath), breth0, ovn-controller",
                node.name, node.ip
            ));
            node_ns.insert(node.name.clone(), ns.clone());
            self._netns.push(ns);
        }

        // 4. ovnk itself.
        let ovnk = &opts.ovnk;
        let pids = layout.dir.join("pids");
        let ctl_log = layout.logs_dir().join("ovnk-controller.log");
        self.supervisor
            .start(
                DaemonSpec::new(
                    "ovnk/controller",
                    ovnk,
                    ctl_log,
                    pids.join("ovnk-controller.pid"),
                )
                .args(["controller", "--kubeconfig"])
                .arg(&self.kubeconfig)
                // One identity across restarts, as a pod's name is for a restarted
                // container: a controller the supervisor restarts leads again at once.
                .arg("--identity")
                .arg(format!("ovnk-controller-{}", layout.name))
                .arg("--nb-address")
                .arg(self.central.nb.join(","))
                .env("RUST_LOG", "info"),
            )
            .await?;
        for node in &layout.nodes {
            let ns = node_ns[&node.name].clone();
            let spec = DaemonSpec::new(
                &format!("{}/ovnk-node", node.name),
                ovnk,
                node.log_dir().join("ovnk-node.log"),
                pids.join(format!("{}-ovnk-node.pid", node.name)),
            )
            .args(["node", "--kubeconfig"])
            .arg(&self.kubeconfig)
            // The agent runs beside the API server (loopback) and works inside the
            // node's namespace, as a host-network DaemonSet pod would on a real node.
            .arg("--netns")
            .arg(ns.path())
            .args([
                "--node-name".to_string(),
                node.name.clone(),
                "--ovs-db".into(),
                node.ovs_socket().display().to_string(),
                "--sb-remote".into(),
                self.central.sb.clone(),
                "--system-id".into(),
                node.system_id(),
                "--node-ip".into(),
                format!("{}/{}", node.ip, LabLayout::UNDERLAY_PREFIX_LEN),
                "--gateway-interface".into(),
                "breth0".into(),
                "--gateway-next-hop".into(),
                layout.underlay_gateway().to_string(),
                "--cni-socket".into(),
                node.cni_socket().display().to_string(),
                "--cni-conf-dir".into(),
                node.cni_conf_dir().display().to_string(),
                "--cni-bin-dir".into(),
                node.cni_bin_dir().display().to_string(),
            ])
            .env("RUST_LOG", "info");
            // Default: LAB-gateway.md variant B (OVN-Kubernetes' shared gateway), the
            // router shares the node IP and the agent splits breth0's traffic with
            // OpenFlow. Variant A on request: the router has its own address and MAC,
            // and breth0's NORMAL switching serves both.
            let spec = if dedicated_gateway_router() {
                spec.arg("--gateway-router-address").arg(format!(
                    "{}/{}",
                    node.gateway_router_ip(),
                    LabLayout::UNDERLAY_PREFIX_LEN
                ))
            } else {
                spec
            };
            self.supervisor.start(spec).await?;
        }
        step("ovnk controller and one ovnk node per node started");
        wait_nodes_ready(&kube, &layout, Duration::from_secs(60)).await?;
        step("every node has its subnet and its CNI server");

        // 5. The lab's stand-ins for the rest of Kubernetes. Pods kept from an earlier
        // run lost their sandboxes with the nodes: they say so until they are set up again.
        let restored = mark_sandboxes_lost(&kube, &layout).await?;
        for node in &layout.nodes {
            let mut cfg = crate::kubelet::KubeletConfig::new(
                &node.name,
                vec![IpAddr::V4(node.ip)],
                &format!("{}-", layout.prefix),
                &layout.dir,
            );
            cfg.node_netns = Some(node_ns[&node.name].clone());
            cfg.cni_bin_dir = node.cni_bin_dir();
            cfg.cni_conf_dir = node.cni_conf_dir();
            cfg.supervisor = self.supervisor.clone();
            cfg.responder = Some(crate::kubelet::ResponderProgram {
                program: ovnk.clone(),
                args: vec!["lab".into(), "responder".into()],
            });
            let client = kube.clone();
            let name = node.name.clone();
            self.tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::kubelet::run(client, cfg).await {
                    tracing::error!(node = %name, "lab kubelet stopped: {e}");
                }
            }));
        }
        let client = kube.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::scheduler::run(client).await {
                tracing::error!("lab scheduler stopped: {e}");
            }
        }));
        let client = kube.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::endpointslices::run(client).await {
                tracing::error!("lab EndpointSlice controller stopped: {e}");
            }
        }));
        step("lab kubelets, scheduler and EndpointSlice controller running");
        if !restored.is_empty() {
            let waiting = wait_pods_ready(&kube, &restored, Duration::from_secs(60)).await;
            if waiting.is_empty() {
                step(&format!(
                    "{} pods from the last run set up again",
                    restored.len()
                ));
            } else {
                step(&format!(
                    "warning: {} of {} pods from the last run are not ready yet: {} \
                     (`kubectl describe pod` says why)",
                    waiting.len(),
                    restored.len(),
                    waiting.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Stops everything this lab started and removes its namespaces and run files.
    /// The API server's data stays, so `up` again brings the same objects back.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.supervisor.stop_all().await;
        if let Some(api) = self.api.take() {
            api.shutdown().await;
        }
        self._netns.clear();
        if let Err(e) = cleanup(&self.layout) {
            tracing::warn!("cleanup of lab {}: {e}", self.layout.name);
        }
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn kube_client(kubeconfig: &Path) -> Result<kube::Client, LabError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| setup_err(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| setup_err(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(cfg).map_err(|e| setup_err(format!("Kubernetes client: {e}")))
}

async fn ensure_namespace(kube: &kube::Client, name: &str) -> Result<(), LabError> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(kube.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .map_err(|e| setup_err(e.to_string()))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(setup_err(format!("namespace {name}: {e}"))),
    }
}

/// The Node object a kubelet would register: addresses, hostname label, Ready.
async fn register_node(kube: &kube::Client, node: &NodeLayout) -> Result<(), LabError> {
    let api: Api<Node> = Api::all(kube.clone());
    let err = |e: kube::Error| setup_err(format!("node {}: {e}", node.name));
    let obj: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "ovnk.lab/node": "true",
            },
        },
    }))
    .map_err(|e| setup_err(e.to_string()))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    let status = serde_json::json!({
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "LabKubeletReady",
                "message": "lab kubelet is posting ready status",
                "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339(),
            }],
            "nodeInfo": {
                "architecture": std::env::consts::ARCH, "operatingSystem": "linux",
                "kubeletVersion": "ovnk-lab", "kubeProxyVersion": "", "osImage": "ovnk lab",
                "kernelVersion": "", "containerRuntimeVersion": "ovnk-lab://1",
                "bootID": "", "machineID": "", "systemUUID": "",
            },
        }
    });
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(err)?;
    Ok(())
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Marks every pod the API server still places on this lab's nodes (not host-network,
/// not finished) as not ready, since its network namespace went with the node; returns
/// them as (namespace, name).
async fn mark_sandboxes_lost(
    kube: &kube::Client,
    layout: &LabLayout,
) -> Result<Vec<(String, String)>, LabError> {
    use k8s_openapi::api::core::v1::Pod;
    let node_ips: BTreeMap<&str, IpAddr> = layout
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), IpAddr::V4(n.ip)))
        .collect();
    let all: Api<Pod> = Api::all(kube.clone());
    let pods = all
        .list(&Default::default())
        .await
        .map_err(|e| setup_err(format!("listing pods: {e}")))?;
    let mut marked = Vec::new();
    for pod in pods.items {
        let spec = pod.spec.as_ref();
        let Some(ip) = spec
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| node_ips.get(n))
        else {
            continue;
        };
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        // Only pods that were ready: one that never came up says why already.
        if host_network || !crate::endpointslices::pod_ready(&pod) {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = crate::kubelet::sandbox_lost_status(&pod, &[*ip]);
        let api: Api<Pod> = Api::namespaced(kube.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
        {
            Ok(_) => marked.push((ns, name)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(setup_err(format!("pod {ns}/{name}: status: {e}"))),
        }
    }
    Ok(marked)
}

/// Waits until the given pods are Ready; returns those still not ready at the timeout.
async fn wait_pods_ready(
    kube: &kube::Client,
    pods: &[(String, String)],
    timeout: Duration,
) -> Vec<String> {
    use k8s_openapi::api::core::v1::Pod;
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for (ns, name) in pods {
            let api: Api<Pod> = Api::namespaced(kube.clone(), ns);
            let ready = match api.get_opt(name).await {
                Ok(Some(p)) => crate::endpointslices::pod_ready(&p),
                // Deleted meanwhile: nothing to wait for.
                Ok(None) => true,
                Err(_) => false,
            };
            if !ready {
                waiting.push(format!("{ns}/{name}"));
            }
        }
        if waiting.is_empty() || Instant::now() >= deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready for pods: the controller gave the node its subnet, and its CNI server listens.
async fn wait_nodes_ready(
    kube: &kube::Client,
    layout: &LabLayout,
    timeout: Duration,
) -> Result<(), LabError> {
    let api: Api<Node> = Api::all(kube.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for node in &layout.nodes {
            let has_subnet = match api.get_opt(&node.name).await {
                Ok(Some(n)) => n
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("k8s.ovn.org/node-subnets")),
                _ => false,
            };
            if !has_subnet {
                missing.push(format!(
                    "{} (no node-subnets yet: is ovnk controller up? see {})",
                    node.name,
                    layout.logs_dir().join("ovnk-controller.log").display()
                ));
            } else if !node.cni_socket().exists() {
                missing.push(format!(
                    "{} (no CNI server yet: see {})",
                    node.name,
                    node.log_dir().join("ovnk-node.log").display()
                ));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(setup_err(format!(
                "nodes not ready after {timeout:?}: {}",
                missing.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
