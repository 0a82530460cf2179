//! A small Kubernetes-compatible API server on SQLite, for the lab.
//!
//! It speaks the part of the Kubernetes REST API that ovnk (through kube-rs) and the stock
//! `kubectl` use: discovery, a minimal OpenAPI v3, CRUD, watch, the three patch formats and
//! server-side apply (as a merge), over HTTPS on loopback with a bearer token. Kinds are rows
//! of a table ([`BUILTIN_KINDS`]). It is a lab component, not a production API server: no
//! RBAC, no admission, no field ownership, no protobuf, no aggregated discovery.
//!
//! ```no_run
//! # async fn run() -> Result<(), lab_apiserver::Error> {
//! let server = lab_apiserver::Server::start(lab_apiserver::Config::new("/tmp/lab-api")).await?;
//! println!("kubectl --kubeconfig {}", server.kubeconfig_path().display());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod discovery;
mod error;
mod objects;
mod patch;
mod proto;
mod registry;
mod selector;
mod server;
mod services;
mod store;
mod table;
mod tls;
mod util;
mod watch;

pub use error::{ApiError, Error};
pub use registry::{Behavior, Column, ResourceDef, BUILTIN_KINDS};
pub use server::{Config, Server};
