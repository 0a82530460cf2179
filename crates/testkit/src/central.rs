use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::process::run;
use crate::{Daemon, OvsdbServer, Result, TestkitError, OVN_NB_SCHEMA, OVN_SB_SCHEMA};

const NORTHD_TIMEOUT: Duration = Duration::from_secs(20);

/// OVN's central part: an NB and an SB ovsdb-server plus `ovn-northd` between them, all on
/// unix sockets under temp dirs. Tests use [`Self::northd_problems`] to assert that northd
/// accepted what they wrote without complaint.
#[derive(Debug)]
pub struct OvnCentral {
    // Declared first so northd is stopped before the databases it talks to.
    northd: Daemon,
    nb: OvsdbServer,
    sb: OvsdbServer,
    dir: tempfile::TempDir,
}

impl OvnCentral {
    /// With the installed NB/SB schemas.
    pub fn start() -> Result<Self> {
        Self::start_with(OVN_NB_SCHEMA, OVN_SB_SCHEMA)
    }

    /// With the given schemas; returns once northd reports itself active.
    pub fn start_with(nb_schema: impl AsRef<Path>, sb_schema: impl AsRef<Path>) -> Result<Self> {
        let nb = OvsdbServer::start(nb_schema)?;
        let sb = OvsdbServer::start(sb_schema)?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-northd-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let d = dir.path();
        let log = d.join("ovn-northd.log");
        let ctl = d.join("ovn-northd.ctl");
        let args: Vec<OsString> = vec![
            format!("--ovnnb-db={}", nb.remote()).into(),
            format!("--ovnsb-db={}", sb.remote()).into(),
            format!("--pidfile={}", d.join("ovn-northd.pid").display()).into(),
            format!("--unixctl={}", ctl.display()).into(),
            format!("--log-file={}", log.display()).into(),
            "--no-chdir".into(),
        ];
        let northd = Daemon::spawn("ovn-northd", "ovn-northd", args, d, log, ctl)?;
        let mut central = OvnCentral {
            northd,
            nb,
            sb,
            dir,
        };
        central.wait_northd_active()?;
        Ok(central)
    }

    fn wait_northd_active(&mut self) -> Result<()> {
        let ctl = self.northd.ctl_path().to_path_buf();
        self.northd.wait_until(NORTHD_TIMEOUT, || {
            crate::appctl(&ctl, &["status"]).is_ok_and(|s| s.contains("Status: active"))
        })
    }

    /// `unix:` address of the NB database.
    pub fn nb_remote(&self) -> String {
        self.nb.remote()
    }

    /// `unix:` address of the SB database.
    pub fn sb_remote(&self) -> String {
        self.sb.remote()
    }

    /// The NB server.
    pub fn nb(&mut self) -> &mut OvsdbServer {
        &mut self.nb
    }

    /// The SB server.
    pub fn sb(&mut self) -> &mut OvsdbServer {
        &mut self.sb
    }

    /// northd's log file, whole.
    pub fn northd_log(&self) -> String {
        self.northd.log()
    }

    /// northd's log lines at WARN level or worse: empty means northd accepted everything.
    pub fn northd_problems(&self) -> Vec<String> {
        self.northd_log()
            .lines()
            .filter(|l| {
                ["|WARN|", "|ERR|", "|EMER|"]
                    .iter()
                    .any(|lvl| l.contains(lvl))
            })
            .map(str::to_string)
            .collect()
    }

    /// Waits until northd has translated everything committed to NB so far into SB
    /// (`ovn-nbctl --wait=sb sync`, a test-side witness).
    pub fn sync(&self) -> Result<()> {
        run(
            "ovn-nbctl",
            &[
                format!("--db={}", self.nb.remote()).into(),
                "--timeout=20".into(),
                "--wait=sb".into(),
                "sync".into(),
            ],
        )
        .map(|_| ())
    }

    /// Restarts northd (graceful stop, start, wait until active).
    pub fn restart_northd(&mut self) -> Result<()> {
        self.northd.stop();
        self.northd.start()?;
        self.wait_northd_active()
    }

    /// northd's pid while running.
    pub fn northd_pid(&mut self) -> Option<u32> {
        self.northd.pid()
    }

    /// The directory holding northd's pidfile, log and control socket.
    pub fn northd_dir(&self) -> &Path {
        self.dir.path()
    }
}
