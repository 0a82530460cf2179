//! The lab: a whole multi-node cluster network on one machine, with real OVN/OVS
//! daemons in network namespaces, and stand-ins for the parts of Kubernetes that are
//! not ovnk's (lab kubelet, lab scheduler, lab EndpointSlice controller).

pub mod daemon;
pub mod endpointslices;
pub mod kubelet;
pub mod responder;
pub mod scheduler;

/// Errors of the lab; each names the daemon, namespace or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("daemon {name}: {reason}")]
    Daemon { name: String, reason: String },
    #[error(transparent)]
    NetNs(#[from] ovnk_netns::NetNsError),
}
