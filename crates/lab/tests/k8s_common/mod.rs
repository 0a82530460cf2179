//! Shared by the k8s_* tests: a lab API server in a temp dir, a kube-rs client for it, and
//! bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::json;

pub struct Cluster {
    pub server: lab_apiserver::Server,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

pub async fn cluster() -> Cluster {
    cluster_with(|c| c).await
}

pub async fn cluster_with(
    f: impl FnOnce(lab_apiserver::Config) -> lab_apiserver::Config,
) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        lab_apiserver::Server::start(f(lab_apiserver::Config::new(dir.path().join("api"))))
            .await
            .expect("lab API server starts");
    let kc = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    let client = Client::try_from(cfg).expect("client");
    Cluster {
        server,
        client,
        dir,
    }
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `secs` seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn create_node(client: &Client, name: &str, ready: bool, labels: serde_json::Value) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    }))
    .expect("node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

pub fn pod_json(name: &str, labels: serde_json::Value, spec_extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "lab/responder"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    }))
    .expect("pod")
}

pub async fn create_pod(client: &Client, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), pod)
        .await
        .expect("create pod")
}
