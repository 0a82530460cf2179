//! `ovnk lab` end to end, as root with the real OVN/OVS daemons: bring a 3-node lab up,
//! create pods with the stock kubectl, send real packets (same node, across nodes,
//! node to pod through the management port), take it down and check that nothing is
//! left behind. `ip`, `ping` and `kubectl` are independent witnesses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const OVNK: &str = env!("CARGO_BIN_EXE_ovnk");

fn prerequisites() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let have = |p: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(p).exists())
    };
    let progs = [
        "ovsdb-server",
        "ovs-vswitchd",
        "ovn-northd",
        "ovn-controller",
        "kubectl",
        "ping",
    ];
    let missing: Vec<_> = progs.iter().filter(|p| !have(p)).collect();
    let plugin = Path::new(OVNK).with_file_name("ovn-k8s-cni-overlay");
    if root && missing.is_empty() && plugin.exists() {
        return true;
    }
    let why = format!(
        "needs root ({root}), {missing:?} missing, plugin {} present: {}",
        plugin.display(),
        plugin.exists()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

struct Lab {
    name: String,
    root: tempfile::TempDir,
}

impl Lab {
    fn ovnk(&self, args: &[&str]) -> Output {
        let out = Command::new(OVNK)
            .arg("lab")
            .args(args)
            .args(["--name", &self.name, "--root"])
            .arg(self.root.path())
            .output()
            .expect("run ovnk");
        eprintln!(
            "$ ovnk lab {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn dir(&self) -> PathBuf {
        self.root.path().join(&self.name)
    }
    fn kubeconfig(&self) -> PathBuf {
        self.dir().join("api").join("kubeconfig")
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", self.root.path())
            .output()
            .expect("run kubectl")
    }
    fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> Output {
        let out = Command::new(OVNK)
            .args(["lab", "exec", "--name", &self.name, "--root"])
            .arg(self.root.path())
            .args(["-n", ns, pod, "--"])
            .args(cmd)
            .output()
            .expect("ovnk lab exec");
        out
    }
    /// Pings with a retry for the very first packet across nodes (LAB.md pitfall 6).
    fn ping_from(&self, ns: &str, pod: &str, ip: &str) -> bool {
        (0..3).any(|_| {
            self.exec(ns, pod, &["ping", "-c", "1", "-W", "1", ip])
                .status
                .success()
        })
    }
    fn pod_ip(&self, ns: &str, pod: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl(&[
                "get",
                "pod",
                "-n",
                ns,
                pod,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let mut it = text.split_whitespace();
            if let (Some("Running"), Some(ip)) = (it.next(), it.next()) {
                return ip.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "pod {ns}/{pod} not running: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    /// The pid the lab's supervisor recorded for a daemon.
    fn daemon_pid_opt(&self, daemon: &str) -> Option<i32> {
        let text =
            std::fs::read_to_string(self.dir().join("pids").join(format!("{daemon}.pid"))).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
    fn daemon_pid(&self, daemon: &str) -> i32 {
        self.daemon_pid_opt(daemon)
            .unwrap_or_else(|| panic!("no pidfile for {daemon}"))
    }
    fn namespaces(&self) -> Vec<String> {
        ovnk_netns::list_named(&format!("ovnk-{}-", self.name))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Even after a failed assertion: nothing of the lab may outlive the test.
        let _ = self.ovnk(&["down"]);
    }
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: ovn-worker}
  containers: [{name: c, image: alpine}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: ovn-worker}
  containers: [{name: c, image: alpine}]
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: ovn-worker2}
  containers: [{name: c, image: alpine}]
"#;

#[test]
fn lab_up_pods_traffic_down_leaves_nothing() {
    if !prerequisites() {
        return;
    }
    let lab = Lab {
        name: format!("e2e{}", std::process::id() % 10000),
        root: tempfile::tempdir().unwrap(),
    };
    let up = lab.ovnk(&["up", "--nodes", "3"]);
    assert!(up.status.success(), "ovnk lab up failed");
    assert_eq!(lab.namespaces().len(), 4, "underlay + 3 nodes");

    // The stock kubectl sees the nodes the lab registered.
    let nodes = lab.kubectl(&["get", "nodes", "-o", "name"]);
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    for n in ["ovn-control-plane", "ovn-worker", "ovn-worker2"] {
        assert!(nodes.contains(n), "{nodes}");
    }

    let manifest = lab.root.path().join("pods.yaml");
    std::fs::write(&manifest, PODS).unwrap();
    let applied = lab.kubectl(&["apply", "-f", &manifest.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let (ip_a, ip_b, ip_c) = (
        lab.pod_ip("default", "a"),
        lab.pod_ip("default", "b"),
        lab.pod_ip("default", "c"),
    );
    assert!(ip_a.starts_with("10.244."), "{ip_a}");
    assert_ne!(ip_a, ip_b);

    assert!(
        lab.ping_from("default", "a", &ip_b),
        "same node a -> b ({ip_b})"
    );
    assert!(
        lab.ping_from("default", "a", &ip_c),
        "across nodes a -> c ({ip_c})"
    );
    assert!(
        lab.ping_from("default", "c", &ip_a),
        "across nodes c -> a ({ip_a})"
    );

    // Node to pod through the management port: ping from the node's namespace.
    let node_ns = format!("ovnk-{}-ovn-worker", lab.name);
    let from_node = (0..3).any(|_| {
        Command::new("ip")
            .args([
                "netns", "exec", &node_ns, "ping", "-c", "1", "-W", "1", &ip_a,
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(
        from_node,
        "node ovn-worker -> pod a ({ip_a}) via ovn-k8s-mp0"
    );

    let status = lab.ovnk(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&ip_a) && !text.contains("DOWN"), "{text}");

    // Daemons killed under a continuous ping: the lab restarts them, no packet is lost.
    let pinger = std::thread::spawn({
        let (name, root) = (lab.name.clone(), lab.root.path().to_path_buf());
        let ip_c = ip_c.clone();
        move || {
            Command::new(OVNK)
                .args(["lab", "exec", "--name", &name, "--root"])
                .arg(&root)
                .args([
                    "-n", "default", "a", "--", "ping", "-c", "40", "-i", "0.1", "-W", "1", &ip_c,
                ])
                .output()
                .expect("ping")
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // A pod added while traffic flows elsewhere must not disturb that traffic.
    let extra = lab.root.path().join("pod-d.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: default}\nspec:\n  nodeSelector: {kubernetes.io/hostname: ovn-worker}\n  containers: [{name: c, image: alpine}]\n",
    )
    .unwrap();
    assert!(lab
        .kubectl(&["apply", "-f", &extra.display().to_string()])
        .status
        .success());
    let ip_d = lab.pod_ip("default", "d");
    for daemon in [
        "ovn-worker-ovnk-node",
        "ovnk-controller",
        "ovn-worker2-ovn-controller",
    ] {
        let old = lab.daemon_pid(daemon);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = lab.daemon_pid_opt(daemon);
            if now.is_some_and(|p| p != old) {
                break;
            }
            assert!(Instant::now() < deadline, "{daemon} was not restarted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let ping = pinger.join().unwrap();
    assert!(
        lab.ping_from("default", "d", &ip_a),
        "new pod d ({ip_d}) -> a"
    );
    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        out.contains("40 received") && out.contains(" 0% packet loss"),
        "traffic was disturbed while daemons restarted:\n{out}"
    );

    // down then up: the API objects stay, and the pods come back with the same IPs.
    assert!(lab.ovnk(&["down"]).status.success());
    assert!(lab.namespaces().is_empty());
    assert!(lab.ovnk(&["up", "--nodes", "3"]).status.success());
    assert_eq!(lab.pod_ip("default", "a"), ip_a);
    assert_eq!(lab.pod_ip("default", "c"), ip_c);
    assert!(
        lab.ping_from("default", "a", &ip_c),
        "after down/up a -> c ({ip_c})"
    );

    let down = lab.ovnk(&["down"]);
    assert!(down.status.success());
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    let pids = lab.dir().join("pids");
    assert!(!pids.exists(), "pidfiles left in {}", pids.display());
    // No daemon of ours still holds the lab directory.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let dir = lab.dir().display().to_string();
    let left: Vec<&str> = ps.lines().filter(|l| l.contains(&dir)).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}
