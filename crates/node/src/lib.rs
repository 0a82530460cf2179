//! Node agent (`ovnk node`): local OVS registration, the CNI server and pod wiring.
//!
//! Side effects sit behind small traits ([`podnet::NetOps`] for netlink) so the
//! agent's logic is unit-tested with fakes; the real implementations are tested as
//! root in network namespaces.

pub mod ethtool;
pub mod fake;
pub mod podnet;

/// Errors of the node's network side effects; each names the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    NetNs(#[from] ovnk_netns::NetNsError),
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("ethtool on {ifname}: {reason}")]
    Ethtool { ifname: String, reason: String },
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("invalid route {0}")]
    InvalidRoute(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}
