//! Local fixture: real ovsdb-server processes in temp dirs on unix sockets, killed by pid.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovsdb::{Client, ClientConfig, Remote};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// True when real-server tests can run. Without the tools: skip, unless CI=true (panic).
pub fn have_tools(test: &str) -> bool {
    let ok = which("ovsdb-server") && which("ovsdb-tool") && Path::new(NB_SCHEMA).exists();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: CI=true but ovsdb-server/ovsdb-tool or {NB_SCHEMA} is missing");
        }
        eprintln!("SKIP {test}: ovsdb-server/ovsdb-tool or {NB_SCHEMA} not available");
    }
    ok
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_path(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} did not appear",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One ovsdb-server serving one database file.
pub struct Server {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
    extra_remotes: Vec<String>,
    extra_args: Vec<String>,
}

impl Server {
    /// A standalone database created from `schema`.
    pub fn standalone(dir: &Path, schema: &str) -> Server {
        let db = dir.join("db.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(schema));
        Server::with_db(dir, db, "s", vec![], vec![])
    }

    pub fn with_db(
        dir: &Path,
        db: PathBuf,
        name: &str,
        extra_remotes: Vec<String>,
        extra_args: Vec<String>,
    ) -> Server {
        let mut s = Server {
            dir: dir.to_owned(),
            sock: dir.join(format!("{name}.sock")),
            db,
            child: None,
            extra_remotes,
            extra_args,
        };
        s.start();
        s
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let _ = std::fs::remove_file(&self.sock);
        let stem = self.sock.with_extension("");
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(format!("--remote=punix:{}", self.sock.display()))
            .arg(format!("--unixctl={}.ctl", stem.display()))
            .arg(format!("--log-file={}.log", stem.display()))
            .arg(format!("--pidfile={}.pid", stem.display()))
            .arg("-vconsole:off");
        for r in &self.extra_remotes {
            cmd.arg(format!("--remote={r}"));
        }
        cmd.args(&self.extra_args);
        cmd.arg(&self.db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("spawn ovsdb-server"));
        wait_for_path(&self.sock);
    }

    /// Kills the server (SIGKILL) by its pid.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn remote(&self) -> Remote {
        Remote::Unix(self.sock.clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sock.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn nb_client(remote: Remote) -> Client {
    let mut cfg = ClientConfig::new(vec![remote], "OVN_Northbound");
    cfg.connect_timeout = Duration::from_secs(10);
    Client::connect(cfg).await.expect("connect")
}

/// Polls `f` until it returns true (bounded: fails after `secs`).
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An independent witness: ovsdb-client/ovn-nbctl style query of a table as JSON via
/// `ovsdb-client dump` is awkward, so use `ovsdb-client transact` with a select.
pub fn witness_select(sock: &Path, db: &str, table: &str) -> serde_json::Value {
    let q = serde_json::json!([db, {"op": "select", "table": table, "where": []}]);
    let out = Command::new("ovsdb-client")
        .arg("transact")
        .arg(format!("unix:{}", sock.display()))
        .arg(q.to_string())
        .output()
        .expect("ovsdb-client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v[0]["rows"].clone()
}
