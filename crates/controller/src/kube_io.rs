//! Kubernetes through kube-rs: annotation patches, Events, the watchers feeding the
//! controller, and leader election on a coordination.k8s.io/v1 Lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
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
    Service(Result<WEvent<Service>, watcher::Error>),
    Slice(Result<WEvent<EndpointSlice>, watcher::Error>),
    Policy(Result<WEvent<NetworkPolicy>, watcher::Error>),
}

/// The initial lists of every watched kind, applied together once all are in.
#[derive(Default)]
pub struct InitialLists {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub policies: Vec<NetworkPolicy>,
}

fn ns_name(m: &ObjectMeta) -> Option<(&str, &str)> {
    Some((m.namespace.as_deref()?, m.name.as_deref()?))
}

/// Runs the watchers into `ctl`: buffers the initial lists, applies annotated nodes and pods
/// before unannotated ones (so restarts honour every existing allocation before handing out
/// new ones), reconciles everything once, then follows changes.
pub async fn watch(ctl: Arc<Controller>, client: kube::Client) -> Result<(), ControllerError> {
    let cfg = watcher::Config::default();
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone()).map(Change::Node);
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), cfg.clone()).map(Change::Pod);
    let nss =
        watcher::watcher(Api::<Namespace>::all(client.clone()), cfg.clone()).map(Change::Namespace);
    let svcs =
        watcher::watcher(Api::<Service>::all(client.clone()), cfg.clone()).map(Change::Service);
    let slices =
        watcher::watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone()).map(Change::Slice);
    let pols = watcher::watcher(Api::<NetworkPolicy>::all(client.clone()), cfg).map(Change::Policy);
    let mut all = std::pin::pin!(futures::stream::select_all(vec![
        nodes.boxed(),
        pods.boxed(),
        nss.boxed(),
        svcs.boxed(),
        slices.boxed(),
        pols.boxed(),
    ]));

    let mut init = InitialLists::default();
    let mut done = [false; 6];
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
    // The initial list of each kind is buffered until every kind is listed.
    macro_rules! handle {
        ($ev:expr, $i:expr, $buf:expr, $apply:expr, $delete:expr) => {{
            match $ev {
                WEvent::Init => {}
                WEvent::InitApply(o) if !synced => $buf.push(o),
                WEvent::InitDone => done[$i] = true,
                WEvent::Apply(o) | WEvent::InitApply(o) => $apply(&o),
                WEvent::Delete(o) => $delete(&o),
            }
            Ok(())
        }};
    }
    while let Some(item) = all.next().await {
        let res: Result<(), watcher::Error> = match item {
            Change::Node(Ok(ev)) => handle!(
                ev,
                0,
                init.nodes,
                |n: &Node| ctl.node_applied(n),
                |n: &Node| if let Some(name) = n.metadata.name.as_deref() {
                    ctl.node_deleted(name)
                }
            ),
            Change::Pod(Ok(ev)) => handle!(
                ev,
                1,
                init.pods,
                |p: &Pod| ctl.pod_applied(p),
                |p: &Pod| if let Some((ns, n)) = ns_name(&p.metadata) {
                    ctl.pod_deleted(ns, n)
                }
            ),
            Change::Namespace(Ok(ev)) => handle!(
                ev,
                2,
                init.namespaces,
                |n: &Namespace| ctl.namespace_applied(n),
                |n: &Namespace| if let Some(name) = n.metadata.name.as_deref() {
                    ctl.namespace_deleted(name)
                }
            ),
            Change::Service(Ok(ev)) => handle!(
                ev,
                3,
                init.services,
                |s: &Service| ctl.service_applied(s),
                |s: &Service| if let Some((ns, n)) = ns_name(&s.metadata) {
                    ctl.service_deleted(ns, n)
                }
            ),
            Change::Slice(Ok(ev)) => handle!(
                ev,
                4,
                init.slices,
                |s: &EndpointSlice| ctl.slice_applied(s),
                |s: &EndpointSlice| if let Some((ns, n)) = ns_name(&s.metadata) {
                    ctl.slice_deleted(ns, n)
                }
            ),
            Change::Policy(Ok(ev)) => handle!(
                ev,
                5,
                init.policies,
                |p: &NetworkPolicy| ctl.policy_applied(p),
                |p: &NetworkPolicy| if let Some((ns, n)) = ns_name(&p.metadata) {
                    ctl.policy_deleted(ns, n)
                }
            ),
            Change::Node(Err(e))
            | Change::Pod(Err(e))
            | Change::Namespace(Err(e))
            | Change::Service(Err(e))
            | Change::Slice(Err(e))
            | Change::Policy(Err(e)) => Err(e),
        };
        if let Err(e) = res {
            // The watcher retries by itself; back off a little so a broken API is not hammered.
            tracing::warn!("watch error: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !synced && done.iter().all(|d| *d) {
            synced = true;
            apply_initial(&ctl, std::mem::take(&mut init));
            tracing::info!("initial lists applied; reconciling everything");
        }
    }
    Ok(())
}

/// Applies the initial lists in an order that honours existing allocations first, then
/// marks everything for one reconcile.
pub fn apply_initial(ctl: &Arc<Controller>, lists: InitialLists) {
    let has = |m: &ObjectMeta, k: &str| m.annotations.as_ref().is_some_and(|a| a.contains_key(k));
    let (annotated, fresh): (Vec<&Node>, Vec<&Node>) = lists
        .nodes
        .iter()
        .partition(|n| has(&n.metadata, ovnk_annotations::NODE_SUBNETS));
    for n in annotated.into_iter().chain(fresh) {
        ctl.node_applied(n);
    }
    for ns in &lists.namespaces {
        ctl.namespace_applied(ns);
    }
    for s in &lists.services {
        ctl.service_applied(s);
    }
    for s in &lists.slices {
        ctl.slice_applied(s);
    }
    for p in &lists.policies {
        ctl.policy_applied(p);
    }
    let (annotated, fresh): (Vec<&Pod>, Vec<&Pod>) = lists
        .pods
        .iter()
        .partition(|p| has(&p.metadata, ovnk_annotations::POD_NETWORKS));
    for p in annotated.into_iter().chain(fresh) {
        ctl.pod_applied(p);
    }
    ctl.mark_all();
}

/// [`apply_initial`] for nodes, pods and namespaces given by name (tests and benchmarks).
pub fn initial_sync(ctl: &Arc<Controller>, nodes: &[Node], pods: &[Pod], namespaces: &[String]) {
    apply_initial(
        ctl,
        InitialLists {
            nodes: nodes.to_vec(),
            pods: pods.to_vec(),
            namespaces: namespaces
                .iter()
                .map(|n| Namespace {
                    metadata: ObjectMeta {
                        name: Some(n.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    );
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

/// A leader that stopped cleanly leaves the Lease without a holder (as client-go's
/// ReleaseOnCancel does), so a successor need not wait for it to expire.
fn released(spec: &LeaseSpec) -> bool {
    spec.holder_identity.as_deref().unwrap_or("").is_empty()
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
            if !held_by_me && !released(&spec) && !expired(&spec, cfg.duration) {
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

/// Gives the Lease up if this replica still holds it: clears the holder, so a standby
/// takes over at its next attempt instead of after the lease duration. The write uses the
/// resourceVersion that was read, so a Lease someone else already took is left alone.
pub async fn release(client: &kube::Client, cfg: &LeaseConfig) -> Result<bool, ControllerError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let what =
        |e: kube::Error| ControllerError::Lease(format!("{}/{}: {e}", cfg.namespace, cfg.name));
    let Some(mut lease) = api.get_opt(&cfg.name).await.map_err(what)? else {
        return Ok(false);
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    spec.acquire_time = None;
    lease.spec = Some(spec);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(what(e)),
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

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn a_released_lease_is_free_at_once_and_a_held_one_is_not() {
        let fresh = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(now()),
            ..Default::default()
        };
        assert!(!released(&fresh));
        assert!(!expired(&fresh, Duration::from_secs(10)));
        let gone = LeaseSpec {
            holder_identity: None,
            renew_time: None,
            ..fresh.clone()
        };
        assert!(released(&gone));
        let empty = LeaseSpec {
            holder_identity: Some(String::new()),
            ..fresh
        };
        assert!(released(&empty));
    }
}
