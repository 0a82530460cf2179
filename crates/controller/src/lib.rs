//! `ovnk controller`: Kubernetes objects → OVN Northbound rows (what ovnkube-master /
//! cluster-manager does upstream).
//!
//! Three layers, in the style of linkerd2's policy-controller:
//! 1. [`index`]: in-memory cluster state fed by kube-runtime watchers, with the allocators;
//! 2. [`desired`]: pure functions from the index to the NB rows one Kubernetes key owns;
//! 3. [`engine`]: diff of desired rows against the NB monitor cache rows owned by that key,
//!    planned into minimal batched transactions, sent by [`nb`].

pub mod config;
pub mod desired;
pub mod engine;
pub mod rows;

pub use config::ControllerConfig;

/// Everything that can stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("NB database: {0}")]
    Nb(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}
