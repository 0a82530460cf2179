//! A minimal nf_tables client over netlink, for one job: keep a table of DNAT rules for
//! the host's own traffic in place. The whole table is replaced in one batch (one kernel
//! transaction: add, delete, add again, then chain and rules), so there is never a moment
//! with half a rule set, and the table holds exactly what was asked even if someone
//! edited it.
//!
//! [`replace_batch`] builds the messages (pure); [`NftSocket`] sends them and reads the
//! kernel's acknowledgements. `nft list table ip <name>` shows the result.

pub mod wire;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use wire::Expr;

/// Errors naming the table and, for a kernel refusal, the message it refused.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables netlink socket: {0}")]
    Socket(nix::Error),
    #[error("nf_tables table {table}: the kernel refused {what}: {errno}")]
    Refused {
        table: String,
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("nf_tables table {table}: no acknowledgement for {what} within {timeout:?}")]
    NoAck {
        table: String,
        what: String,
        timeout: Duration,
    },
}

/// Layer 4 protocols a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Sctp => 132,
        }
    }
}

/// `ip daddr <daddr> <proto> dport <dport> dnat to <to_addr>:<to_port>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnatRule {
    pub daddr: Ipv4Addr,
    pub proto: L4,
    pub dport: u16,
    pub to_addr: Ipv4Addr,
    pub to_port: u16,
}

impl DnatRule {
    /// The rule's expressions (registers 1 and 2; 1 is reused once a match is done).
    pub fn exprs(&self) -> Vec<Expr> {
        vec![
            // ip daddr
            Expr::Payload {
                dreg: 1,
                base: 1,
                offset: 16,
                len: 4,
            },
            Expr::CmpEq {
                sreg: 1,
                data: self.daddr.octets().to_vec(),
            },
            Expr::MetaL4Proto { dreg: 1 },
            Expr::CmpEq {
                sreg: 1,
                data: vec![self.proto.number()],
            },
            // th dport
            Expr::Payload {
                dreg: 1,
                base: 2,
                offset: 2,
                len: 2,
            },
            Expr::CmpEq {
                sreg: 1,
                data: self.dport.to_be_bytes().to_vec(),
            },
            Expr::Immediate {
                dreg: 1,
                data: self.to_addr.octets().to_vec(),
            },
            Expr::Immediate {
                dreg: 2,
                data: self.to_port.to_be_bytes().to_vec(),
            },
            Expr::Dnat4 {
                reg_addr: 1,
                reg_proto: 2,
            },
        ]
    }
}

/// `oifname <oif> ip saddr <saddr> snat to <to_addr>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatRule {
    pub oif: String,
    pub saddr: Ipv4Addr,
    pub to_addr: Ipv4Addr,
}

impl SnatRule {
    pub fn exprs(&self) -> Vec<Expr> {
        // The kernel compares interface names as IFNAMSIZ (16) bytes, NUL-padded.
        let mut name = self.oif.as_bytes().to_vec();
        name.resize(16, 0);
        vec![
            Expr::MetaOifname { dreg: 1 },
            Expr::CmpEq {
                sreg: 1,
                data: name,
            },
            // ip saddr
            Expr::Payload {
                dreg: 1,
                base: 1,
                offset: 12,
                len: 4,
            },
            Expr::CmpEq {
                sreg: 1,
                data: self.saddr.octets().to_vec(),
            },
            Expr::Immediate {
                dreg: 1,
                data: self.to_addr.octets().to_vec(),
            },
            Expr::Snat4 { reg_addr: 1 },
        ]
    }
}

/// An `ip` family table with two chains: `output` (type nat, hook output, priority
/// dstnat) for the host's own connections, and `postrouting` (type nat, priority srcnat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTable {
    pub name: String,
    pub output: Vec<DnatRule>,
    pub postrouting: Vec<SnatRule>,
}

/// What each message of a batch is, for error reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// (sequence number, description) of every message that asks for an ack.
    pub acked: Vec<(u32, String)>,
}

/// The batch that makes the kernel hold exactly `t` (pure).
pub fn replace_batch(t: &NatTable, first_seq: u32) -> Batch {
    use wire::*;
    let mut bytes = Vec::new();
    let mut acked = Vec::new();
    let mut seq = first_seq;
    let empty = Attrs::default();
    let sub = SUBSYS_NFTABLES;
    message(
        &mut bytes,
        MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        sub,
        &empty,
    );
    let mut push = |bytes: &mut Vec<u8>, ty: u16, flags: u16, attrs: &Attrs, what: String| {
        seq += 1;
        message(
            bytes,
            nft_type(ty),
            flags | NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NFPROTO_IPV4,
            0,
            attrs,
        );
        acked.push((seq, what));
    };
    let mut table = Attrs::default();
    table.str(TABLE_NAME, &t.name).be32(TABLE_FLAGS, 0);
    let mut name_only = Attrs::default();
    name_only.str(TABLE_NAME, &t.name);
    // Add (a no-op if it exists) so that the delete cannot fail, then start afresh.
    push(
        &mut bytes,
        MSG_NEWTABLE,
        NLM_F_CREATE,
        &table,
        "add table".into(),
    );
    push(
        &mut bytes,
        MSG_DELTABLE,
        0,
        &name_only,
        "delete table".into(),
    );
    push(
        &mut bytes,
        MSG_NEWTABLE,
        NLM_F_CREATE,
        &table,
        "create table".into(),
    );
    let chains = [
        (
            "output",
            HOOK_LOCAL_OUT,
            PRIORITY_DSTNAT,
            t.output
                .iter()
                .map(|r| (format!("{r:?}"), r.exprs()))
                .collect::<Vec<_>>(),
        ),
        (
            "postrouting",
            HOOK_POST_ROUTING,
            PRIORITY_SRCNAT,
            t.postrouting
                .iter()
                .map(|r| (format!("{r:?}"), r.exprs()))
                .collect(),
        ),
    ];
    for (name, hook, priority, rules) in chains {
        let mut chain = Attrs::default();
        chain
            .str(CHAIN_TABLE, &t.name)
            .str(CHAIN_NAME, name)
            .nested(CHAIN_HOOK, |h| {
                h.be32(HOOK_HOOKNUM, hook)
                    .be32(HOOK_PRIORITY, priority as u32);
            })
            .be32(CHAIN_POLICY, NF_ACCEPT)
            .str(CHAIN_TYPE, "nat");
        push(
            &mut bytes,
            MSG_NEWCHAIN,
            NLM_F_CREATE,
            &chain,
            format!("chain {name}"),
        );
        for (i, (what, exprs)) in rules.iter().enumerate() {
            let mut rule = Attrs::default();
            rule.str(RULE_TABLE, &t.name)
                .str(RULE_CHAIN, name)
                .exprs(exprs);
            push(
                &mut bytes,
                MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                &rule,
                format!("{name} rule {i} ({what})"),
            );
        }
    }
    seq += 1;
    message(
        &mut bytes,
        MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        sub,
        &empty,
    );
    Batch { bytes, acked }
}

/// A netlink socket to nf_tables in the network namespace it was opened in.
pub struct NftSocket {
    fd: OwnedFd,
    seq: u32,
    timeout: Duration,
}

impl NftSocket {
    /// Opens the socket in the calling thread's network namespace (open it inside
    /// `NetNs::run` for another one; it stays bound to that namespace).
    pub fn open() -> Result<Self, NftError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(NftError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NftError::Socket)?;
        let timeout = Duration::from_secs(2);
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::from(libc_timeval(timeout)),
        )
        .map_err(NftError::Socket)?;
        Ok(NftSocket {
            fd,
            seq: 1,
            timeout,
        })
    }

    /// Makes the kernel hold exactly `t`, in one transaction.
    pub fn replace(&mut self, t: &NatTable) -> Result<(), NftError> {
        let first_seq = self.seq;
        let batch = replace_batch(t, first_seq);
        self.seq = self.seq.wrapping_add(batch.acked.len() as u32 + 2);
        send(self.fd.as_raw_fd(), &batch.bytes, MsgFlags::empty()).map_err(NftError::Socket)?;
        let mut pending = batch.acked.clone();
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(NftError::NoAck {
                        table: t.name.clone(),
                        what: pending[0].1.clone(),
                        timeout: self.timeout,
                    })
                }
                Err(e) => return Err(NftError::Socket(e)),
            };
            for (ty, seq, err) in wire::parse_replies(&buf[..n]) {
                if ty != wire::NLMSG_ERROR {
                    continue;
                }
                // Replies to an earlier, refused batch may still be queued: only this
                // batch's messages (and its begin, refused as a whole) count.
                let what = match pending.iter().find(|(s, _)| *s == seq) {
                    Some((_, w)) => w.clone(),
                    None if seq == first_seq => "the batch".to_string(),
                    None => continue,
                };
                match err {
                    Some(0) => pending.retain(|(s, _)| *s != seq),
                    Some(e) => {
                        return Err(NftError::Refused {
                            table: t.name.clone(),
                            what,
                            errno: nix::errno::Errno::from_raw(-e),
                        })
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }
}

fn libc_timeval(d: Duration) -> nix::libc::timeval {
    nix::libc::timeval {
        tv_sec: d.as_secs() as nix::libc::time_t,
        tv_usec: d.subsec_micros() as nix::libc::suseconds_t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_replaces_the_table_and_asks_an_ack_for_every_change() {
        let t = NatTable {
            name: "ovnk".into(),
            output: vec![DnatRule {
                daddr: Ipv4Addr::new(172, 18, 0, 2),
                proto: L4::Tcp,
                dport: 30080,
                to_addr: Ipv4Addr::new(10, 96, 0, 10),
                to_port: 80,
            }],
            postrouting: vec![],
        };
        let b = replace_batch(&t, 100);
        let what: Vec<&str> = b.acked.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(
            &what[..4],
            &["add table", "delete table", "create table", "chain output"]
        );
        assert!(what[4].starts_with("output rule 0"), "{what:?}");
        assert_eq!(what[5], "chain postrouting");
        let seqs: Vec<u32> = b.acked.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![101, 102, 103, 104, 105, 106]);
        let msgs = wire::parse_replies(&b.bytes);
        assert_eq!(msgs.first().map(|m| m.0), Some(wire::MSG_BATCH_BEGIN));
        assert_eq!(
            msgs.last().map(|m| (m.0, m.1)),
            Some((wire::MSG_BATCH_END, 107))
        );
        assert_eq!(msgs.len(), 8);
    }
}
