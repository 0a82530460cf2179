//! CNI ADD latency, exec to result, for a burst of pods on one node: `ovn-k8s-cni-overlay`
//! against `ovnk node`'s CNI server (veth + OVS port + waiting for `ovn-installed` from a
//! real ovn-controller), compared in the same run with the reference `bridge` plugin
//! (containernetworking-plugins, host-local IPAM) doing ADD for as many namespaces.
//!
//! Needs root, OVS/OVN and /usr/lib/cni/{bridge,host-local}. Everything runs in
//! namespaces named `ovnkb-<pid>-*`, deleted at the end.
//!
//! `cargo run --release -p cni-bench [-- PODS]` (default 100).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use benchkit::percentile;
use ovnk_node::cni::{CniAgent, CniSettings};
use ovnk_node::ovs::Ovs;
use ovnk_node::pods::{PodCache, PodEntry};
use ovsdb::{Atom, Client, ClientConfig, Row, Transaction, Value};
use tokio::io::AsyncWriteExt;

const BRIDGE: &str = "/usr/lib/cni/bridge";
/// ADDs issued one at a time after the burst, to show latency without queueing.
const SEQ: usize = 20;

struct Cleanup {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        for n in &self.namespaces {
            let _ = ovnk_netns::delete_named(n);
        }
    }
}

impl Cleanup {
    fn netns(&mut self, tag: &str) -> Result<String> {
        let name = format!("ovnkb-{}-{tag}", std::process::id());
        let _ = ovnk_netns::delete_named(&name);
        ovnk_netns::create_named(&name)?;
        self.namespaces.push(name.clone());
        Ok(name)
    }
}

/// Runs `bin` with `env` and `stdin`, optionally inside `netns`; returns the latency.
async fn exec(
    bin: &Path,
    env: Vec<(String, String)>,
    stdin: String,
    netns: Option<&str>,
) -> Result<Duration> {
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        ovnk_netns::NetNs::named(ns)?.command_in(&mut cmd)?;
    }
    let mut cmd = tokio::process::Command::from(cmd);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let dt = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(dt)
}

async fn burst(
    jobs: Vec<tokio::task::JoinHandle<Result<Duration>>>,
) -> Result<(Vec<Duration>, Duration)> {
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for j in jobs {
        lat.push(j.await??);
    }
    let wall = t0.elapsed();
    lat.sort();
    Ok((lat, wall))
}

fn shim_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("exe dir")?.join("ovn-k8s-cni-overlay");
    if !p.exists() {
        bail!(
            "{} missing: run `cargo build --release -p ovnk-cni` first",
            p.display()
        );
    }
    Ok(p)
}

async fn nb_topology(nb: &str, pods: usize) -> Result<()> {
    let mut cfg = ClientConfig::new(vec![nb.parse()?], "OVN_Northbound");
    cfg.monitor_tables = Some(vec![]);
    let c = Client::connect(cfg).await?;
    let s = |x: &str| Value::from(x);
    let row = |pairs: Vec<(&str, Value)>| -> Row {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let mut t = Transaction::new("OVN_Northbound");
    t.insert_named(
        "Logical_Router_Port",
        "lrp",
        row(vec![
            ("name", s("rtos-node1")),
            ("mac", s("0a:58:0a:f4:00:01")),
            ("networks", Value::set(["10.244.0.1/16"])),
        ]),
    );
    t.insert(
        "Logical_Router",
        row(vec![
            ("name", s("ovn_cluster_router")),
            ("ports", Value::set([Atom::NamedUuid("lrp".into())])),
        ]),
    );
    let mut lsps = Vec::new();
    for i in 0..pods {
        let ip = pod_ip(i);
        let mac = ovnk_annotations::MacAddr::from_ip(ip.into());
        let addr = format!("{mac} {ip}");
        let n = format!("l{i}");
        t.insert_named(
            "Logical_Switch_Port",
            n.as_str(),
            row(vec![
                ("name", s(&format!("bench_p{i}"))),
                ("addresses", Value::set([addr.as_str()])),
            ]),
        );
        lsps.push(Atom::NamedUuid(n));
    }
    t.insert(
        "Logical_Switch",
        row(vec![("name", s("node1")), ("ports", Value::Set(lsps))]),
    );
    c.transact(&t).await?;
    Ok(())
}

fn pod_ip(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250 + 3) as u8)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let pods: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100);
    if !testkit::is_root() {
        bail!("needs root (network namespaces, OVS)");
    }
    for b in [BRIDGE, "/usr/lib/cni/host-local"] {
        if !Path::new(b).exists() {
            bail!("{b} missing (apt-get install containernetworking-plugins)");
        }
    }
    let shim = shim_path()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut clean = Cleanup {
        namespaces: vec![],
        children: vec![],
    };

    // --- ovnk: central, one node namespace with ovsdb-server, ovs-vswitchd, ovn-controller.
    let central = testkit::OvnCentral::start()?;
    let node_ns = clean.netns("node")?;
    let db = d.join("db.sock");
    let st = Command::new("ovsdb-tool")
        .arg("create")
        .arg(d.join("conf.db"))
        .arg(testkit::VSWITCH_SCHEMA)
        .status()?;
    if !st.success() {
        bail!("ovsdb-tool create failed");
    }
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
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let ns = ovnk_netns::NetNs::named(&node_ns)?;
    let mut c = Command::new(testkit::find_binary("ovsdb-server").context("ovsdb-server")?);
    c.arg(d.join("conf.db"))
        .arg(format!("--remote=punix:{}", db.display()))
        .arg("--no-chdir")
        .arg(format!("--unixctl={}", d.join("db.ctl").display()));
    env(&mut c);
    clean.children.push(c.spawn()?);
    let mut c = Command::new(testkit::find_binary("ovs-vswitchd").context("ovs-vswitchd")?);
    c.arg(format!("unix:{}", db.display()))
        .arg("--no-chdir")
        .arg(format!("--unixctl={}", d.join("vs.ctl").display()));
    env(&mut c);
    ns.command_in(&mut c)?;
    clean.children.push(c.spawn()?);

    let mut cfg = ovnk_node::NodeConfig::new(
        "node1",
        &db,
        central.sb_remote(),
        "172.30.99.11/24".parse()?,
    );
    cfg.netns = Some(PathBuf::from(format!("/run/netns/{node_ns}")));
    let ovs = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Ovs::connect(&db).await {
                Ok(o) => break o,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    ovs.set_system_external_ids(&ovnk_node::register::ovs_external_ids(&cfg, "node1"))
        .await?;
    ovs.ensure_bridge("br-int", Some("netdev"), true).await?;
    // ovn-controller 23.03 exits when system-id is missing: start it after registration.
    let mut c = Command::new(testkit::find_binary("ovn-controller").context("ovn-controller")?);
    c.arg(format!("unix:{}", db.display())).arg("--no-chdir");
    env(&mut c);
    ns.command_in(&mut c)?;
    clean.children.push(c.spawn()?);
    let total = pods + SEQ;
    nb_topology(&central.nb_remote(), total).await?;

    let cache = Arc::new(PodCache::new());
    let mut pod_ns = Vec::new();
    for i in 0..total {
        let ip = pod_ip(i);
        let net = ovnk_annotations::PodNetwork {
            ip_addresses: vec![format!("{ip}/16").parse()?],
            mac_address: ovnk_annotations::MacAddr::from_ip(ip.into()),
            gateway_ips: vec!["10.244.0.1".parse()?],
            routes: vec![],
            tunnel_id: 0,
            role: None,
        };
        let text = ovnk_annotations::render_pod_networks(
            &ovnk_annotations::PodNetworks::with_default(net),
        );
        cache.upsert(
            "bench",
            &format!("p{i}"),
            PodEntry {
                uid: format!("uid-{i}"),
                pod_networks: Some(text),
            },
        );
        pod_ns.push(clean.netns(&format!("o{i}"))?);
    }
    cache.mark_synced();
    let net = Arc::new(ovnk_node::podnet::Netlink::in_netns(ns)?);
    let (_ready_tx, ready) = tokio::sync::watch::channel(true);
    let agent = Arc::new(CniAgent::new(
        net,
        ovs,
        cache,
        CniSettings {
            mtu: 1400,
            tx_checksum_off: true,
            pod_annotation_timeout: Duration::from_secs(30),
            ovn_installed_timeout: Duration::from_secs(60),
            node_netns: cfg.netns.clone(),
        },
        ready,
    ));
    let sock = d.join("cni/server.sock");
    let server = tokio::spawn(ovnk_cni::serve(ovnk_cni::bind_root_socket(&sock)?, agent));
    // Let ovn-controller connect and claim the chassis before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let conf = serde_json::json!({"cniVersion":"1.0.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay",
        "serverSocket": sock.display().to_string()}).to_string();
    let ovnk_job = |i: usize| {
        let env = vec![
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            (
                "CNI_CONTAINERID".to_string(),
                format!("ovnk{i:04}{:024}", 0),
            ),
            ("CNI_NETNS".to_string(), format!("/run/netns/{}", pod_ns[i])),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
            (
                "CNI_ARGS".to_string(),
                format!("K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{i};K8S_POD_UID=uid-{i}"),
            ),
            ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
        ];
        let (shim, conf) = (shim.clone(), conf.clone());
        async move { exec(&shim, env, conf, None).await }
    };
    let jobs = (0..pods).map(|i| tokio::spawn(ovnk_job(i))).collect();
    let (ovnk, ovnk_wall) = burst(jobs).await?;
    let mut ovnk_seq = Vec::new();
    for i in pods..total {
        ovnk_seq.push(ovnk_job(i).await?);
    }
    ovnk_seq.sort();
    server.abort();

    // --- reference: the bridge plugin in its own "host" namespace, same burst.
    let host_ns = clean.netns("brhost")?;
    let mut br_ns = Vec::new();
    for i in 0..total {
        br_ns.push(clean.netns(&format!("b{i}"))?);
    }
    let bconf = serde_json::json!({"cniVersion":"1.0.0","name":"benchnet","type":"bridge","bridge":"cnibr0",
        "isGateway":true,"ipam":{"type":"host-local","subnet":"10.250.0.0/16",
        "dataDir": d.join("host-local").display().to_string()}}).to_string();
    let bridge_job = |i: usize| {
        let env = vec![
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("CNI_CONTAINERID".to_string(), format!("br{i:04}")),
            ("CNI_NETNS".to_string(), format!("/run/netns/{}", br_ns[i])),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
            ("CNI_PATH".to_string(), "/usr/lib/cni".to_string()),
        ];
        let (conf, host) = (bconf.clone(), host_ns.clone());
        async move { exec(Path::new(BRIDGE), env, conf, Some(&host)).await }
    };
    let jobs = (0..pods).map(|i| tokio::spawn(bridge_job(i))).collect();
    let (bridge, bridge_wall) = burst(jobs).await?;
    let mut bridge_seq = Vec::new();
    for i in pods..total {
        bridge_seq.push(bridge_job(i).await?);
    }
    bridge_seq.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (o50, o99) = (percentile(&ovnk, 0.5), percentile(&ovnk, 0.99));
    let (b50, b99) = (percentile(&bridge, 0.5), percentile(&bridge, 0.99));
    println!("CNI ADD, burst of {pods} pods on one node, exec → result");
    println!("  ovnk (veth + OVS port + ovn-installed): p50 {:7.1} ms  p99 {:7.1} ms  burst wall {:7.1} ms", ms(o50), ms(o99), ms(ovnk_wall));
    println!("  bridge + host-local (reference):        p50 {:7.1} ms  p99 {:7.1} ms  burst wall {:7.1} ms", ms(b50), ms(b99), ms(bridge_wall));
    println!(
        "  ratio p50 ovnk/bridge: {:.2}x (target ≤ 6x)   p99 ovnk: {:.1} ms (target ≤ 250 ms)",
        ms(o50) / ms(b50).max(0.001),
        ms(o99)
    );
    let (s50, s99) = (percentile(&ovnk_seq, 0.5), percentile(&ovnk_seq, 0.99));
    let (t50, t99) = (percentile(&bridge_seq, 0.5), percentile(&bridge_seq, 0.99));
    println!("CNI ADD, {SEQ} more pods one at a time (no queueing), exec → result");
    println!("  ovnk:   p50 {:7.1} ms  p99 {:7.1} ms", ms(s50), ms(s99));
    println!("  bridge: p50 {:7.1} ms  p99 {:7.1} ms", ms(t50), ms(t99));
    println!(
        "  ratio p50 ovnk/bridge: {:.2}x",
        ms(s50) / ms(t50).max(0.001)
    );
    drop(central);
    Ok(())
}
