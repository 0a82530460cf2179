//! As root, against a real ovs-vswitchd (userspace datapath) in a network namespace of
//! its own: install LAB-gateway.md's variant-B flow set through our client and check it
//! with `ovs-ofctl -O OpenFlow13 dump-flows` as an independent witness; then switch
//! errors, aggregate counts, delete by cookie, and a vswitchd restart.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ovnk_openflow::{
    ct_state, port, Action, AggregateRequest, Client, Ct, Error, ErrorType, Flow, L4Proto, Masked,
    Match, SetField,
};

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

const COOKIE: u64 = 0x6f76_6e6b_0000_0001;

/// A named network namespace, deleted on drop (also when the test fails).
struct Netns(String);
impl Netns {
    fn new() -> Netns {
        let name = format!("ovnkof-{}", std::process::id());
        // A leftover of a crashed run of this test with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Ovs {
    dir: tempfile::TempDir,
    // Field order = drop order: vswitchd stops before its database.
    vswitchd: testkit::Daemon,
    _db: testkit::Daemon,
    _ns: Netns,
}

fn os(v: &[String]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn vsctl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", dir.join("db.sock").display()))
        .arg("--timeout=10")
        .args(args)
        .output()
        .expect("ovs-vsctl");
    assert!(
        out.status.success(),
        "ovs-vsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ofctl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow13"])
        .args(args)
        .output()
        .expect("ovs-ofctl");
    assert!(
        out.status.success(),
        "ovs-ofctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = dir;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Ovs {
    fn start() -> Ovs {
        let ns = Netns::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let st = Command::new("ovsdb-tool")
            .arg("create")
            .arg(d.join("conf.db"))
            .arg(testkit::VSWITCH_SCHEMA)
            .status()
            .expect("ovsdb-tool");
        assert!(st.success());
        let p = |n: &str| d.join(n).display().to_string();
        let mut db = testkit::Daemon::spawn(
            "ovsdb-server",
            "ovsdb-server",
            os(&[
                p("conf.db"),
                format!("--remote=punix:{}", p("db.sock")),
                format!("--unixctl={}", p("ovsdb-server.ctl")),
                format!("--log-file={}", p("ovsdb-server.log")),
                "--no-chdir".into(),
            ]),
            d,
            d.join("ovsdb-server.log"),
            d.join("ovsdb-server.ctl"),
        )
        .expect("ovsdb-server");
        db.wait_until(Duration::from_secs(10), || d.join("db.sock").exists())
            .expect("ovsdb-server up");
        vsctl(d, &["--no-wait", "init"]);
        // `ip netns exec` execs vswitchd in place, so the Daemon holds vswitchd's own pid.
        let mut vswitchd = testkit::Daemon::spawn(
            "ovs-vswitchd",
            "ip",
            os(&[
                "netns".into(),
                "exec".into(),
                ns.0.clone(),
                testkit::find_binary("ovs-vswitchd")
                    .expect("ovs-vswitchd")
                    .display()
                    .to_string(),
                format!("unix:{}", p("db.sock")),
                format!("--unixctl={}", p("ovs-vswitchd.ctl")),
                format!("--log-file={}", p("ovs-vswitchd.log")),
                "--no-chdir".into(),
            ]),
            d,
            d.join("ovs-vswitchd.log"),
            d.join("ovs-vswitchd.ctl"),
        )
        .expect("ovs-vswitchd");
        vswitchd
            .wait_until(Duration::from_secs(10), || {
                d.join("ovs-vswitchd.ctl").exists()
            })
            .expect("ovs-vswitchd up");
        vsctl(
            d,
            &[
                "add-br",
                "br0",
                "--",
                "set",
                "bridge",
                "br0",
                "datapath_type=netdev",
                "--",
                "add-port",
                "br0",
                "eth0",
                "--",
                "set",
                "interface",
                "eth0",
                "type=internal",
                "ofport_request=1",
                "--",
                "add-port",
                "br0",
                "patch-x",
                "--",
                "set",
                "interface",
                "patch-x",
                "type=internal",
                "ofport_request=5",
            ],
        );
        let mgmt = ovnk_openflow::mgmt_socket(d, "br0");
        wait("br0.mgmt", Duration::from_secs(10), || mgmt.exists());
        Ovs {
            dir,
            vswitchd,
            _db: db,
            _ns: ns,
        }
    }

    fn mgmt(&self) -> String {
        ovnk_openflow::mgmt_socket(self.dir.path(), "br0")
            .display()
            .to_string()
    }

    /// dump-flows without the counters that change, one line per flow, sorted.
    fn dump(&self) -> Vec<String> {
        let text = ofctl(self.dir.path(), &["dump-flows", &self.mgmt()]);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| {
                l.split(", ")
                    .filter(|f| {
                        !f.trim_start().starts_with("duration=")
                            && !f.starts_with("n_packets=")
                            && !f.starts_with("n_bytes=")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
                    .trim()
                    .to_string()
            })
            .collect();
        lines.sort();
        lines
    }
}

const E: u32 = 1;
const P: u32 = 5;

/// LAB-gateway.md, variant B, for node IP 172.18.0.2 and one NodePort (tcp 30080).
fn variant_b() -> Vec<Flow> {
    let node_ip = Ipv4Addr::new(172, 18, 0, 2);
    let commit = |mark| {
        Action::Ct(Ct {
            commit: true,
            zone: 64000,
            table: None,
            actions: vec![Action::SetField(SetField::CtMark(mark))],
        })
    };
    let out = Action::Output;
    let est = ct_state::TRK | ct_state::EST;
    let rel = ct_state::TRK | ct_state::REL;
    vec![
        Flow::new(
            0,
            100,
            COOKIE,
            Match::new().in_port(P).ipv4(),
            vec![commit(1), out(E)],
        ),
        Flow::new(
            0,
            100,
            COOKIE,
            Match::new().in_port(port::LOCAL).ipv4(),
            vec![commit(2), out(E)],
        ),
        Flow::new(
            0,
            110,
            COOKIE,
            Match::new()
                .in_port(E)
                .ipv4()
                .ipv4_dst(node_ip, 32)
                .tp_dst(L4Proto::Tcp, Masked::exact(30080)),
            vec![out(P)],
        ),
        Flow::new(
            0,
            50,
            COOKIE,
            Match::new().in_port(E).ipv4(),
            vec![Action::Ct(Ct {
                commit: false,
                zone: 64000,
                table: Some(1),
                actions: vec![],
            })],
        ),
        Flow::new(
            0,
            10,
            COOKIE,
            Match::new().in_port(E).arp(),
            vec![out(port::LOCAL), out(P)],
        ),
        Flow::new(
            0,
            10,
            COOKIE,
            Match::new().in_port(port::LOCAL).arp(),
            vec![out(E)],
        ),
        Flow::new(0, 10, COOKIE, Match::new().in_port(P).arp(), vec![out(E)]),
        Flow::new(0, 0, COOKIE, Match::new(), vec![out(port::NORMAL)]),
        Flow::new(
            1,
            100,
            COOKIE,
            Match::new().ipv4().ct_state(est, est).ct_mark(1),
            vec![out(P)],
        ),
        Flow::new(
            1,
            100,
            COOKIE,
            Match::new().ipv4().ct_state(rel, rel).ct_mark(1),
            vec![out(P)],
        ),
        Flow::new(1, 0, COOKIE, Match::new(), vec![out(port::LOCAL)]),
    ]
}

/// What ovs-ofctl prints for [`variant_b`] (sorted, counters removed).
const EXPECTED: &[&str] = &[
    "cookie=0x6f766e6b00000001, table=0, priority=0 actions=NORMAL",
    "cookie=0x6f766e6b00000001, table=0, priority=10,arp,in_port=1 actions=LOCAL,output:5",
    "cookie=0x6f766e6b00000001, table=0, priority=10,arp,in_port=5 actions=output:1",
    "cookie=0x6f766e6b00000001, table=0, priority=10,arp,in_port=LOCAL actions=output:1",
    "cookie=0x6f766e6b00000001, table=0, priority=100,ip,in_port=5 actions=ct(commit,zone=64000,exec(set_field:0x1->ct_mark)),output:1",
    "cookie=0x6f766e6b00000001, table=0, priority=100,ip,in_port=LOCAL actions=ct(commit,zone=64000,exec(set_field:0x2->ct_mark)),output:1",
    "cookie=0x6f766e6b00000001, table=0, priority=110,tcp,in_port=1,nw_dst=172.18.0.2,tp_dst=30080 actions=output:5",
    "cookie=0x6f766e6b00000001, table=0, priority=50,ip,in_port=1 actions=ct(table=1,zone=64000)",
    "cookie=0x6f766e6b00000001, table=1, priority=0 actions=LOCAL",
    "cookie=0x6f766e6b00000001, table=1, priority=100,ct_state=+est+trk,ct_mark=0x1,ip actions=output:5",
    "cookie=0x6f766e6b00000001, table=1, priority=100,ct_state=+rel+trk,ct_mark=0x1,ip actions=output:5",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variant_b_flows_through_our_client() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let mut ovs = Ovs::start();
    let c = Client::connect_bridge(ovs.dir.path(), "br0")
        .await
        .expect("connect");
    c.echo().await.expect("echo");

    let flows = variant_b();
    c.add_flows(&flows).await.expect("install variant B");
    assert_eq!(ovs.dump(), EXPECTED, "dump-flows after install");

    // Idempotent: the same flows again replace themselves.
    c.add_flows(&flows).await.expect("reinstall");
    assert_eq!(ovs.dump(), EXPECTED);
    let agg = c
        .aggregate(&AggregateRequest::by_cookie(COOKIE, u64::MAX))
        .await
        .expect("aggregate");
    assert_eq!(agg.flow_count, flows.len() as u32);

    // The switch's errors come back typed: tp_dst without ip_proto lacks its prerequisite.
    let mut bad = Match::new().in_port(E).ipv4();
    bad.tp_dst = Some((L4Proto::Tcp, Masked::exact(80)));
    let err = c
        .add_flows(&[Flow::new(0, 7, COOKIE, bad, vec![Action::Output(P)])])
        .await
        .expect_err("a match without its prerequisite");
    match &err {
        Error::Switch(e) => assert_eq!(e.kind, ErrorType::BadMatch, "{err}"),
        e => panic!("expected a switch error, got {e}"),
    }
    // The connection is still usable after an error.
    c.barrier().await.expect("barrier after error");

    // Strict delete removes exactly one flow; delete by cookie removes the rest.
    let nodeport = flows[2].clone();
    c.delete_flows_strict(&[nodeport])
        .await
        .expect("strict delete");
    let left = ovs.dump();
    assert_eq!(left.len(), EXPECTED.len() - 1);
    assert!(!left.iter().any(|l| l.contains("30080")), "{left:#?}");
    c.add_flows(&[Flow::new(0, 1, 0x42, Match::new().in_port(P), vec![])])
        .await
        .expect("a flow of someone else");
    c.delete_by_cookie(COOKIE, u64::MAX)
        .await
        .expect("delete by cookie");
    assert_eq!(
        ovs.dump(),
        vec!["cookie=0x42, table=0, priority=1,in_port=5 actions=drop".to_string()]
    );

    // A vswitchd restart closes the connection; a new one works.
    ovs.vswitchd.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.is_connected() {
        assert!(
            Instant::now() < deadline,
            "client did not notice the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(c.barrier().await, Err(Error::Closed)));
    ovs.vswitchd.start().expect("restart vswitchd");
    let mgmt = ovnk_openflow::mgmt_socket(ovs.dir.path(), "br0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let c2 = loop {
        match Client::connect(&mgmt).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reconnect: {e}"),
        }
    };
    c2.add_flows(&flows).await.expect("install after restart");
    assert_eq!(ovs.dump(), EXPECTED);
}
