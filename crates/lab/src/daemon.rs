//! Supervision of the lab's daemons: start each as a child (in a namespace if asked),
//! log to a file, record its pid, report deaths and restart it with backoff, and stop
//! everything by pid — never by name.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ovnk_netns::NetNs;
use tokio::sync::{broadcast, watch};

use crate::LabError;

/// How one daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Unique within a supervisor, e.g. `node1/ovs-vswitchd`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Namespace to start it in; `None` = the supervisor's own.
    pub netns: Option<Arc<NetNs>>,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
    /// The supervisor writes the child's pid here (daemons may write the same path themselves).
    pub pidfile: PathBuf,
    /// Restart when it dies (false for one-shot helpers).
    pub restart: bool,
    /// Runs after every start, restarts included.
    pub after_start: Option<AfterStart>,
}

/// Work to redo each time a daemon has started, such as runtime settings a restart loses.
/// It runs as its own task, so it must itself wait for the daemon to be ready.
#[derive(Clone)]
pub struct AfterStart(Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>);

impl AfterStart {
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        AfterStart(Arc::new(move || Box::pin(f())))
    }

    fn spawn(&self) {
        tokio::spawn((self.0)());
    }
}

impl std::fmt::Debug for AfterStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterStart(..)")
    }
}

impl DaemonSpec {
    pub fn new(name: &str, program: impl Into<PathBuf>, log: PathBuf, pidfile: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            log,
            pidfile,
            restart: true,
            after_start: None,
        }
    }
    pub fn after_start(mut self, hook: AfterStart) -> Self {
        self.after_start = Some(hook);
        self
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, it: I) -> Self {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn in_netns(mut self, ns: Arc<NetNs>) -> Self {
        self.netns = Some(ns);
        self
    }
}

/// What a person (or `ovnk lab status`) sees of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub up: bool,
    pub restarts: u32,
    pub log: PathBuf,
}

/// Something happened to a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonEvent {
    Started {
        name: String,
        pid: u32,
    },
    Exited {
        name: String,
        pid: u32,
        status: String,
    },
    Restarting {
        name: String,
        after: Duration,
    },
    GaveUp {
        name: String,
        reason: String,
    },
}

struct Entry {
    status: DaemonStatus,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts, watches, restarts and stops daemons.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
    events: broadcast::Sender<DaemonEvent>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("daemons", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A daemon that stayed up this long gets its backoff reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// SIGTERM, then SIGKILL after this long.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            events: broadcast::channel(256).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `spec` and returns once the first process is running (its pid).
    pub async fn start(&self, spec: DaemonSpec) -> Result<u32, LabError> {
        if self.lock().contains_key(&spec.name) {
            return Err(LabError::Daemon {
                name: spec.name,
                reason: "already started".into(),
            });
        }
        let child = spawn(&spec)?;
        let pid = child.id().unwrap_or(0);
        let (stop_tx, stop_rx) = watch::channel(false);
        let status = DaemonStatus {
            name: spec.name.clone(),
            pid: Some(pid),
            up: true,
            restarts: 0,
            log: spec.log.clone(),
        };
        let _ = self.events.send(DaemonEvent::Started {
            name: spec.name.clone(),
            pid,
        });
        if let Some(h) = &spec.after_start {
            h.spawn();
        }
        let task = tokio::spawn(watch_daemon(self.clone(), spec.clone(), child, stop_rx));
        self.lock().insert(
            spec.name.clone(),
            Entry {
                status,
                stop: stop_tx,
                task,
            },
        );
        Ok(pid)
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut DaemonStatus)) {
        if let Some(e) = self.lock().get_mut(name) {
            f(&mut e.status);
        }
    }

    pub fn status(&self) -> Vec<DaemonStatus> {
        self.lock().values().map(|e| e.status.clone()).collect()
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.lock().get(name).and_then(|e| e.status.pid)
    }

    /// Stops one daemon (SIGTERM, then SIGKILL after a grace period) and forgets it.
    pub async fn stop(&self, name: &str) {
        let entry = self.lock().remove(name);
        if let Some(e) = entry {
            let _ = e.stop.send(true);
            let _ = e.task.await;
        }
    }

    /// Stops every daemon, in reverse order of their names' starting (callers that care
    /// about order stop them one by one).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for n in names.iter().rev() {
            self.stop(n).await;
        }
    }
}

fn spawn(spec: &DaemonSpec) -> Result<tokio::process::Child, LabError> {
    let err = |reason: String| LabError::Daemon {
        name: spec.name.clone(),
        reason,
    };
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| err(format!("log {}: {e}", spec.log.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(format!("log {}: {e}", spec.log.display())))?;
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    if let Some(ns) = &spec.netns {
        ns.command_in(&mut cmd)?;
    }
    let mut cmd = tokio::process::Command::from(cmd);
    // Daemons outlive a supervisor that crashed; `ovnk lab down` then stops them by pidfile.
    cmd.kill_on_drop(false);
    let child = cmd
        .spawn()
        .map_err(|e| err(format!("spawn {}: {e}", spec.program.display())))?;
    if let Some(pid) = child.id() {
        write_pidfile(&spec.pidfile, pid, &spec.program).map_err(|e| err(e.to_string()))?;
    }
    Ok(child)
}

/// `<pid>\n<program>\n`: the program line lets a later cleanup check that the pid still
/// runs what we started before signalling it.
fn write_pidfile(path: &Path, pid: u32, program: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{pid}\n{}\n", program.display()))
}

async fn watch_daemon(
    sup: Supervisor,
    spec: DaemonSpec,
    mut child: tokio::process::Child,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    let mut started = Instant::now();
    loop {
        let pid = child.id().unwrap_or(0);
        tokio::select! {
            res = child.wait() => {
                let status = match res {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                tracing::warn!(daemon = %spec.name, pid, %status, log = %spec.log.display(), "daemon exited");
                let _ = sup.events.send(DaemonEvent::Exited { name: spec.name.clone(), pid, status });
                sup.update(&spec.name, |s| { s.up = false; s.pid = None; });
                let _ = std::fs::remove_file(&spec.pidfile);
                if !spec.restart {
                    return;
                }
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_START;
                }
                let _ = sup.events.send(DaemonEvent::Restarting { name: spec.name.clone(), after: backoff });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match spawn(&spec) {
                    Ok(c) => {
                        child = c;
                        started = Instant::now();
                        let pid = child.id().unwrap_or(0);
                        sup.update(&spec.name, |s| { s.up = true; s.pid = Some(pid); s.restarts += 1; });
                        let _ = sup.events.send(DaemonEvent::Started { name: spec.name.clone(), pid });
                        if let Some(h) = &spec.after_start {
                            h.spawn();
                        }
                    }
                    Err(e) => {
                        let _ = sup.events.send(DaemonEvent::GaveUp { name: spec.name.clone(), reason: e.to_string() });
                        return;
                    }
                }
            }
            _ = stop.changed() => {
                terminate(&mut child, &spec.name).await;
                let _ = std::fs::remove_file(&spec.pidfile);
                return;
            }
        }
    }
}

async fn terminate(child: &mut tokio::process::Child, name: &str) {
    let Some(pid) = child.id() else { return };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(daemon = name, pid, "did not stop on SIGTERM; killing");
        let _ = child.kill().await;
    }
}

/// Stops the process whose pid is in `pidfile` — only if its command line still names
/// `expect_program` (a stale pidfile must not kill an unrelated process that reused the
/// pid). Returns whether a process was stopped.
pub fn stop_by_pidfile(pidfile: &Path, expect_program: &str) -> Result<bool, LabError> {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return Ok(false);
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        let _ = std::fs::remove_file(pidfile);
        return Ok(false);
    };
    let stopped = stop_pid(pid, expect_program);
    let _ = std::fs::remove_file(pidfile);
    Ok(stopped)
}

/// Stops the process of a pidfile the supervisor wrote (it records the program), for
/// cleaning up after a supervisor that died. Returns whether a process was stopped.
pub fn stop_by_pidfile_recorded(pidfile: &Path) -> Result<bool, LabError> {
    let Ok(rec) = read_pidfile(pidfile) else {
        return Ok(false);
    };
    let _ = std::fs::remove_file(pidfile);
    match (rec.pid, rec.program) {
        (Some(pid), Some(program)) => Ok(stop_pid(pid, &program)),
        _ => Ok(false),
    }
}

/// What a pidfile written by the supervisor (`<pid>\n<program>\n`) records; either part
/// is `None` when missing or malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: Option<i32>,
    /// The program's file name (what [`process_matches`] looks for).
    pub program: Option<String>,
}

impl PidRecord {
    /// The pid, if that process is alive and still runs the recorded program.
    pub fn alive(&self) -> Option<i32> {
        let (pid, program) = (self.pid?, self.program.as_deref()?);
        process_matches(pid, program).then_some(pid)
    }
}

pub fn read_pidfile(path: &Path) -> std::io::Result<PidRecord> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    Ok(PidRecord {
        pid: lines.next().and_then(|l| l.trim().parse::<i32>().ok()),
        program: lines
            .next()
            .and_then(|p| Path::new(p.trim()).file_name())
            .map(|n| n.to_string_lossy().into_owned()),
    })
}

/// SIGTERM, wait up to the grace period, SIGKILL — if `pid` still runs `expect_program`.
pub fn stop_pid(pid: i32, expect_program: &str) -> bool {
    if pid <= 1 || !process_matches(pid, expect_program) {
        return false;
    }
    let p = Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !process_matches(pid, expect_program) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(p, Signal::SIGKILL);
    true
}

/// Whether `pid` is alive (not a zombie) and its command line mentions `program`.
pub fn process_matches(pid: i32, program: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 (after the parenthesised comm) is the state; Z = zombie = already dead.
    if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
        if rest.trim_start().starts_with('Z') {
            return false;
        }
    } else {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(program))
        .unwrap_or(false)
}
