use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_binary, Result, TestkitError};

/// One long-running OVS/OVN process that this fixture started and owns.
///
/// It runs in the foreground (no `--detach`) as our child, so we hold its pid directly, can
/// reap it (no zombies even when pid 1 does not reap), and restart it with the same command
/// line. Dropping it stops it: SIGTERM, then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: PathBuf,
    log: PathBuf,
    ctl: PathBuf,
    child: Option<Child>,
}

const STOP_GRACE: Duration = Duration::from_secs(5);

impl Daemon {
    /// Starts `program` (looked up with [`find_binary`]) with `args` in `dir`. `log` and `ctl`
    /// are the log file and unixctl socket the arguments point it at; the environment points
    /// every OVS/OVN run/log/db directory at `dir` so nothing leaks into /var/run.
    pub fn spawn(
        name: &str,
        program: &str,
        args: Vec<OsString>,
        dir: &Path,
        log: PathBuf,
        ctl: PathBuf,
    ) -> Result<Self> {
        let program_path =
            find_binary(program).ok_or_else(|| TestkitError::MissingBinary(program.into()))?;
        let envs = [
            "OVS_RUNDIR",
            "OVS_LOGDIR",
            "OVS_DBDIR",
            "OVN_RUNDIR",
            "OVN_LOGDIR",
            "OVN_DBDIR",
        ]
        .iter()
        .map(|k| (OsString::from(k), dir.as_os_str().to_owned()))
        .collect();
        let mut d = Daemon {
            name: name.to_string(),
            program: program_path,
            args,
            envs,
            dir: dir.to_path_buf(),
            log,
            ctl,
            child: None,
        };
        d.start()?;
        Ok(d)
    }

    /// (Re)starts the process with its original command line. No-op if it is running.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // A stale control socket from a killed run would make readiness checks lie.
        let _ = std::fs::remove_file(&self.ctl);
        let stderr_path = self.dir.join(format!("{}.stderr", self.name));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|e| TestkitError::io(format!("open {}", stderr_path.display()), e))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawn {}", self.program.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `ready` every 20 ms until it returns true; fails early with the log tail if the
    /// process exits, or after `timeout`.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(TestkitError::EarlyExit {
                    what: self.name.clone(),
                    status,
                    log_tail: self.log_tail(30),
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: self.name.clone(),
                    secs: timeout.as_secs(),
                    log_tail: self.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_status(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(format!("wait failed: {e}")),
            Some(Ok(None)) => None,
            None => Some("not started".into()),
        }
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// The pid while running.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// SIGKILL by pid and reap: a crash, as far as the peers can tell.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, wait up to 5 s, then SIGKILL. Always reaps.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }

    /// The process's own log file (`--log-file`), whole.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn args_mut(&mut self) -> impl Iterator<Item = &mut OsString> {
        self.args.iter_mut()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Path of the unixctl socket.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl
    }

    /// The last `n` lines of the log file and of the captured stderr, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let stderr = std::fs::read_to_string(self.dir.join(format!("{}.stderr", self.name)))
            .unwrap_or_default();
        let log = self.log();
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!("{}\n[stderr]\n{}", tail(&log), tail(&stderr))
    }

    /// Runs `ovs-appctl -t <ctl> args...` against this process.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        appctl(&self.ctl, args)
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain kill(2) on the pid of our own, not yet reaped, child.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `ovs-appctl -t <ctl> args...` (with a 10 s timeout) and returns its stdout.
pub fn appctl(ctl: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = vec![
        OsString::from("--timeout=10"),
        OsString::from("-t"),
        ctl.as_os_str().to_owned(),
    ];
    cmd.extend(args.iter().map(OsString::from));
    run("ovs-appctl", &cmd)
}

/// Runs a short command to completion; non-zero exit is an error carrying its stderr.
pub(crate) fn run(program: &str, args: &[OsString]) -> Result<String> {
    let path = find_binary(program).ok_or_else(|| TestkitError::MissingBinary(program.into()))?;
    let shown = format!(
        "{program} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestkitError::io(format!("run {shown}"), e))?;
    if !out.status.success() {
        return Err(TestkitError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
