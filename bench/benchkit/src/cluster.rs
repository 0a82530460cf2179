//! The controller side: an in-memory Kubernetes stand-in, synthetic nodes, a controller on
//! a test ovsdb-server, and the floor transaction through the controller's own NB client.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ovnk_annotations::{self as ann, GatewayMode, L3Gateway, L3GatewayConfig};
use ovnk_controller::engine::Plan;
use ovnk_controller::nb::Nb;
use ovnk_controller::rows::{DesiredRow, Owner};
use ovnk_controller::{Controller, ControllerConfig, KubeOps};

/// The cluster subnets every bench controller allocates from.
pub const CLUSTER_SUBNETS: &str = "10.128.0.0/9/24";

/// An in-memory `KubeOps`: records the annotations the controller writes, keyed
/// `node/<name>` and `pod/<namespace>/<name>`, counts writes and warning events, and prints
/// warnings to stderr (all of them, or the first few with [`MemKube::with_warning_limit`]).
pub struct MemKube {
    annotations: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Annotation writes (node and pod) so far.
    pub writes: AtomicUsize,
    /// Warning events so far.
    pub warnings: AtomicUsize,
    print_warnings: usize,
}

impl Default for MemKube {
    fn default() -> Self {
        MemKube {
            annotations: Mutex::default(),
            writes: AtomicUsize::new(0),
            warnings: AtomicUsize::new(0),
            print_warnings: usize::MAX,
        }
    }
}

impl KubeOps for MemKube {
    fn annotate_node(
        &self,
        name: &str,
        a: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.annotations.lock() {
            m.entry(format!("pod/{ns}/{name}"))
                .or_default()
                .insert(key.to_string(), value);
        }
        async { Ok(()) }.boxed()
    }
    fn warn(&self, o: ObjectReference, reason: &str, message: String) -> BoxFuture<'static, ()> {
        if self.warnings.fetch_add(1, Ordering::Relaxed) < self.print_warnings {
            eprintln!("event {:?}/{:?}: {reason}: {message}", o.kind, o.name);
        }
        async {}.boxed()
    }
}

impl MemKube {
    /// A stand-in that prints only the first `n` warnings (all are counted).
    pub fn with_warning_limit(n: usize) -> Self {
        MemKube {
            print_warnings: n,
            ..Default::default()
        }
    }

    /// The annotations recorded for `key` (`node/<name>`, `pod/<ns>/<name>`); empty if none.
    pub fn get(&self, key: &str) -> BTreeMap<String, String> {
        self.annotations
            .lock()
            .map(|m| m.get(key).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Nodes `0..n` from [`node`], each with the annotations recorded for it so far.
    pub fn nodes(&self, n: usize) -> Result<Vec<Node>> {
        (0..n)
            .map(|i| node(i, self.get(&format!("node/node{i}"))))
            .collect()
    }

    /// Pods that have their `k8s.ovn.org/pod-networks` annotation.
    pub fn pods_annotated(&self) -> usize {
        self.annotations
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| k.starts_with("pod/") && v.contains_key(ann::POD_NETWORKS))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// Node `node<i>` as the node agent would have annotated it (chassis `chassis-<i>`, a shared
/// gateway on `breth0` at 172.16.x.y/16), plus `extra` (what the controller wrote before).
pub fn node(i: usize, extra: BTreeMap<String, String>) -> Result<Node> {
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

/// A default-network controller on NB `nb` with [`CLUSTER_SUBNETS`], writing to `kube`.
/// `batch_env` names an environment variable that, when set to a number, overrides the
/// keys per transaction (`max_batch`).
pub async fn controller(
    nb: &str,
    kube: Arc<MemKube>,
    batch_env: Option<&str>,
) -> Result<Arc<Controller>> {
    let mut cfg = ControllerConfig::with_cluster_subnets(&[CLUSTER_SUBNETS]);
    cfg.nb_remotes = vec![nb.to_string()];
    if let Some(b) = batch_env
        .and_then(|name| std::env::var(name).ok())
        .and_then(|v| v.parse().ok())
    {
        cfg.max_batch = b;
    }
    let ops: Arc<dyn KubeOps> = kube;
    ovnk_controller::build(&cfg, ops)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// The desired rows of every owner in `ctl`'s index that `keep` accepts.
pub fn desired_groups(
    ctl: &Controller,
    keep: impl Fn(&Owner) -> bool,
) -> Vec<(Owner, Vec<DesiredRow>)> {
    let idx = ctl.index();
    idx.all_owners()
        .into_iter()
        .filter(|o| keep(o))
        .map(|o| {
            let d = idx.desired(&o);
            (o, d)
        })
        .collect()
}

/// A server for the floor and the controller's NB client on it, which plans against the
/// server's contents and commits a plan as one transaction.
pub struct FloorDb {
    nb: Nb,
    server: testkit::OvsdbServer,
}

impl FloorDb {
    /// A fresh, empty NB server.
    pub async fn start() -> Result<FloorDb> {
        let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).context("ovsdb-server")?;
        FloorDb::connect(server).await
    }

    /// Connects to `server` (already in its starting state).
    pub async fn connect(server: testkit::OvsdbServer) -> Result<FloorDb> {
        let cfg = ControllerConfig {
            nb_remotes: vec![server.remote()],
            ..Default::default()
        };
        let nb = Nb::connect(&cfg, "default-network-controller")
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(FloorDb { nb, server })
    }

    /// The operations that bring the server to `groups`, planned by the controller's engine.
    pub fn plan(&self, groups: &[(Owner, Vec<DesiredRow>)]) -> Plan {
        let cache = self.nb.cache();
        ovnk_controller::engine::plan(&cache, groups)
    }

    /// Commits `ops` as one transaction; returns how long it took.
    pub async fn transact(&self, ops: Vec<serde_json::Value>) -> Result<Duration> {
        let t = Instant::now();
        self.nb
            .transact(ops)
            .await
            .map_err(|e| anyhow!("raw transaction: {e}"))?;
        Ok(t.elapsed())
    }

    /// The NB client (its cache follows the server).
    pub fn nb(&self) -> &Nb {
        &self.nb
    }

    /// The server's unix socket, for [`RawConn`](crate::raw::RawConn).
    pub fn socket_path(&self) -> &Path {
        self.server.socket_path()
    }
}
