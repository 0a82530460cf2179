//! Against real NB/SB ovsdb-servers and ovn-northd (testkit::OvnCentral): the topology and
//! pods the controller writes are accepted by northd, ovn-trace routes pod → pod across
//! nodes (IPv4, IPv6, dual stack), a restart with no change writes nothing, and hand edits
//! are repaired on restart.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{nbctl, node, pod, pod_net, trace, FakeKube, Stack};
use ovnk_annotations::MacAddr;
use ovnk_controller::{kube_io::initial_sync, Controller, ControllerConfig, KubeOps};

const NEEDS: &[&str] = common::NEEDS_OVN_TRACE;

async fn controller(nb: &str, stack: Stack, kube: Arc<FakeKube>) -> Arc<Controller> {
    let mut cfg = ControllerConfig::with_cluster_subnets(&stack.cluster_subnets());
    cfg.nb_remotes = vec![nb.to_string()];
    let ops: Arc<dyn KubeOps> = kube;
    ovnk_controller::build(&cfg, ops).await.expect("controller")
}

/// Feeds the objects (with whatever the controller annotated so far) as an initial list.
async fn feed(ctl: &Arc<Controller>, kube: &FakeKube, stack: Stack, pods: &[(&str, &str)]) {
    let nodes: Vec<_> = [("n1", 1u8), ("n2", 2u8)]
        .iter()
        .map(|(n, i)| node(n, *i, stack, kube.annotations_of(&format!("node/{n}"))))
        .collect();
    let pods: Vec<_> = pods
        .iter()
        .map(|(p, n)| pod("ns", p, n, kube.annotations_of(&format!("pod/ns/{p}"))))
        .collect();
    initial_sync(ctl, &nodes, &pods, &["ns".to_string()]);
    ctl.settle().await;
    // Pods wait until their node is annotated. A real API server then sends the node's
    // MODIFIED event; FakeKube sends none, so deliver it here (as a watch would) until
    // every pod is annotated — a bounded number of rounds, however loaded the machine.
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for _ in 0..100 {
        let done = names.iter().all(|p| {
            kube.annotations_of(&format!("pod/ns/{p}"))
                .contains_key(ovnk_annotations::POD_NETWORKS)
        });
        if done {
            return;
        }
        for (n, i) in [("n1", 1u8), ("n2", 2u8)] {
            ctl.node_applied(&node(
                n,
                i,
                stack,
                kube.annotations_of(&format!("node/{n}")),
            ));
        }
        ctl.settle().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn flow(kube: &FakeKube, from: &str, to: &str, stack: Stack) -> String {
    let a = pod_net(kube, "ns", from);
    let b = pod_net(kube, "ns", to);
    let router_mac = MacAddr::from_ip(a.gateway_ips[0]);
    let l3 = match stack {
        Stack::V4 | Stack::Dual => format!(
            "ip4.src == {} && ip4.dst == {} && ip.ttl == 64 && icmp4.type == 8",
            a.v4().unwrap().addr(),
            b.v4().unwrap().addr()
        ),
        Stack::V6 => format!(
            "ip6.src == {} && ip6.dst == {} && ip.ttl == 64 && icmp6.type == 128",
            a.v6().unwrap().addr(),
            b.v6().unwrap().addr()
        ),
    };
    format!(
        "inport == \"ns_{from}\" && eth.src == {} && eth.dst == {router_mac} && {l3}",
        a.mac_address
    )
}

async fn scenario(stack: Stack) {
    let central = common::central_with_chassis();
    let nb = central.nb_remote();
    let sb = central.sb_remote();
    let kube = Arc::new(FakeKube::default());
    let pods = [("a", "n1"), ("b", "n2"), ("c", "n1")];

    let ctl = controller(&nb, stack, kube.clone()).await;
    feed(&ctl, &kube, stack, &pods).await;
    assert!(ctl.nb().transaction_count() > 0);

    // Names and contents as OVN-Kubernetes.
    let ls = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Switch"]);
    for want in ["join", "n1", "n2", "ext_n1", "ext_n2"] {
        assert!(ls.lines().any(|l| l == want), "switch {want} missing: {ls}");
    }
    let a = pod_net(&kube, "ns", "a");
    let ps = nbctl(
        &nb,
        &["get", "Logical_Switch_Port", "ns_a", "port_security"],
    );
    assert!(ps.contains(&a.mac_address.to_string()), "{ps}");
    assert_eq!(
        nbctl(
            &nb,
            &[
                "get",
                "Logical_Switch_Port",
                "ns_a",
                "options:requested-chassis"
            ]
        ),
        "n1"
    );
    let gr = nbctl(&nb, &["get", "Logical_Router", "GR_n1", "options:chassis"]);
    assert_eq!(gr, "chassis-n1");
    let routes = nbctl(&nb, &["lr-route-list", "ovn_cluster_router"]);
    if stack != Stack::V6 {
        assert!(routes.contains("100.64.0.2"), "{routes}");
        assert!(routes.contains("src-ip"), "{routes}");
        let nat = nbctl(&nb, &["lr-nat-list", "GR_n1"]);
        assert!(
            nat.contains("172.30.33.11") && nat.contains("10.244.0.0/16"),
            "{nat}"
        );
    }
    if stack != Stack::V4 {
        assert!(routes.contains("fd98::2"), "{routes}");
    }
    // The GR knows the cluster router's join MAC statically (its first NodePort
    // connection would otherwise be lost to the ARP resolution of the next hop).
    let bindings = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=logical_port,ip,mac",
            "find",
            "Static_MAC_Binding",
            "logical_port=rtoj-GR_n1",
        ],
    );
    let cr_join = if stack == Stack::V6 {
        "fd98::1"
    } else {
        "100.64.0.1"
    };
    assert!(
        bindings.contains(cr_join) && bindings.contains("0a:58:"),
        "{bindings}"
    );
    let policies = nbctl(&nb, &["lr-policy-list", "ovn_cluster_router"]);
    for want in ["101", "102", "1004", "reroute"] {
        assert!(policies.contains(want), "policy {want} missing: {policies}");
    }
    // Namespace address sets hold the pods' addresses.
    let sets = nbctl(
        &nb,
        &["--bare", "--columns=addresses", "list", "Address_Set"],
    );
    for p in ["a", "b", "c"] {
        for ip in &pod_net(&kube, "ns", p).ip_addresses {
            assert!(sets.contains(&ip.addr().to_string()), "{ip} not in {sets}");
        }
    }

    // northd accepts all of it, and traffic routes pod a (n1) → pod b (n2).
    central.sync().expect("northd sync");
    assert_eq!(central.northd_problems(), Vec::<String>::new());
    let out = trace(&sb, "n1", &flow(&kube, "a", "b", stack));
    assert!(out.contains("output to \"ns_b\""), "trace a→b:\n{out}");
    let out = trace(&sb, "n1", &flow(&kube, "a", "c", stack));
    assert!(out.contains("output to \"ns_c\""), "trace a→c:\n{out}");

    // Restart with no change: zero transactions.
    drop(ctl);
    let ctl = controller(&nb, stack, kube.clone()).await;
    feed(&ctl, &kube, stack, &pods).await;
    assert_eq!(
        ctl.nb().transaction_count(),
        0,
        "restart without change wrote to NB"
    );
    drop(ctl);

    // Hand edits: an ovnk row deleted, a stale row with ovnk ownership added, and a row
    // that is not ovnk's. Restart repairs the first two and leaves the third alone.
    nbctl(&nb, &["lsp-del", "ns_a"]);
    nbctl(&nb, &["lrp-del", "rtos-n2"]);
    nbctl(
        &nb,
        &[
            "lsp-add",
            "n1",
            "ns_ghost",
            "--",
            "set",
            "Logical_Switch_Port",
            "ns_ghost",
            "external_ids:k8s.ovn.org/owner-controller=default-network-controller",
            "external_ids:k8s.ovn.org/owner-type=Pod",
            "external_ids:k8s.ovn.org/name=ns:ghost",
            "external_ids:k8s.ovn.org/id=default-network-controller:Pod:ns:ghost:port",
        ],
    );
    nbctl(&nb, &["lsp-add", "n1", "not-ours"]);
    let ctl = controller(&nb, stack, kube.clone()).await;
    feed(&ctl, &kube, stack, &pods).await;
    let ports = nbctl(&nb, &["lsp-list", "n1"]);
    assert!(ports.contains("(ns_a)"), "{ports}");
    assert!(!ports.contains("ns_ghost"), "{ports}");
    assert!(ports.contains("not-ours"), "{ports}");
    let lrps = nbctl(&nb, &["lrp-list", "ovn_cluster_router"]);
    assert!(lrps.contains("rtos-n2"), "{lrps}");
    // Same addresses as before the restart.
    assert_eq!(pod_net(&kube, "ns", "a"), a);
    // northd complained while rtos-n2 was missing (the hand edit); from here on it must not.
    central.sync().expect("northd sync");
    let tampered = central.northd_problems().len();

    // While running: a port deleted by hand comes back at the next drift check.
    ctl.check_drift();
    nbctl(&nb, &["lsp-del", "ns_c"]);
    let start = std::time::Instant::now();
    while ctl.check_drift() == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "deletion not seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ctl.settle().await;
    let ports = nbctl(&nb, &["lsp-list", "n1"]);
    assert!(ports.contains("(ns_c)"), "ns_c not repaired: {ports}");

    // A pod goes: its LSP and its address leave NB; a new pod does not get a used address.
    ctl.pod_deleted("ns", "b");
    ctl.settle().await;
    let ports = nbctl(&nb, &["lsp-list", "n2"]);
    assert!(!ports.contains("ns_b"), "{ports}");
    let b_ip = pod_net(&kube, "ns", "b").ip_addresses[0].addr().to_string();
    let sets = nbctl(
        &nb,
        &["--bare", "--columns=addresses", "list", "Address_Set"],
    );
    assert!(!sets.contains(&b_ip), "{b_ip} still in {sets}");

    // A node goes: its rows go (switch, GR, routes on the cluster router).
    ctl.node_deleted("n2");
    ctl.settle().await;
    let ls = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Switch"]);
    assert!(!ls.lines().any(|l| l == "n2" || l == "ext_n2"), "{ls}");
    let lrs = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]);
    assert!(!lrs.contains("GR_n2"), "{lrs}");
    let bindings = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=logical_port",
            "list",
            "Static_MAC_Binding",
        ],
    );
    assert!(
        bindings.contains("rtoj-GR_n1") && !bindings.contains("rtoj-GR_n2"),
        "{bindings}"
    );
    let lrps = nbctl(&nb, &["lrp-list", "ovn_cluster_router"]);
    assert!(!lrps.contains("rtos-n2"), "{lrps}");
    central.sync().expect("northd sync");
    assert_eq!(
        central.northd_problems()[tampered..].to_vec(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_topology_trace_restart_repair() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    scenario(Stack::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_topology_trace_restart_repair() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    scenario(Stack::V6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_topology_trace_restart_repair() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    scenario(Stack::Dual).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_the_rest_works() {
    if !testkit::require_env(NEEDS) {
        return;
    }
    let central = testkit::OvnCentral::start().expect("OVN central");
    let nb = central.nb_remote();
    let kube = Arc::new(FakeKube::default());
    let ctl = controller(&nb, Stack::V4, kube.clone()).await;
    feed(&ctl, &kube, Stack::V4, &[("a", "n1")]).await;
    let a = pod_net(&kube, "ns", "a");

    // A pod claiming pod a's address, one with a malformed annotation, one outside the
    // node's subnet: each is an Event on that pod, no port; a good pod still works.
    let mut dup = BTreeMap::new();
    let text = kube.annotations_of("pod/ns/a")[ovnk_annotations::POD_NETWORKS].clone();
    dup.insert(ovnk_annotations::POD_NETWORKS.to_string(), text.clone());
    ctl.pod_applied(&pod("ns", "dup", "n1", dup));
    let mut bad = BTreeMap::new();
    bad.insert(
        ovnk_annotations::POD_NETWORKS.to_string(),
        "{not json".to_string(),
    );
    ctl.pod_applied(&pod("ns", "bad", "n1", bad));
    let mut outside = BTreeMap::new();
    let other_node = text.replace(&a.v4().unwrap().addr().to_string(), "10.99.0.5");
    outside.insert(ovnk_annotations::POD_NETWORKS.to_string(), other_node);
    ctl.pod_applied(&pod("ns", "outside", "n1", outside));
    ctl.pod_applied(&pod("ns", "good", "n1", BTreeMap::new()));
    ctl.settle().await;

    let ports = nbctl(&nb, &["lsp-list", "n1"]);
    assert!(ports.contains("ns_good"), "{ports}");
    for p in ["dup", "bad", "outside"] {
        assert!(!ports.contains(&format!("ns_{p}")), "{ports}");
        assert!(
            kube.events()
                .iter()
                .any(|(who, _, _)| who == &format!("Pod/{p}")),
            "no event for {p}: {:?}",
            kube.events()
        );
    }
    // The good pod did not get pod a's address.
    assert_ne!(pod_net(&kube, "ns", "good").ip_addresses, a.ip_addresses);

    // A node without chassis id yet: switch and management port, no gateway router.
    let mut n3 = node("n3", 3, Stack::V4, BTreeMap::new());
    if let Some(a) = n3.metadata.annotations.as_mut() {
        a.remove(ovnk_annotations::NODE_CHASSIS_ID);
    }
    ctl.node_applied(&n3);
    ctl.settle().await;
    let lrs = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]);
    assert!(!lrs.contains("GR_n3"), "{lrs}");
    let ls = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Switch"]);
    assert!(ls.lines().any(|l| l == "n3"), "{ls}");
}
