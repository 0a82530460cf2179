//! The whole `run()` path through kube-rs against the lab API server and real OVN central:
//! watchers, allocations persisted as annotations before use, LSPs in NB, and leader
//! election (a standby takes over within 15 s when the leader stops renewing).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{central_with_chassis, nbctl, node, pod, Stack};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use ovnk_controller::ControllerConfig;

const NEEDS: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovn-northd",
    "ovn-nbctl",
    "ovn-sbctl",
    testkit::OVN_NB_SCHEMA,
    testkit::OVN_SB_SCHEMA,
];

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn replica(nb: &str, identity: &str) -> ControllerConfig {
    let mut c = ControllerConfig::with_cluster_subnets(&["10.244.0.0/16/24"]);
    c.nb_remotes = vec![nb.to_string()];
    c.identity = Some(identity.to_string());
    c.lease_duration_secs = 4;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_lab_apiserver_with_failover() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = lab_apiserver::Server::start(lab_apiserver::Config::new(dir.path().join("api")))
        .await
        .expect("lab API server");
    let kc = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kcfg).unwrap();

    let central = central_with_chassis();
    let nb = central.nb_remote();

    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["ns", "ovn-kubernetes"] {
        let o = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        nss.create(&pp, &o).await.unwrap();
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for (n, i) in [("n1", 1u8), ("n2", 2u8)] {
        let mut o = node(n, i, Stack::V4, BTreeMap::new());
        o.metadata.uid = None;
        nodes.create(&pp, &o).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ns");
    let new_pod = |name: &str, node: &str| {
        let mut p = pod("ns", name, node, BTreeMap::new());
        p.metadata.uid = None;
        p.status = None;
        if let Some(spec) = p.spec.as_mut() {
            spec.containers = vec![k8s_openapi::api::core::v1::Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }];
        }
        p
    };
    pods.create(&pp, &new_pod("a", "n1")).await.unwrap();

    // Replica A leads; replica B waits on the Lease.
    let a = tokio::spawn(ovnk_controller::run(
        replica(&nb, "replica-a"),
        client.clone(),
    ));
    let nb1 = nb.clone();
    wait_for("ns_a in NB", Duration::from_secs(20), || {
        nbctl(
            &nb1,
            &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
        )
        .contains("ns_a")
    })
    .await;
    let (stop_b, b_stopped) = tokio::sync::oneshot::channel::<()>();
    let b = tokio::spawn(ovnk_controller::run_until(
        replica(&nb, "replica-b"),
        client.clone(),
        async {
            let _ = b_stopped.await;
        },
    ));

    // Allocations are in the API objects.
    let n1 = nodes.get("n1").await.unwrap();
    let ann = n1.metadata.annotations.unwrap();
    assert!(ann.contains_key(ovnk_annotations::NODE_SUBNETS), "{ann:?}");
    assert!(ann.contains_key(ovnk_annotations::NODE_ID), "{ann:?}");
    assert!(ann.contains_key(ovnk_annotations::NODE_GATEWAY_ROUTER_LRP_IFADDRS));
    let pa = pods.get("a").await.unwrap();
    let text = pa.metadata.annotations.unwrap()[ovnk_annotations::POD_NETWORKS].clone();
    let net = ovnk_annotations::parse_pod_networks(&text).unwrap();
    let ip = net.default_network().unwrap().v4().unwrap().addr();
    let lsp_addr = nbctl(&nb, &["get", "Logical_Switch_Port", "ns_a", "addresses"]);
    assert!(lsp_addr.contains(&ip.to_string()), "{lsp_addr} vs {ip}");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "ovn-kubernetes");
    let l = leases.get("ovn-kubernetes-master").await.unwrap();
    assert_eq!(
        l.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );

    // The leader dies (stops renewing); B must take over and program a new pod.
    a.abort();
    let _ = a.await;
    let died = Instant::now();
    pods.create(&pp, &new_pod("b", "n2")).await.unwrap();
    let nb2 = nb.clone();
    wait_for("ns_b in NB after failover", Duration::from_secs(15), || {
        nbctl(
            &nb2,
            &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
        )
        .contains("ns_b")
    })
    .await;
    let took = died.elapsed();
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    let l = leases.get("ovn-kubernetes-master").await.unwrap();
    assert_eq!(
        l.spec.unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );
    // B honoured A's allocation for pod a.
    let lsp_addr = nbctl(&nb, &["get", "Logical_Switch_Port", "ns_a", "addresses"]);
    assert!(lsp_addr.contains(&ip.to_string()), "{lsp_addr} vs {ip}");

    // Bad input becomes an Event on the object (through the API), nothing else breaks.
    let mut bad = new_pod("bad", "n1");
    bad.metadata.annotations = Some(
        [(
            ovnk_annotations::POD_NETWORKS.to_string(),
            "{oops".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    pods.create(&pp, &bad).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "ns");
    let start = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("InvalidPodNetworks")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
        });
        if found {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no Event for pod bad"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!nbctl(
        &nb,
        &["--bare", "--columns=name", "list", "Logical_Switch_Port"]
    )
    .contains("ns_bad"));

    // A deleted pod loses its port.
    pods.delete("a", &Default::default()).await.unwrap();
    let nb3 = nb.clone();
    wait_for("ns_a gone", Duration::from_secs(10), || {
        !nbctl(
            &nb3,
            &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
        )
        .contains("ns_a")
    })
    .await;
    // B stops cleanly (SIGTERM in the binary): it gives the Lease up, so a successor
    // leads at once instead of after the lease duration (`ovnk lab down` then `up`).
    stop_b.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("B stops on request")
        .unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    let l = leases.get("ovn-kubernetes-master").await.unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity, None, "{spec:?}");
    assert_eq!(spec.renew_time, None, "{spec:?}");
    let mut c_cfg = replica(&nb, "replica-c");
    c_cfg.lease_duration_secs = 60;
    let c = tokio::spawn(ovnk_controller::run(c_cfg, client.clone()));
    let start = Instant::now();
    loop {
        let holder = leases
            .get("ovn-kubernetes-master")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some("replica-c") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replica-c does not lead a released Lease: {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.abort();
    let _ = c.await;
    server.shutdown().await;
}
