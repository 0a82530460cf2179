//! Network namespaces: open one, create and delete named ones (compatible with
//! `ip netns`: a bind mount under `/run/netns`), run code inside one, spawn processes
//! inside one, and get rtnetlink handles bound to one; plus the per-interface knobs
//! ([`ethtool`]) that netlink does not cover.
//!
//! A netlink socket belongs to the namespace of the thread that created it, so a
//! handle for another namespace is made on a short-lived thread that has `setns`ed
//! into it; the socket is then driven by the caller's tokio runtime. The calling
//! thread's namespace never changes, so async tasks are never moved by accident.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod ethtool;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    #[error("invalid namespace name {0:?}: use letters, digits, '-', '_' and '.', at most 64")]
    InvalidName(String),
    #[error("ethtool on {ifname}: {reason}")]
    Ethtool { ifname: String, reason: String },
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("netlink socket in {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn ns_err(path: &Path, reason: impl ToString) -> NetNsError {
    NetNsError::Namespace {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// An open network namespace (its `/proc/<pid>/ns/net` or `/run/netns/<name>` file).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path`; a path that is not a namespace file is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| ns_err(&path, e))?;
        // Only nsfs (or a /proc link to it) is a namespace: a regular file passed off as
        // CNI_NETNS must fail here, not at setns time in a worker thread.
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| ns_err(&path, e))?;
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        const PROC_MAGIC: i64 = 0x9fa0;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_MAGIC {
            return Err(ns_err(&path, "not a network namespace file"));
        }
        Ok(Self { file, path })
    }

    /// The namespace of the current process.
    pub fn current() -> Result<Self, NetNsError> {
        Self::open("/proc/self/ns/net")
    }

    /// Opens the named namespace `/run/netns/<name>`.
    pub fn named(name: &str) -> Result<Self, NetNsError> {
        check_name(name)?;
        Self::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetNsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| ns_err(&self.path, format!("setns: {e}")))?;
                Ok(f())
            })
            .join()
            .map_err(|_| ns_err(&self.path, "worker thread panicked"))?
        })
    }

    /// An rtnetlink handle whose socket lives in this namespace. Must be called from
    /// within a tokio runtime; the connection task runs on it until the handle is dropped.
    pub fn rtnetlink(&self) -> Result<rtnetlink::Handle, NetNsError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| ns_err(&self.path, format!("no tokio runtime: {e}")))?;
        let (conn, handle, _) = self
            .run(|| {
                let _guard = rt.enter();
                rtnetlink::new_connection()
            })?
            .map_err(|source| NetNsError::Socket {
                path: self.path.clone(),
                source,
            })?;
        rt.spawn(conn);
        Ok(handle)
    }

    /// Makes `cmd` start inside this namespace, with its own view of `/sys` (as
    /// `ip netns exec` does, so the daemon's sysfs shows its namespace's devices).
    pub fn command_in(&self, cmd: &mut Command) -> Result<(), NetNsError> {
        // The closure owns a close-on-exec duplicate: `self` may be dropped before spawn,
        // and the daemon must not inherit it.
        let fd = self.file.try_clone().map_err(|e| ns_err(&self.path, e))?;
        let raw = fd.as_raw_fd();
        let holder = std::sync::Arc::new(fd);
        // SAFETY: only async-signal-safe syscalls (setns, unshare, mount, umount2) run
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &holder;
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Don't let the sysfs remount leak back into the host's mounts.
                let root = c"/";
                let sys = c"/sys";
                let sysfs = c"sysfs";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
                if libc::mount(
                    sysfs.as_ptr(),
                    sys.as_ptr(),
                    sysfs.as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), NetNsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NetNsError::InvalidName(name.to_string()))
    }
}

/// Creates the named namespace `/run/netns/<name>` (like `ip netns add`). Fails if it exists.
pub fn create_named(name: &str) -> Result<NetNs, NetNsError> {
    check_name(name)?;
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| ns_err(dir, e))?;
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ns_err(&path, format!("create: {e}")))?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), NetNsError> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| ns_err(&path, format!("unshare: {e}")))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ns_err(&path, format!("bind mount: {e}")))
        })
        .join()
        .map_err(|_| ns_err(&path, "worker thread panicked"))?
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    NetNs::open(&path)
}

/// Deletes the named namespace (like `ip netns del`). Succeeds when it does not exist.
///
/// The namespace itself lives on while a process is still inside it; its devices go
/// with the last reference.
pub fn delete_named(name: &str) -> Result<(), NetNsError> {
    check_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(ns_err(&path, format!("umount: {e}"))),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ns_err(&path, format!("remove: {e}"))),
    }
}

/// Names of the named namespaces that start with `prefix` (to clean up after a crash).
pub fn list_named(prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("ovnk-lab-node1").is_ok());
        for bad in ["", "..", "a/b", "x y", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regular_file_is_not_a_namespace() {
        let dir = std::env::temp_dir().join(format!("ovnk-netns-test-{}", std::process::id()));
        std::fs::write(&dir, b"x").unwrap();
        let err = NetNs::open(&dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(err.to_string().contains("not a network namespace"), "{err}");
    }
}
