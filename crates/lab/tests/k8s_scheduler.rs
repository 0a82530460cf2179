//! The lab scheduler against a real lab API server: binding, spreading, nodeSelector,
//! unschedulable pods, other schedulers' pods.

mod k8s_common;

use std::collections::BTreeMap;

use k8s_common::{cluster, create_node, create_pod, pod_json, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

#[tokio::test]
async fn binds_spreads_and_honours_node_selector() {
    let c = cluster().await;
    create_node(&c.client, "n1", true, json!({"zone": "a"})).await;
    create_node(&c.client, "n2", true, json!({"zone": "b"})).await;
    create_node(&c.client, "n3", false, json!({"zone": "a"})).await;
    // One pod already on n1 before the scheduler starts: it counts.
    create_pod(
        &c.client,
        &pod_json("pre", json!({}), json!({"nodeName": "n1"})),
    )
    .await;
    for i in 0..5 {
        create_pod(&c.client, &pod_json(&format!("p{i}"), json!({}), json!({}))).await;
    }
    create_pod(
        &c.client,
        &pod_json("zoned", json!({}), json!({"nodeSelector": {"zone": "a"}})),
    )
    .await;
    create_pod(
        &c.client,
        &pod_json("nowhere", json!({}), json!({"nodeSelector": {"zone": "z"}})),
    )
    .await;
    create_pod(
        &c.client,
        &pod_json("foreign", json!({}), json!({"schedulerName": "other"})),
    )
    .await;

    let task = tokio::spawn(ovnk_lab::scheduler::run(c.client.clone()));
    let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pods = wait_for("7 pods bound", 15, || {
        let api = api.clone();
        async move {
            let pods = api.list(&ListParams::default()).await.ok()?.items;
            let bound = pods.iter().filter(|p| node_of(p).is_some()).count();
            (bound == 7).then_some(pods)
        }
    })
    .await;
    let by_name: BTreeMap<String, Option<String>> = pods
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), node_of(p)))
        .collect();
    assert_eq!(
        by_name["zoned"].as_deref(),
        Some("n1"),
        "nodeSelector zone=a: n1 (n3 not Ready)"
    );
    assert_eq!(
        by_name["foreign"], None,
        "another scheduler's pod is left alone"
    );
    assert_eq!(by_name["nowhere"], None);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for n in by_name.values().flatten() {
        *per_node.entry(n.clone()).or_default() += 1;
    }
    assert_eq!(
        per_node.get("n3"),
        None,
        "not-Ready node gets nothing: {by_name:?}"
    );
    // pre + 5 spread + zoned: 7 pods on two nodes, at most one apart before `zoned`.
    let (n1, n2) = (per_node["n1"], per_node["n2"]);
    assert_eq!(n1 + n2, 7, "{by_name:?}");
    assert!((n1 as i64 - n2 as i64).abs() <= 2, "spread: {per_node:?}");

    // The pod that fits nowhere says why.
    let why = wait_for("PodScheduled=False on 'nowhere'", 10, || {
        let api = api.clone();
        async move {
            let p = api.get("nowhere").await.ok()?;
            let c = p
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (c.status == "False").then_some(c.message.unwrap_or_default())
        }
    })
    .await;
    assert!(why.contains("nodeSelector zone=z"), "{why}");

    // A node that appears later and fits takes it.
    create_node(&c.client, "n4", true, json!({"zone": "z"})).await;
    wait_for("'nowhere' bound to n4", 10, || {
        let api = api.clone();
        async move { (node_of(&api.get("nowhere").await.ok()?)? == "n4").then_some(()) }
    })
    .await;
    task.abort();
}
