//! The lab responder and probe: TCP, UDP and HTTP on 127.0.0.1 and ::1, and inside a
//! network namespace created for the test (root).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ovnk_lab::responder::{probe, ProbeError, ProbeProto, Responder, ResponderConfig};

const T: Duration = Duration::from_secs(3);

fn cfg(name: &str, tcp: u16, udp: u16, bind: Option<IpAddr>) -> ResponderConfig {
    ResponderConfig {
        name: name.into(),
        tcp: vec![tcp],
        udp: vec![udp],
        bind,
    }
}

/// Binds on loopback port 0 and returns (tcp port, udp port) plus the serving task.
async fn start(name: &str, bind: IpAddr) -> (u16, u16, tokio::task::JoinHandle<()>) {
    let r = Responder::bind(&cfg(name, 0, 0, Some(bind)))
        .await
        .expect("bind");
    let (tcp, udp) = r.local_addrs();
    let task = tokio::spawn(r.run());
    (tcp[0].port(), udp[0].port(), task)
}

#[tokio::test]
async fn answers_tcp_udp_and_http_on_loopback() {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let (tcp, udp, task) = start("pod-a", lo).await;
    assert_eq!(
        probe(ProbeProto::Tcp, lo, tcp, None, T).await.unwrap(),
        "pod-a"
    );
    assert_eq!(
        probe(ProbeProto::Http, lo, tcp, None, T).await.unwrap(),
        "pod-a"
    );
    assert_eq!(
        probe(ProbeProto::Udp, lo, udp, None, T).await.unwrap(),
        "pod-a"
    );
    assert_eq!(
        probe(ProbeProto::Udp, lo, udp, Some("echo x y"), T)
            .await
            .unwrap(),
        "x y"
    );

    // clientip: the probe's own source address, over every protocol.
    for (proto, port, payload) in [
        (ProbeProto::Http, tcp, "/clientip"),
        (ProbeProto::Tcp, tcp, "clientip"),
        (ProbeProto::Udp, udp, "clientip"),
    ] {
        let a = probe(proto, lo, port, Some(payload), T).await.unwrap();
        let peer: SocketAddr = a.parse().unwrap_or_else(|e| panic!("{proto}: {a:?}: {e}"));
        assert_eq!(peer.ip(), lo, "{proto}");
        assert_ne!(peer.port(), 0);
    }

    // A silent TCP client (connect and read only) gets the name too.
    let mut s = tokio::net::TcpStream::connect((lo, tcp)).await.unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    assert_eq!(out, "pod-a\n");

    // HTTP errors are errors.
    let e = probe(ProbeProto::Http, lo, tcp, Some("/nope"), T)
        .await
        .unwrap_err();
    assert!(matches!(e, ProbeError::HttpStatus { .. }), "{e}");
    task.abort();
    let _ = task.await;

    // Nobody listening: TCP refused, UDP times out; both name the address.
    let e = probe(ProbeProto::Tcp, lo, tcp, None, T).await.unwrap_err();
    assert!(e.to_string().contains(&format!("127.0.0.1:{tcp}")), "{e}");
    let e = probe(ProbeProto::Udp, lo, udp, None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProbeError::Timeout { .. } | ProbeError::Io { .. }),
        "{e}"
    );
}

#[tokio::test]
async fn answers_on_ipv6_loopback() {
    let lo6: IpAddr = "::1".parse().unwrap();
    let Ok(r) = Responder::bind(&cfg("pod-6", 0, 0, Some(lo6))).await else {
        // No IPv6 in this environment: the IPv4 test covers the logic.
        println!("SKIP: no ::1");
        return;
    };
    let (tcp, udp) = r.local_addrs();
    let task = tokio::spawn(r.run());
    assert_eq!(
        probe(ProbeProto::Http, lo6, tcp[0].port(), None, T)
            .await
            .unwrap(),
        "pod-6"
    );
    let a = probe(ProbeProto::Udp, lo6, udp[0].port(), Some("clientip"), T)
        .await
        .unwrap();
    assert!(a.starts_with("[::1]:"), "{a}");
    task.abort();
}

#[test]
fn empty_config_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(Responder::bind(&ResponderConfig {
            name: "p".into(),
            tcp: vec![],
            udp: vec![],
            bind: None,
        }))
        .err()
        .expect("no ports must fail");
    assert!(e.to_string().contains("responder p"), "{e}");
}

/// Inside a fresh namespace: the dual-stack wildcard bind answers IPv4 and IPv6 loopback.
#[test]
fn serves_inside_a_network_namespace() {
    if !testkit::require_env(&["root"]) {
        return;
    }
    let name = format!("ovnkt-{}-resp", std::process::id());
    let ns = ovnk_netns::create_named(&name).expect("create netns");
    // Deleted on every path, also when an assertion fails.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = ovnk_netns::delete_named(&self.0);
        }
    }
    let _cleanup = Cleanup(name.clone());
    // A new namespace's `lo` is down.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            ns.rtnetlink()
                .unwrap()
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
                .execute()
                .await
        })
        .expect("lo up");
    let out = ns
        .run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r = Responder::bind(&cfg("in-ns", 8080, 8080, None))
                    .await
                    .unwrap();
                let task = tokio::spawn(r.run());
                let v4: IpAddr = "127.0.0.1".parse().unwrap();
                let mut got = vec![
                    probe(ProbeProto::Tcp, v4, 8080, None, T)
                        .await
                        .map_err(|e| e.to_string()),
                    probe(ProbeProto::Udp, v4, 8080, Some("clientip"), T)
                        .await
                        .map_err(|e| e.to_string()),
                ];
                let v6: IpAddr = "::1".parse().unwrap();
                got.push(
                    probe(ProbeProto::Http, v6, 8080, None, T)
                        .await
                        .map_err(|e| e.to_string()),
                );
                task.abort();
                got
            })
        })
        .expect("run in netns");
    assert_eq!(out[0].as_deref(), Ok("in-ns"));
    assert!(
        out[1].as_deref().is_ok_and(|a| a.starts_with("127.0.0.1:")),
        "v4 peers shown as IPv4: {:?}",
        out[1]
    );
    assert_eq!(out[2].as_deref(), Ok("in-ns"));
}

/// A request that arrives in pieces (slow client, small segments) is still read whole.
#[tokio::test]
async fn http_request_split_across_segments() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let (tcp, _, task) = start("pod-s", lo).await;
    let mut s = tokio::net::TcpStream::connect((lo, tcp)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let me = s.local_addr().unwrap();
    for part in [&b"GE"[..], b"T /clientip HTTP/1.1\r\nHost: x\r\n", b"\r\n"] {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out:?}");
    assert!(out.ends_with(&format!("\r\n\r\n{me}")), "{out:?}");
    task.abort();
}
