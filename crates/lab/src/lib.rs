//! The lab: a whole multi-node cluster network on one machine, with real OVN/OVS
//! daemons in network namespaces, and stand-ins for the parts of Kubernetes that are
//! not ovnk's (lab kubelet, lab scheduler, lab EndpointSlice controller).

pub mod cluster;
pub mod daemon;
pub mod daemons;
pub mod demo;
pub mod endpointslices;
pub mod kubelet;
pub mod layout;
pub mod network;
pub mod responder;
pub mod scheduler;

/// Errors of the lab; each names the daemon, namespace or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("daemon {name}: {reason}")]
    Daemon { name: String, reason: String },
    #[error(transparent)]
    NetNs(#[from] ovnk_netns::NetNsError),
    #[error("network: {0}")]
    Network(String),
    #[error("OVSDB: {0}")]
    Ovsdb(String),
    #[error("{0}")]
    Setup(String),
}
