//! `ovnk controller`: Kubernetes objects → OVN Northbound rows (what ovnkube-master /
//! cluster-manager does upstream).
//!
//! Three layers, in the style of linkerd2's policy-controller:
//! 1. [`index`]: in-memory cluster state fed by kube-runtime watchers, with the allocators
//!    rebuilt from annotations (allocations are written to the API before they are used);
//! 2. [`desired`]: pure functions from the index to the NB rows one Kubernetes key owns;
//! 3. [`engine`]: diff of desired rows against the NB monitor cache rows owned by that key
//!    (ownership by `external_ids`), planned into minimal batched transactions, sent by
//!    [`nb`]. [`controller`] drives it: bursts for one key coalesce in a dirty set.

pub mod config;
pub mod controller;
pub mod desired;
pub mod engine;
pub mod index;
pub mod kube_io;
pub mod nb;
pub mod policy;
pub mod rows;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

pub use config::ControllerConfig;
pub use controller::{Controller, KubeOps};

/// Everything that can stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("NB database: {0}")]
    Nb(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost leadership (lease {0})")]
    LostLease(String),
    #[error("lease {0}")]
    Lease(String),
}

/// Builds a controller for the default network: resolves the config and connects to NB.
pub async fn build(
    config: &ControllerConfig,
    kube: Arc<dyn KubeOps>,
) -> Result<Arc<Controller>, ControllerError> {
    let resolved = config.resolve()?;
    let net = rows::NetworkInfo::default_network();
    let nb = nb::Nb::connect(config, &net.controller_name()).await?;
    let index = index::Index::new(net, resolved)?;
    Ok(Controller::new(index, nb, kube, config.max_batch))
}

/// Runs the controller until an error or the loss of leadership. With leader election on,
/// it first waits to hold the Lease (a standby takes over once the leader's Lease expires).
pub async fn run(config: ControllerConfig, client: kube::Client) -> Result<(), ControllerError> {
    run_until(config, client, std::future::pending()).await
}

/// As [`run`], and stops cleanly when `shutdown` completes: a leader then gives its Lease
/// up, so that a successor (or the same controller restarted) leads at once instead of
/// waiting out the lease duration.
pub async fn run_until(
    config: ControllerConfig,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ControllerError> {
    tokio::pin!(shutdown);
    config.resolve()?;
    let identity = config.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("POD_NAME"))
            .unwrap_or_else(|_| format!("ovnk-controller-{}", std::process::id()))
    });
    let lease = kube_io::LeaseConfig {
        namespace: config.lease_namespace.clone(),
        name: config.lease_name.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(u64::from(config.lease_duration_secs.max(2))),
    };
    if config.leader_elect {
        tracing::info!(
            identity,
            "waiting for lease {}/{}",
            lease.namespace,
            lease.name
        );
        tokio::select! {
            r = kube_io::acquire(&client, &lease) => r?,
            _ = &mut shutdown => return Ok(()),
        }
        tracing::info!(identity, "leading");
    }
    let outcome = lead(&config, &client, &lease, &mut shutdown).await;
    if config.leader_elect {
        match kube_io::release(&client, &lease).await {
            Ok(true) => tracing::info!(identity, "lease released"),
            Ok(false) => {}
            Err(e) => tracing::warn!("releasing the lease: {e}"),
        }
    }
    outcome
}

/// The controller's work while it leads; `Ok` when `shutdown` completes.
async fn lead(
    config: &ControllerConfig,
    client: &kube::Client,
    lease: &kube_io::LeaseConfig,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), ControllerError> {
    let identity = lease.identity.clone();
    let ops: Arc<dyn KubeOps> = Arc::new(kube_io::KubeClientOps::new(
        client.clone(),
        Some(identity.clone()),
    ));
    let work = async {
        let ctl = build(config, ops).await?;
        kube_io::watch(ctl, client.clone()).await
    };
    let keep = async {
        if config.leader_elect {
            kube_io::keep(client.clone(), lease.clone()).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = work => r,
        _ = keep => Err(ControllerError::LostLease(format!("{}/{}", lease.namespace, lease.name))),
        _ = shutdown => {
            tracing::info!("stopping on request");
            Ok(())
        }
    }
}
