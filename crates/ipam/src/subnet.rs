//! Node subnet → pod addresses.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bitmap::Bitmap;
use crate::{addr_to_u128, max_prefix, u128_to_addr, with_prefix, Family, IpamError};

/// At most this many addresses of one subnet are managed (the first ones).
/// An IPv6 /64 node subnet has 2^64 addresses; no node runs more than a few
/// hundred pods, and a 65536-slot bitmap costs 8 KiB per node.
pub const MAX_ADDRESSES_PER_SUBNET: u64 = 1 << 16;

/// Which addresses of a subnet are never handed out, besides the network
/// address (and, for IPv4, the broadcast address), which always are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetOptions {
    /// Reserve `.1`, the pods' gateway (`rtos-<node>`).
    pub reserve_gateway: bool,
    /// Reserve `.2`, the management port (`k8s-<node>`).
    pub reserve_management: bool,
    /// Further ranges never to hand out (e.g. a NetworkAttachmentDefinition's
    /// `excludeSubnets`, or addresses kept for static assignment).
    pub excluded: Vec<IpNet>,
}

impl Default for SubnetOptions {
    /// A node subnet of a layer-3 network: network, `.1`, `.2` (and broadcast).
    fn default() -> Self {
        SubnetOptions {
            reserve_gateway: true,
            reserve_management: true,
            excluded: Vec::new(),
        }
    }
}

/// Pod addresses of one node subnet, one family.
///
/// With the default [`SubnetOptions`] never handed out: the network address
/// (offset 0), the gateway `.1` (`rtos-<node>` on the cluster router), the
/// management port `.2` (`k8s-<node>`), and for IPv4 the broadcast address.
/// For IPv6 that is `::0`, `::1`, `::2` (there is no broadcast).
#[derive(Debug, Clone)]
pub struct SubnetIpAllocator {
    subnet: IpNet,
    family: Family,
    base: u128,
    /// Taken slots: handed out or reserved.
    bitmap: Bitmap,
    /// Reserved slots (a subset of `bitmap`).
    reserved: Bitmap,
    options: SubnetOptions,
}

impl SubnetIpAllocator {
    /// A node subnet with the default reservations.
    pub fn new(subnet: IpNet) -> Result<Self, IpamError> {
        Self::with_options(subnet, SubnetOptions::default())
    }

    pub fn with_options(subnet: IpNet, options: SubnetOptions) -> Result<Self, IpamError> {
        let subnet = subnet.trunc();
        let family = Family::of_net(&subnet);
        let host_bits = u32::from(max_prefix(family) - subnet.prefix_len());
        let size: u64 = if host_bits >= 64 {
            MAX_ADDRESSES_PER_SUBNET
        } else {
            (1u64 << host_bits).min(MAX_ADDRESSES_PER_SUBNET)
        };
        let base = addr_to_u128(subnet.network());
        let mut reserved = Bitmap::new(size);
        reserved.set(0);
        if options.reserve_gateway {
            reserved.set(1);
        }
        if options.reserve_management {
            reserved.set(2);
        }
        let whole_subnet = host_bits < 64 && size == 1u64 << host_bits;
        if family == Family::V4 && whole_subnet {
            reserved.set(size - 1);
        }
        for ex in &options.excluded {
            if Family::of_net(ex) != family || !(subnet.contains(ex) || ex.contains(&subnet)) {
                return Err(IpamError::InvalidConfig(format!(
                    "excluded range {ex} is not inside subnet {subnet}"
                )));
            }
            let ex = ex.trunc();
            let first = addr_to_u128(ex.network()).max(base) - base;
            let last = addr_to_u128(ex.broadcast()) - base;
            let last = last.min(u128::from(size) - 1);
            let mut o = first;
            while o <= last {
                reserved.set(o as u64);
                o += 1;
            }
        }
        if size <= reserved.used() {
            return Err(IpamError::InvalidConfig(format!(
                "subnet {subnet} has no address left for pods after the reserved and excluded ones"
            )));
        }
        let mut bitmap = Bitmap::new(size);
        for o in reserved.iter_set() {
            bitmap.set(o);
        }
        Ok(SubnetIpAllocator {
            subnet,
            family,
            base,
            bitmap,
            reserved,
            options,
        })
    }

    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    pub fn family(&self) -> Family {
        self.family
    }

    fn addr(&self, offset: u64) -> IpAddr {
        u128_to_addr(self.family, self.base + u128::from(offset))
    }

    /// `.1`: the pods' default gateway (router port `rtos-<node>`).
    pub fn gateway(&self) -> IpNet {
        with_prefix(self.addr(1), self.subnet.prefix_len())
    }

    /// `.2`: the management port `k8s-<node>` / `ovn-k8s-mp0`.
    pub fn management_ip(&self) -> IpNet {
        with_prefix(self.addr(2), self.subnet.prefix_len())
    }

    /// Addresses that can be handed out in total.
    pub fn capacity(&self) -> u64 {
        self.bitmap.len() - self.reserved.used()
    }

    /// Addresses currently handed out.
    pub fn allocated_count(&self) -> u64 {
        self.bitmap.used() - self.reserved.used()
    }

    /// Hands out a free address as `address/subnet-prefix`.
    pub fn allocate(&mut self) -> Result<IpNet, IpamError> {
        let offset = self.bitmap.allocate().ok_or_else(|| IpamError::Exhausted {
            range: format!("pod subnet {}", self.subnet),
        })?;
        Ok(with_prefix(self.addr(offset), self.subnet.prefix_len()))
    }

    fn offset_of(&self, ip: IpAddr) -> Result<u64, IpamError> {
        let out = || IpamError::OutOfRange {
            value: ip.to_string(),
            range: format!("pod subnet {}", self.subnet),
        };
        if Family::of(&ip) != self.family || !self.subnet.contains(&ip) {
            return Err(out());
        }
        let offset = addr_to_u128(ip) - self.base;
        if offset >= u128::from(self.bitmap.len()) {
            return Err(IpamError::OutOfRange {
                value: ip.to_string(),
                range: format!(
                    "the first {} addresses of pod subnet {} (the managed range)",
                    self.bitmap.len(),
                    self.subnet
                ),
            });
        }
        let offset = offset as u64;
        if let Some(why) = self.reserved_why(offset) {
            return Err(IpamError::Reserved {
                value: ip.to_string(),
                range: format!("pod subnet {}", self.subnet),
                why,
            });
        }
        Ok(offset)
    }

    fn reserved_why(&self, offset: u64) -> Option<&'static str> {
        if !self.reserved.is_set(offset) {
            return None;
        }
        let is_broadcast =
            self.family == Family::V4 && self.addr(offset) == self.subnet.broadcast();
        Some(match offset {
            0 => "network address",
            1 if self.options.reserve_gateway => "gateway",
            2 if self.options.reserve_management => "management port",
            _ if is_broadcast => "broadcast address",
            _ => "excluded range",
        })
    }

    /// Records an address found in an existing annotation (restart) or a
    /// static request. Duplicates, reserved and out-of-subnet addresses fail.
    pub fn mark_allocated(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let offset = self.offset_of(ip)?;
        if !self.bitmap.set(offset) {
            return Err(IpamError::AlreadyAllocated {
                value: ip.to_string(),
                range: format!("pod subnet {}", self.subnet),
            });
        }
        Ok(())
    }

    /// Frees an address. `Ok(false)` when it was not allocated, so a repeated
    /// pod delete is harmless.
    pub fn release(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
        let offset = self.offset_of(ip)?;
        Ok(self.bitmap.clear(offset))
    }

    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.offset_of(ip)
            .map(|o| self.bitmap.is_set(o))
            .unwrap_or(false)
    }

    /// Handed-out addresses, ascending (reserved ones excluded).
    pub fn allocated(&self) -> Vec<IpAddr> {
        self.bitmap
            .iter_set()
            .filter(|&o| !self.reserved.is_set(o))
            .map(|o| self.addr(o))
            .collect()
    }
}

/// Pod addresses of a node with one subnet per configured family: allocates
/// one address of each family, or none.
#[derive(Debug, Clone)]
pub struct DualStackIpAllocator {
    v4: Option<SubnetIpAllocator>,
    v6: Option<SubnetIpAllocator>,
}

impl DualStackIpAllocator {
    /// `subnets`: the node's subnets, at most one per family, at least one.
    pub fn new(subnets: &[IpNet]) -> Result<Self, IpamError> {
        let mut out = DualStackIpAllocator { v4: None, v6: None };
        for s in subnets {
            let slot = match Family::of_net(s) {
                Family::V4 => &mut out.v4,
                Family::V6 => &mut out.v6,
            };
            if let Some(existing) = slot {
                return Err(IpamError::InvalidConfig(format!(
                    "two {} node subnets: {} and {s}",
                    existing.family(),
                    existing.subnet()
                )));
            }
            *slot = Some(SubnetIpAllocator::new(*s)?);
        }
        if out.v4.is_none() && out.v6.is_none() {
            return Err(IpamError::InvalidConfig("no node subnet".into()));
        }
        Ok(out)
    }

    pub fn family(&self, family: Family) -> Option<&SubnetIpAllocator> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    fn family_mut(&mut self, ip: IpAddr) -> Result<&mut SubnetIpAllocator, IpamError> {
        let family = Family::of(&ip);
        let slot = match family {
            Family::V4 => self.v4.as_mut(),
            Family::V6 => self.v6.as_mut(),
        };
        slot.ok_or(IpamError::FamilyNotConfigured {
            family,
            value: ip.to_string(),
        })
    }

    /// The configured subnets, IPv4 first.
    pub fn subnets(&self) -> Vec<IpNet> {
        self.v4
            .iter()
            .chain(self.v6.iter())
            .map(|a| a.subnet())
            .collect()
    }

    /// One address per configured family (IPv4 first). If the second family
    /// is exhausted the first address is given back, so nothing leaks.
    pub fn allocate(&mut self) -> Result<Vec<IpNet>, IpamError> {
        let mut got = Vec::with_capacity(2);
        if let Some(a) = self.v4.as_mut() {
            got.push(a.allocate()?);
        }
        if let Some(a) = self.v6.as_mut() {
            match a.allocate() {
                Ok(ip) => got.push(ip),
                Err(e) => {
                    self.rollback(&got);
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    fn rollback(&mut self, got: &[IpNet]) {
        for ip in got {
            if let Ok(a) = self.family_mut(ip.addr()) {
                // Just allocated by us, so release cannot fail.
                let _ = a.release(ip.addr());
            }
        }
    }

    /// Marks all of a pod's addresses, or none of them.
    pub fn mark_allocated(&mut self, ips: &[IpAddr]) -> Result<(), IpamError> {
        let mut done: Vec<IpNet> = Vec::with_capacity(ips.len());
        for &ip in ips {
            let r = self.family_mut(ip).and_then(|a| a.mark_allocated(ip));
            if let Err(e) = r {
                self.rollback(&done);
                return Err(e);
            }
            done.push(IpNet::from(ip));
        }
        Ok(())
    }

    /// Frees a pod's addresses; the first error is returned after trying all.
    pub fn release(&mut self, ips: &[IpAddr]) -> Result<(), IpamError> {
        let mut first_err = None;
        for &ip in ips {
            if let Err(e) = self.family_mut(ip).and_then(|a| a.release(ip)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.family(Family::of(&ip))
            .is_some_and(|a| a.is_allocated(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_skips_reserved_and_exhausts() {
        let mut a = SubnetIpAllocator::new("10.244.1.0/29".parse().unwrap()).unwrap();
        assert_eq!(a.gateway().to_string(), "10.244.1.1/29");
        assert_eq!(a.management_ip().to_string(), "10.244.1.2/29");
        assert_eq!(a.capacity(), 4);
        let got: Vec<String> = (0..4).map(|_| a.allocate().unwrap().to_string()).collect();
        assert_eq!(
            got,
            [
                "10.244.1.3/29",
                "10.244.1.4/29",
                "10.244.1.5/29",
                "10.244.1.6/29"
            ]
        );
        assert_eq!(
            a.allocate(),
            Err(IpamError::Exhausted {
                range: "pod subnet 10.244.1.0/29".into()
            })
        );
        assert_eq!(a.release(ip("10.244.1.4")), Ok(true));
        assert_eq!(a.release(ip("10.244.1.4")), Ok(false));
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.1.4/29");
    }

    #[test]
    fn v6_skips_first_three_and_caps_range() {
        let mut a = SubnetIpAllocator::new("fd00:10:244:2::/64".parse().unwrap()).unwrap();
        assert_eq!(a.allocate().unwrap().to_string(), "fd00:10:244:2::3/64");
        assert_eq!(a.capacity(), MAX_ADDRESSES_PER_SUBNET - 3);
        assert!(matches!(
            a.mark_allocated(ip("fd00:10:244:2::1")),
            Err(IpamError::Reserved { why: "gateway", .. })
        ));
        assert!(matches!(
            a.mark_allocated(ip("fd00:10:244:2:1::5")),
            Err(IpamError::OutOfRange { .. })
        ));
        // The last address of a /64 is usable for IPv6 in principle but beyond the managed range.
        assert!(a.mark_allocated(ip("fd00:10:244:2::ffff")).is_ok());
    }

    #[test]
    fn mark_errors_are_typed() {
        let mut a = SubnetIpAllocator::new("10.244.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(a.mark_allocated(ip("10.244.1.7")), Ok(()));
        assert_eq!(
            a.mark_allocated(ip("10.244.1.7")),
            Err(IpamError::AlreadyAllocated {
                value: "10.244.1.7".into(),
                range: "pod subnet 10.244.1.0/24".into()
            })
        );
        assert!(matches!(
            a.mark_allocated(ip("10.244.2.7")),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.mark_allocated(ip("fd00::7")),
            Err(IpamError::OutOfRange { .. })
        ));
        for (s, why) in [
            ("10.244.1.0", "network address"),
            ("10.244.1.1", "gateway"),
            ("10.244.1.2", "management port"),
            ("10.244.1.255", "broadcast address"),
        ] {
            match a.mark_allocated(ip(s)) {
                Err(IpamError::Reserved { why: w, .. }) => assert_eq!(w, why),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert_eq!(a.allocated(), vec![ip("10.244.1.7")]);
        assert_eq!(a.allocated_count(), 1);
    }

    #[test]
    fn options_and_excluded_ranges() {
        let opts = SubnetOptions {
            reserve_gateway: false,
            reserve_management: false,
            excluded: vec!["10.0.0.4/30".parse().unwrap()],
        };
        let mut a = SubnetIpAllocator::with_options("10.0.0.0/28".parse().unwrap(), opts).unwrap();
        // 16 addresses - network - broadcast - 4 excluded.
        assert_eq!(a.capacity(), 10);
        let got: Vec<String> = (0..5)
            .map(|_| a.allocate().unwrap().addr().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.8", "10.0.0.9"]
        );
        assert!(matches!(
            a.mark_allocated(ip("10.0.0.5")),
            Err(IpamError::Reserved {
                why: "excluded range",
                ..
            })
        ));
        assert!(matches!(
            a.mark_allocated(ip("10.0.0.15")),
            Err(IpamError::Reserved {
                why: "broadcast address",
                ..
            })
        ));
        let outside = SubnetOptions {
            excluded: vec!["10.1.0.0/30".parse().unwrap()],
            ..Default::default()
        };
        assert!(SubnetIpAllocator::with_options("10.0.0.0/28".parse().unwrap(), outside).is_err());
        let everything = SubnetOptions {
            excluded: vec!["10.0.0.0/24".parse().unwrap()],
            ..Default::default()
        };
        assert!(
            SubnetIpAllocator::with_options("10.0.0.0/28".parse().unwrap(), everything).is_err()
        );
    }

    #[test]
    fn tiny_subnets_rejected() {
        assert!(SubnetIpAllocator::new("10.0.0.0/30".parse().unwrap()).is_err());
        assert!(SubnetIpAllocator::new("10.0.0.0/32".parse().unwrap()).is_err());
        assert!(SubnetIpAllocator::new("fd00::/127".parse().unwrap()).is_err());
        assert_eq!(
            SubnetIpAllocator::new("fd00::/126".parse().unwrap())
                .unwrap()
                .capacity(),
            1
        );
    }

    #[test]
    fn dual_stack_is_atomic() {
        // v6 /126 has exactly one usable address (::3).
        let mut d = DualStackIpAllocator::new(&[
            "10.244.1.0/24".parse().unwrap(),
            "fd00::/126".parse().unwrap(),
        ])
        .unwrap();
        let first = d.allocate().unwrap();
        assert_eq!(
            first.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["10.244.1.3/24", "fd00::3/126"]
        );
        assert!(matches!(d.allocate(), Err(IpamError::Exhausted { .. })));
        // The IPv4 address taken before IPv6 failed was given back.
        assert_eq!(d.family(Family::V4).unwrap().allocated_count(), 1);

        // mark: second address is a duplicate → first is rolled back.
        let r = d.mark_allocated(&[ip("10.244.1.9"), ip("fd00::3")]);
        assert!(matches!(r, Err(IpamError::AlreadyAllocated { .. })));
        assert!(!d.is_allocated(ip("10.244.1.9")));

        d.release(&[ip("10.244.1.3"), ip("fd00::3")]).unwrap();
        assert_eq!(d.allocate().unwrap().len(), 2);
    }

    #[test]
    fn dual_stack_config_errors() {
        assert!(DualStackIpAllocator::new(&[]).is_err());
        assert!(DualStackIpAllocator::new(&[
            "10.0.0.0/24".parse().unwrap(),
            "10.0.1.0/24".parse().unwrap()
        ])
        .is_err());
        let mut single = DualStackIpAllocator::new(&["10.0.0.0/24".parse().unwrap()]).unwrap();
        assert!(matches!(
            single.mark_allocated(&[ip("fd00::5")]),
            Err(IpamError::FamilyNotConfigured {
                family: Family::V6,
                ..
            })
        ));
    }
}
