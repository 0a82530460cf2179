//! The real netlink implementation, as root, in network namespaces this test makes.
//! `ip`/`ethtool`/`ping` are used only as independent witnesses.

use std::net::IpAddr;
use std::process::Command;

use ovnk_netns::NetNs;
use ovnk_node::podnet::{HostLinkSpec, NetOps, Netlink, PodInterfaceSpec, Route};

/// Skips without root or `ip`, except under CI=true where that is a failure.
fn prerequisites() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && ip {
        return true;
    }
    let why = format!("needs root ({root}) and iproute2 ({ip})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

/// A namespace created for this test and deleted on drop, even after a failure.
struct TestNs(String);
impl TestNs {
    fn new(tag: &str) -> Self {
        let name = format!("ovnkt-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        TestNs(name)
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }
}
impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn spec(pod: &TestNs, host_if: &str, addr: &str) -> PodInterfaceSpec {
    PodInterfaceSpec {
        netns: pod.path(),
        ifname: "eth0".into(),
        host_ifname: host_if.into(),
        mac: [0x0a, 0x58, 0x0a, 0x63, 0x00, 0x05],
        mtu: 1400,
        addresses: vec![addr.parse().unwrap()],
        routes: vec![Route {
            dest: "10.98.0.0/16".parse().unwrap(),
            via: Some("10.99.0.1".parse::<IpAddr>().unwrap()),
        }],
        tx_checksum_off: true,
    }
}

#[tokio::test]
async fn veth_pod_interface_lifecycle() {
    if !prerequisites() {
        return;
    }
    let node = TestNs::new("node");
    let pod = TestNs::new("pod");
    let net = Netlink::in_netns(NetNs::open(node.path()).unwrap()).unwrap();
    let s = spec(&pod, "vethtest0", "10.99.0.5/24");

    let made = net.setup_pod(&s).await.expect("setup_pod");
    assert_eq!(made.pod_mac, s.mac);

    // Witness: the pod end is eth0 with MAC, MTU, address and route; the host end is in the node.
    let link = pod.ip(&["-o", "link", "show", "eth0"]);
    assert!(link.contains("0a:58:0a:63:00:05"), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains("UP"), "{link}");
    assert!(pod
        .ip(&["-o", "addr", "show", "eth0"])
        .contains("10.99.0.5/24"));
    assert!(pod
        .ip(&["route", "show"])
        .contains("10.98.0.0/16 via 10.99.0.1 dev eth0"));
    let host = node.ip(&["-o", "link", "show", "vethtest0"]);
    assert!(
        host.contains("NOARP") && host.contains("mtu 1400"),
        "{host}"
    );
    for (ns, ifname) in [(&pod, "eth0"), (&node, "vethtest0")] {
        let k = ns.exec(&["ethtool", "-k", ifname]);
        let text = String::from_utf8_lossy(&k.stdout);
        assert!(
            text.contains("tx-checksumming: off"),
            "tx checksum still on for {ifname}: {text}"
        );
    }

    // CHECK passes on what was made and fails on a drifted spec.
    net.check_pod(&s).await.expect("check_pod");
    let mut drift = s.clone();
    drift.addresses = vec!["10.99.0.6/24".parse().unwrap()];
    assert!(net.check_pod(&drift).await.is_err());

    // Real packets: give the host end an address and ping it from the pod.
    net.configure_host_link(&HostLinkSpec {
        name: "vethtest0".into(),
        mac: None,
        mtu: 1400,
        addresses: vec!["10.99.0.1/24".parse().unwrap()],
        routes: vec![],
    })
    .await
    .expect("configure_host_link");
    // The host end has ARP off by design; give the pod a static neighbour.
    let host_mac = ovnk_node::podnet::format_mac(&made.host_mac);
    pod.ip(&[
        "neigh",
        "replace",
        "10.99.0.1",
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
    ]);
    node.ip(&[
        "neigh",
        "replace",
        "10.99.0.5",
        "lladdr",
        "0a:58:0a:63:00:05",
        "dev",
        "vethtest0",
    ]);
    let ping = pod.exec(&["ping", "-c", "1", "-W", "2", "10.99.0.1"]);
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // A second ADD for the same container replaces the pair instead of failing.
    net.setup_pod(&s).await.expect("second setup_pod");
    assert!(pod
        .ip(&["-o", "addr", "show", "eth0"])
        .contains("10.99.0.5/24"));

    // DEL removes both ends; a second DEL succeeds.
    net.teardown_pod("vethtest0").await.expect("teardown");
    assert!(!net.link_exists("vethtest0").await.unwrap());
    assert!(!pod.ip(&["-o", "link"]).contains("eth0"));
    net.teardown_pod("vethtest0").await.expect("teardown twice");
}

#[tokio::test]
async fn setup_in_missing_netns_fails_cleanly() {
    if !prerequisites() {
        return;
    }
    let node = TestNs::new("node2");
    let net = Netlink::in_netns(NetNs::open(node.path()).unwrap()).unwrap();
    let mut s = spec(&TestNs::new("gone"), "vethgone0", "10.99.0.7/24");
    s.netns = "/var/run/netns/ovnkt-does-not-exist".into();
    let err = net.setup_pod(&s).await.unwrap_err();
    assert!(err.to_string().contains("ovnkt-does-not-exist"), "{err}");
    assert!(!net.link_exists("vethgone0").await.unwrap());

    // A regular file is not a namespace.
    let f = tempfile::NamedTempFile::new().unwrap();
    assert!(NetNs::open(f.path()).is_err());
}
