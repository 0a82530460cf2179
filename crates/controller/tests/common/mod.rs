//! Shared helpers: an in-memory KubeOps, object builders, ovn-nbctl / ovn-trace witnesses.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ovnk_annotations::{self as ann, GatewayMode, L3Gateway, L3GatewayConfig};
use ovnk_controller::KubeOps;

/// Records annotation writes and events like an API server would keep them.
#[derive(Default)]
pub struct FakeKube {
    pub annotations: Mutex<HashMap<String, BTreeMap<String, String>>>,
    pub events: Mutex<Vec<(String, String, String)>>,
    pub fail_pods: Mutex<bool>,
}

impl FakeKube {
    pub fn annotations_of(&self, key: &str) -> BTreeMap<String, String> {
        self.annotations
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.events.lock().unwrap().clone()
    }
}

impl KubeOps for FakeKube {
    fn annotate_node(
        &self,
        name: &str,
        a: BTreeMap<String, String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.annotations
            .lock()
            .unwrap()
            .entry(format!("node/{name}"))
            .or_default()
            .extend(a);
        async { Ok(()) }.boxed()
    }
    fn annotate_pod(
        &self,
        ns: &str,
        name: &str,
        _uid: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        if *self.fail_pods.lock().unwrap() {
            return async { Err("injected failure".to_string()) }.boxed();
        }
        self.annotations
            .lock()
            .unwrap()
            .entry(format!("pod/{ns}/{name}"))
            .or_default()
            .insert(key.to_string(), value);
        async { Ok(()) }.boxed()
    }
    fn warn(&self, o: ObjectReference, reason: &str, message: String) -> BoxFuture<'static, ()> {
        let who = format!(
            "{}/{}",
            o.kind.unwrap_or_default(),
            o.name.unwrap_or_default()
        );
        self.events
            .lock()
            .unwrap()
            .push((who, reason.to_string(), message));
        async {}.boxed()
    }
}

/// Which address families a test cluster uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stack {
    V4,
    V6,
    Dual,
}

impl Stack {
    pub fn cluster_subnets(self) -> Vec<&'static str> {
        match self {
            Stack::V4 => vec!["10.244.0.0/16/24"],
            Stack::V6 => vec!["fd00:10:244::/48/64"],
            Stack::Dual => vec!["10.244.0.0/16/24", "fd00:10:244::/48/64"],
        }
    }
}

/// A node as the node agent would have annotated it (chassis id, gateway config), plus
/// whatever the controller wrote before (`extra`).
pub fn node(name: &str, n: u8, stack: Stack, extra: BTreeMap<String, String>) -> Node {
    let mut ips = Vec::new();
    let mut hops = Vec::new();
    if stack != Stack::V6 {
        ips.push(format!("172.30.33.{}/24", 10 + n).parse().unwrap());
        hops.push("172.30.33.100".parse().unwrap());
    }
    if stack != Stack::V4 {
        ips.push(format!("fd00:172:30:33::{}/64", 10 + n).parse().unwrap());
        hops.push("fd00:172:30:33::100".parse().unwrap());
    }
    let gw = L3Gateway {
        mode: GatewayMode::Shared,
        bridge_id: Some("breth0".into()),
        interface_id: Some(format!("breth0_{name}")),
        mac_address: format!("0a:00:00:00:00:{n:02x}").parse().unwrap(),
        ip_addresses: ips,
        next_hops: hops,
        node_port_enable: true,
        vlan_id: None,
        egress_gw: None,
    };
    let mut m = BTreeMap::new();
    m.insert("default".to_string(), L3GatewayConfig::Enabled(gw));
    let mut a = extra;
    a.insert(ann::NODE_CHASSIS_ID.into(), format!("chassis-{name}"));
    a.insert(
        ann::L3_GATEWAY_CONFIG.into(),
        ann::render_l3_gateway_config(&m),
    );
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-node-{name}")),
            annotations: Some(a),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn pod(ns: &str, name: &str, node: &str, extra: BTreeMap<String, String>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-{ns}-{name}")),
            annotations: Some(extra),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

pub fn nbctl(remote: &str, args: &[&str]) -> String {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={remote}"))
        .arg("--timeout=20")
        .args(args)
        .output()
        .expect("run ovn-nbctl");
    assert!(
        out.status.success(),
        "ovn-nbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn sbctl(remote: &str, args: &[&str]) -> String {
    let out = Command::new("ovn-sbctl")
        .arg(format!("--db={remote}"))
        .arg("--timeout=20")
        .args(args)
        .output()
        .expect("run ovn-sbctl");
    assert!(
        out.status.success(),
        "ovn-sbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn trace(sb: &str, datapath: &str, flow: &str) -> String {
    trace_with(sb, datapath, flow, &[])
}

/// ovn-trace with extra options (`--ct=new`, …).
pub fn trace_with(sb: &str, datapath: &str, flow: &str, extra: &[&str]) -> String {
    let out = Command::new("ovn-trace")
        .arg(format!("--db={sb}"))
        .args(extra)
        .arg(datapath)
        .arg(flow)
        .output()
        .expect("run ovn-trace");
    assert!(
        out.status.success(),
        "ovn-trace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What ovn-trace says of the logical flows it could not parse (an ACL match OVN refuses
/// is passed through by northd and dropped by ovn-controller: only a parser sees it).
pub fn lflow_parse_errors(sb: &str, datapath: &str) -> Vec<String> {
    let out = Command::new("ovn-trace")
        .arg(format!("--db={sb}"))
        .arg(datapath)
        .arg("inport == \"none\"")
        .output()
        .expect("run ovn-trace");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("parsing") || l.contains("parse error"))
        .map(str::to_string)
        .collect()
}

/// What the tests that build NB and trace it with northd's output need.
pub const NEEDS_OVN_TRACE: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovn-northd",
    "ovn-nbctl",
    "ovn-trace",
    "ovn-sbctl",
    testkit::OVN_NB_SCHEMA,
    testkit::OVN_SB_SCHEMA,
];

/// Real OVN central (NB, SB, northd) with the chassis ovn-controller would register for
/// nodes n1 and n2 (name = system-id, hostname = node).
pub fn central_with_chassis() -> testkit::OvnCentral {
    let central = testkit::OvnCentral::start().expect("OVN central");
    let sb = central.sb_remote();
    for (n, ip) in [("n1", "172.30.33.11"), ("n2", "172.30.33.12")] {
        sbctl(&sb, &["chassis-add", &format!("chassis-{n}"), "geneve", ip]);
        sbctl(
            &sb,
            &[
                "set",
                "Chassis",
                &format!("chassis-{n}"),
                &format!("hostname={n}"),
            ],
        );
    }
    central
}

/// The pod's default-network addresses and MAC from the annotation the controller wrote.
pub fn pod_net(k: &FakeKube, ns: &str, name: &str) -> ann::PodNetwork {
    let a = k.annotations_of(&format!("pod/{ns}/{name}"));
    let text = a.get(ann::POD_NETWORKS).expect("pod-networks written");
    ann::parse_pod_networks(text)
        .unwrap()
        .default_network()
        .cloned()
        .unwrap()
}

pub type Shared = Arc<FakeKube>;
