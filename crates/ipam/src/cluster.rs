//! Cluster CIDR(s) → per-node subnets.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::bitmap::Bitmap;
use crate::{addr_to_u128, max_prefix, u128_to_addr, with_prefix, Family, IpamError};

/// At most this many node subnets are managed per cluster CIDR (the first ones).
const MAX_SUBNETS_PER_CIDR: u64 = 1 << 20;

/// One cluster network and the prefix length of each node's slice of it,
/// written `10.244.0.0/16/24` in OVN-Kubernetes' `cluster-subnets` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    pub cidr: IpNet,
    pub host_prefix: u8,
}

impl ClusterCidr {
    pub fn new(cidr: IpNet, host_prefix: u8) -> Result<Self, IpamError> {
        let c = ClusterCidr {
            cidr: cidr.trunc(),
            host_prefix,
        };
        let max = max_prefix(Family::of_net(&c.cidr));
        if host_prefix < c.cidr.prefix_len() || host_prefix > max {
            return Err(IpamError::InvalidConfig(format!(
                "host prefix /{host_prefix} must be between /{} and /{max} for cluster CIDR {}",
                c.cidr.prefix_len(),
                c.cidr
            )));
        }
        Ok(c)
    }

    /// The defaults: 10.244.0.0/16 with a /24 per node.
    pub fn default_v4() -> Self {
        ClusterCidr {
            cidr: IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            ),
            host_prefix: 24,
        }
    }
}

impl fmt::Display for ClusterCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cidr, self.host_prefix)
    }
}

impl FromStr for ClusterCidr {
    type Err = IpamError;

    /// `10.244.0.0/16/24`, or `10.244.0.0/16` meaning /24 (IPv4) or /64 (IPv6).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| IpamError::InvalidConfig(format!("cluster CIDR {s:?}: {why}"));
        let (cidr_text, host) = match s.rsplit_once('/') {
            Some((head, tail)) if head.contains('/') => (head, Some(tail)),
            _ => (s, None),
        };
        let cidr: IpNet = cidr_text.parse().map_err(|e| bad(format!("{e}")))?;
        let host_prefix = match host {
            Some(h) => h
                .parse::<u8>()
                .map_err(|e| bad(format!("host prefix {h:?}: {e}")))?,
            None => match Family::of_net(&cidr) {
                Family::V4 => 24,
                Family::V6 => 64,
            },
        };
        ClusterCidr::new(cidr, host_prefix)
    }
}

/// The node subnets of one cluster CIDR.
#[derive(Debug, Clone)]
pub struct SubnetPool {
    cidr: ClusterCidr,
    family: Family,
    base: u128,
    step_bits: u32,
    bitmap: Bitmap,
}

impl SubnetPool {
    pub fn new(cidr: ClusterCidr) -> Self {
        let family = Family::of_net(&cidr.cidr);
        let count_bits = u32::from(cidr.host_prefix - cidr.cidr.prefix_len());
        let count = if count_bits >= 64 {
            MAX_SUBNETS_PER_CIDR
        } else {
            (1u64 << count_bits).min(MAX_SUBNETS_PER_CIDR)
        };
        SubnetPool {
            cidr,
            family,
            base: addr_to_u128(cidr.cidr.network()),
            step_bits: u32::from(max_prefix(family) - cidr.host_prefix),
            bitmap: Bitmap::new(count),
        }
    }

    pub fn cidr(&self) -> ClusterCidr {
        self.cidr
    }

    fn subnet(&self, index: u64) -> IpNet {
        // step_bits ≤ 128; a shift by 128 only happens for a /0 host prefix, which
        // ClusterCidr::new forbids unless the cluster CIDR is /0 with one subnet.
        let offset = u128::from(index).checked_shl(self.step_bits).unwrap_or(0);
        with_prefix(
            u128_to_addr(self.family, self.base + offset),
            self.cidr.host_prefix,
        )
    }

    fn index_of(&self, subnet: IpNet) -> Result<Option<u64>, IpamError> {
        if Family::of_net(&subnet) != self.family || !self.cidr.cidr.contains(&subnet) {
            return Ok(None);
        }
        if subnet.prefix_len() != self.cidr.host_prefix || subnet.trunc() != subnet {
            return Err(IpamError::Misaligned {
                value: subnet.to_string(),
                what: "node subnet",
                range: format!("cluster CIDR {}", self.cidr),
                why: format!("node subnets are /{} networks", self.cidr.host_prefix),
            });
        }
        let index = (addr_to_u128(subnet.network()) - self.base)
            .checked_shr(self.step_bits)
            .unwrap_or(0);
        if index >= u128::from(self.bitmap.len()) {
            return Err(IpamError::OutOfRange {
                value: subnet.to_string(),
                range: format!(
                    "the first {} node subnets of {}",
                    self.bitmap.len(),
                    self.cidr
                ),
            });
        }
        Ok(Some(index as u64))
    }

    pub fn capacity(&self) -> u64 {
        self.bitmap.len()
    }

    pub fn allocated_count(&self) -> u64 {
        self.bitmap.used()
    }

    pub fn allocated(&self) -> Vec<IpNet> {
        self.bitmap.iter_set().map(|i| self.subnet(i)).collect()
    }
}

/// Node subnets for every node: one per configured family, from one or more
/// cluster CIDRs per family (tried in order).
#[derive(Debug, Clone)]
pub struct ClusterSubnetAllocator {
    pools: Vec<SubnetPool>,
}

impl ClusterSubnetAllocator {
    pub fn new(cidrs: &[ClusterCidr]) -> Result<Self, IpamError> {
        if cidrs.is_empty() {
            return Err(IpamError::InvalidConfig("no cluster CIDR".into()));
        }
        for (i, a) in cidrs.iter().enumerate() {
            for b in &cidrs[i + 1..] {
                if a.cidr.contains(&b.cidr) || b.cidr.contains(&a.cidr) {
                    return Err(IpamError::InvalidConfig(format!(
                        "cluster CIDRs {a} and {b} overlap"
                    )));
                }
            }
        }
        Ok(ClusterSubnetAllocator {
            pools: cidrs.iter().map(|c| SubnetPool::new(*c)).collect(),
        })
    }

    pub fn families(&self) -> Vec<Family> {
        let mut f: Vec<Family> = self.pools.iter().map(|p| p.family).collect();
        f.sort();
        f.dedup();
        f
    }

    pub fn pools(&self) -> &[SubnetPool] {
        &self.pools
    }

    fn allocate_family(&mut self, family: Family) -> Result<IpNet, IpamError> {
        for p in self.pools.iter_mut().filter(|p| p.family == family) {
            if let Some(i) = p.bitmap.allocate() {
                return Ok(p.subnet(i));
            }
        }
        let ranges: Vec<String> = self
            .pools
            .iter()
            .filter(|p| p.family == family)
            .map(|p| p.cidr.to_string())
            .collect();
        Err(IpamError::Exhausted {
            range: format!("{family} cluster CIDR {}", ranges.join(", ")),
        })
    }

    /// One subnet per configured family (IPv4 first), all or nothing.
    pub fn allocate(&mut self) -> Result<Vec<IpNet>, IpamError> {
        let mut got = Vec::with_capacity(2);
        for family in self.families() {
            match self.allocate_family(family) {
                Ok(s) => got.push(s),
                Err(e) => {
                    for s in &got {
                        let _ = self.release(*s);
                    }
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    fn locate(&self, subnet: IpNet) -> Result<(usize, u64), IpamError> {
        for (pi, p) in self.pools.iter().enumerate() {
            if let Some(i) = p.index_of(subnet)? {
                return Ok((pi, i));
            }
        }
        if !self.families().contains(&Family::of_net(&subnet)) {
            return Err(IpamError::FamilyNotConfigured {
                family: Family::of_net(&subnet),
                value: subnet.to_string(),
            });
        }
        let ranges: Vec<String> = self.pools.iter().map(|p| p.cidr.to_string()).collect();
        Err(IpamError::OutOfRange {
            value: subnet.to_string(),
            range: format!("cluster CIDRs {}", ranges.join(", ")),
        })
    }

    /// Records a subnet read from a node's annotation (restart).
    pub fn mark_allocated(&mut self, subnet: IpNet) -> Result<(), IpamError> {
        let (pi, i) = self.locate(subnet)?;
        let p = &mut self.pools[pi];
        if !p.bitmap.set(i) {
            return Err(IpamError::AlreadyAllocated {
                value: subnet.to_string(),
                range: format!("cluster CIDR {}", p.cidr),
            });
        }
        Ok(())
    }

    /// Frees a node's subnet; `Ok(false)` if it was not allocated.
    pub fn release(&mut self, subnet: IpNet) -> Result<bool, IpamError> {
        let (pi, i) = self.locate(subnet)?;
        Ok(self.pools[pi].bitmap.clear(i))
    }

    pub fn is_allocated(&self, subnet: IpNet) -> bool {
        self.locate(subnet)
            .map(|(pi, i)| self.pools[pi].bitmap.is_set(i))
            .unwrap_or(false)
    }

    /// Every allocated subnet, pool by pool, ascending.
    pub fn allocated(&self) -> Vec<IpNet> {
        self.pools.iter().flat_map(|p| p.allocated()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ovn_k_format() {
        let c: ClusterCidr = "10.128.0.0/14/23".parse().unwrap();
        assert_eq!(c.cidr, net("10.128.0.0/14"));
        assert_eq!(c.host_prefix, 23);
        assert_eq!(c.to_string(), "10.128.0.0/14/23");
        assert_eq!(
            "fd00:10:244::/48"
                .parse::<ClusterCidr>()
                .unwrap()
                .host_prefix,
            64
        );
        assert_eq!(
            "10.244.0.0/16".parse::<ClusterCidr>().unwrap(),
            ClusterCidr::default_v4()
        );
        for bad in [
            "10.244.0.0/16/8",
            "10.244.0.0/16/33",
            "x/16/24",
            "10.244.0.0/16/y",
        ] {
            assert!(bad.parse::<ClusterCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dual_stack_subnets_in_order() {
        let mut a = ClusterSubnetAllocator::new(&[
            "10.244.0.0/16/24".parse().unwrap(),
            "fd00:10:244::/48/64".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            a.allocate().unwrap(),
            vec![net("10.244.0.0/24"), net("fd00:10:244::/64")]
        );
        assert_eq!(
            a.allocate().unwrap(),
            vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")]
        );
        assert_eq!(a.release(net("10.244.0.0/24")), Ok(true));
        assert_eq!(a.release(net("10.244.0.0/24")), Ok(false));
        assert!(a.is_allocated(net("fd00:10:244:1::/64")));
    }

    #[test]
    fn exhaustion_rolls_back_and_moves_to_next_cidr() {
        // v4 has 2 subnets, v6 has 1.
        let mut a = ClusterSubnetAllocator::new(&[
            "10.0.0.0/23/24".parse().unwrap(),
            "fd00::/64/65".parse().unwrap(),
            "10.1.0.0/24/24".parse().unwrap(),
        ])
        .unwrap();
        let _ = a.allocate().unwrap();
        let _ = a.allocate().unwrap();
        assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
        // No v4 subnet leaked by the failed dual-stack allocation: 10.1.0.0/24 is still free.
        assert!(!a.is_allocated(net("10.1.0.0/24")));
        assert_eq!(a.release(net("fd00::/65")), Ok(true));
        assert_eq!(
            a.allocate().unwrap(),
            vec![net("10.1.0.0/24"), net("fd00::/65")]
        );
    }

    #[test]
    fn mark_errors() {
        let mut a = ClusterSubnetAllocator::new(&[ClusterCidr::default_v4()]).unwrap();
        a.mark_allocated(net("10.244.5.0/24")).unwrap();
        assert!(matches!(
            a.mark_allocated(net("10.244.5.0/24")),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        assert!(matches!(
            a.mark_allocated(net("10.244.5.0/25")),
            Err(IpamError::Misaligned { .. })
        ));
        assert!(matches!(
            a.mark_allocated(net("10.244.5.7/24")),
            Err(IpamError::Misaligned { .. })
        ));
        assert!(matches!(
            a.mark_allocated(net("10.245.0.0/24")),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.mark_allocated(net("fd00::/64")),
            Err(IpamError::FamilyNotConfigured { .. })
        ));
        // Allocation skips the marked subnet.
        for _ in 0..5 {
            a.allocate().unwrap();
        }
        assert_eq!(a.allocate().unwrap(), vec![net("10.244.6.0/24")]);
        assert!(ClusterSubnetAllocator::new(&[
            "10.0.0.0/8/24".parse().unwrap(),
            "10.1.0.0/16/24".parse().unwrap()
        ])
        .is_err());
    }
}
