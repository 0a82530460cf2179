use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::run;
use crate::{Daemon, Result, TestkitError};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads the `name` of an `.ovsschema` file (the database name clients ask for).
pub(crate) fn schema_name(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TestkitError::io(format!("read schema {}", path.display()), e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TestkitError::Schema {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    json.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or_else(|| TestkitError::Schema {
            path: path.to_path_buf(),
            why: "no string \"name\"".into(),
        })
}

/// Options for [`OvsdbServer`].
#[derive(Debug, Default, Clone)]
pub struct OvsdbServerBuilder {
    schemas: Vec<PathBuf>,
    tcp: bool,
    extra_args: Vec<String>,
}

impl OvsdbServerBuilder {
    /// Adds a database created from this schema (call several times for NB+SB in one server).
    pub fn schema(mut self, path: impl AsRef<Path>) -> Self {
        self.schemas.push(path.as_ref().to_path_buf());
        self
    }

    /// Also listen on `ptcp:0:127.0.0.1`; the bound port is reported by
    /// [`OvsdbServer::tcp_port`] and kept across restarts.
    pub fn tcp(mut self, yes: bool) -> Self {
        self.tcp = yes;
        self
    }

    /// Extra command-line arguments for ovsdb-server (e.g. `-vjsonrpc:file:dbg`).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }

    /// Creates the databases with `ovsdb-tool create` in a new temp dir and starts the server.
    pub fn start(self) -> Result<OvsdbServer> {
        if self.schemas.is_empty() {
            return Err(TestkitError::Other(
                "OvsdbServer needs at least one schema".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("testkit-ovsdb-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut dbs = Vec::new();
        for schema in &self.schemas {
            let name = schema_name(schema)?;
            let file = dir.path().join(format!("{name}.db"));
            run(
                "ovsdb-tool",
                &[
                    "create".into(),
                    file.as_os_str().to_owned(),
                    schema.as_os_str().to_owned(),
                ],
            )?;
            dbs.push((name, file));
        }
        OvsdbServer::launch(Dir::Temp(dir), dbs, self.tcp, self.extra_args)
    }
}

/// A standalone `ovsdb-server` in its own temp dir, listening on a unix socket (and optionally
/// on TCP 127.0.0.1). Stopped by pid and its directory removed on drop.
#[derive(Debug)]
pub struct OvsdbServer {
    // Field order matters: the daemon is dropped (stopped) before its directory is removed.
    daemon: Daemon,
    dbs: Vec<(String, PathBuf)>,
    sock: PathBuf,
    tcp_port: Option<u16>,
    dir: Dir,
}

/// A fixture's directory: its own temp dir, or a subdirectory of a parent fixture's one.
#[derive(Debug)]
pub(crate) enum Dir {
    Temp(tempfile::TempDir),
    Sub(PathBuf),
}

impl Dir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Sub(p) => p,
        }
    }
}

impl OvsdbServer {
    /// One database created from `schema`, unix socket only.
    pub fn start(schema: impl AsRef<Path>) -> Result<Self> {
        Self::builder().schema(schema).start()
    }

    /// Options: several schemas, TCP, extra arguments.
    pub fn builder() -> OvsdbServerBuilder {
        OvsdbServerBuilder::default()
    }

    /// Serves existing database files (e.g. members of a Raft cluster) from `dir`.
    pub(crate) fn launch(
        dir: Dir,
        dbs: Vec<(String, PathBuf)>,
        tcp: bool,
        extra: Vec<String>,
    ) -> Result<Self> {
        let d = dir.path();
        let sock = d.join("db.sock");
        let log = d.join("ovsdb-server.log");
        let ctl = d.join("ovsdb-server.ctl");
        let mut args: Vec<OsString> = dbs.iter().map(|(_, f)| f.as_os_str().to_owned()).collect();
        args.push(format!("--remote=punix:{}", sock.display()).into());
        if tcp {
            args.push("--remote=ptcp:0:127.0.0.1".into());
        }
        args.push(format!("--pidfile={}", d.join("ovsdb-server.pid").display()).into());
        args.push(format!("--unixctl={}", ctl.display()).into());
        args.push(format!("--log-file={}", log.display()).into());
        args.push("--no-chdir".into());
        args.extend(extra.into_iter().map(OsString::from));
        let daemon = Daemon::spawn("ovsdb-server", "ovsdb-server", args, d, log, ctl)?;
        let mut server = OvsdbServer {
            daemon,
            dbs,
            sock,
            tcp_port: None,
            dir,
        };
        server.wait_ready(tcp)?;
        if tcp {
            // Pin the port so that restart() comes back on the same address.
            let port = server.tcp_port.unwrap_or_default();
            for a in server.daemon_args_mut() {
                if a == "--remote=ptcp:0:127.0.0.1" {
                    *a = format!("--remote=ptcp:{port}:127.0.0.1").into();
                }
            }
        }
        Ok(server)
    }

    fn daemon_args_mut(&mut self) -> impl Iterator<Item = &mut OsString> {
        self.daemon.args_mut()
    }

    fn wait_ready(&mut self, tcp: bool) -> Result<()> {
        let sock = self.sock.clone();
        let ctl = self.daemon.ctl_path().to_path_buf();
        let log = self.daemon.log_path().to_path_buf();
        let mut port = None;
        self.daemon.wait_until(READY_TIMEOUT, || {
            if tcp && port.is_none() {
                port = std::fs::read_to_string(&log)
                    .ok()
                    .and_then(|l| parse_listening_port(&l));
            }
            UnixStream::connect(&sock).is_ok() && ctl.exists() && (!tcp || port.is_some())
        })?;
        if tcp {
            self.tcp_port = port;
        }
        Ok(())
    }

    /// `unix:<socket>` — what a client connects to.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.sock
    }

    /// `tcp:127.0.0.1:<port>` when started with TCP.
    pub fn tcp_remote(&self) -> Option<String> {
        self.tcp_port.map(|p| format!("tcp:127.0.0.1:{p}"))
    }

    /// The TCP port bound on 127.0.0.1, when started with TCP.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The temp dir holding databases, sockets, pidfile and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Names of the databases served (from the schemas).
    pub fn db_names(&self) -> Vec<&str> {
        self.dbs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The database file for `name`.
    pub fn db_file(&self, name: &str) -> Option<&Path> {
        self.dbs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.as_path())
    }

    /// Pid while running.
    pub fn pid(&mut self) -> Option<u32> {
        self.daemon.pid()
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 5 s); the data stays for [`Self::start_again`].
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// SIGKILL by pid; the data stays for [`Self::start_again`].
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Starts a stopped or killed server again on the same sockets and data.
    pub fn start_again(&mut self) -> Result<()> {
        if self.daemon.is_running() {
            return Ok(());
        }
        self.daemon.start()?;
        let tcp = self.tcp_port.is_some();
        self.daemon.wait_until(READY_TIMEOUT, {
            let sock = self.sock.clone();
            let ctl = self.daemon.ctl_path().to_path_buf();
            let port = self.tcp_port;
            move || {
                UnixStream::connect(&sock).is_ok()
                    && ctl.exists()
                    && (!tcp
                        || port.is_some_and(|p| {
                            std::net::TcpStream::connect(("127.0.0.1", p)).is_ok()
                        }))
            }
        })
    }

    /// Stop then start, keeping the data and the addresses.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_again()
    }

    /// The server's log file, whole.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// `ovs-appctl -t <this server's ctl> args...`.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        self.daemon.appctl(args)
    }

    /// Path of the unixctl socket.
    pub fn ctl_path(&self) -> &Path {
        self.daemon.ctl_path()
    }
}

/// Finds `listening on port N` in an ovsdb-server log (how OVS's own tests learn a ptcp:0 port).
fn parse_listening_port(log: &str) -> Option<u16> {
    log.lines().find_map(|l| {
        let (_, rest) = l.split_once("listening on port ")?;
        rest.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_port() {
        let log = "x|vlog|INFO|opened log file /a\n\
                   2026-11-23T02:20:06Z|00002|socket_util|INFO|0:127.0.0.1: listening on port 33579\n";
        assert_eq!(parse_listening_port(log), Some(33579));
        assert_eq!(parse_listening_port("nothing here"), None);
    }
}
