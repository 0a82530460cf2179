//! What the node knows about its pods: their UID and `k8s.ovn.org/pod-networks`,
//! kept current by a kube-runtime watcher (see [`crate::kube_watch`]) or, in tests,
//! by hand. CNI ADDs wait on it without polling the API server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ovnk_annotations::{parse_pod_networks, PodNetwork};
use tokio::sync::watch;

/// One pod as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub uid: String,
    /// The raw `k8s.ovn.org/pod-networks` annotation, if set.
    pub pod_networks: Option<String>,
}

/// Why waiting for a pod's network failed; the text names the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodWaitError {
    #[error("pod {pod}: UID is {actual}, the request is for {requested}; refusing a request for another incarnation of the pod")]
    UidMismatch {
        pod: String,
        requested: String,
        actual: String,
    },
    #[error("pod {pod}: not known to the node agent within {timeout:?}")]
    PodNotFound { pod: String, timeout: Duration },
    #[error("pod {pod}: no k8s.ovn.org/pod-networks annotation within {timeout:?} (is the controller running?)")]
    NoAnnotation { pod: String, timeout: Duration },
    #[error("pod {pod}: {reason}")]
    BadAnnotation { pod: String, reason: String },
}

#[derive(Default)]
struct Inner {
    pods: HashMap<(String, String), PodEntry>,
    synced: bool,
}

/// The pods of this node, with change notification.
pub struct PodCache {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl PodCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Adds or replaces a pod.
    pub fn upsert(&self, namespace: &str, name: &str, entry: PodEntry) {
        let key = (namespace.to_string(), name.to_string());
        let changed = self.lock().pods.insert(key, entry.clone()) != Some(entry);
        if changed {
            self.bump();
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        let removed = self
            .lock()
            .pods
            .remove(&(namespace.to_string(), name.to_string()))
            .is_some();
        if removed {
            self.bump();
        }
    }

    /// Replaces the whole content (a watcher's initial list) and marks the cache synced.
    pub fn replace_all(&self, pods: impl IntoIterator<Item = ((String, String), PodEntry)>) {
        {
            let mut g = self.lock();
            g.pods = pods.into_iter().collect();
            g.synced = true;
        }
        self.bump();
    }

    /// Marks the cache as holding the complete list (for hand-fed caches).
    pub fn mark_synced(&self) {
        self.lock().synced = true;
        self.bump();
    }

    pub fn is_synced(&self) -> bool {
        self.lock().synced
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        self.lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Waits until the cache is synced (start-up cleanup must not act on a partial list).
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if self.is_synced() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && self.is_synced()
    }

    /// Waits (bounded) for the pod's default-network attachment. With `uid`, a pod of
    /// that name with another UID is refused at once.
    pub async fn wait_pod_network(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        timeout: Duration,
    ) -> Result<(String, PodNetwork), PodWaitError> {
        let pod = format!("{namespace}/{name}");
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = false;
        loop {
            // Mark the current version seen before reading, so no change is missed.
            rx.borrow_and_update();
            if let Some(e) = self.get(namespace, name) {
                seen = true;
                if let Some(want) = uid {
                    if want != e.uid {
                        return Err(PodWaitError::UidMismatch {
                            pod,
                            requested: want.to_string(),
                            actual: e.uid,
                        });
                    }
                }
                if let Some(text) = &e.pod_networks {
                    let nets =
                        parse_pod_networks(text).map_err(|err| PodWaitError::BadAnnotation {
                            pod: pod.clone(),
                            reason: err.to_string(),
                        })?;
                    let net = nets.default_network().cloned().ok_or_else(|| {
                        PodWaitError::BadAnnotation {
                            pod: pod.clone(),
                            reason: "k8s.ovn.org/pod-networks has no \"default\" network".into(),
                        }
                    })?;
                    return Ok((e.uid, net));
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ if seen => return Err(PodWaitError::NoAnnotation { pod, timeout }),
                _ => return Err(PodWaitError::PodNotFound { pod, timeout }),
            }
        }
    }

    /// `(namespace, name, uid)` of every known pod.
    pub fn list(&self) -> Vec<(String, String, String)> {
        self.lock()
            .pods
            .iter()
            .map(|((ns, n), e)| (ns.clone(), n.clone(), e.uid.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const ANN: &str = r#"{"default":{"ip_addresses":["10.244.1.5/24"],"mac_address":"0a:58:0a:f4:01:05","gateway_ips":["10.244.1.1"],"ip_address":"10.244.1.5/24","gateway_ip":"10.244.1.1"}}"#;

    fn entry(uid: &str, ann: Option<&str>) -> PodEntry {
        PodEntry {
            uid: uid.into(),
            pod_networks: ann.map(String::from),
        }
    }

    #[tokio::test]
    async fn waits_for_the_annotation_to_arrive() {
        let c = Arc::new(PodCache::new());
        c.upsert("ns", "p", entry("u1", None));
        let c2 = c.clone();
        let t = tokio::spawn(async move {
            c2.wait_pod_network("ns", "p", Some("u1"), Duration::from_secs(5))
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.upsert("ns", "p", entry("u1", Some(ANN)));
        let (uid, net) = t.await.unwrap().unwrap();
        assert_eq!(uid, "u1");
        assert_eq!(net.v4().unwrap().to_string(), "10.244.1.5/24");
    }

    #[tokio::test]
    async fn uid_mismatch_is_refused_at_once() {
        let c = PodCache::new();
        c.upsert("ns", "p", entry("u2", Some(ANN)));
        let e = c
            .wait_pod_network("ns", "p", Some("u1"), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(e, PodWaitError::UidMismatch { .. }), "{e}");
        assert!(e.to_string().contains("ns/p"), "{e}");
    }

    #[tokio::test]
    async fn timeouts_say_what_was_missing() {
        let c = PodCache::new();
        let t = Duration::from_millis(30);
        let e = c.wait_pod_network("ns", "gone", None, t).await.unwrap_err();
        assert!(matches!(e, PodWaitError::PodNotFound { .. }), "{e}");
        c.upsert("ns", "bare", entry("u", None));
        let e = c.wait_pod_network("ns", "bare", None, t).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("ns/bare: no k8s.ovn.org/pod-networks"),
            "{e}"
        );
        c.upsert("ns", "bad", entry("u", Some("{not json")));
        let e = c.wait_pod_network("ns", "bad", None, t).await.unwrap_err();
        assert!(matches!(e, PodWaitError::BadAnnotation { .. }), "{e}");
    }
}
