//! Test fixtures: real ovsdb-server / OVN processes in temp dirs, and the CI=true skip rule.
//!
//! Every fixture lives under its own temporary directory (sockets, databases, pidfiles, logs,
//! unixctl sockets) and stops each process it started by pid when dropped, also while a test
//! is panicking. Nothing here ever signals a process it did not start.
//!
//! ```no_run
//! if !testkit::require_env(&["ovsdb-server", "ovsdb-tool"]) {
//!     return;
//! }
//! let server = testkit::OvsdbServer::start("/usr/share/ovn/ovn-nb.ovsschema").unwrap();
//! println!("connect to {}", server.remote());
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
