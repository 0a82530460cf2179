//! End to end, as root: real OVN central (NB, SB, northd), a node namespace with its own
//! ovsdb-server, ovs-vswitchd (netdev) and ovn-controller, a lab API server, the agent
//! (`ovnk_node::run`) and the real `ovn-k8s-cni-overlay`. Pods are namespaces this test
//! creates. The NB topology (node switch, cluster router, LSPs) and the pod/node
//! annotations are written by the test, standing in for `ovnk controller`.
//! `ip`, `ping` and `ovs-vsctl` are witnesses only.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ovsdb::{Atom, Client, ClientConfig, Remote, Row, Transaction, Value};

const PREREQS: &[&str] = &[
    "root",
    "ip",
    "ping",
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ovn-controller",
    "ovn-northd",
    testkit::VSWITCH_SCHEMA,
    testkit::OVN_NB_SCHEMA,
];

/// Daemons this test started, stopped by pid on drop.
#[derive(Default)]
struct Daemons(Vec<(String, Child)>);
impl Daemons {
    fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) {
        let err = std::fs::File::create(log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.0.push((name.to_string(), child));
    }
}
impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Tails of the node daemons' logs, for failure messages.
fn logs(d: &Path) -> String {
    let mut out = String::new();
    for f in ["ovn-controller.log", "ovs-vswitchd.log"] {
        let text = std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "--- {f}\n{}\n",
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    out
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(ns: &str, dst: &str) -> bool {
    // The first packet may be lost while OVS resolves (LAB.md pitfall 6): allow retries.
    (0..3).any(|_| {
        Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-c1", "-W1", dst])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The NB rows `ovnk controller` would write for one node and its pods.
async fn nb_topology(nb: &str, node: &str, pods: &[(&str, &str)]) {
    let remote: Remote = nb.parse().expect("nb remote");
    let mut cfg = ClientConfig::new(vec![remote], "OVN_Northbound");
    cfg.monitor_tables = Some(vec![]);
    let c = Client::connect(cfg).await.expect("NB connects");
    let s = |x: &str| Value::from(x);
    let row = |pairs: Vec<(&str, Value)>| -> Row {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let mut t = Transaction::new("OVN_Northbound");
    t.insert_named(
        "Logical_Router_Port",
        "lrp",
        row(vec![
            ("name", s(&format!("rtos-{node}"))),
            ("mac", s("0a:58:0a:f4:00:01")),
            ("networks", Value::set(["10.244.0.1/24"])),
        ]),
    );
    t.insert(
        "Logical_Router",
        row(vec![
            ("name", s("ovn_cluster_router")),
            ("ports", Value::set([Atom::NamedUuid("lrp".into())])),
        ]),
    );
    let mut lsps = vec![Atom::NamedUuid("stor".into())];
    t.insert_named(
        "Logical_Switch_Port",
        "stor",
        row(vec![
            ("name", s(&format!("stor-{node}"))),
            ("type", s("router")),
            ("addresses", Value::set(["router"])),
            (
                "options",
                Value::string_map([("router-port", format!("rtos-{node}").as_str())]),
            ),
        ]),
    );
    let mut all: Vec<(String, String)> = vec![(
        format!("k8s-{node}"),
        "0a:58:0a:f4:00:02 10.244.0.2".to_string(),
    )];
    for (name, ipaddr) in pods {
        let mac = ovnk_annotations::MacAddr::from_ip(ipaddr.parse().expect("ip"));
        all.push((format!("default_{name}"), format!("{mac} {ipaddr}")));
    }
    for (i, (name, addr)) in all.iter().enumerate() {
        let n = format!("lsp{i}");
        t.insert_named(
            "Logical_Switch_Port",
            n.as_str(),
            row(vec![
                ("name", s(name)),
                ("addresses", Value::set([addr.as_str()])),
                ("port_security", Value::set([addr.as_str()])),
            ]),
        );
        lsps.push(Atom::NamedUuid(n));
    }
    t.insert(
        "Logical_Switch",
        row(vec![
            ("name", s(node)),
            (
                "other_config",
                Value::string_map([("subnet", "10.244.0.0/24")]),
            ),
            ("ports", Value::Set(lsps)),
        ]),
    );
    c.transact(&t).await.expect("NB topology");
}

struct Node {
    db: PathBuf,
    netns: String,
}

fn start_node(d: &Path, netns: &str, daemons: &mut Daemons) -> Node {
    let db = d.join("db.sock");
    let st = Command::new("ovsdb-tool")
        .args(["create"])
        .arg(d.join("conf.db"))
        .arg(testkit::VSWITCH_SCHEMA)
        .status()
        .expect("ovsdb-tool");
    assert!(st.success());
    let env = |c: &mut Command| {
        for k in [
            "OVS_RUNDIR",
            "OVS_DBDIR",
            "OVS_LOGDIR",
            "OVN_RUNDIR",
            "OVN_DBDIR",
            "OVN_LOGDIR",
        ] {
            c.env(k, d);
        }
    };
    let ns = ovnk_netns::NetNs::named(netns).expect("node ns");
    let mut c = Command::new(testkit::find_binary("ovsdb-server").expect("ovsdb-server"));
    c.arg(d.join("conf.db"))
        .arg(format!("--remote=punix:{}", db.display()))
        .arg(format!(
            "--unixctl={}",
            d.join("ovsdb-server.ctl").display()
        ))
        .arg("--no-chdir");
    env(&mut c);
    daemons.spawn("ovsdb-server", c, &d.join("ovsdb-server.log"));
    let mut c = Command::new(testkit::find_binary("ovs-vswitchd").expect("ovs-vswitchd"));
    c.arg(format!("unix:{}", db.display()))
        .arg(format!(
            "--unixctl={}",
            d.join("ovs-vswitchd.ctl").display()
        ))
        .arg("--no-chdir");
    env(&mut c);
    ns.command_in(&mut c).expect("in node ns");
    c.arg(format!(
        "--log-file={}",
        d.join("ovs-vswitchd.log").display()
    ));
    daemons.spawn("ovs-vswitchd", c, &d.join("ovs-vswitchd.stderr"));
    Node {
        db,
        netns: netns.to_string(),
    }
}

/// ovn-controller 23.03 exits when it finds no `system-id`, so it starts after the
/// agent has registered the chassis (as a supervisor would restart it).
fn start_ovn_controller(d: &Path, node: &Node, daemons: &mut Daemons) {
    let ns = ovnk_netns::NetNs::named(&node.netns).expect("node ns");
    let mut c = Command::new(testkit::find_binary("ovn-controller").expect("ovn-controller"));
    c.arg(format!("unix:{}", node.db.display()))
        .arg("--no-chdir");
    for k in [
        "OVS_RUNDIR",
        "OVS_DBDIR",
        "OVS_LOGDIR",
        "OVN_RUNDIR",
        "OVN_DBDIR",
        "OVN_LOGDIR",
    ] {
        c.env(k, d);
    }
    ns.command_in(&mut c).expect("in node ns");
    c.arg(format!(
        "--log-file={}",
        d.join("ovn-controller.log").display()
    ));
    daemons.spawn("ovn-controller", c, &d.join("ovn-controller.stderr"));
}

async fn shim(
    bin: &Path,
    cmd: &str,
    id: &str,
    netns: &str,
    pod: &str,
    uid: &str,
    conf: &str,
) -> ShimRun {
    let netns_path = format!("/run/netns/{netns}");
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID={uid}");
    exec_shim(
        bin,
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", &netns_path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", &args),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        conf,
    )
    .await
}

async fn wait_ready(bin: &Path, conf_status: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = exec_shim(
            bin,
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            conf_status,
        )
        .await;
        if r.code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "agent not ready: {}", r.stdout);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_ping_through_ovn_and_survive_an_agent_restart() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let bin = shim_binary();
    let central = testkit::OvnCentral::start().expect("OVN central");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nss = Namespaces::new("ovnkt");
    let node_ns = nss.add("n1");
    let pa = nss.add("pa");
    let pb = nss.add("pb");
    let mut daemons = Daemons::default();
    let node = start_node(dir.path(), &node_ns, &mut daemons);
    nb_topology(
        &central.nb_remote(),
        "node1",
        &[("pod-a", "10.244.0.3"), ("pod-b", "10.244.0.4")],
    )
    .await;

    let (_api, kube) = apiserver(dir.path()).await;
    create_node(
        &kube,
        "node1",
        BTreeMap::from([(
            ovnk_annotations::NODE_SUBNETS.to_string(),
            r#"{"default":["10.244.0.0/24"]}"#.to_string(),
        )]),
    )
    .await;
    let uid_a = create_pod(
        &kube,
        "default",
        "pod-a",
        "node1",
        Some(pod_networks([10, 244, 0, 3].into())),
    )
    .await;
    let uid_b = create_pod(
        &kube,
        "default",
        "pod-b",
        "node1",
        Some(pod_networks([10, 244, 0, 4].into())),
    )
    .await;

    let sock = dir.path().join("cni/ovn-cni-server.sock");
    let mut cfg = ovnk_node::NodeConfig::new(
        "node1",
        &node.db,
        central.sb_remote(),
        "172.30.99.11/24".parse().expect("ip"),
    );
    cfg.netns = Some(PathBuf::from(format!("/run/netns/{}", node.netns)));
    cfg.cni_socket = sock.clone();
    cfg.cni_conf_dir = Some(dir.path().join("net.d"));
    cfg.cni_bin_dir = Some(dir.path().join("bin"));
    cfg.cni_plugin_source = Some(bin.clone());
    cfg.startup_timeout = Duration::from_secs(30);
    let agent = tokio::spawn(ovnk_node::run(cfg.clone(), kube.clone()));
    let status_conf = netconf(&sock, "1.1.0", 30.0);
    wait_ready(&bin, &status_conf).await;
    assert!(dir.path().join("net.d/10-ovn-kubernetes.conflist").exists());
    assert!(dir.path().join("bin/ovn-k8s-cni-overlay").exists());
    let ext = vsctl(&node.db, &["get", "open", ".", "external_ids"]);
    assert!(
        ext.contains("ovn-encap-ip=\"172.30.99.11\"") && ext.contains("system-id=node1"),
        "{ext}"
    );
    start_ovn_controller(dir.path(), &node, &mut daemons);

    // ADD both pods through the real shim; each returns only once ovn-installed.
    let conf = netconf(&sock, "1.0.0", 60.0);
    let ida = "aaaa0000000000000000000000000001";
    let idb = "bbbb0000000000000000000000000002";
    let t0 = Instant::now();
    let ra = shim(&bin, "ADD", ida, &pa, "pod-a", &uid_a, &conf).await;
    assert_eq!(ra.code, 0, "ADD pod-a: {}\n{}", ra.stdout, logs(dir.path()));
    let rb = shim(&bin, "ADD", idb, &pb, "pod-b", &uid_b, &conf).await;
    assert_eq!(rb.code, 0, "ADD pod-b: {}", rb.stdout);
    eprintln!("two ADDs took {:?}", t0.elapsed());
    let host_a = &ida[..15];
    assert_eq!(
        vsctl(
            &node.db,
            &["get", "interface", host_a, "external_ids:ovn-installed"]
        ),
        "\"true\""
    );

    // Data path: gateway, the other pod, and the node via the management port.
    assert!(ping(&pa, "10.244.0.1"), "pod-a → gateway");
    assert!(ping(&pa, "10.244.0.4"), "pod-a → pod-b");
    assert!(ping(&pb, "10.244.0.3"), "pod-b → pod-a");
    assert!(ping(&node.netns, "10.244.0.3"), "node → pod-a via mp0");
    assert!(ping(&node.netns, "10.244.0.4"), "node → pod-b via mp0");

    // Restart the agent during a continuous ping: not one packet lost, port untouched.
    let uuid_before = vsctl(&node.db, &["get", "interface", host_a, "_uuid"]);
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pb,
            "ping",
            "-i",
            "0.02",
            "-c",
            "150",
            "-W",
            "1",
            "10.244.0.3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.abort();
    let _ = agent.await;
    let agent = tokio::spawn(ovnk_node::run(cfg.clone(), kube.clone()));
    wait_ready(&bin, &status_conf).await;
    let out = tokio::task::spawn_blocking(move || pinger.wait_with_output())
        .await
        .expect("join")
        .expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("150 received"),
        "packets lost across the restart: {text}"
    );
    assert_eq!(
        vsctl(&node.db, &["get", "interface", host_a, "_uuid"]),
        uuid_before
    );

    // DEL: port and veth gone; again: still fine.
    let rd = shim(&bin, "DEL", ida, &pa, "pod-a", &uid_a, &conf).await;
    assert_eq!(rd.code, 0, "DEL: {}", rd.stdout);
    assert!(!vsctl(&node.db, &["list-ports", "br-int"]).contains(host_a));
    assert!(!ip(&["-n", &node.netns, "-o", "link"]).contains(host_a));
    assert!(!ip(&["-n", &pa, "-o", "link"]).contains("eth0"));
    let rd = shim(&bin, "DEL", ida, &pa, "pod-a", &uid_a, &conf).await;
    assert_eq!(rd.code, 0, "second DEL: {}", rd.stdout);
    assert!(ping(&node.netns, "10.244.0.4"), "pod-b still reachable");

    // Registration in the API: chassis id, primary address, (disabled) gateway.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(kube.clone());
    let n = nodes.get("node1").await.expect("get node");
    let ann = n.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get("k8s.ovn.org/node-chassis-id").map(String::as_str),
        Some("node1")
    );
    assert_eq!(
        ann.get("k8s.ovn.org/node-primary-ifaddr")
            .map(String::as_str),
        Some(r#"{"ipv4":"172.30.99.11/24"}"#)
    );
    assert!(ann.contains_key("k8s.ovn.org/l3-gateway-config"), "{ann:?}");

    // pod-b is deleted while the agent is away: the shim's DEL succeeds without it,
    // and the restarted agent removes the orphaned port and veth.
    agent.abort();
    let _ = agent.await;
    let _ = std::fs::remove_file(&sock);
    let rd = shim(&bin, "DEL", idb, &pb, "pod-b", &uid_b, &conf).await;
    assert_eq!(rd.code, 0, "DEL without agent: {}", rd.stdout);
    let pods_api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube.clone(), "default");
    pods_api
        .delete("pod-b", &Default::default())
        .await
        .expect("delete pod-b");
    let host_b = &idb[..15];
    assert!(vsctl(&node.db, &["list-ports", "br-int"]).contains(host_b));
    let agent = tokio::spawn(ovnk_node::run(cfg.clone(), kube.clone()));
    wait_ready(&bin, &status_conf).await;
    assert!(!vsctl(&node.db, &["list-ports", "br-int"]).contains(host_b));
    assert!(!ip(&["-n", &node.netns, "-o", "link"]).contains(host_b));

    agent.abort();
    let _ = agent.await;
    drop(daemons);
    drop(nss);
}
