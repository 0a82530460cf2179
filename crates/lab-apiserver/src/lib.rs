//! A small Kubernetes-compatible API server on SQLite, for the lab.
//!
//! It speaks the part of the Kubernetes REST API that ovnk (through kube-rs) and the stock
//! `kubectl` use: discovery (legacy and aggregated v2), a minimal OpenAPI v3, CRUD, watch, the three patch formats and
//! server-side apply (as a merge), over HTTPS on loopback with a bearer token. Kinds are rows
//! of a table ([`BUILTIN_KINDS`]). It is a lab component, not a production API server: no
//! RBAC, no admission, no field ownership, no protobuf answers.
//!
//! What it does, and where it differs from kube-apiserver (on purpose, for a lab):
//! - Storage: an in-memory index serves reads; SQLite (WAL, `synchronous=FULL`) keeps every
//!   object, the resourceVersion counter and the last [`Config::event_window`] events. A
//!   request is answered, and its event shown to watchers, only after its transaction is
//!   committed (group commit: one transaction per burst of concurrent writes).
//! - Watch: from any RV still in the event window (also after a restart); older → an ERROR
//!   event 410. `sendInitialEvents` (watch-list) is refused with 422.
//! - Lists are always served from the current state: `continue` resumes after the last key
//!   (no snapshot at the first page's RV); `resourceVersionMatch=Exact` only matches the current RV.
//! - Pods are deleted at once (no kubelet grace handshake); objects with `metadata.finalizers`
//!   get `deletionTimestamp` and go when the last finalizer is removed. No garbage collector:
//!   `ownerReferences` and `propagationPolicy` are ignored. Deleting a namespace marks it
//!   Terminating, deletes its contents, then the namespace (in a background task).
//! - Server-side apply is a strategic merge of the applied object (no managedFields, no
//!   conflicts); `fieldValidation=Strict` is accepted but unknown fields are kept, not refused.
//! - Protobuf request bodies only for Namespace, ConfigMap and ServiceAccount (what kubectl's
//!   `create namespace|configmap|serviceaccount` send); answers are always JSON.
//! - `events` (core) and `events.k8s.io` are stored separately. No RBAC, no admission.
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
