//! Kubernetes through kube-rs: annotation patches, Events, the watchers feeding the
//! controller, and leader election on a coordination.k8s.io/v1 Lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WEvent};
use serde_json::json;

use crate::controller::{Controller, KubeOps};
use crate::ControllerError;

/// [`KubeOps`] over a kube-rs client.
pub struct KubeClientOps {
    client: kube::Client,
    recorder: Recorder,
}

impl KubeClientOps {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "ovnk-controller".into(),
                instance,
            },
        );
        KubeClientOps { client, recorder }
    }
}

impl KubeOps for KubeClientOps {
    fn annotate_node(
        &self,
        name: &str,
        annotations: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = name.to_string();
        async move {
            let patch = json!({"metadata": {"annotations": annotations}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_string();
        let key = key.to_string();
        let uid = uid.to_string();
        async move {
            // The uid precondition makes a write for a deleted-and-recreated pod fail
            // instead of landing on the new pod.
            let patch = json!({"metadata": {"uid": uid, "annotations": {key: value}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn warn(
        &self,
        object: ObjectReference,
        reason: &str,
        message: String,
    ) -> BoxFuture<'static, ()> {
        let recorder = self.recorder.clone();
        let reason = reason.to_string();
        async move {
            let ev = Event {
                type_: EventType::Warning,
                reason,
                note: Some(message.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &object).await {
                tracing::debug!("publishing event: {e}");
            }
        }
        .boxed()
    }
}

// One item at a time flows through the merged stream, so the size difference is harmless.
#[allow(clippy::large_enum_variant)]
enum Change {
    Node(Result<WEvent<Node>, watcher::Error>),
    Pod(Result<WEvent<Pod>, watcher::Error>),
    Namespace(Result<WEvent<Namespace>, watcher::Error>),
}

/// Runs the watchers into `ctl`: buffers the initial lists, applies annotated nodes and pods
/// before unannotated ones (so restarts honour every existing allocation before handing out
/// new ones), reconciles everything once, then follows changes.
pub async fn watch(ctl: Arc<Controller>, client: kube::Client) -> Result<(), ControllerError> {
    let cfg = watcher::Config::default();
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone()).map(Change::Node);
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), cfg.clone()).map(Change::Pod);
    let nss = watcher::watcher(Api::<Namespace>::all(client.clone()), cfg).map(Change::Namespace);
    let mut all = std::pin::pin!(futures::stream::select(
        futures::stream::select(nodes, pods),
        nss
    ));

    let mut init_nodes: Vec<Node> = Vec::new();
    let mut init_pods: Vec<Pod> = Vec::new();
    let mut init_ns: Vec<String> = Vec::new();
    let mut done = [false; 3];
    let mut synced = false;
    let reconciler = tokio::spawn(ctl.clone().run_reconciler());
    let _abort = AbortOnDrop(reconciler);
    // Rows deleted behind our back come back within a couple of seconds.
    let drift_ctl = ctl.clone();
    let drift = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            drift_ctl.check_drift();
        }
    });
    let _abort_drift = AbortOnDrop(drift);
    while let Some(item) = all.next().await {
        let res: Result<(), watcher::Error> = match item {
            Change::Node(Ok(ev)) => {
                match ev {
                    WEvent::Init => {}
                    WEvent::InitApply(n) if !synced => init_nodes.push(n),
                    WEvent::InitDone => done[0] = true,
                    WEvent::Apply(n) | WEvent::InitApply(n) => ctl.node_applied(&n),
                    WEvent::Delete(n) => {
                        if let Some(name) = n.metadata.name.as_deref() {
                            ctl.node_deleted(name)
                        }
                    }
                }
                Ok(())
            }
            Change::Pod(Ok(ev)) => {
                match ev {
                    WEvent::Init => {}
                    WEvent::InitApply(p) if !synced => init_pods.push(p),
                    WEvent::InitDone => done[1] = true,
                    WEvent::Apply(p) | WEvent::InitApply(p) => ctl.pod_applied(&p),
                    WEvent::Delete(p) => {
                        if let (Some(ns), Some(n)) =
                            (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
                        {
                            ctl.pod_deleted(ns, n)
                        }
                    }
                }
                Ok(())
            }
            Change::Namespace(Ok(ev)) => {
                match ev {
                    WEvent::Init => {}
                    WEvent::InitApply(n) if !synced => {
                        init_ns.extend(n.metadata.name);
                    }
                    WEvent::InitDone => done[2] = true,
                    WEvent::Apply(n) | WEvent::InitApply(n) => {
                        if let Some(name) = n.metadata.name.as_deref() {
                            ctl.namespace_applied(name)
                        }
                    }
                    WEvent::Delete(n) => {
                        if let Some(name) = n.metadata.name.as_deref() {
                            ctl.namespace_deleted(name)
                        }
                    }
                }
                Ok(())
            }
            Change::Node(Err(e)) | Change::Pod(Err(e)) | Change::Namespace(Err(e)) => Err(e),
        };
        if let Err(e) = res {
            // The watcher retries by itself; back off a little so a broken API is not hammered.
            tracing::warn!("watch error: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !synced && done.iter().all(|d| *d) {
            synced = true;
            initial_sync(&ctl, &init_nodes, &init_pods, &init_ns);
            init_nodes.clear();
            init_pods.clear();
            init_ns.clear();
            tracing::info!("initial lists applied; reconciling everything");
        }
    }
    Ok(())
}

/// Applies the initial lists in an order that honours existing allocations first.
pub fn initial_sync(ctl: &Arc<Controller>, nodes: &[Node], pods: &[Pod], namespaces: &[String]) {
    let has = |m: &ObjectMeta, k: &str| m.annotations.as_ref().is_some_and(|a| a.contains_key(k));
    for n in nodes
        .iter()
        .filter(|n| has(&n.metadata, ovnk_annotations::NODE_SUBNETS))
    {
        ctl.node_applied(n);
    }
    for n in nodes
        .iter()
        .filter(|n| !has(&n.metadata, ovnk_annotations::NODE_SUBNETS))
    {
        ctl.node_applied(n);
    }
    for ns in namespaces {
        ctl.namespace_applied(ns);
    }
    for p in pods
        .iter()
        .filter(|p| has(&p.metadata, ovnk_annotations::POD_NETWORKS))
    {
        ctl.pod_applied(p);
    }
    for p in pods
        .iter()
        .filter(|p| !has(&p.metadata, ovnk_annotations::POD_NETWORKS))
    {
        ctl.pod_applied(p);
    }
    ctl.mark_all();
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------- leader election

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn expired(spec: &LeaseSpec, duration: Duration) -> bool {
    let secs = spec
        .lease_duration_seconds
        .map_or(duration.as_secs() as i64, i64::from);
    match &spec.renew_time {
        None => true,
        Some(MicroTime(t)) => {
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(*t);
            age.as_secs() > secs
        }
    }
}

/// Blocks until this replica holds the Lease. Takeover of an expired Lease uses the
/// resourceVersion of what was read, so two standbys cannot both win.
pub async fn acquire(client: &kube::Client, cfg: &LeaseConfig) -> Result<(), ControllerError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    loop {
        match try_acquire(&api, cfg).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!("lease {}/{}: {e}", cfg.namespace, cfg.name),
        }
        tokio::time::sleep(retry_period(cfg)).await;
    }
}

fn retry_period(cfg: &LeaseConfig) -> Duration {
    (cfg.duration / 5).max(Duration::from_millis(200))
}

async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    let mine = |transitions: i32| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(mine(0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let held_by_me = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !held_by_me && !expired(&spec, cfg.duration) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_me);
            lease.spec = Some(mine(transitions));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Renews the Lease until it is lost (another holder, or no successful renewal within the
/// lease duration); returns then.
pub async fn keep(client: kube::Client, cfg: LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(retry_period(&cfg)).await;
        match api.get_opt(&cfg.name).await {
            Ok(Some(mut lease)) => {
                let mut spec = lease.spec.clone().unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
                    tracing::error!("lost the lease to {:?}", spec.holder_identity);
                    return;
                }
                spec.renew_time = Some(now());
                lease.spec = Some(spec);
                if api
                    .replace(&cfg.name, &PostParams::default(), &lease)
                    .await
                    .is_ok()
                {
                    last_ok = tokio::time::Instant::now();
                }
            }
            Ok(None) => {
                tracing::error!("the lease was deleted");
                return;
            }
            Err(e) => tracing::warn!("renewing the lease: {e}"),
        }
        if last_ok.elapsed() > cfg.duration {
            tracing::error!("could not renew the lease within {:?}", cfg.duration);
            return;
        }
    }
}
