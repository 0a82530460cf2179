//! As root, in a network namespace of its own: the table our client writes is what
//! `nft list table` shows (an independent witness), real connections are redirected by
//! it, a replacement is exact, and a refusal names the table and the message.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ovnk_nft::{DnatRule, NatTable, NftError, NftSocket, SnatRule, L4};

const PREREQS: &[&str] = &["root", "ip", "nft"];
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 9, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// A named network namespace, deleted on drop (also when the test fails).
struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ovnk_netns::delete_named(&self.0);
    }
}

fn ip(ns: &str, args: &[&str]) {
    let st = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("ip");
    assert!(st.success(), "ip -n {ns} {args:?}");
}

fn nft_list(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "ovnk"])
        .stderr(Stdio::null())
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rule(dport: u16, to_port: u16) -> DnatRule {
    DnatRule {
        daddr: NODE_IP,
        proto: L4::Tcp,
        dport,
        to_addr: BACKEND,
        to_port,
    }
}

/// What a connection from inside `ns` to `addr` reads, or the error.
fn answer(ns: &ovnk_netns::NetNs, addr: SocketAddr) -> String {
    ns.run(|| {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(e) => return format!("error: {e}"),
        };
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .expect("in netns")
}

#[test]
fn the_table_redirects_the_hosts_own_connections_and_is_replaced_exactly() {
    if !testkit::require_env(PREREQS) {
        return;
    }
    let name = format!("ovnknft-{}", std::process::id());
    let _ = ovnk_netns::delete_named(&name);
    let ns = ovnk_netns::create_named(&name).expect("create netns");
    let _guard = Netns(name.clone());
    ip(&name, &["link", "set", "lo", "up"]);
    // (No dummy module on these machines: a veth pair whose peer stays unused.)
    ip(
        &name,
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
    );
    ip(&name, &["link", "set", "d0", "up"]);
    ip(
        &name,
        &["addr", "add", &format!("{NODE_IP}/32"), "dev", "d0"],
    );
    ip(
        &name,
        &["addr", "add", &format!("{BACKEND}/32"), "dev", "d0"],
    );
    let listener: TcpListener = ns
        .run(|| TcpListener::bind((BACKEND, 8080)))
        .expect("in netns")
        .expect("bind");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"backend");
        }
    });

    let mut sock = ns.run(NftSocket::open).expect("in netns").expect("socket");
    let mut table = NatTable {
        name: "ovnk".into(),
        output: vec![rule(30080, 8080)],
        postrouting: vec![SnatRule {
            oif: "d0".into(),
            saddr: NODE_IP,
            to_addr: BACKEND,
        }],
    };
    sock.replace(&table).expect("replace");
    let listed = nft_list(&name);
    assert!(
        listed.contains("type nat hook output priority dstnat")
            || listed.contains("type nat hook output priority -100"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "ip daddr {NODE_IP} tcp dport 30080 dnat to {BACKEND}:8080"
        )),
        "{listed}"
    );
    assert!(
        listed.contains("type nat hook postrouting priority srcnat")
            || listed.contains("type nat hook postrouting priority 100"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "oifname \"d0\" ip saddr {NODE_IP} snat to {BACKEND}"
        )),
        "{listed}"
    );
    let node = |port| SocketAddr::from((NODE_IP, port));
    assert_eq!(answer(&ns, node(30080)), "backend");

    // Replaced, not appended: the old rule is gone, the new one works; twice is the same.
    table.output = vec![rule(30081, 8080), rule(30082, 8080)];
    table.postrouting.clear();
    sock.replace(&table).expect("replace");
    sock.replace(&table).expect("replace again");
    let listed = nft_list(&name);
    assert!(!listed.contains("30080"), "{listed}");
    assert_eq!(listed.matches("dnat to").count(), 2, "{listed}");
    assert_eq!(answer(&ns, node(30082)), "backend");
    assert!(answer(&ns, node(30080)).starts_with("error"));

    // Rules added by hand are gone after the next replace.
    let st = Command::new("ip")
        .args([
            "netns", "exec", &name, "nft", "add", "rule", "ip", "ovnk", "output",
        ])
        .args(["tcp", "dport", "30090", "dnat", "to", "10.99.0.1:8080"])
        .status()
        .expect("nft add rule");
    assert!(st.success());
    sock.replace(&table).expect("replace");
    assert!(!nft_list(&name).contains("30090"));

    // An empty table stays, without rules.
    table.output.clear();
    sock.replace(&table).expect("replace");
    assert_eq!(nft_list(&name).matches("dnat to").count(), 0);

    // A refusal names the table and the message the kernel refused.
    let bad = NatTable {
        name: "x".repeat(300),
        output: vec![],
        postrouting: vec![],
    };
    match sock.replace(&bad) {
        Err(e @ NftError::Refused { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("add table"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The socket still works after a refusal.
    table.output = vec![rule(30080, 8080)];
    sock.replace(&table).expect("replace after a refusal");
    assert_eq!(answer(&ns, node(30080)), "backend");
}
