//! The CNI plugin `ovn-k8s-cni-overlay` and its protocol to the node agent.
//!
//! - [`CniRequest`], [`NetConf`]: a validated invocation (environment + config).
//! - [`CniResult`]: the ADD result, rendered per cniVersion (0.4.0, 1.0.0, 1.1.0).
//! - [`CniError`], [`ErrorCode`]: spec error objects with the well-known codes.
//! - [`client`]: the shim side (HTTP/1.1 over a unix socket, bounded waits).
//! - [`server`]: the node agent side ([`CniHandler`], [`serve`], [`bind_root_socket`]).
//! - [`shim`]: the binary's logic as a function of (env, stdin).

pub mod client;
mod config;
mod error;
mod request;
mod result;
pub mod server;
pub mod shim;
mod version;

pub use config::{
    Attachment, NetConf, DEFAULT_ADD_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SERVER_SOCKET,
    DEFAULT_TIMEOUT,
};
pub use error::{CniError, ErrorCode};
pub use request::{parse_command, CniArgs, CniRequest, Command, CNI_ENV_VARS};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use server::{bind_root_socket, serve, serve_with, CniHandler, ServerOptions};
pub use version::{version_info, SpecVersion, LATEST_VERSION, SUPPORTED_VERSIONS};
