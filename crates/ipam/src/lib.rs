//! Pure IP allocators (no IO): cluster CIDR → node subnets, node subnet → pod
//! addresses, node ids and the join-subnet addresses derived from them.
//!
//! Kubernetes annotations are the source of truth: a restarted controller
//! creates empty allocators and replays what the annotations say with the
//! `mark_allocated` methods, which report conflicts (duplicates, addresses
//! outside the subnet, reserved addresses) as typed [`IpamError`]s that the
//! caller turns into an Event on the offending object.

mod bitmap;
mod cluster;
mod join;
mod node_id;
mod subnet;

pub use cluster::{ClusterCidr, ClusterSubnetAllocator, SubnetPool};
pub use join::{JoinSubnets, DEFAULT_JOIN_SUBNET_V4, DEFAULT_JOIN_SUBNET_V6};
pub use node_id::{NodeIdAllocator, DEFAULT_MAX_NODE_ID, FIRST_NODE_ID};
pub use subnet::{
    DualStackIpAllocator, SubnetIpAllocator, SubnetOptions, MAX_ADDRESSES_PER_SUBNET,
};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub fn of_net(net: &IpNet) -> Self {
        Self::of(&net.addr())
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Allocation failures. Values are rendered as text so one type covers
/// addresses, subnets and ids.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpamError {
    #[error("{range} is exhausted")]
    Exhausted { range: String },
    #[error("{value} is already allocated in {range}")]
    AlreadyAllocated { value: String, range: String },
    #[error("{value} is outside {range}")]
    OutOfRange { value: String, range: String },
    #[error("{value} is reserved in {range} ({why})")]
    Reserved {
        value: String,
        range: String,
        why: &'static str,
    },
    #[error("{value} is not a valid {what} in {range}: {why}")]
    Misaligned {
        value: String,
        what: &'static str,
        range: String,
        why: String,
    },
    #[error("no {family} range is configured (requested {value})")]
    FamilyNotConfigured { family: Family, value: String },
    #[error("invalid IPAM configuration: {0}")]
    InvalidConfig(String),
}

pub(crate) fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `n` must fit the family (callers only pass base + offset within a subnet).
pub(crate) fn u128_to_addr(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

pub(crate) fn max_prefix(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// Builds `addr/prefix` for an address known to be valid for that prefix.
pub(crate) fn with_prefix(addr: IpAddr, prefix: u8) -> IpNet {
    // IpNet::new only fails when prefix exceeds the family maximum, which the
    // callers rule out; fall back to a host route rather than panic.
    IpNet::new(addr, prefix).unwrap_or_else(|_| IpNet::from(addr))
}
