//! nf_tables netlink messages (pure): the constants of `linux/netfilter/nf_tables.h` and
//! `nfnetlink.h` this crate uses, and an encoder for nested attributes.

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
pub const SUBSYS_NFTABLES: u16 = 10;
pub const MSG_NEWTABLE: u16 = 0;
pub const MSG_DELTABLE: u16 = 2;
pub const MSG_NEWCHAIN: u16 = 3;
pub const MSG_NEWRULE: u16 = 6;
/// `NFNL_MSG_BATCH_BEGIN` / `_END`: a batch is one transaction.
pub const MSG_BATCH_BEGIN: u16 = 0x10;
pub const MSG_BATCH_END: u16 = 0x11;
pub const NLMSG_ERROR: u16 = 2;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_IPV4: u8 = 2;

pub const TABLE_NAME: u16 = 1;
pub const TABLE_FLAGS: u16 = 2;
pub const CHAIN_TABLE: u16 = 1;
pub const CHAIN_NAME: u16 = 3;
pub const CHAIN_HOOK: u16 = 4;
pub const CHAIN_POLICY: u16 = 5;
pub const CHAIN_TYPE: u16 = 7;
pub const HOOK_HOOKNUM: u16 = 1;
pub const HOOK_PRIORITY: u16 = 2;
/// `NF_INET_LOCAL_OUT`: packets the host itself sends.
pub const HOOK_LOCAL_OUT: u32 = 3;
/// `NF_INET_POST_ROUTING`: packets about to leave through an interface.
pub const HOOK_POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_DST`: where `dnat` belongs.
pub const PRIORITY_DSTNAT: i32 = -100;
/// `NF_IP_PRI_NAT_SRC`: where `snat` belongs.
pub const PRIORITY_SRCNAT: i32 = 100;
pub const NF_ACCEPT: u32 = 1;
pub const RULE_TABLE: u16 = 1;
pub const RULE_CHAIN: u16 = 2;
pub const RULE_EXPRESSIONS: u16 = 4;
pub const LIST_ELEM: u16 = 1;
pub const EXPR_NAME: u16 = 1;
pub const EXPR_DATA: u16 = 2;
pub const DATA_VALUE: u16 = 1;

/// One nf_tables expression, with the attributes this crate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads `len` bytes at `offset` of header `base` (1 network, 2 transport) into `dreg`.
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Loads the layer 4 protocol number (`meta l4proto`) into `dreg`.
    MetaL4Proto { dreg: u32 },
    /// Loads the output interface's name (`meta oifname`, 16 bytes) into `dreg`.
    MetaOifname { dreg: u32 },
    /// Continues only if register `sreg` equals `data`.
    CmpEq { sreg: u32, data: Vec<u8> },
    /// Puts `data` into `dreg`.
    Immediate { dreg: u32, data: Vec<u8> },
    /// IPv4 destination NAT to the address in `reg_addr` and the port in `reg_proto`.
    Dnat4 { reg_addr: u32, reg_proto: u32 },
    /// IPv4 source NAT to the address in `reg_addr`.
    Snat4 { reg_addr: u32 },
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::MetaL4Proto { .. } | Expr::MetaOifname { .. } => "meta",
            Expr::CmpEq { .. } => "cmp",
            Expr::Immediate { .. } => "immediate",
            Expr::Dnat4 { .. } | Expr::Snat4 { .. } => "nat",
        }
    }

    fn encode_data(&self, b: &mut Attrs) {
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                b.be32(1, *dreg)
                    .be32(2, *base)
                    .be32(3, *offset)
                    .be32(4, *len);
            }
            Expr::MetaL4Proto { dreg } => {
                // NFTA_META_DREG, NFTA_META_KEY = NFT_META_L4PROTO (16)
                b.be32(1, *dreg).be32(2, 16);
            }
            Expr::MetaOifname { dreg } => {
                // NFT_META_OIFNAME (7)
                b.be32(1, *dreg).be32(2, 7);
            }
            Expr::CmpEq { sreg, data } => {
                // NFTA_CMP_SREG, NFTA_CMP_OP = NFT_CMP_EQ, NFTA_CMP_DATA { value }
                b.be32(1, *sreg).be32(2, 0);
                b.nested(3, |d| {
                    d.bytes(DATA_VALUE, data);
                });
            }
            Expr::Immediate { dreg, data } => {
                b.be32(1, *dreg);
                b.nested(2, |d| {
                    d.bytes(DATA_VALUE, data);
                });
            }
            Expr::Dnat4 {
                reg_addr,
                reg_proto,
            } => {
                // NFTA_NAT_TYPE = NFT_NAT_DNAT, FAMILY, REG_ADDR_MIN, REG_PROTO_MIN
                b.be32(1, 1)
                    .be32(2, u32::from(NFPROTO_IPV4))
                    .be32(3, *reg_addr)
                    .be32(5, *reg_proto);
            }
            Expr::Snat4 { reg_addr } => {
                // NFT_NAT_SNAT, FAMILY, REG_ADDR_MIN
                b.be32(1, 0)
                    .be32(2, u32::from(NFPROTO_IPV4))
                    .be32(3, *reg_addr);
            }
        }
    }
}

/// A growing run of netlink attributes (4-byte aligned, nested ones marked).
#[derive(Debug, Default)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn bytes(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(ty, &v)
    }

    /// nf_tables integers are big-endian.
    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    pub fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::default();
        f(&mut inner);
        let len = 4 + inner.0.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self.0.extend_from_slice(&inner.0);
        self
    }

    pub fn exprs(&mut self, exprs: &[Expr]) -> &mut Self {
        self.nested(RULE_EXPRESSIONS, |l| {
            for e in exprs {
                l.nested(LIST_ELEM, |el| {
                    el.str(EXPR_NAME, e.name());
                    el.nested(EXPR_DATA, |d| e.encode_data(d));
                });
            }
        })
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// Appends one netlink message (`nlmsghdr` + `nfgenmsg` + attributes) to `out`.
pub fn message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &Attrs,
) {
    let len = 16 + 4 + attrs.0.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(&attrs.0);
}

/// The nf_tables message type of `msg`.
pub fn nft_type(msg: u16) -> u16 {
    (SUBSYS_NFTABLES << 8) | msg
}

/// Netlink messages in a received buffer: (type, seq, error code for `NLMSG_ERROR`).
pub fn parse_replies(mut buf: &[u8]) -> Vec<(u16, u32, Option<i32>)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let err = (ty == NLMSG_ERROR && len >= 20)
            .then(|| i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]));
        out.push((ty, seq, err));
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nested_lengths_cover_their_children() {
        let mut a = Attrs::default();
        a.str(TABLE_NAME, "ovnk"); // 4 + 5 bytes, padded to 12
        assert_eq!(a.0.len(), 12);
        assert_eq!(&a.0[..4], &[9, 0, 1, 0]);
        let mut n = Attrs::default();
        n.nested(CHAIN_HOOK, |h| {
            h.be32(HOOK_HOOKNUM, HOOK_LOCAL_OUT)
                .be32(HOOK_PRIORITY, PRIORITY_DSTNAT as u32);
        });
        assert_eq!(n.0.len(), 4 + 8 + 8);
        assert_eq!(u16::from_ne_bytes([n.0[0], n.0[1]]), 20);
        assert_eq!(u16::from_ne_bytes([n.0[2], n.0[3]]), CHAIN_HOOK | 0x8000);
        // -100 big-endian
        assert_eq!(&n.0[16..20], &(-100i32).to_be_bytes());
    }

    #[test]
    fn message_header_and_reply_parsing_round_trip() {
        let mut out = Vec::new();
        let mut a = Attrs::default();
        a.str(TABLE_NAME, "t");
        message(
            &mut out,
            nft_type(MSG_NEWTABLE),
            NLM_F_REQUEST,
            7,
            NFPROTO_IPV4,
            0,
            &a,
        );
        assert_eq!(out.len(), 16 + 4 + 8);
        let r = parse_replies(&out);
        assert_eq!(r, vec![(nft_type(MSG_NEWTABLE), 7, None)]);
        // An NLMSG_ERROR carrying -EEXIST.
        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        e.extend_from_slice(&0u16.to_ne_bytes());
        e.extend_from_slice(&9u32.to_ne_bytes());
        e.extend_from_slice(&0u32.to_ne_bytes());
        e.extend_from_slice(&(-17i32).to_ne_bytes());
        e.extend_from_slice(&[0u8; 16]);
        assert_eq!(parse_replies(&e), vec![(NLMSG_ERROR, 9, Some(-17))]);
        // Garbage and truncation never panic.
        assert!(parse_replies(&[1, 2, 3]).is_empty());
        assert!(parse_replies(&e[..20]).is_empty());
    }
}
