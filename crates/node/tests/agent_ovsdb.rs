//! The CNI agent and `run_with` against a real ovsdb-server (vswitch schema), a real
//! lab API server and the real `ovn-k8s-cni-overlay` binary, with netlink faked
//! ([`FakeNet`]) and ovn-controller's `ovn-installed` marking stood in for. No root.
//! `ovs-vsctl` is the independent witness of what landed in OVS.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ovnk_cni::{CniHandler, CniRequest, ErrorCode};
use ovnk_node::cni::{CniAgent, CniSettings};
use ovnk_node::fake::FakeNet;
use ovnk_node::ovs::Ovs;
use ovnk_node::pods::{PodCache, PodEntry};

const PREREQS: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vsctl",
    testkit::VSWITCH_SCHEMA,
];

struct Env {
    _server: testkit::OvsdbServer,
    db: PathBuf,
    ovs: Ovs,
    _dir: tempfile::TempDir,
    netns: Vec<PathBuf>,
}

/// An ovsdb-server with br-int, and files standing in for pod namespaces.
async fn env() -> Env {
    let server = testkit::OvsdbServer::start(testkit::VSWITCH_SCHEMA).expect("ovsdb-server");
    let db = server.socket_path().to_path_buf();
    let ovs = Ovs::connect(&db).await.expect("connect");
    ovs.set_system_external_ids(&BTreeMap::from([(
        "system-id".to_string(),
        "n1".to_string(),
    )]))
    .await
    .expect("init");
    ovs.ensure_bridge("br-int", Some("netdev"), true)
        .await
        .expect("br-int");
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = (0..4)
        .map(|i| {
            let p = dir.path().join(format!("netns{i}"));
            std::fs::write(&p, b"").expect("netns stand-in");
            p
        })
        .collect();
    Env {
        _server: server,
        db,
        ovs,
        _dir: dir,
        netns,
    }
}

fn settings() -> CniSettings {
    CniSettings {
        mtu: 1400,
        tx_checksum_off: true,
        pod_annotation_timeout: Duration::from_millis(800),
        ovn_installed_timeout: Duration::from_millis(800),
        node_netns: None,
    }
}

fn entry(uid: &str, ip: [u8; 4]) -> PodEntry {
    PodEntry {
        uid: uid.into(),
        pod_networks: Some(pod_networks(ip.into())),
    }
}

fn request(
    cmd: &str,
    id: &str,
    netns: &Path,
    pod: (&str, &str, &str),
    extra: serde_json::Value,
) -> CniRequest {
    let env: BTreeMap<String, String> = [
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", netns.display().to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
                pod.0, pod.1, pod.2
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut conf = serde_json::json!({"cniVersion":"1.1.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay"});
    if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    CniRequest::parse(&env, conf.to_string().as_bytes()).expect("valid request")
}

fn port_names(db: &Path) -> String {
    vsctl(db, &["list-ports", "br-int"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_del_gc_against_ovsdb_server() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let e = env().await;
    let _ctl = FakeOvnController::start(&e.db, &["ns1_a", "ns1_b"]).await;
    let pods = Arc::new(PodCache::new());
    pods.upsert("ns1", "a", entry("uid-a", [10, 244, 1, 5]));
    pods.upsert("ns1", "b", entry("uid-b", [10, 244, 1, 6]));
    pods.upsert("ns1", "slow", entry("uid-s", [10, 244, 1, 7]));
    pods.mark_synced();
    let paths: Vec<&str> = e.netns.iter().filter_map(|p| p.to_str()).collect();
    let net = Arc::new(FakeNet::with_netns(&paths));
    let (_tx, ready) = tokio::sync::watch::channel(true);
    let agent = CniAgent::new(net.clone(), e.ovs.clone(), pods.clone(), settings(), ready);

    // ADD: veth made, port on br-int with upstream's external_ids, result describes it.
    let add = request(
        "ADD",
        "aaaaaaaaaaaaaaaaaaaa1",
        &e.netns[0],
        ("ns1", "a", "uid-a"),
        serde_json::json!({}),
    );
    let res = agent.add(add).await.expect("ADD a");
    assert_eq!(res.ips[0].address.to_string(), "10.244.1.5/24");
    assert_eq!(
        res.ips[0].gateway.map(|g| g.to_string()).as_deref(),
        Some("10.244.1.1")
    );
    assert_eq!(res.interfaces[0].name, "aaaaaaaaaaaaaaa");
    let host = "aaaaaaaaaaaaaaa";
    assert_eq!(port_names(&e.db), host);
    let ids = vsctl(&e.db, &["get", "interface", host, "external_ids"]);
    for want in [
        "iface-id=ns1_a",
        "iface-id-ver=uid-a",
        "attached_mac=\"0a:58:0a:f4:01:05\"",
        "sandbox=aaaaaaaaaaaaaaaaaaaa1",
        "ip_addresses=\"10.244.1.5/24\"",
        "ovn-installed=\"true\"",
    ] {
        assert!(ids.contains(want), "{want} missing in {ids}");
    }
    assert!(net.lock().pods.contains_key(host));

    // CHECK passes on what ADD made.
    let prev = res.render(ovnk_cni::SpecVersion::V1_1_0);
    let check = request(
        "CHECK",
        "aaaaaaaaaaaaaaaaaaaa1",
        &e.netns[0],
        ("ns1", "a", "uid-a"),
        serde_json::json!({"prevResult": prev}),
    );
    agent.check(check.clone()).await.expect("CHECK");

    // A request for another incarnation of the pod is refused.
    let wrong = request(
        "ADD",
        "bbbbbbbbbbbbbbbbbbbb2",
        &e.netns[1],
        ("ns1", "a", "uid-OLD"),
        serde_json::json!({}),
    );
    let err = agent.add(wrong).await.expect_err("uid mismatch");
    assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{err}");
    assert!(
        err.msg.contains("ns1/a") && err.msg.contains("uid-OLD"),
        "{err}"
    );

    // ovn-installed never comes: clear timeout naming the pod, nothing left behind.
    let slow = request(
        "ADD",
        "ccccccccccccccccccc3",
        &e.netns[2],
        ("ns1", "slow", "uid-s"),
        serde_json::json!({}),
    );
    let err = agent.add(slow).await.expect_err("not installed");
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(
        err.msg.contains("ns1/slow") && err.msg.contains("ovn-installed"),
        "{err}"
    );
    assert_eq!(port_names(&e.db), host, "failed ADD left a port");
    assert!(!net.lock().pods.contains_key("ccccccccccccccc"));

    // The node's own namespace is refused.
    let own = request(
        "ADD",
        "dddddddddddddddddddd4",
        Path::new("/proc/self/ns/net"),
        ("ns1", "b", "uid-b"),
        serde_json::json!({}),
    );
    let err = agent.add(own).await.expect_err("own netns");
    assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{err}");

    // DEL removes port and veth; a second DEL succeeds; CHECK now fails.
    let del = request(
        "DEL",
        "aaaaaaaaaaaaaaaaaaaa1",
        &e.netns[0],
        ("ns1", "a", "uid-a"),
        serde_json::json!({}),
    );
    agent.del(del.clone()).await.expect("DEL");
    assert_eq!(port_names(&e.db), "");
    assert!(net.lock().pods.is_empty());
    agent.del(del).await.expect("DEL again");
    assert!(agent.check(check).await.is_err());

    // GC: only attachments in the valid list survive.
    for (id, ns, pod, uid) in [
        ("eeeeeeeeeeeeeeeeeeee5", &e.netns[0], "a", "uid-a"),
        ("ffffffffffffffffffff6", &e.netns[1], "b", "uid-b"),
    ] {
        let r = request("ADD", id, ns, ("ns1", pod, uid), serde_json::json!({}));
        agent.add(r).await.expect("ADD for GC");
    }
    let mut gc_env = BTreeMap::new();
    gc_env.insert("CNI_COMMAND".to_string(), "GC".to_string());
    let gc_conf = serde_json::json!({"cniVersion":"1.1.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay",
        "cni.dev/valid-attachments":[{"containerID":"ffffffffffffffffffff6","ifname":"eth0"}]});
    let gc = CniRequest::parse(&gc_env, gc_conf.to_string().as_bytes()).expect("GC request");
    agent.gc(gc).await.expect("GC");
    assert_eq!(port_names(&e.db), "fffffffffffffff");
    assert!(!net.lock().pods.contains_key("eeeeeeeeeeeeeee"));

    // Start-up cleanup: the pod is gone from the API, its port goes too.
    pods.remove("ns1", "b");
    let gone = agent.remove_stale_ports().await.expect("cleanup");
    assert_eq!(gone, vec!["fffffffffffffff".to_string()]);
    assert_eq!(port_names(&e.db), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_all_succeed() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let e = env().await;
    let _ctl = FakeOvnController::start(&e.db, &["*"]).await;
    let pods = Arc::new(PodCache::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for i in 0..20u8 {
        pods.upsert(
            "ns",
            &format!("p{i}"),
            entry(&format!("u{i}"), [10, 244, 3, 10 + i]),
        );
        let p = dir.path().join(format!("ns{i}"));
        std::fs::write(&p, b"").expect("netns stand-in");
        paths.push(p);
    }
    let strs: Vec<&str> = paths.iter().filter_map(|p| p.to_str()).collect();
    let net = Arc::new(FakeNet::with_netns(&strs));
    let (_tx, ready) = tokio::sync::watch::channel(true);
    let agent = Arc::new(CniAgent::new(
        net.clone(),
        e.ovs.clone(),
        pods,
        settings(),
        ready,
    ));
    let mut tasks = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let agent = agent.clone();
        let r = request(
            "ADD",
            &format!("c{i:02}xxxxxxxxxxxxxxxxx"),
            path,
            ("ns", &format!("p{i}"), &format!("u{i}")),
            serde_json::json!({}),
        );
        tasks.push(tokio::spawn(async move { agent.add(r).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("ADD");
    }
    let ports = port_names(&e.db);
    assert_eq!(ports.lines().count(), 20, "{ports}");
    assert_eq!(net.lock().pods.len(), 20);
}

/// The real shim against the real server: each bad input gets its code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_through_the_real_shim() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let shim = shim_binary();
    let e = env().await;
    let _ctl = FakeOvnController::start(&e.db, &["*"]).await;
    let pods = Arc::new(PodCache::new());
    pods.upsert("ns1", "ok", entry("uid-ok", [10, 244, 1, 9]));
    pods.upsert(
        "ns1",
        "bare",
        PodEntry {
            uid: "uid-bare".into(),
            pod_networks: None,
        },
    );
    let paths: Vec<&str> = e.netns.iter().filter_map(|p| p.to_str()).collect();
    let net = Arc::new(FakeNet::with_netns(&paths));
    let (_tx, ready) = tokio::sync::watch::channel(true);
    let agent = Arc::new(CniAgent::new(net, e.ovs.clone(), pods, settings(), ready));
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("cni/server.sock");
    let listener = ovnk_cni::bind_root_socket(&sock).expect("bind");
    let server = tokio::spawn(ovnk_cni::serve(listener, agent));

    let netns0 = e.netns[0].display().to_string();
    let args_ok = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=ok;K8S_POD_UID=uid-ok";
    let base = |cmd: &'static str, netns: &str, args: &str| -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), "1234567890abcdef00".into()),
            ("CNI_NETNS".into(), netns.into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_ARGS".into(), args.into()),
            ("CNI_PATH".into(), "/opt/cni/bin".into()),
        ]
    };
    let conf = netconf(&sock, "1.0.0", 10.0);
    async fn run(shim: &Path, env: &[(String, String)], stdin: &str) -> ShimRun {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        exec_shim(shim, &pairs, stdin).await
    }

    // Success first: the result JSON comes back through the binary.
    let ok = run(&shim, &base("ADD", &netns0, args_ok), &conf).await;
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert_eq!(ok.json["ips"][0]["address"], "10.244.1.9/24");
    assert_eq!(ok.json["cniVersion"], "1.0.0");

    // (what, environment, stdin, expected code, text the message must contain)
    type Case<'a> = (&'a str, Vec<(String, String)>, String, u64, &'a str);
    let mut cases: Vec<Case> = Vec::new();
    let mut no_env = base("ADD", &netns0, args_ok);
    no_env.retain(|(k, _)| k != "CNI_CONTAINERID");
    cases.push(("missing env", no_env, conf.clone(), 4, "CNI_CONTAINERID"));
    cases.push((
        "malformed JSON",
        base("ADD", &netns0, args_ok),
        "{\"cniVersion\":".into(),
        6,
        "not valid JSON",
    ));
    cases.push((
        "cniVersion",
        base("ADD", &netns0, args_ok),
        netconf(&sock, "9.9.9", 10.0),
        1,
        "9.9.9",
    ));
    cases.push((
        "missing netns",
        base("ADD", "/var/run/netns/ovnkt-no-such-ns", args_ok),
        conf.clone(),
        4,
        "ovnkt-no-such-ns",
    ));
    cases.push((
        "annotation never comes",
        base(
            "ADD",
            &netns0,
            "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=bare;K8S_POD_UID=uid-bare",
        ),
        conf.clone(),
        101,
        "ns1/bare",
    ));
    cases.push((
        "uid mismatch",
        base(
            "ADD",
            &netns0,
            "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=ok;K8S_POD_UID=someone-else",
        ),
        conf.clone(),
        4,
        "someone-else",
    ));
    for (what, env, stdin, code, text) in cases {
        let r = run(&shim, &env, &stdin).await;
        assert_ne!(r.code, 0, "{what}: {}", r.stdout);
        assert_eq!(r.json["code"].as_u64(), Some(code), "{what}: {}", r.stdout);
        let msg = r.json["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(text), "{what}: {msg:?} lacks {text:?}");
    }

    // The node agent not running: ADD fails with "unreachable", DEL succeeds (see ovnk_cni::shim).
    server.abort();
    let _ = server.await;
    let _ = std::fs::remove_file(&sock);
    let r = run(&shim, &base("ADD", &netns0, args_ok), &conf).await;
    assert_eq!(r.json["code"].as_u64(), Some(100), "{}", r.stdout);
    let r = run(&shim, &base("DEL", &netns0, args_ok), &conf).await;
    assert_eq!(r.code, 0, "DEL without agent: {}", r.stdout);
}

/// `run_with` end to end without root: registration in OVS and in the API, the
/// management port, removal of a pod port left by a deleted pod, then ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_registers_the_node_and_cleans_up() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let e = env().await;
    let _ctl = FakeOvnController::start(&e.db, &["*"]).await;
    // A port left behind by a pod that was deleted while no agent ran.
    let stale = ovnk_node::ovs::PortSpec {
        name: "stale0000000000".into(),
        internal: false,
        external_ids: BTreeMap::from([
            ("iface-id".to_string(), "gone_pod".to_string()),
            ("sandbox".to_string(), "stale0000000000abc".to_string()),
        ]),
        mac: None,
        mtu_request: None,
        port_other_config: BTreeMap::new(),
    };
    e.ovs.add_port(&stale).await.expect("stale port");
    assert_eq!(port_names(&e.db), "stale0000000000");

    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, kube) = apiserver(dir.path()).await;
    create_node(
        &kube,
        "node1",
        BTreeMap::from([(
            ovnk_annotations::NODE_SUBNETS.to_string(),
            r#"{"default":["10.244.1.0/24"]}"#.to_string(),
        )]),
    )
    .await;
    let net = Arc::new(FakeNet::default());
    net.add_host_link(ovnk_node::mgmt::MGMT_PORT);
    let mut cfg = ovnk_node::NodeConfig::new(
        "node1",
        &e.db,
        "unix:/central/sb.sock",
        "172.30.33.11/24".parse().expect("ip"),
    );
    cfg.cni_socket = dir.path().join("cni/server.sock");
    cfg.cni_conf_dir = Some(dir.path().join("net.d"));
    cfg.startup_timeout = Duration::from_secs(20);
    let agent = tokio::spawn(ovnk_node::run_with(cfg, kube.clone(), net.clone()));

    // Ready = the CNI configuration is installed (written last).
    let conf = dir.path().join("net.d/10-ovn-kubernetes.conflist");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !conf.exists() {
        assert!(!agent.is_finished(), "agent stopped early");
        assert!(std::time::Instant::now() < deadline, "agent not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = vsctl(&e.db, &["get", "open", ".", "external_ids"]);
    for want in [
        "system-id=n1", // the existing system-id is kept
        "ovn-remote=\"unix:/central/sb.sock\"",
        "ovn-encap-type=geneve",
        "ovn-encap-ip=\"172.30.33.11\"",
        "ovn-bridge-datapath-type=netdev",
    ] {
        assert!(ids.contains(want), "{want} missing in {ids}");
    }
    assert_eq!(port_names(&e.db), "ovn-k8s-mp0", "stale port not removed");
    assert_eq!(
        vsctl(
            &e.db,
            &["get", "interface", "ovn-k8s-mp0", "external_ids:iface-id"]
        ),
        "k8s-node1"
    );
    assert_eq!(
        vsctl(&e.db, &["get", "interface", "ovn-k8s-mp0", "type"]),
        "internal"
    );
    {
        let st = net.lock();
        let mp0 = st.host_links[ovnk_node::mgmt::MGMT_PORT]
            .as_ref()
            .expect("mp0 configured");
        assert_eq!(mp0.mac, Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]));
        assert_eq!(mp0.addresses[0].to_string(), "10.244.1.2/24");
        assert_eq!(mp0.routes.len(), 2, "{:?}", mp0.routes);
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(kube.clone());
    let ann = nodes
        .get("node1")
        .await
        .expect("node")
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        ann.get(ovnk_annotations::NODE_CHASSIS_ID)
            .map(String::as_str),
        Some("n1")
    );
    assert!(ann.contains_key(ovnk_annotations::L3_GATEWAY_CONFIG));
    agent.abort();
}
