use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::run;
use crate::server::{schema_name, Dir};
use crate::{OvsdbServer, Result, TestkitError};

/// How Raft members talk to each other (clients always use each member's unix socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftTransport {
    /// `unix:<member dir>/raft.sock`
    Unix,
    /// `tcp:127.0.0.1:<free port>`
    Tcp,
}

const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// An N-member clustered database (`ovsdb-tool create-cluster` / `join-cluster`), one
/// ovsdb-server per member, all under one temp dir.
#[derive(Debug)]
pub struct RaftCluster {
    // Members are dropped (stopped) before the directory is removed.
    members: Vec<OvsdbServer>,
    db: String,
    _dir: tempfile::TempDir,
}

impl RaftCluster {
    /// `n` members over unix-socket Raft links; returns once every member has joined.
    pub fn start(schema: impl AsRef<std::path::Path>, n: usize) -> Result<Self> {
        Self::start_with(schema, n, RaftTransport::Unix)
    }

    /// Like [`Self::start`] with the Raft transport chosen.
    pub fn start_with(
        schema: impl AsRef<std::path::Path>,
        n: usize,
        transport: RaftTransport,
    ) -> Result<Self> {
        if n == 0 {
            return Err(TestkitError::Other(
                "a Raft cluster needs at least one member".into(),
            ));
        }
        let schema = schema.as_ref();
        let db = schema_name(schema)?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-raft-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut locals = Vec::new();
        for i in 0..n {
            let sub = dir.path().join(format!("s{i}"));
            std::fs::create_dir(&sub)
                .map_err(|e| TestkitError::io(format!("create {}", sub.display()), e))?;
            locals.push(match transport {
                RaftTransport::Unix => format!("unix:{}", sub.join("raft.sock").display()),
                RaftTransport::Tcp => format!("tcp:127.0.0.1:{}", free_port()?),
            });
        }
        let mut members = Vec::new();
        for i in 0..n {
            let sub = dir.path().join(format!("s{i}"));
            let file = sub.join(format!("{db}.db"));
            let mut args: Vec<OsString> = if i == 0 {
                vec![
                    "create-cluster".into(),
                    file.as_os_str().to_owned(),
                    schema.as_os_str().to_owned(),
                    locals[0].clone().into(),
                ]
            } else {
                vec![
                    "join-cluster".into(),
                    file.as_os_str().to_owned(),
                    db.clone().into(),
                    locals[i].clone().into(),
                ]
            };
            if i > 0 {
                args.extend(locals[..i].iter().map(OsString::from));
            }
            run("ovsdb-tool", &args)?;
            members.push(OvsdbServer::launch(
                Dir::Sub(sub),
                vec![(db.clone(), file)],
                false,
                Vec::new(),
            )?);
        }
        let cluster = RaftCluster {
            members,
            db,
            _dir: dir,
        };
        for i in 0..n {
            cluster.wait_member(i)?;
        }
        Ok(cluster)
    }

    fn wait_member(&self, i: usize) -> Result<()> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let status = self.status(i).unwrap_or_default();
            if status.contains("Status: cluster member") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: format!("raft member {i} joining {}", self.db),
                    secs: CLUSTER_TIMEOUT.as_secs(),
                    log_tail: format!("{status}\n{}", self.members[i].log()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there are no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The database name.
    pub fn db_name(&self) -> &str {
        &self.db
    }

    /// Each member's client address (`unix:...`), in member order.
    pub fn remotes(&self) -> Vec<String> {
        self.members.iter().map(OvsdbServer::remote).collect()
    }

    /// All members as one comma-separated remote, the form OVSDB clients accept.
    pub fn remote(&self) -> String {
        self.remotes().join(",")
    }

    /// Member `i`'s server.
    pub fn member(&self, i: usize) -> &OvsdbServer {
        &self.members[i]
    }

    /// `cluster/status <db>` of member `i`.
    pub fn status(&self, i: usize) -> Result<String> {
        self.members[i].appctl(&["cluster/status", &self.db])
    }

    /// Index of the current leader, waiting up to 30 s for an election to settle.
    pub fn leader(&mut self) -> Result<usize> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            for i in 0..self.members.len() {
                if !self.members[i].is_running() {
                    continue;
                }
                if self.status(i).is_ok_and(|s| s.contains("Role: leader")) {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: format!("a leader for {}", self.db),
                    secs: CLUSTER_TIMEOUT.as_secs(),
                    log_tail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL member `i` by pid.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Graceful stop of member `i`.
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// (Re)start member `i` on its data and wait until it is a cluster member again.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.members[i].restart()?;
        self.wait_member(i)
    }

    /// Data directory of member `i` (for `ovsdb-tool` inspection).
    pub fn member_dir(&self, i: usize) -> PathBuf {
        self.members[i].dir().to_path_buf()
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestkitError::io("bind 127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| TestkitError::io("local_addr", e))?
        .port();
    Ok(port)
}
