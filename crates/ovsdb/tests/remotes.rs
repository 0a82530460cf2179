//! tcp: and ssl: remotes against a real ovsdb-server on 127.0.0.1 (certificates made here
//! with rcgen, as OVN daemons take them: --private-key/--certificate/--ca-cert).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ovsdb::{Client, ClientConfig, Remote, Row, TlsFiles, Transaction, Value};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Writes ca.pem, then `<name>-key.pem`/`<name>-cert.pem` signed by that CA.
fn make_pki(dir: &Path, ca_cn: &str, names: &[&str]) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, ca_cn);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for n in names {
        let key = KeyPair::generate().unwrap();
        // OVS certificates carry a daemon/chassis name, not a host name.
        let mut p = CertificateParams::new(vec![format!("{n}.example")]).unwrap();
        p.distinguished_name.push(DnType::CommonName, *n);
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{n}-key.pem")), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(format!("{n}-cert.pem")), cert.pem()).unwrap();
    }
}

fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        private_key: dir.join(format!("{name}-key.pem")),
        certificate: dir.join(format!("{name}-cert.pem")),
        ca_cert: dir.join("ca.pem"),
    }
}

async fn roundtrip(c: &Client) {
    let mut t = Transaction::new("OVN_Northbound");
    let mut r = Row::new();
    r.insert("name".into(), Value::from("over-the-wire"));
    t.insert("Logical_Switch", r);
    c.transact(&t).await.unwrap();
    eventually(10, "row in cache", || c.cache().len("Logical_Switch") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_ssl_remotes() {
    if !have_tools("tcp_and_ssl_remotes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d, "ovnk test CA", &["server", "client"]);
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    make_pki(&other, "some other CA", &["client"]);

    let db = d.join("db.db");
    let out = std::process::Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg(NB_SCHEMA)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (tcp, ssl) = (free_port(), free_port());
    let srv = Server::with_db(
        d,
        db,
        "s",
        vec![
            format!("ptcp:{tcp}:127.0.0.1"),
            format!("pssl:{ssl}:127.0.0.1"),
        ],
        vec![
            format!("--private-key={}", d.join("server-key.pem").display()),
            format!("--certificate={}", d.join("server-cert.pem").display()),
            format!("--ca-cert={}", d.join("ca.pem").display()),
        ],
    );

    // tcp:
    let remote: Remote = format!("tcp:127.0.0.1:{tcp}").parse().unwrap();
    let mut cfg = ClientConfig::new(vec![remote], "OVN_Northbound");
    cfg.connect_timeout = Duration::from_secs(10);
    let c = Client::connect(cfg).await.expect("tcp connect");
    roundtrip(&c).await;
    // tcp: with a host name
    let remote: Remote = format!("tcp:localhost:{tcp}").parse().unwrap();
    let c = Client::connect(ClientConfig::new(vec![remote], "OVN_Northbound"))
        .await
        .expect("tcp:localhost connect");
    assert_eq!(c.cache().len("Logical_Switch"), 1);

    // ssl: with a certificate from the server's CA
    let remote: Remote = format!("ssl:127.0.0.1:{ssl}").parse().unwrap();
    let mut cfg = ClientConfig::new(vec![remote.clone()], "OVN_Northbound");
    cfg.tls = Some(tls_files(d, "client"));
    cfg.connect_timeout = Duration::from_secs(10);
    let c = Client::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("ssl connect: {e}\n{}", srv.log()));
    eventually(10, "row in ssl client's cache", || {
        c.cache().len("Logical_Switch") == 1
    })
    .await;

    // ssl: with a certificate the server's CA did not sign → no session
    let mut cfg = ClientConfig::new(vec![remote.clone()], "OVN_Northbound");
    cfg.tls = Some(tls_files(&other, "client"));
    cfg.connect_timeout = Duration::from_secs(2);
    assert!(matches!(
        Client::connect(cfg).await,
        Err(ovsdb::Error::NotConnected(_))
    ));

    // ssl: without TLS files is a configuration error, and missing files are named
    let cfg = ClientConfig::new(vec![remote.clone()], "OVN_Northbound");
    assert!(matches!(
        Client::connect(cfg).await,
        Err(ovsdb::Error::Config(_))
    ));
    let mut cfg = ClientConfig::new(vec![remote], "OVN_Northbound");
    cfg.tls = Some(tls_files(&d.join("nowhere"), "client"));
    let e = Client::connect(cfg)
        .await
        .err()
        .expect("missing key must fail");
    assert!(e.to_string().contains("nowhere"), "{e}");
}

#[test]
fn remote_strings() {
    assert_eq!(
        "unix:/run/ovn/ovnnb_db.sock".parse::<Remote>().unwrap(),
        Remote::Unix("/run/ovn/ovnnb_db.sock".into())
    );
    assert_eq!(
        "tcp:127.0.0.1:6641".parse::<Remote>().unwrap().to_string(),
        "tcp:127.0.0.1:6641"
    );
    assert_eq!(
        "ssl:[::1]:6641".parse::<Remote>().unwrap().to_string(),
        "ssl:[::1]:6641"
    );
    assert_eq!(
        "ssl:ovnkube-db.ovn-kubernetes.svc:9641"
            .parse::<Remote>()
            .unwrap(),
        Remote::SslHost {
            host: "ovnkube-db.ovn-kubernetes.svc".into(),
            port: 9641
        }
    );
    assert_eq!(
        "tcp:localhost:6641".parse::<Remote>().unwrap().to_string(),
        "tcp:localhost:6641"
    );
    for bad in [
        "",
        "unix:",
        "tcp:1.2.3.4",
        "udp:1.2.3.4:5",
        "tcp:bad_host!:1",
        "tcp:host:99999",
        "tcp:1.2.3:5",
        "ssl::5",
    ] {
        let e = bad.parse::<Remote>().unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
}
