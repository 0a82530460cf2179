//! Flow matches as OXM TLVs (OpenFlow 1.3 `ofp_match` of type `OFPMT_OXM`), including the
//! Nicira `NXM_NX_CT_STATE` / `NXM_NX_CT_MARK` fields, which OVS accepts in OXM matches
//! under their NXM class (0x0001).
//!
//! Fields are written in the order OVS itself uses (metadata, L2, L3, L4, conntrack), so
//! our encoding of a flow is byte-identical to `ovs-ofctl -O OpenFlow13`'s.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{pad8, patch_len, put_u16, put_u32, Reader};
use crate::{DecodeError, EncodeError};

/// OXM class of the OpenFlow basic fields.
pub const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
/// NXM class 1: Nicira extension fields (conntrack among them).
pub const OFPXMC_NXM_1: u16 = 0x0001;

/// Basic field numbers (OpenFlow 1.3 §7.2.3.7).
pub mod field {
    pub const IN_PORT: u8 = 0;
    pub const ETH_TYPE: u8 = 5;
    pub const IP_PROTO: u8 = 10;
    pub const IPV4_SRC: u8 = 11;
    pub const IPV4_DST: u8 = 12;
    pub const TCP_DST: u8 = 14;
    pub const UDP_DST: u8 = 16;
    pub const SCTP_DST: u8 = 18;
    pub const IPV6_DST: u8 = 27;
    /// NXM_NX_CT_STATE (class 0x0001).
    pub const NX_CT_STATE: u8 = 105;
    /// NXM_NX_CT_MARK (class 0x0001).
    pub const NX_CT_MARK: u8 = 107;
}

/// Ethernet types.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;

/// IP protocol numbers.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// `ct_state` bits (nicira-ext.h).
pub mod ct_state {
    pub const NEW: u32 = 0x01;
    pub const EST: u32 = 0x02;
    pub const REL: u32 = 0x04;
    pub const RPL: u32 = 0x08;
    pub const INV: u32 = 0x10;
    pub const TRK: u32 = 0x20;
}

/// A value with an optional mask (`None` = exact match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Masked<T> {
    pub value: T,
    pub mask: Option<T>,
}

impl<T> Masked<T> {
    pub fn exact(value: T) -> Self {
        Masked { value, mask: None }
    }
    pub fn with_mask(value: T, mask: T) -> Self {
        Masked {
            value,
            mask: Some(mask),
        }
    }
}

/// Which transport a port match applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
}

impl L4Proto {
    pub fn ip_proto(self) -> u8 {
        match self {
            L4Proto::Tcp => IPPROTO_TCP,
            L4Proto::Udp => IPPROTO_UDP,
            L4Proto::Sctp => IPPROTO_SCTP,
        }
    }
    fn dst_field(self) -> u8 {
        match self {
            L4Proto::Tcp => field::TCP_DST,
            L4Proto::Udp => field::UDP_DST,
            L4Proto::Sctp => field::SCTP_DST,
        }
    }
}

/// The fields a flow may match on; `None` = wildcard. `Default` matches everything.
///
/// The caller supplies prerequisites (e.g. `eth_type` and `ip_proto` for `tp_dst`), as
/// OpenFlow requires; the switch rejects a match without them (`OFPBMC_BAD_PREREQ`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Match {
    pub in_port: Option<u32>,
    pub eth_type: Option<u16>,
    pub ipv4_src: Option<Masked<Ipv4Addr>>,
    pub ipv4_dst: Option<Masked<Ipv4Addr>>,
    pub ipv6_dst: Option<Masked<Ipv6Addr>>,
    pub ip_proto: Option<u8>,
    /// Destination port of `ip_proto`'s transport (tcp_dst, udp_dst or sctp_dst).
    pub tp_dst: Option<(L4Proto, Masked<u16>)>,
    pub ct_state: Option<Masked<u32>>,
    pub ct_mark: Option<Masked<u32>>,
}

impl Match {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn in_port(mut self, port: u32) -> Self {
        self.in_port = Some(port);
        self
    }
    /// `ip` in ovs-ofctl terms.
    pub fn ipv4(mut self) -> Self {
        self.eth_type = Some(ETH_TYPE_IPV4);
        self
    }
    pub fn ipv6(mut self) -> Self {
        self.eth_type = Some(ETH_TYPE_IPV6);
        self
    }
    pub fn arp(mut self) -> Self {
        self.eth_type = Some(ETH_TYPE_ARP);
        self
    }
    pub fn ipv4_src(mut self, addr: Ipv4Addr, prefix: u8) -> Self {
        self.ipv4_src = Some(v4_prefix(addr, prefix));
        self
    }
    pub fn ipv4_dst(mut self, addr: Ipv4Addr, prefix: u8) -> Self {
        self.ipv4_dst = Some(v4_prefix(addr, prefix));
        self
    }
    pub fn ipv6_dst(mut self, addr: Ipv6Addr, prefix: u8) -> Self {
        self.ipv6_dst = Some(if prefix >= 128 {
            Masked::exact(addr)
        } else {
            let mask = Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0));
            Masked::with_mask(Ipv6Addr::from(u128::from(addr) & u128::from(mask)), mask)
        });
        self
    }
    /// Transport and destination port (sets `ip_proto` too).
    pub fn tp_dst(mut self, proto: L4Proto, port: Masked<u16>) -> Self {
        self.ip_proto = Some(proto.ip_proto());
        self.tp_dst = Some((proto, port));
        self
    }
    pub fn ct_state(mut self, value: u32, mask: u32) -> Self {
        self.ct_state = Some(Masked::with_mask(value, mask));
        self
    }
    pub fn ct_mark(mut self, mark: u32) -> Self {
        self.ct_mark = Some(Masked::exact(mark));
        self
    }

    /// Appends the `ofp_match` structure (header, OXM TLVs, padding).
    pub fn encode(&self, b: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = b.len();
        put_u16(b, 1); // OFPMT_OXM
        put_u16(b, 0); // length, patched below
        let basic = OFPXMC_OPENFLOW_BASIC;
        if let Some(p) = self.in_port {
            oxm(b, basic, field::IN_PORT, &p.to_be_bytes(), None);
        }
        if let Some(t) = self.eth_type {
            oxm(b, basic, field::ETH_TYPE, &t.to_be_bytes(), None);
        }
        if let Some(m) = &self.ipv4_src {
            oxm_masked(b, basic, field::IPV4_SRC, m, |a| a.octets().to_vec());
        }
        if let Some(m) = &self.ipv4_dst {
            oxm_masked(b, basic, field::IPV4_DST, m, |a| a.octets().to_vec());
        }
        if let Some(m) = &self.ipv6_dst {
            oxm_masked(b, basic, field::IPV6_DST, m, |a| a.octets().to_vec());
        }
        if let Some(p) = self.ip_proto {
            oxm(b, basic, field::IP_PROTO, &[p], None);
        }
        if let Some((proto, m)) = &self.tp_dst {
            oxm_masked(b, basic, proto.dst_field(), m, |p| p.to_be_bytes().to_vec());
        }
        if let Some(m) = &self.ct_state {
            oxm_masked(b, OFPXMC_NXM_1, field::NX_CT_STATE, m, |v| {
                v.to_be_bytes().to_vec()
            });
        }
        if let Some(m) = &self.ct_mark {
            oxm_masked(b, OFPXMC_NXM_1, field::NX_CT_MARK, m, |v| {
                v.to_be_bytes().to_vec()
            });
        }
        // The length excludes the padding.
        patch_len(b, start + 2, start)?;
        pad8(b, start);
        Ok(())
    }

    /// Reads an `ofp_match` (with its padding) from the reader.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Match, DecodeError> {
        let typ = r.u16()?;
        let len = usize::from(r.u16()?);
        if typ != 1 {
            return Err(DecodeError::Unsupported(format!("match type {typ}")));
        }
        if len < 4 {
            return Err(DecodeError::BadLength {
                what: "ofp_match",
                len,
            });
        }
        let mut fields = r.sub(len - 4, "OXM fields")?;
        r.skip((8 - len % 8) % 8)?;
        let mut m = Match::default();
        // L4 ports may come before we know the protocol only in malformed input; remember
        // the raw port and resolve it at the end.
        let mut tp: Option<(u8, Masked<u16>)> = None;
        while !fields.is_empty() {
            let class = fields.u16()?;
            let fh = fields.u8()?;
            let flen = usize::from(fields.u8()?);
            let (num, has_mask) = (fh >> 1, fh & 1 == 1);
            let mut v = fields.sub(flen, "OXM field")?;
            let dup = || DecodeError::Invalid(format!("duplicate OXM field {class:#x}:{num}"));
            match (class, num) {
                (OFPXMC_OPENFLOW_BASIC, field::IN_PORT) if !has_mask => {
                    set_once(&mut m.in_port, v.u32()?, dup)?
                }
                (OFPXMC_OPENFLOW_BASIC, field::ETH_TYPE) if !has_mask => {
                    set_once(&mut m.eth_type, v.u16()?, dup)?
                }
                (OFPXMC_OPENFLOW_BASIC, field::IP_PROTO) if !has_mask => {
                    set_once(&mut m.ip_proto, v.u8()?, dup)?
                }
                (OFPXMC_OPENFLOW_BASIC, field::IPV4_SRC) => {
                    let val = masked(&mut v, has_mask, |r| Ok(Ipv4Addr::from(r.array::<4>()?)))?;
                    set_once(&mut m.ipv4_src, val, dup)?
                }
                (OFPXMC_OPENFLOW_BASIC, field::IPV4_DST) => {
                    let val = masked(&mut v, has_mask, |r| Ok(Ipv4Addr::from(r.array::<4>()?)))?;
                    set_once(&mut m.ipv4_dst, val, dup)?
                }
                (OFPXMC_OPENFLOW_BASIC, field::IPV6_DST) => {
                    let val = masked(&mut v, has_mask, |r| Ok(Ipv6Addr::from(r.array::<16>()?)))?;
                    set_once(&mut m.ipv6_dst, val, dup)?
                }
                (
                    OFPXMC_OPENFLOW_BASIC,
                    f @ (field::TCP_DST | field::UDP_DST | field::SCTP_DST),
                ) => {
                    let val = masked(&mut v, has_mask, |r| r.u16())?;
                    set_once(&mut tp, (f, val), dup)?
                }
                (OFPXMC_NXM_1, field::NX_CT_STATE) => {
                    let val = masked(&mut v, has_mask, |r| r.u32())?;
                    set_once(&mut m.ct_state, val, dup)?
                }
                (OFPXMC_NXM_1, field::NX_CT_MARK) => {
                    let val = masked(&mut v, has_mask, |r| r.u32())?;
                    set_once(&mut m.ct_mark, val, dup)?
                }
                _ => {
                    return Err(DecodeError::Unsupported(format!(
                        "OXM field class {class:#06x} field {num} (mask {has_mask})"
                    )))
                }
            }
            if !v.is_empty() {
                return Err(DecodeError::BadLength {
                    what: "OXM field",
                    len: flen,
                });
            }
        }
        if let Some((f, val)) = tp {
            let proto = match f {
                field::TCP_DST => L4Proto::Tcp,
                field::UDP_DST => L4Proto::Udp,
                _ => L4Proto::Sctp,
            };
            m.tp_dst = Some((proto, val));
        }
        Ok(m)
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    v: T,
    dup: impl FnOnce() -> DecodeError,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(dup());
    }
    *slot = Some(v);
    Ok(())
}

fn masked<T>(
    r: &mut Reader<'_>,
    has_mask: bool,
    mut read: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Masked<T>, DecodeError> {
    let value = read(r)?;
    let mask = if has_mask { Some(read(r)?) } else { None };
    Ok(Masked { value, mask })
}

fn v4_prefix(addr: Ipv4Addr, prefix: u8) -> Masked<Ipv4Addr> {
    if prefix >= 32 {
        return Masked::exact(addr);
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Masked::with_mask(Ipv4Addr::from(u32::from(addr) & mask), Ipv4Addr::from(mask))
}

/// One OXM TLV: class, field number with the has-mask bit, payload length, value, mask.
pub(crate) fn oxm(b: &mut Vec<u8>, class: u16, num: u8, value: &[u8], mask: Option<&[u8]>) {
    put_u16(b, class);
    b.push(num << 1 | u8::from(mask.is_some()));
    // Field values are at most 16 bytes: the length always fits.
    b.push((value.len() + mask.map_or(0, <[u8]>::len)) as u8);
    b.extend_from_slice(value);
    if let Some(m) = mask {
        b.extend_from_slice(m);
    }
}

fn oxm_masked<T: Copy>(
    b: &mut Vec<u8>,
    class: u16,
    num: u8,
    m: &Masked<T>,
    bytes: impl Fn(T) -> Vec<u8>,
) {
    let mask = m.mask.map(&bytes);
    oxm(b, class, num, &bytes(m.value), mask.as_deref());
}

/// The value/mask pairs that together match exactly the ports `lo..=hi` (a NodePort
/// range as a handful of masked `tp_dst` matches, like ovs-ofctl's `tp_dst=0x7000/0xf000`).
pub fn port_range_masks(lo: u16, hi: u16) -> Vec<Masked<u16>> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let (mut start, end) = (u32::from(lo), u32::from(hi));
    while start <= end {
        // The largest aligned block starting at `start` that stays within the range.
        let mut size = if start == 0 {
            1 << 16
        } else {
            1 << start.trailing_zeros()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        let v = start as u16;
        if size == 1 {
            out.push(Masked::exact(v));
        } else {
            out.push(Masked::with_mask(v, !((size - 1) as u16)));
        }
        start += size;
    }
    out
}

/// Writes a `u32` OXM of class/field as a set-field payload (used by actions).
pub(crate) fn oxm_u32(b: &mut Vec<u8>, class: u16, num: u8, v: u32) {
    let mut tmp = Vec::with_capacity(4);
    put_u32(&mut tmp, v);
    oxm(b, class, num, &tmp, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_cover_exactly() {
        for (lo, hi) in [
            (30000u16, 32767u16),
            (0, 65535),
            (80, 80),
            (1, 6),
            (65535, 65535),
        ] {
            let masks = port_range_masks(lo, hi);
            for p in 0..=u16::MAX {
                let hit = masks
                    .iter()
                    .any(|m| p & m.mask.unwrap_or(0xffff) == m.value);
                assert_eq!(hit, (lo..=hi).contains(&p), "port {p} range {lo}-{hi}");
            }
        }
        assert_eq!(
            port_range_masks(0x7000, 0x7fff),
            vec![Masked::with_mask(0x7000, 0xf000)]
        );
        assert!(port_range_masks(5, 4).is_empty());
    }

    #[test]
    fn masks_from_prefixes() {
        let m = Match::new().ipv4_src("10.1.2.3".parse().unwrap(), 8);
        assert_eq!(
            m.ipv4_src,
            Some(Masked::with_mask(
                "10.0.0.0".parse().unwrap(),
                "255.0.0.0".parse().unwrap()
            ))
        );
        let m = Match::new().ipv6_dst("fd00::1".parse().unwrap(), 128);
        assert_eq!(m.ipv6_dst, Some(Masked::exact("fd00::1".parse().unwrap())));
        let m = Match::new().ipv4_dst("1.2.3.4".parse().unwrap(), 0);
        assert_eq!(
            m.ipv4_dst,
            Some(Masked::with_mask(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED
            ))
        );
    }
}
