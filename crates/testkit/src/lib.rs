//! Test fixtures: real ovsdb-server / OVN processes in temp dirs, and the CI=true skip rule.
//!
//! Every fixture lives under its own temporary directory (sockets, databases, pidfiles, logs,
//! unixctl sockets) and stops each process it started by pid when dropped, also while a test
//! is panicking. Processes run in the foreground as children of the test (never `--detach`),
//! so nothing here ever signals a process it did not start.
//!
//! - [`require_env`]: `SKIP: <why>` and `false` when root or a binary/file is missing, or a
//!   panic under `CI=true`.
//! - [`OvsdbServer`]: one standalone server, one or more databases (`builder().schema(..)`),
//!   unix socket plus optional `ptcp:0:127.0.0.1` ([`OvsdbServer::tcp_port`]), `restart()`
//!   keeping data and addresses, `kill()` (SIGKILL), `appctl(..)`, `log()`.
//! - [`RaftCluster`]: N members over unix or TCP Raft links; `remotes()`, `leader()`,
//!   `kill(i)`, `restart(i)`, `status(i)`.
//! - [`OvnCentral`]: NB + SB servers and `ovn-northd`; `sync()` waits for northd,
//!   `northd_problems()` lists its WARN/ERR lines.
//! - [`Daemon`]: the same lifecycle for any other OVS/OVN daemon a test needs.
//!
//! ```no_run
//! if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", testkit::OVN_NB_SCHEMA]) {
//!     return;
//! }
//! let server = testkit::OvsdbServer::start(testkit::OVN_NB_SCHEMA).unwrap();
//! println!("connect to {}", server.remote());
//!
//! let mut cluster = testkit::RaftCluster::start(testkit::OVN_NB_SCHEMA, 3).unwrap();
//! let leader = cluster.leader().unwrap();
//! cluster.kill(leader);
//!
//! let central = testkit::OvnCentral::start().unwrap();
//! // ... write to central.nb_remote() ...
//! central.sync().unwrap();
//! assert!(central.northd_problems().is_empty());
//! ```

mod central;
mod env;
mod error;
mod process;
mod raft;
mod server;

pub use central::OvnCentral;
pub use env::{
    find_binary, is_ci, is_root, require_env, OVN_NB_SCHEMA, OVN_SB_SCHEMA, VSWITCH_SCHEMA,
};
pub use error::TestkitError;
pub use process::{appctl, Daemon};
pub use raft::{RaftCluster, RaftTransport};
pub use server::{OvsdbServer, OvsdbServerBuilder};

/// Result of testkit operations.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
