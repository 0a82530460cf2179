//! A small OpenFlow 1.3 client for Open vSwitch bridges, with the Nicira extensions ovnk
//! needs (conntrack `ct` action and `ct_state`/`ct_mark` matches).
//!
//! Layered like rust-netlink:
//! - pure message types with an encoder and a decoder ([`Message`], [`FlowMod`],
//!   [`Match`], [`Action`], [`Instruction`]): no IO, never panic on malformed input,
//!   byte-identical to what `ovs-ofctl -O OpenFlow13` sends for the same flow;
//! - [`Client`]: one connection to a bridge's management socket
//!   (`<ovs rundir>/<bridge>.mgmt`), version negotiation, echo replies, flow mods
//!   confirmed with a barrier, `OFPT_ERROR` as a typed [`SwitchError`].
//!
//! ```no_run
//! # async fn f() -> Result<(), ovnk_openflow::Error> {
//! use ovnk_openflow::{port, Action, Client, Flow, Match};
//! let c = Client::connect_bridge("/var/run/openvswitch".as_ref(), "breth0").await?;
//! let normal = Flow::new(0, 0, 0x1234, Match::new(), vec![Action::Output(port::NORMAL)]);
//! c.add_flows(&[normal]).await?;
//! c.delete_by_cookie(0x1234, u64::MAX).await?;
//! # Ok(()) }
//! ```

mod action;
mod client;
mod error;
mod message;
mod oxm;
mod wire;

pub use action::{port, Action, Ct, Instruction, SetField, NX_VENDOR_ID};
pub use client::{mgmt_socket, Client, DEFAULT_TIMEOUT};
pub use error::{DecodeError, EncodeError, Error, ErrorType, SwitchError};
pub use message::{
    negotiate, AggregateRequest, AggregateStats, ErrorMsg, Flow, FlowMod, FlowModCommand, Header,
    Message, HEADER_LEN, OFPTT_ALL, OFP_VERSION_1_3,
};
pub use oxm::{
    ct_state, port_range_masks, L4Proto, Masked, Match, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

#[cfg(test)]
mod tests;
