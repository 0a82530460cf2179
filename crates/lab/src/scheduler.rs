//! Lab stand-in for kube-scheduler: binds every pending pod that asks for the default
//! scheduler (`spec.schedulerName` unset or `default-scheduler`) to a node.
//!
//! A node fits when it is Ready, not `spec.unschedulable`, carries every label of the
//! pod's `spec.nodeSelector` and has no NoSchedule/NoExecute taint the pod does not
//! tolerate. Among fitting nodes the one with the fewest pods wins (ties: node name), so
//! pods spread. Binding goes through `pods/<name>/binding`; only if the server does not
//! serve that subresource is `spec.nodeName` patched instead. A pod that fits nowhere gets
//! `PodScheduled=False` (reason `Unschedulable`, with why) and is tried again when nodes
//! change and every few seconds. Affinity, resources, ports and topology spread are not
//! considered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;

/// The scheduler name pods ask for (the default one, as upstream).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("pod {pod}: binding to node {node}: {source}")]
    Bind {
        pod: String,
        node: String,
        source: kube::Error,
    },
    #[error("pod {pod}: status: {source}")]
    Status { pod: String, source: kube::Error },
}

/// Whether `pod` is this scheduler's to place.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some(DEFAULT_SCHEDULER)
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerates(tols: &[Toleration], key: &str, value: &str, effect: &str) -> bool {
    tols.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == key,
        };
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == value,
        };
        effect_ok && key_ok && value_ok
    })
}

/// Why `node` cannot take `pod`, or `None` when it fits.
pub fn unfit_reason(pod: &Pod, node: &Node) -> Option<String> {
    let name = node.metadata.name.as_deref().unwrap_or("");
    if !node_ready(node) {
        return Some(format!("node {name} is not Ready"));
    }
    let nspec = node.spec.as_ref();
    if nspec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some(format!("node {name} is unschedulable"));
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let pspec = pod.spec.as_ref();
    for (k, v) in pspec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
    {
        if labels.get(k) != Some(v) {
            return Some(format!("node {name} does not match nodeSelector {k}={v}"));
        }
    }
    let tols = pspec
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    for t in nspec.and_then(|s| s.taints.as_deref()).unwrap_or_default() {
        if matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerates(tols, &t.key, t.value.as_deref().unwrap_or(""), &t.effect)
        {
            return Some(format!("node {name} has untolerated taint {}", t.key));
        }
    }
    None
}

/// Picks the fitting node with the fewest pods (`counts`), ties broken by name; or the
/// reasons nothing fits.
pub fn pick_node(
    pod: &Pod,
    nodes: &[Arc<Node>],
    counts: &HashMap<String, usize>,
) -> Result<String, Vec<String>> {
    let mut best: Option<(usize, &str)> = None;
    let mut reasons = Vec::new();
    for n in nodes {
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        if let Some(why) = unfit_reason(pod, n) {
            reasons.push(why);
            continue;
        }
        let c = counts.get(name).copied().unwrap_or(0);
        if best.is_none_or(|(bc, bn)| (c, name) < (bc, bn)) {
            best = Some((c, name));
        }
    }
    match best {
        Some((_, n)) => Ok(n.to_string()),
        None => {
            if reasons.is_empty() {
                reasons.push("no nodes available".into());
            }
            reasons.sort();
            Err(reasons)
        }
    }
}

/// Runs the scheduler until the future is dropped; API errors are logged and retried.
pub async fn run(client: Client) -> Result<(), SchedulerError> {
    let (pods, pods_w) = reflector::store::<Pod>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let pod_stream = reflector::reflector(
        pods_w,
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .boxed();
    let node_stream = reflector::reflector(
        nodes_w,
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .boxed();
    let mut events = futures::stream::select(
        pod_stream.map(|e| e.map(|_| ()).map_err(|e| e.to_string())),
        node_stream.map(|e| e.map(|_| ()).map_err(|e| e.to_string())),
    );
    let mut sched = Scheduler {
        client,
        pods,
        nodes,
        assumed: HashMap::new(),
    };
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Err(e)) => { tracing::warn!("scheduler watch: {e}"); continue }
                Some(Ok(())) => {}
            },
            _ = tick.tick() => {}
        }
        // The stores fill only while the streams are polled: never await readiness here.
        let ready = futures::FutureExt::now_or_never(sched.pods.wait_until_ready()).is_some()
            && futures::FutureExt::now_or_never(sched.nodes.wait_until_ready()).is_some();
        if !ready {
            continue;
        }
        // Coalesce a burst of events into one pass.
        while let Some(Some(r)) = futures::FutureExt::now_or_never(events.next()) {
            if let Err(e) = r {
                tracing::warn!("scheduler watch: {e}");
            }
        }
        sched.pass().await;
    }
}

struct Scheduler {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Pods bound by us whose binding the watch has not shown yet (uid → node): counted
    /// so that a burst of pods spreads instead of piling onto one node.
    assumed: HashMap<String, String>,
}

impl Scheduler {
    async fn pass(&mut self) {
        let pods = self.pods.state();
        let mut nodes = self.nodes.state();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut pending = Vec::new();
        for p in &pods {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if !node.is_empty() {
                self.assumed.remove(&uid);
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                if !matches!(phase, Some("Succeeded") | Some("Failed")) {
                    *counts.entry(node).or_default() += 1;
                }
            } else if wants_scheduling(p) && !self.assumed.contains_key(&uid) {
                pending.push(p.clone());
            }
        }
        // Forget assumptions about pods that are gone.
        let live: std::collections::HashSet<String> =
            pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.assumed.retain(|uid, _| live.contains(uid));
        for node in self.assumed.values() {
            *counts.entry(node.clone()).or_default() += 1;
        }
        // Oldest first, as a queue would.
        pending.sort_by(|a, b| {
            (
                &a.metadata.creation_timestamp,
                &a.metadata.namespace,
                &a.metadata.name,
            )
                .cmp(&(
                    &b.metadata.creation_timestamp,
                    &b.metadata.namespace,
                    &b.metadata.name,
                ))
        });
        for pod in pending {
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or(""),
                pod.metadata.name.as_deref().unwrap_or("")
            );
            match pick_node(&pod, &nodes, &counts) {
                Ok(node) => match bind(&self.client, &pod, &node).await {
                    Ok(()) => {
                        tracing::info!(pod = %key, %node, "scheduled");
                        *counts.entry(node.clone()).or_default() += 1;
                        if let Some(uid) = pod.metadata.uid.clone() {
                            self.assumed.insert(uid, node);
                        }
                    }
                    Err(e) => tracing::warn!("{e}"),
                },
                Err(reasons) => {
                    let msg = format!(
                        "0/{} nodes are available: {}",
                        nodes.len(),
                        reasons.join("; ")
                    );
                    if let Err(e) = mark_unschedulable(&self.client, &pod, &msg).await {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
    }
}

/// Binds through `pods/binding`; patches `spec.nodeName` only where that is not served.
async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), SchedulerError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let err = |source| SchedulerError::Bind {
        pod: format!("{ns}/{name}"),
        node: node.to_string(),
        source,
    };
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s))
            if s.code == 404 && s.reason == "NotFound" && s.message.contains("binding") =>
        {
            patch_node_name(&api, name, node).await.map_err(err)
        }
        Err(kube::Error::Api(s)) if s.code == 405 => {
            patch_node_name(&api, name, node).await.map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

async fn patch_node_name(api: &Api<Pod>, name: &str, node: &str) -> Result<(), kube::Error> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"nodeName": node}})),
    )
    .await
    .map(|_| ())
}

/// Sets `PodScheduled=False` with `msg` (only when it says something new).
async fn mark_unschedulable(client: &Client, pod: &Pod, msg: &str) -> Result<(), SchedulerError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(msg)) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": msg, "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(SchedulerError::Status {
            pod: format!("{ns}/{name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec, Taint};
    use kube::api::ObjectMeta;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)], taint: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn pod(selector: &[(&str, &str)], tolerate: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                tolerations: tolerate.map(|k| {
                    vec![Toleration {
                        key: Some(k.into()),
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn picks_least_loaded_fitting_node() {
        let nodes = vec![
            node("a", true, &[("zone", "x")], None),
            node("b", true, &[("zone", "y")], None),
            node("c", false, &[("zone", "x")], None),
            node("d", true, &[("zone", "x")], Some("dedicated")),
        ];
        let counts: HashMap<String, usize> = [("a".to_string(), 2)].into();
        assert_eq!(pick_node(&pod(&[], None), &nodes, &counts), Ok("b".into()));
        assert_eq!(
            pick_node(&pod(&[("zone", "x")], None), &nodes, &counts),
            Ok("a".into())
        );
        assert_eq!(
            pick_node(&pod(&[("zone", "x")], Some("dedicated")), &nodes, &counts),
            Ok("d".into())
        );
        let err = pick_node(&pod(&[("zone", "z")], None), &nodes, &counts).unwrap_err();
        assert_eq!(err.len(), 4);
        assert!(err.iter().any(|r| r.contains("c is not Ready")), "{err:?}");
    }

    #[test]
    fn only_unbound_default_scheduler_pods_are_ours() {
        let mut p = pod(&[], None);
        assert!(wants_scheduling(&p));
        p.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        assert!(!wants_scheduling(&p));
        p.spec.as_mut().unwrap().scheduler_name = Some(DEFAULT_SCHEDULER.into());
        p.spec.as_mut().unwrap().node_name = Some("a".into());
        assert!(!wants_scheduling(&p));
    }
}
