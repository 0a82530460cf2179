//! The Kubernetes side: watchers that feed [`PodCache`] and the Node's state, and the
//! Node annotation patch. Thin on purpose; the logic lives in pure functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use ovnk_annotations::POD_NETWORKS;
use tokio::sync::watch;

use crate::gateway::{service_view, ServiceView};
use crate::pods::{PodCache, PodEntry};

/// What the agent reads from its Node object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub annotations: BTreeMap<String, String>,
}

fn pod_key_entry(p: &Pod) -> Option<((String, String), PodEntry)> {
    let ns = p.metadata.namespace.clone()?;
    let name = p.metadata.name.clone()?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let pod_networks = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_NETWORKS))
        .cloned();
    Some(((ns, name), PodEntry { uid, pod_networks }))
}

/// Watches this node's pods (field selector `spec.nodeName`) into `cache`, forever.
pub async fn watch_pods(client: kube::Client, node: String, cache: Arc<PodCache>) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut buffer = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) => buffer.extend(pod_key_entry(&p)),
            Ok(Event::InitDone) => cache.replace_all(std::mem::take(&mut buffer)),
            Ok(Event::Apply(p)) => {
                if let Some(((ns, n), e)) = pod_key_entry(&p) {
                    cache.upsert(&ns, &n, e);
                }
            }
            Ok(Event::Delete(p)) => {
                if let (Some(ns), Some(n)) = (&p.metadata.namespace, &p.metadata.name) {
                    cache.remove(ns, n);
                }
            }
            Err(e) => tracing::warn!(node = %node, "pod watch: {e}"),
        }
    }
}

/// Watches the Node object named `node` into `tx` (`None` while it does not exist), forever.
pub async fn watch_node(client: kube::Client, node: String, tx: watch::Sender<Option<NodeView>>) {
    let api: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen_in_init = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => seen_in_init = false,
            Ok(Event::InitApply(n)) | Ok(Event::Apply(n)) => {
                seen_in_init = true;
                let view = NodeView {
                    annotations: n.metadata.annotations.clone().unwrap_or_default(),
                };
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref() != Some(&view);
                    *cur = Some(view);
                    changed
                });
            }
            Ok(Event::InitDone) if !seen_in_init => {
                tx.send_replace(None);
            }
            Ok(Event::InitDone) => {}
            Ok(Event::Delete(_)) => {
                tx.send_replace(None);
            }
            Err(e) => tracing::warn!(node = %node, "node watch: {e}"),
        }
    }
}

/// Merges `annotations` into the Node's annotations.
pub async fn annotate_node(
    client: kube::Client,
    node: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client);
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Services by (namespace, name), as the gateway sees them.
pub type ServiceMap = BTreeMap<(String, String), ServiceView>;

fn service_key(s: &Service) -> Option<(String, String)> {
    Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?))
}

/// Watches all Services into `tx` (only changes the gateway cares about wake it), forever.
pub async fn watch_services(client: kube::Client, tx: watch::Sender<ServiceMap>) {
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer = ServiceMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(s)) => {
                if let Some(k) = service_key(&s) {
                    buffer.insert(k, service_view(&s));
                }
            }
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut buffer);
                tx.send_if_modified(|cur| {
                    let changed = *cur != all;
                    *cur = all;
                    changed
                });
            }
            Ok(Event::Apply(s)) => {
                if let Some(k) = service_key(&s) {
                    let v = service_view(&s);
                    tx.send_if_modified(|cur| cur.insert(k, v.clone()).as_ref() != Some(&v));
                }
            }
            Ok(Event::Delete(s)) => {
                if let Some(k) = service_key(&s) {
                    tx.send_if_modified(|cur| cur.remove(&k).is_some());
                }
            }
            Err(e) => tracing::warn!("service watch: {e}"),
        }
    }
}

/// Sleeps `wait`, or less if `rx` changes first. Once the sender is gone, just sleeps:
/// the caller keeps maintaining what it has.
pub async fn sleep_or_changed<T>(rx: &mut watch::Receiver<T>, wait: std::time::Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        r = rx.changed() => {
            if r.is_err() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
