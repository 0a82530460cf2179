//! The lab EndpointSlice controller against a real lab API server.

mod k8s_common;

use k8s_common::{cluster_with, create_pod, pod_json, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use ovnk_lab::endpointslices::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY};
use serde_json::json;

async fn slices(client: &Client, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut items = api
        .list(&ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={svc}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    items.sort_by(|a, b| a.address_type.cmp(&b.address_type));
    items
}

/// (address, ready, serving, terminating) of every endpoint of the family's slices, sorted.
fn endpoints(sl: &[EndpointSlice], family: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = sl
        .iter()
        .filter(|s| s.address_type == family)
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses.join(","),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

async fn set_pod_status(client: &Client, name: &str, ips: &[&str], ready: bool) {
    let st = json!({"status": {
        "phase": "Running",
        "podIP": ips[0],
        "podIPs": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>(),
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch_status(name, &PatchParams::default(), &Patch::Merge(st))
        .await
        .expect("pod status");
}

async fn create_service(client: &Client, spec: serde_json::Value, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

#[tokio::test]
async fn slices_follow_pods_ports_and_services() {
    let c = cluster_with(|mut cfg| {
        cfg.service_cidrs = vec![
            "10.96.0.0/16".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ];
        cfg
    })
    .await;
    let client = c.client.clone();
    let task = tokio::spawn(ovnk_lab::endpointslices::run(client.clone()));

    // A dual-stack service with a named and a numeric target port.
    create_service(
        &client,
        json!({"selector": {"app": "web"}, "ipFamilyPolicy": "PreferDualStack",
               "ports": [{"name": "http", "port": 80, "targetPort": "web"},
                         {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}),
        "web",
    )
    .await;
    let named = json!({"containers": [{"name": "c", "image": "x",
        "ports": [{"name": "web", "containerPort": 8080}]}]});
    create_pod(
        &client,
        &pod_json("a", json!({"app": "web"}), named.clone()),
    )
    .await;
    create_pod(&client, &pod_json("b", json!({"app": "web"}), json!({}))).await;
    create_pod(&client, &pod_json("other", json!({"app": "db"}), json!({}))).await;
    set_pod_status(&client, "a", &["10.244.0.5", "fd00:10:244::5"], true).await;
    set_pod_status(&client, "b", &["10.244.0.6", "fd00:10:244::6"], false).await;
    set_pod_status(&client, "other", &["10.244.0.7", "fd00:10:244::7"], true).await;

    let sl = wait_for("both families with a and b", 10, || {
        let client = client.clone();
        async move {
            let sl = slices(&client, "web").await;
            (endpoints(&sl, "IPv4").len() == 2 && endpoints(&sl, "IPv6").len() == 2).then_some(sl)
        }
    })
    .await;
    assert_eq!(
        endpoints(&sl, "IPv4"),
        vec![
            ("10.244.0.5".to_string(), true, true, false),
            ("10.244.0.6".to_string(), false, false, false)
        ]
    );
    assert_eq!(endpoints(&sl, "IPv6")[0].0, "fd00:10:244::5");
    for s in &sl {
        let l = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(LABEL_MANAGED_BY).map(String::as_str),
            Some(MANAGED_BY)
        );
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Service", "web")
        );
    }
    // Pod a (has port "web") → http 8080 + dns 5353; pod b lacks "web" → only dns.
    let v4: Vec<&EndpointSlice> = sl.iter().filter(|s| s.address_type == "IPv4").collect();
    assert_eq!(
        v4.len(),
        2,
        "pods with different port lists go to different slices"
    );
    for s in v4 {
        let ports: Vec<(String, i32, String)> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port.unwrap_or(0),
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        let eps = s.endpoints.clone().unwrap_or_default();
        match eps[0].addresses[0].as_str() {
            "10.244.0.5" => assert_eq!(
                ports,
                vec![
                    ("http".into(), 8080, "TCP".into()),
                    ("dns".into(), 5353, "UDP".into())
                ]
            ),
            "10.244.0.6" => assert_eq!(ports, vec![("dns".into(), 5353, "UDP".into())]),
            other => panic!("unexpected endpoint {other}"),
        }
        let tr = eps[0].target_ref.clone().unwrap();
        assert_eq!(tr.kind.as_deref(), Some("Pod"));
    }

    // Readiness change: b becomes ready.
    set_pod_status(&client, "b", &["10.244.0.6", "fd00:10:244::6"], true).await;
    wait_for("b ready", 10, || {
        let client = client.clone();
        async move {
            let sl = slices(&client, "web").await;
            let all_ready = |f| {
                let e = endpoints(&sl, f);
                e.len() == 2 && e.iter().all(|x| x.1)
            };
            (all_ready("IPv4") && all_ready("IPv6")).then_some(())
        }
    })
    .await;
    // Nothing changes → nothing is written: resourceVersions stay put.
    let before: Vec<_> = slices(&client, "web")
        .await
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after: Vec<_> = slices(&client, "web")
        .await
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    assert_eq!(before, after, "no writes without changes");

    // Label change: a leaves the service.
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
        )
        .await
        .unwrap();
    wait_for("a removed", 10, || {
        let client = client.clone();
        async move {
            let e = endpoints(&slices(&client, "web").await, "IPv4");
            (e.len() == 1 && e[0].0 == "10.244.0.6").then_some(())
        }
    })
    .await;

    // Terminating pod (a finalizer holds it): kept, not ready, still serving.
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["lab/hold"]}})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("b terminating", 10, || {
        let client = client.clone();
        async move {
            let e = endpoints(&slices(&client, "web").await, "IPv4");
            (e == vec![("10.244.0.6".to_string(), false, true, true)]).then_some(())
        }
    })
    .await;
    // Finalizer removed: the pod is gone, the slice empties to a placeholder.
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("placeholders only", 10, || {
        let client = client.clone();
        async move {
            let sl = slices(&client, "web").await;
            (sl.len() == 2
                && sl
                    .iter()
                    .all(|s| s.endpoints.as_deref().unwrap_or_default().is_empty()))
            .then_some(())
        }
    })
    .await;

    // publishNotReadyAddresses: a not-ready pod is ready.
    create_service(
        &client,
        json!({"selector": {"app": "db"}, "publishNotReadyAddresses": true, "ports": [{"port": 5432}]}),
        "db",
    )
    .await;
    set_pod_status(&client, "other", &["10.244.0.7", "fd00:10:244::7"], false).await;
    wait_for("db: other ready despite not Ready", 10, || {
        let client = client.clone();
        async move {
            let sl = slices(&client, "db").await;
            let ok = sl.len() == 1
                && endpoints(&sl, "IPv4") == vec![("10.244.0.7".to_string(), true, true, false)];
            ok.then_some(())
        }
    })
    .await;

    // Service deleted: its slices go.
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("web slices deleted", 10, || {
        let client = client.clone();
        async move { slices(&client, "web").await.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(
        slices(&client, "db").await.len(),
        1,
        "other services keep theirs"
    );
    task.abort();
}

#[tokio::test]
async fn restarted_controller_removes_stale_slices_and_rewrites_nothing() {
    let c = cluster_with(|c| c).await;
    let client = c.client.clone();
    create_service(
        &client,
        json!({"selector": {"app": "x"}, "ports": [{"port": 80}]}),
        "x",
    )
    .await;
    create_pod(&client, &pod_json("x1", json!({"app": "x"}), json!({}))).await;
    set_pod_status(&client, "x1", &["10.244.1.2"], true).await;
    let task = tokio::spawn(ovnk_lab::endpointslices::run(client.clone()));
    wait_for("x has x1", 10, || {
        let client = client.clone();
        async move { (endpoints(&slices(&client, "x").await, "IPv4").len() == 1).then_some(()) }
    })
    .await;
    task.abort();
    let rv: Vec<_> = slices(&client, "x")
        .await
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    // While it is down: the service goes away, and a stale slice of ours appears.
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("x", &DeleteParams::default())
        .await
        .unwrap();
    create_service(
        &client,
        json!({"selector": {"app": "x"}, "ports": [{"port": 80}]}),
        "y",
    )
    .await;
    let task = tokio::spawn(ovnk_lab::endpointslices::run(client.clone()));
    wait_for("x slices gone, y has x1", 10, || {
        let client = client.clone();
        async move {
            let ok = slices(&client, "x").await.is_empty()
                && endpoints(&slices(&client, "y").await, "IPv4").len() == 1;
            ok.then_some(())
        }
    })
    .await;
    assert_eq!(rv.len(), 1);
    // A slice written by someone else (upstream's manager) is never touched.
    let foreign: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "y-foreign", "namespace": "default",
            "labels": {LABEL_SERVICE_NAME: "y", LABEL_MANAGED_BY: "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4", "endpoints": [],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(slices(&client, "y").await.len(), 2);
    task.abort();
}
