//! Network namespaces: run code inside one, and get rtnetlink handles bound to one.
//!
//! A netlink socket belongs to the namespace of the thread that created it, so a
//! handle for another namespace is made on a short-lived thread that has `setns`ed
//! into it; the socket is then driven by the caller's tokio runtime. The calling
//! thread's namespace never changes, so async tasks are never moved by accident.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::NetError;

/// An open network namespace (its `/proc/<pid>/ns/net` or `/var/run/netns/<name>` file).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path`; a path that is not a network namespace is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| NetError::NetNs {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // NSFS_MAGIC: reject regular files passed off as a netns.
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| NetError::NetNs {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        const PROC_MAGIC: i64 = 0x9fa0;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_MAGIC {
            return Err(NetError::NetNs {
                path,
                reason: "not a network namespace file".into(),
            });
        }
        Ok(Self { file, path })
    }

    /// The namespace of the current process.
    pub fn current() -> Result<Self, NetError> {
        Self::open("/proc/self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetError::NetNs {
                        path: self.path.clone(),
                        reason: format!("setns: {e}"),
                    }
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetError::NetNs {
                path: self.path.clone(),
                reason: "worker thread panicked".into(),
            })?
        })
    }

    /// An rtnetlink handle whose socket lives in this namespace. Must be called from
    /// within a tokio runtime; the connection task runs on it until the handle is dropped.
    pub fn rtnetlink(&self) -> Result<rtnetlink::Handle, NetError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| NetError::NetNs {
            path: self.path.clone(),
            reason: format!("no tokio runtime: {e}"),
        })?;
        let (conn, handle, _) = self.run(|| {
            let _guard = rt.enter();
            rtnetlink::new_connection()
        })??;
        rt.spawn(conn);
        Ok(handle)
    }
}
