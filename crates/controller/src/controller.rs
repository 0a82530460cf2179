//! The driver: feeds the index from Kubernetes events, writes allocations to the API before
//! they are used, and reconciles dirty owners into batched NB transactions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::{Notify, Semaphore};

use crate::engine;
use crate::index::{pod_key, Index, NodeAction, PodAction, Problem};
use crate::nb::{Nb, TxnFailure};
use crate::rows::{Owner, OwnerKind};
use serde_json::Value as Json;

/// The Kubernetes writes the controller makes; the real one goes through kube-rs
/// ([`crate::kube_io::KubeClientOps`]); tests and benchmarks may use an in-memory one.
pub trait KubeOps: Send + Sync + 'static {
    /// Merge-patches node annotations.
    fn annotate_node(
        &self,
        name: &str,
        annotations: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// Merge-patches one pod annotation, only if the pod still has `uid`.
    fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// Publishes a Warning event about `object`.
    fn warn(
        &self,
        object: ObjectReference,
        reason: &str,
        message: String,
    ) -> BoxFuture<'static, ()>;
}

type CommitHook = Box<dyn Fn(&[Owner]) + Send + Sync>;
/// A transaction in flight and the owners it carries.
type InFlight = (Vec<Owner>, tokio::task::JoinHandle<Result<(), TxnFailure>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Shared controller state.
pub struct Controller {
    index: Mutex<Index>,
    nb: Nb,
    kube: Arc<dyn KubeOps>,
    dirty: Mutex<BTreeSet<Owner>>,
    notify: Notify,
    /// Latest pod objects of pods waiting for their node (re-applied when it is ready).
    parked: Mutex<HashMap<String, Pod>>,
    annotate_limit: Arc<Semaphore>,
    in_flight: AtomicUsize,
    max_batch: usize,
    /// Time spent computing desired rows and planning (benchmarks).
    pub plan_nanos: std::sync::atomic::AtomicU64,
    /// Commit hook (tests, benchmarks): called with the owners of each committed txn.
    on_commit: Mutex<Option<CommitHook>>,
}

fn node_ref(name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    }
}

fn object_ref(kind: &str, api_version: &str, m: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        ..Default::default()
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

impl Controller {
    pub fn new(index: Index, nb: Nb, kube: Arc<dyn KubeOps>, max_batch: usize) -> Arc<Self> {
        Arc::new(Controller {
            index: Mutex::new(index),
            nb,
            kube,
            dirty: Mutex::new(BTreeSet::new()),
            notify: Notify::new(),
            parked: Mutex::new(HashMap::new()),
            annotate_limit: Arc::new(Semaphore::new(64)),
            in_flight: AtomicUsize::new(0),
            max_batch: max_batch.max(1),
            plan_nanos: std::sync::atomic::AtomicU64::new(0),
            on_commit: Mutex::new(None),
        })
    }

    pub fn nb(&self) -> &Nb {
        &self.nb
    }

    pub fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    pub fn set_commit_hook(&self, f: impl Fn(&[Owner]) + Send + Sync + 'static) {
        *lock(&self.on_commit) = Some(Box::new(f));
    }

    fn mark(&self, owners: Vec<Owner>) {
        if owners.is_empty() {
            return;
        }
        lock(&self.dirty).extend(owners);
        self.notify.notify_one();
    }

    fn report(&self, object: ObjectReference, p: Problem) {
        tracing::warn!(reason = p.reason, "{}", p.message);
        let f = self.kube.warn(object, p.reason, p.message);
        tokio::spawn(f);
    }

    // ------------------------------------------------------------------ events in

    pub fn node_applied(self: &Arc<Self>, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let mut dirty = Vec::new();
        let action = self.index().apply_node(node, &mut dirty);
        self.mark(dirty);
        match action {
            NodeAction::Nothing => {}
            NodeAction::Report(p) => self.report(node_ref(&name, node.metadata.uid.clone()), p),
            NodeAction::Annotate(a) => {
                let this = self.clone();
                let fut = self.kube.annotate_node(&name, a);
                let uid = node.metadata.uid.clone();
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let res = fut.await;
                    let mut dirty = Vec::new();
                    match res {
                        Ok(()) => this.index().node_annotated(&name, &mut dirty),
                        Err(e) => {
                            this.index().node_annotate_failed(&name);
                            this.report(
                                node_ref(&name, uid),
                                Problem {
                                    reason: "NodeAnnotationFailed",
                                    message: format!("node {name}: writing allocations: {e}"),
                                },
                            );
                        }
                    }
                    this.mark(dirty);
                    this.wake_parked();
                    this.in_flight.fetch_sub(1, Ordering::SeqCst);
                    this.notify.notify_one();
                });
            }
        }
        self.wake_parked();
    }

    pub fn node_deleted(&self, name: &str) {
        let mut dirty = Vec::new();
        self.index().delete_node(name, &mut dirty);
        self.mark(dirty);
    }

    fn wake_parked(self: &Arc<Self>) {
        // Lock order parked → index, as in `pod_applied`: a pod is either parked before
        // its wake-up is taken here, or applied after its node was annotated.
        let pods: Vec<Pod> = {
            let mut parked = lock(&self.parked);
            let woken = self.index().take_woken();
            woken.iter().filter_map(|k| parked.remove(k)).collect()
        };
        for p in pods {
            self.pod_applied(&p);
        }
    }

    pub fn pod_applied(self: &Arc<Self>, pod: &Pod) {
        let mut dirty = Vec::new();
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            self.index().apply_pod(pod, &mut dirty);
            self.mark(dirty);
            return;
        };
        let key = pod_key(&ns, &name);
        // Deciding to wait and parking are one step under the parked lock: otherwise the
        // node's annotation could land in between, its wake-up find nothing parked, and
        // the pod wait forever (a lost wake-up seen under load).
        let action = {
            let mut parked = lock(&self.parked);
            let mut index = self.index();
            let action = index.apply_pod(pod, &mut dirty);
            if index.is_waiting(&key) {
                parked.insert(key, pod.clone());
                drop(index);
                drop(parked);
                self.mark(dirty);
                return;
            }
            action
        };
        self.mark(dirty);
        match action {
            PodAction::Nothing => {}
            PodAction::Report(p) => self.report(pod_ref(pod), p),
            PodAction::Annotate { value, .. } => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let fut =
                    self.kube
                        .annotate_pod(&ns, &name, &uid, ovnk_annotations::POD_NETWORKS, value);
                let this = self.clone();
                let sem = self.annotate_limit.clone();
                let obj = pod_ref(pod);
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let mut dirty = Vec::new();
                    match fut.await {
                        Ok(()) => this.index().pod_annotated(&ns, &name, &uid, &mut dirty),
                        Err(e) => {
                            this.index().pod_annotate_failed(&ns, &name, &uid);
                            this.report(
                                obj,
                                Problem {
                                    reason: "PodAnnotationFailed",
                                    message: format!(
                                        "pod {ns}/{name}: writing {}: {e}",
                                        ovnk_annotations::POD_NETWORKS
                                    ),
                                },
                            );
                        }
                    }
                    this.mark(dirty);
                    this.in_flight.fetch_sub(1, Ordering::SeqCst);
                    this.notify.notify_one();
                });
            }
        }
    }

    pub fn pod_deleted(&self, ns: &str, name: &str) {
        lock(&self.parked).remove(&pod_key(ns, name));
        let mut dirty = Vec::new();
        self.index().delete_pod(ns, name, &mut dirty);
        self.mark(dirty);
    }

    pub fn namespace_applied(&self, ns: &Namespace) {
        let mut dirty = Vec::new();
        let problem = self.index().apply_namespace(ns, &mut dirty);
        self.mark(dirty);
        if let Some(p) = problem {
            self.report(object_ref("Namespace", "v1", &ns.metadata), p);
        }
    }

    pub fn policy_applied(&self, policy: &NetworkPolicy) {
        let mut dirty = Vec::new();
        let problem = self.index().apply_policy(policy, &mut dirty);
        self.mark(dirty);
        if let Some(p) = problem {
            self.report(
                object_ref("NetworkPolicy", "networking.k8s.io/v1", &policy.metadata),
                p,
            );
        }
    }

    pub fn policy_deleted(&self, ns: &str, name: &str) {
        let mut dirty = Vec::new();
        self.index().delete_policy(ns, name, &mut dirty);
        self.mark(dirty);
    }

    pub fn service_applied(&self, svc: &Service) {
        let mut dirty = Vec::new();
        let problem = self.index().apply_service(svc, &mut dirty);
        self.mark(dirty);
        if let Some(p) = problem {
            self.report(object_ref("Service", "v1", &svc.metadata), p);
        }
    }

    pub fn service_deleted(&self, ns: &str, name: &str) {
        let mut dirty = Vec::new();
        self.index().delete_service(ns, name, &mut dirty);
        self.mark(dirty);
    }

    pub fn slice_applied(&self, slice: &EndpointSlice) {
        let mut dirty = Vec::new();
        self.index().apply_slice(slice, &mut dirty);
        self.mark(dirty);
    }

    pub fn slice_deleted(&self, ns: &str, name: &str) {
        let mut dirty = Vec::new();
        self.index().delete_slice(ns, name, &mut dirty);
        self.mark(dirty);
    }

    pub fn namespace_deleted(&self, name: &str) {
        let mut dirty = Vec::new();
        self.index().delete_namespace(name, &mut dirty);
        self.mark(dirty);
    }

    // ------------------------------------------------------------------ reconcile

    /// Marks every owner dirty: those the index knows and those with rows in NB (stale
    /// ones then lose their rows). Used once the initial lists are in.
    pub fn mark_all(&self) {
        let mut owners = self.index().all_owners();
        owners.extend(self.nb.cache().owners());
        self.mark(owners);
    }

    fn requeue_later(self: &Arc<Self>, owners: Vec<Owner>, after: Duration) {
        if owners.is_empty() {
            return;
        }
        let this = self.clone();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            this.mark(owners);
            this.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Desired rows and the plan for `owners`; None when there is nothing to send.
    /// Owners that cannot be planned yet (missing parent) are retried shortly.
    fn plan_batch(self: &Arc<Self>, owners: &[Owner]) -> Option<(Vec<Owner>, Vec<Json>)> {
        if owners.is_empty() {
            return None;
        }
        let started = std::time::Instant::now();
        let groups: Vec<(Owner, Vec<crate::rows::DesiredRow>)> = {
            let idx = self.index();
            owners.iter().map(|o| (o.clone(), idx.desired(o))).collect()
        };
        let plan = {
            let cache = self.nb.cache();
            engine::plan(&cache, &groups)
        };
        self.plan_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if !plan.failed.is_empty() {
            for (o, e) in &plan.failed {
                tracing::debug!(owner = %o, "deferred: {e}");
            }
            let retry: Vec<Owner> = plan.failed.iter().map(|(o, _)| o.clone()).collect();
            self.requeue_later(retry, Duration::from_millis(200));
        }
        if plan.is_empty() {
            self.index().committed(&plan.planned);
            return None;
        }
        Some((plan.planned, plan.ops))
    }

    /// Handles a transaction's outcome. A rejected batch is split to isolate the owner at
    /// fault; a connection failure retries the whole batch (re-planned from the cache).
    fn finish(
        self: &Arc<Self>,
        planned: Vec<Owner>,
        result: Result<(), TxnFailure>,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match result {
                Ok(()) => {
                    drop(self.nb.cache());
                    self.index().committed(&planned);
                    if let Some(h) = lock(&self.on_commit).as_ref() {
                        h(&planned);
                    }
                }
                Err(TxnFailure::Connection(e)) => {
                    tracing::warn!("NB transaction of {} owners: {e}; retrying", planned.len());
                    self.requeue_later(planned, Duration::from_millis(500));
                }
                Err(e) if planned.len() > 1 => {
                    tracing::debug!(
                        "transaction of {} owners failed ({e}); splitting",
                        planned.len()
                    );
                    let mut a = planned;
                    let b = a.split_off(a.len() / 2);
                    self.reconcile(a).await;
                    self.reconcile(b).await;
                }
                Err(e) => {
                    let o = planned[0].clone();
                    tracing::error!(owner = %o, "NB transaction failed: {e}");
                    if o.kind == OwnerKind::Node {
                        self.report(
                            node_ref(&o.name, None),
                            Problem {
                                reason: "NBTransactionFailed",
                                message: format!("{o}: {e}"),
                            },
                        );
                    }
                    self.requeue_later(vec![o], Duration::from_secs(2));
                }
            }
        })
    }

    /// Reconciles one batch of owners now: plan against the cache, one transaction.
    pub fn reconcile(self: &Arc<Self>, owners: Vec<Owner>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some((planned, ops)) = self.plan_batch(&owners) {
                let r = self.nb.transact(ops).await;
                self.finish(planned, r).await;
            }
        })
    }

    /// Takes up to `max_batch` dirty owners, skipping those in a transaction in flight (they
    /// stay dirty and are planned once it committed).
    fn take_batch_excluding(&self, busy: &HashSet<Owner>) -> Vec<Owner> {
        let mut d = lock(&self.dirty);
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        while out.len() < self.max_batch {
            match d.pop_first() {
                Some(o) if busy.contains(&o) => skipped.push(o),
                Some(o) => out.push(o),
                None => break,
            }
        }
        d.extend(skipped);
        out
    }

    /// The pipelined loop: the next batch is planned while the previous transaction is in
    /// flight (disjoint owners, so neither plan depends on the other's outcome; a child
    /// whose parent is still in flight is simply deferred). Transactions are still sent one
    /// at a time, each after the previous one's updates are in the cache.
    async fn drive(self: &Arc<Self>, until_idle: bool) {
        let mut pending: Option<InFlight> = None;
        loop {
            let busy: HashSet<Owner> = pending
                .as_ref()
                .map(|(o, _)| o.iter().cloned().collect())
                .unwrap_or_default();
            let batch = self.take_batch_excluding(&busy);
            if batch.is_empty() {
                if let Some((owners, h)) = pending.take() {
                    let r = h
                        .await
                        .unwrap_or_else(|e| Err(TxnFailure::Connection(e.to_string())));
                    self.finish(owners, r).await;
                    continue;
                }
                if until_idle {
                    if self.is_idle() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else {
                    self.notify.notified().await;
                }
                continue;
            }
            let next = self.plan_batch(&batch);
            if let Some((owners, h)) = pending.take() {
                let r = h
                    .await
                    .unwrap_or_else(|e| Err(TxnFailure::Connection(e.to_string())));
                self.finish(owners, r).await;
            }
            if let Some((owners, ops)) = next {
                let this = self.clone();
                pending = Some((
                    owners,
                    tokio::spawn(async move { this.nb.transact(ops).await }),
                ));
            }
        }
    }

    /// Reconciles until nothing is dirty and no annotation write or retry is in flight.
    pub async fn settle(self: &Arc<Self>) {
        self.drive(true).await
    }

    /// The reconcile loop: runs until the task is dropped.
    pub async fn run_reconciler(self: Arc<Self>) {
        self.drive(false).await
    }

    /// Re-plans the owners whose NB rows were deleted since the last check (by us — then
    /// the plan is empty — or by hand, then the rows come back). Called periodically.
    pub fn check_drift(&self) -> usize {
        let owners = self.nb.cache().take_deleted_owners();
        let n = owners.len();
        self.mark(owners);
        n
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && lock(&self.dirty).is_empty()
    }
}
