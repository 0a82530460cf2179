//! Shared by the lab end-to-end suites: the prerequisites check (skip on a laptop, panic
//! under `CI=true`) and [`Lab`], one `ovnk lab` brought up in a temporary root and taken
//! down on drop.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const OVNK: &str = env!("CARGO_BIN_EXE_ovnk");

pub fn prerequisites() -> bool {
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

pub struct Lab {
    pub name: String,
    pub root: tempfile::TempDir,
}

impl Lab {
    pub fn ovnk(&self, args: &[&str]) -> Output {
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
    pub fn dir(&self) -> PathBuf {
        self.root.path().join(&self.name)
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("api").join("kubeconfig")
    }
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", self.root.path())
            .output()
            .expect("run kubectl")
    }
    pub fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> Output {
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
    pub fn ping_from(&self, ns: &str, pod: &str, ip: &str) -> bool {
        (0..3).any(|_| {
            self.exec(ns, pod, &["ping", "-c", "1", "-W", "1", ip])
                .status
                .success()
        })
    }
    pub fn pod_ip(&self, ns: &str, pod: &str) -> String {
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
    pub fn daemon_pid_opt(&self, daemon: &str) -> Option<i32> {
        let text =
            std::fs::read_to_string(self.dir().join("pids").join(format!("{daemon}.pid"))).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
    pub fn daemon_pid(&self, daemon: &str) -> i32 {
        self.daemon_pid_opt(daemon)
            .unwrap_or_else(|| panic!("no pidfile for {daemon}"))
    }
    pub fn namespaces(&self) -> Vec<String> {
        ovnk_netns::list_named(&format!("ovnk-{}-", self.name))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Even after a failed assertion: nothing of the lab may outlive the test.
        let _ = self.ovnk(&["down"]);
    }
}
