//! Services and NetworkPolicy against real NB/SB ovsdb-servers and ovn-northd: northd
//! accepts every load balancer and ACL the controller writes, ovn-trace balances a ClusterIP
//! and applies a policy, an endpoint change touches only its service, deleted objects leave
//! no rows, and a restart with nothing changed writes nothing.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{nbctl, node, pod, pod_net, FakeKube, Stack};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use ovnk_annotations::MacAddr;
use ovnk_controller::kube_io::{apply_initial, InitialLists};
use ovnk_controller::rows::{Owner, OwnerKind};
use ovnk_controller::{Controller, ControllerConfig, KubeOps};
use serde_json::json;

const NEEDS: &[&str] = common::NEEDS_OVN_TRACE;

async fn controller(nb: &str, kube: Arc<FakeKube>) -> Arc<Controller> {
    let mut cfg = ControllerConfig::with_cluster_subnets(&Stack::V4.cluster_subnets());
    cfg.nb_remotes = vec![nb.to_string()];
    let ops: Arc<dyn KubeOps> = kube;
    ovnk_controller::build(&cfg, ops).await.expect("controller")
}

const PODS: &[(&str, &str, &str)] = &[
    ("a", "n1", "web"),
    ("b", "n2", "web"),
    ("c", "n1", "client"),
];

fn pods(kube: &FakeKube) -> Vec<Pod> {
    PODS.iter()
        .map(|(p, n, app)| {
            let mut o = pod("ns", p, n, kube.annotations_of(&format!("pod/ns/{p}")));
            o.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
            o
        })
        .collect()
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
    }))
    .unwrap()
}

fn slice(kube: &FakeKube, backends: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = backends
        .iter()
        .map(|p| {
            let node = PODS.iter().find(|x| x.0 == *p).unwrap().1;
            json!({"addresses": [pod_net(kube, "ns", p).ip_addresses[0].addr().to_string()],
                   "conditions": {"ready": true}, "nodeName": node})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "ns",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

/// Only pods labelled app=client may reach app=web pods, on TCP 8080.
fn policy() -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "web-from-client", "namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                              "ports": [{"port": 8080}]}]}
    }))
    .unwrap()
}

/// Several ports, a range, an ipBlock with except and egress: every match northd parses.
fn policy_many() -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "many", "namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}},
                                       {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                              "ports": [{"port": 80}, {"protocol": "UDP", "port": 53, "endPort": 54},
                                        {"protocol": "SCTP"}]}],
                 "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 8080}, {"port": 9090}]},
                            {"ports": [{"protocol": "UDP", "port": 53}]}]}
    }))
    .unwrap()
}

fn namespace() -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": "ns", "labels": {"team": "a"},
        "annotations": {"k8s.ovn.org/acl-logging": "{\"allow\":\"notice\",\"deny\":\"alert\"}"}}}))
    .unwrap()
}

/// Brings nodes and pods up until every pod is annotated, then the given extra objects.
async fn feed(ctl: &Arc<Controller>, kube: &FakeKube, extra: InitialLists) {
    let nodes = |k: &FakeKube| -> Vec<_> {
        [("n1", 1u8), ("n2", 2u8)]
            .iter()
            .map(|(n, i)| node(n, *i, Stack::V4, k.annotations_of(&format!("node/{n}"))))
            .collect()
    };
    let mut lists = extra;
    lists.nodes = nodes(kube);
    lists.pods = pods(kube);
    lists.namespaces = vec![namespace()];
    apply_initial(ctl, lists);
    ctl.settle().await;
    for _ in 0..100 {
        let done = PODS.iter().all(|(p, _, _)| {
            kube.annotations_of(&format!("pod/ns/{p}"))
                .contains_key(ovnk_annotations::POD_NETWORKS)
        });
        if done {
            break;
        }
        for n in nodes(kube) {
            ctl.node_applied(&n);
        }
        ctl.settle().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The pods again, now with their addresses (as the watch would deliver them).
    for p in pods(kube) {
        ctl.pod_applied(&p);
    }
    ctl.settle().await;
}

/// ovn-trace of a new connection (its default assumes established ones; one --ct per
/// conntrack action on the path).
fn trace_new(sb: &str, datapath: &str, flow: &str) -> String {
    common::trace_with(sb, datapath, flow, &["--ct=new,trk"; 20])
}

fn tcp_flow(kube: &FakeKube, from: &str, dst: &str, port: u16) -> String {
    let a = pod_net(kube, "ns", from);
    let router_mac = MacAddr::from_ip(a.gateway_ips[0]);
    format!(
        "inport == \"ns_{from}\" && eth.src == {} && eth.dst == {router_mac} && ip4.src == {} && ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.src == 40000 && tcp.dst == {port} && tcp.flags == 2",
        a.mac_address,
        a.ip_addresses[0].addr()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_policies_in_nb() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    let central = common::central_with_chassis();
    let nb = central.nb_remote();
    let sb = central.sb_remote();
    let kube = Arc::new(FakeKube::default());
    let ctl = controller(&nb, kube.clone()).await;
    feed(&ctl, &kube, InitialLists::default()).await;
    ctl.service_applied(&service());
    ctl.slice_applied(&slice(&kube, &["a", "b"]));
    ctl.policy_applied(&policy());
    ctl.policy_applied(&policy_many());
    ctl.settle().await;

    // Load balancers as OVN-Kubernetes names them, in the cluster group / on the nodes.
    let lbs = nbctl(&nb, &["--bare", "--columns=name", "list", "Load_Balancer"]);
    for want in [
        "Service_ns/web_TCP_cluster",
        "Service_ns/web_TCP_node_router+switch_n1",
        "Service_ns/web_TCP_node_router+switch_n2",
    ] {
        assert!(lbs.lines().any(|l| l == want), "{want} missing:\n{lbs}");
    }
    let a_ip = pod_net(&kube, "ns", "a").ip_addresses[0].addr().to_string();
    let b_ip = pod_net(&kube, "ns", "b").ip_addresses[0].addr().to_string();
    let vips = nbctl(
        &nb,
        &["get", "Load_Balancer", "Service_ns/web_TCP_cluster", "vips"],
    );
    assert!(
        vips.contains("10.96.0.10:80")
            && vips.contains(&format!("{a_ip}:8080"))
            && vips.contains(&format!("{b_ip}:8080")),
        "{vips}"
    );
    let group = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=load_balancer",
            "find",
            "Load_Balancer_Group",
            "name=clusterLBGroup",
        ],
    );
    assert!(!group.is_empty(), "clusterLBGroup empty");
    let sw = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=load_balancer_group,load_balancer",
            "list",
            "Logical_Switch",
            "n1",
        ],
    );
    assert_eq!(
        sw.lines().filter(|l| !l.is_empty()).count(),
        2,
        "n1 holds the group and its node LB: {sw}"
    );
    // Port groups and ACLs northd accepts.
    let pgs = nbctl(&nb, &["--bare", "--columns=name", "list", "Port_Group"]);
    assert_eq!(
        pgs.lines().filter(|l| !l.is_empty()).count(),
        4,
        "2 policies + ingress and egress default deny: {pgs}"
    );
    let acls = nbctl(&nb, &["--bare", "--columns=name", "list", "ACL"]);
    assert!(acls.contains("ns:web-from-client:Ingress:0:pods"), "{acls}");
    central.sync().expect("northd sync");
    assert_eq!(central.northd_problems(), Vec::<String>::new());
    // Every logical flow (ACL matches included) parses.
    assert_eq!(common::lflow_parse_errors(&sb, "n1"), Vec::<String>::new());

    // ovn-trace: the client reaches the ClusterIP (balanced, allowed by the policy); the
    // web pod a may not reach web pod b directly (not a client).
    let out = trace_new(&sb, "n1", &tcp_flow(&kube, "c", "10.96.0.10", 80));
    assert!(
        out.contains(&format!("ct_lb(backends={a_ip}:8080,{b_ip}:8080)")),
        "no balancing:\n{out}"
    );
    // The policy's allow ACL names the peer set, which holds the client pod only (real
    // packets through policies are the lab's reachability-matrix suite: ovn-trace cannot
    // simulate new connections through several conntrack stages).
    let c_ip = pod_net(&kube, "ns", "c").ip_addresses[0].addr().to_string();
    let m = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=match",
            "find",
            "ACL",
            "priority=1001",
            "direction=to-lport",
            "action=allow-related",
        ],
    );
    let allow = m
        .lines()
        .find(|l| l.contains("tcp.dst == 8080"))
        .unwrap_or_else(|| panic!("{m}"));
    let set = allow
        .split('$')
        .nth(1)
        .and_then(|x| x.split('}').next())
        .unwrap_or_else(|| panic!("{allow}"));
    let members = nbctl(&nb, &["get", "Address_Set", set, "addresses"]);
    assert_eq!(members, format!("[\"{c_ip}\"]"));
    // Membership: a and b in web-from-client, c in many; ingress default deny a, b, c;
    // egress default deny c.
    let by_policy = |name: &str| {
        let ports = nbctl(
            &nb,
            &[
                "--bare",
                "--columns=ports",
                "find",
                "Port_Group",
                &format!("external_ids:\"k8s.ovn.org/policy\"=\"ns/{name}\""),
            ],
        );
        ports.split_whitespace().count()
    };
    assert_eq!(by_policy("web-from-client"), 2);
    assert_eq!(by_policy("many"), 1);
    let ports = nbctl(&nb, &["--bare", "--columns=ports", "list", "Port_Group"]);
    assert_eq!(ports.split_whitespace().count(), 7, "{ports}");

    // An endpoint change touches only its service.
    let seen: Arc<Mutex<Vec<Owner>>> = Arc::default();
    let s2 = seen.clone();
    ctl.set_commit_hook(move |o| s2.lock().unwrap().extend(o.iter().cloned()));
    let before = ctl.nb().transaction_count();
    ctl.slice_applied(&slice(&kube, &["a"]));
    ctl.settle().await;
    assert_eq!(ctl.nb().transaction_count() - before, 1);
    let owners = seen.lock().unwrap().clone();
    assert!(
        owners.iter().all(|o| o.kind == OwnerKind::Service),
        "{owners:?}"
    );
    let vips = nbctl(
        &nb,
        &["get", "Load_Balancer", "Service_ns/web_TCP_cluster", "vips"],
    );
    assert!(!vips.contains(&b_ip), "{vips}");

    // Restart with nothing changed: nothing written.
    drop(ctl);
    let ctl = controller(&nb, kube.clone()).await;
    let extra = InitialLists {
        services: vec![service()],
        slices: vec![slice(&kube, &["a"])],
        policies: vec![policy(), policy_many()],
        ..Default::default()
    };
    feed(&ctl, &kube, extra).await;
    assert_eq!(
        ctl.nb().transaction_count(),
        0,
        "restart without change wrote to NB"
    );

    // Deleted service and policy leave no rows.
    ctl.service_deleted("ns", "web");
    ctl.policy_deleted("ns", "web-from-client");
    ctl.policy_deleted("ns", "many");
    ctl.settle().await;
    let lbs = nbctl(&nb, &["--bare", "--columns=name", "list", "Load_Balancer"]);
    assert!(!lbs.contains("Service_ns/web"), "{lbs}");
    let pgs = nbctl(&nb, &["--bare", "--columns=name", "list", "Port_Group"]);
    assert!(pgs.trim().is_empty(), "{pgs}");
    let acls = nbctl(&nb, &["--bare", "--columns=name", "list", "ACL"]);
    assert!(!acls.contains("web-from-client"), "{acls}");
    let sets = nbctl(
        &nb,
        &["--bare", "--columns=external_ids", "list", "Address_Set"],
    );
    assert!(!sets.contains("PodSelector"), "peer sets left: {sets}");
    central.sync().expect("northd sync");
    assert_eq!(central.northd_problems(), Vec::<String>::new());
}
