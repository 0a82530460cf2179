//! As root: the shared-gateway flows of `ovnk_node::gateway::run` on a real breth0.
//!
//! Three namespaces made by this test: `u` (the underlay / external client, 172.31.7.1),
//! `n` (the node: its own ovsdb-server and ovs-vswitchd, netdev `breth0` holding the node
//! IP 172.31.7.2 with `eth0` as uplink) and `g`, which stands in for the gateway router:
//! it owns the *same* IP and breth0's MAC (variant B) and hangs off breth0 through the
//! patch port `patch-breth0_n1-to-br-int` that ovn-controller would make (peered with a
//! second bridge, `br-gr`, and a veth into `g`). The agent's loop runs against the real
//! OVS database and OpenFlow socket; services come through its watch channel.
//!
//! Checked with TCP listeners on the same IP and port in `n` and `g`: NodePort traffic
//! reaches `g`, everything else the host; both can open connections to the outside and
//! get the replies; a deleted service's flow goes; flows deleted by hand come back.
//! `ip`, `ovs-vsctl` and `ovs-ofctl` are helpers and witnesses only.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Namespaces;
use ovnk_node::gateway::{self, GatewaySettings, OpenFlowTable, ServiceView};
use ovnk_openflow::L4Proto;

const PREREQS: &[&str] = &[
    "root",
    "ip",
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ovs-ofctl",
    testkit::VSWITCH_SCHEMA,
];

const UNDERLAY: Ipv4Addr = Ipv4Addr::new(172, 31, 7, 1);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 7, 2);
const BRETH0_MAC: &str = "02:42:ac:1f:07:02";
const NODE: &str = "n1";

/// Daemons this test started, stopped by pid on drop.
#[derive(Default)]
struct Daemons(Vec<Child>);
impl Drop for Daemons {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
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

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vsctl(db: &Path, args: &[&str]) {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .arg("--timeout=10")
        .args(args)
        .output()
        .expect("ovs-vsctl");
    assert!(
        out.status.success(),
        "ovs-vsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dump_flows(mgmt: &Path) -> String {
    let out = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow13", "dump-flows"])
        .arg(mgmt)
        .output()
        .expect("ovs-ofctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn netns(name: &str) -> ovnk_netns::NetNs {
    ovnk_netns::NetNs::named(name).expect("open netns")
}

/// TX checksums off on a veth end (LAB.md pitfall 1) and no IPv6 chatter on it.
fn quiet_veth(ns: &str, ifname: &str) {
    netns(ns)
        .run(|| {
            ovnk_node::ethtool::disable_tx_checksum(ifname).expect("tx off");
            let _ = ovnk_node::ethtool::disable_ipv6(ifname);
        })
        .expect("in netns");
}

/// A TCP listener in `ns` that answers every connection with `tag`.
fn serve(ns: &str, addr: SocketAddr, tag: &'static str) {
    let l: TcpListener = netns(ns)
        .run(|| TcpListener::bind(addr))
        .expect("in netns")
        .unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(tag.as_bytes());
        }
    });
}

/// One TCP exchange from `ns`: what the peer said, or the error.
fn probe(ns: &str, addr: SocketAddr) -> Result<String, String> {
    netns(ns)
        .run(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        })
        .map_err(|e| e.to_string())?
}

/// The answer from `addr`, allowing retries for the first packets while ARP settles.
async fn answer(ns: &str, addr: SocketAddr) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        let (ns2, a) = (ns.to_string(), addr);
        match tokio::task::spawn_blocking(move || probe(&ns2, a))
            .await
            .expect("probe task")
        {
            Ok(s) => return s,
            Err(e) => {
                eprintln!("probe {addr} from {ns}: {e}");
                last = e
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    format!("error: {last}")
}

/// Waits until `addr` answers `want` from `ns`. After a flow change, ovs-vswitchd
/// revalidates its cached datapath flows asynchronously, so for a few milliseconds a
/// new connection can still take the old path: the outcome is asserted, not the instant.
async fn answers_eventually(ns: &str, addr: SocketAddr, want: &str, what: &str) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    loop {
        let got = answer(ns, addr).await;
        if got == want {
            if start.elapsed() > Duration::from_millis(500) {
                eprintln!("{what}: took {:?}", start.elapsed());
            }
            return;
        }
        eprintln!(
            "{what}: {addr} answered {got:?} after {:?}",
            start.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "{what}: {addr} from {ns} answered {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn start_ovs(d: &Path, node_ns: &str, daemons: &mut Daemons) -> PathBuf {
    let db = d.join("db.sock");
    let st = Command::new("ovsdb-tool")
        .arg("create")
        .arg(d.join("conf.db"))
        .arg(testkit::VSWITCH_SCHEMA)
        .status()
        .expect("ovsdb-tool");
    assert!(st.success());
    let spawn = |daemons: &mut Daemons, mut c: Command, log: &str| {
        for k in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR"] {
            c.env(k, d);
        }
        let err = std::fs::File::create(d.join(log)).expect("log file");
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        daemons.0.push(c.spawn().expect("spawn daemon"));
    };
    let mut c = Command::new(testkit::find_binary("ovsdb-server").expect("ovsdb-server"));
    c.arg(d.join("conf.db"))
        .arg(format!("--remote=punix:{}", db.display()))
        .arg(format!(
            "--unixctl={}",
            d.join("ovsdb-server.ctl").display()
        ))
        .arg("--no-chdir");
    spawn(daemons, c, "ovsdb-server.stderr");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db.exists() {
        assert!(Instant::now() < deadline, "ovsdb-server socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    vsctl(&db, &["--no-wait", "init"]);
    let mut c = Command::new(testkit::find_binary("ovs-vswitchd").expect("ovs-vswitchd"));
    c.arg(format!("unix:{}", db.display()))
        .arg(format!(
            "--unixctl={}",
            d.join("ovs-vswitchd.ctl").display()
        ))
        .arg(format!(
            "--log-file={}",
            d.join("ovs-vswitchd.log").display()
        ))
        .arg("--no-chdir");
    netns(node_ns).command_in(&mut c).expect("in node ns");
    spawn(daemons, c, "ovs-vswitchd.stderr");
    db
}

fn nodeport_service(port: u16) -> BTreeMap<(String, String), ServiceView> {
    let mut m = BTreeMap::new();
    m.insert(
        ("default".to_string(), "web".to_string()),
        ServiceView {
            ports: vec![(L4Proto::Tcp, 80, Some(port))],
            external_ips: vec![],
            cluster_ips: vec![],
        },
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_steering_and_host_traffic_on_a_shared_gateway_bridge() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut nss = Namespaces::new("ovnkgw");
    let (u, n, g) = (nss.add("u"), nss.add("n"), nss.add("g"));
    // Underlay link and the GR stand-in's link, each created across two namespaces.
    ip(&[
        "-n", &n, "link", "add", "eth0", "type", "veth", "peer", "name", "ue", "netns", &u,
    ]);
    ip(&[
        "-n", &n, "link", "add", "vgr", "type", "veth", "peer", "name", "eth0", "netns", &g,
    ]);
    for (ns, ifname) in [(&u, "ue"), (&n, "eth0"), (&n, "vgr"), (&g, "eth0")] {
        quiet_veth(ns, ifname);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
    }
    // The node kernel must not answer on the uplink itself (LAB.md pitfall 3).
    ip(&["-n", &n, "link", "set", "eth0", "arp", "off"]);
    ip(&["-n", &n, "link", "set", "vgr", "arp", "off"]);
    ip(&[
        "-n",
        &u,
        "addr",
        "add",
        &format!("{UNDERLAY}/24"),
        "dev",
        "ue",
    ]);
    ip(&["-n", &g, "link", "set", "eth0", "address", BRETH0_MAC]);
    ip(&[
        "-n",
        &g,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "eth0",
    ]);

    let mut daemons = Daemons::default();
    let db = start_ovs(d, &n, &mut daemons);
    let patch = gateway::patch_port_name("breth0", NODE);
    vsctl(
        &db,
        &[
            "add-br",
            "breth0",
            "--",
            "set",
            "bridge",
            "breth0",
            "datapath_type=netdev",
            &format!("other_config:hwaddr={BRETH0_MAC}"),
            "--",
            "add-port",
            "breth0",
            "eth0",
            "--",
            "add-br",
            "br-gr",
            "--",
            "set",
            "bridge",
            "br-gr",
            "datapath_type=netdev",
            "--",
            "add-port",
            "br-gr",
            "vgr",
            "--",
            "add-port",
            "br-gr",
            "patch-gr",
            "--",
            "set",
            "interface",
            "patch-gr",
            "type=patch",
            &format!("options:peer={patch}"),
        ],
    );
    let mgmt = ovnk_openflow::mgmt_socket(d, "breth0");
    // The GR stand-in is a wire, not a learning switch: the host and the router share the
    // node's MAC, so NORMAL in br-gr would learn that MAC on the patch port from the host's
    // flooded multicast and then drop the router's own traffic. OVN's logical switch does
    // not learn either.
    let gr_mgmt = ovnk_openflow::mgmt_socket(d, "br-gr");
    wait_until("br-gr's management socket", || gr_mgmt.exists()).await;
    let ofctl = |args: &[&str]| {
        let st = Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13"])
            .args(args)
            .status()
            .expect("ovs-ofctl");
        assert!(st.success(), "ovs-ofctl {args:?}");
    };
    let gr = gr_mgmt.to_str().expect("utf-8 path");
    ofctl(&["del-flows", gr]);
    ofctl(&["add-flow", gr, "in_port=vgr,actions=output:patch-gr"]);
    ofctl(&["add-flow", gr, "in_port=patch-gr,actions=output:vgr"]);
    wait_until("breth0 in the node namespace", || {
        Command::new("ip")
            .args(["-n", &n, "link", "show", "breth0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && mgmt.exists()
    })
    .await;
    ip(&["-n", &n, "link", "set", "breth0", "up"]);
    ip(&[
        "-n",
        &n,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "breth0",
    ]);

    // The agent's loop, before the patch port exists (ovn-controller makes it later).
    let ovs = Arc::new(ovnk_node::ovs::Ovs::connect(&db).await.expect("ovsdb"));
    let (svc_tx, svc_rx) = tokio::sync::watch::channel(nodeport_service(30080));
    let agent = tokio::spawn(gateway::run(
        GatewaySettings {
            node_name: NODE.into(),
            bridge: "breth0".into(),
            node_ip: NODE_IP,
            interval: Duration::from_millis(500),
        },
        ovs.clone(),
        OpenFlowTable::new(d, "breth0"),
        svc_rx,
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !dump_flows(&mgmt).contains("ct_mark"),
        "no flows before the patch port exists"
    );
    vsctl(
        &db,
        &[
            "add-port",
            "breth0",
            &patch,
            "--",
            "set",
            "interface",
            &patch,
            "type=patch",
            "options:peer=patch-gr",
        ],
    );
    wait_until("the NodePort flow", || {
        dump_flows(&mgmt).contains("tp_dst=30080")
    })
    .await;

    // Same IP and ports on the host and on the "router": the flows decide who answers.
    let at = |port| SocketAddr::from((NODE_IP, port));
    serve(&n, at(30080), "host");
    serve(&g, at(30080), "router");
    serve(&n, at(8080), "host");
    serve(&g, at(8080), "router");
    serve(&u, SocketAddr::from((UNDERLAY, 9000)), "underlay");

    assert_eq!(answer(&u, at(30080)).await, "router", "NodePort → router");
    assert_eq!(answer(&u, at(8080)).await, "host", "other ports → host");
    let out = SocketAddr::from((UNDERLAY, 9000));
    assert_eq!(
        answer(&g, out).await,
        "underlay",
        "router-initiated connection"
    );
    assert_eq!(
        answer(&n, out).await,
        "underlay",
        "host-initiated connection"
    );

    // The service goes: so does its flow, and the port is the host's again.
    svc_tx.send_replace(BTreeMap::new());
    wait_until("the NodePort flow to go", || {
        !dump_flows(&mgmt).contains("tp_dst=30080")
    })
    .await;
    answers_eventually(&u, at(30080), "host", "NodePort gone → host").await;

    // Flows deleted behind the agent's back come back.
    svc_tx.send_replace(nodeport_service(8080));
    wait_until("the new NodePort flow", || {
        dump_flows(&mgmt).contains("tp_dst=8080")
    })
    .await;
    let st = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow13", "del-flows"])
        .arg(&mgmt)
        .status()
        .expect("ovs-ofctl del-flows");
    assert!(st.success());
    wait_until("the flows to be reinstalled", || {
        let f = dump_flows(&mgmt);
        f.contains("tp_dst=8080") && f.contains("ct_mark")
    })
    .await;
    answers_eventually(&u, at(8080), "router", "reinstalled NodePort → router").await;
    answers_eventually(&u, at(30080), "host", "old NodePort → host").await;
    answers_eventually(&g, out, "underlay", "router-initiated, reinstalled").await;

    agent.abort();
    drop(daemons);
    drop(nss);
}
