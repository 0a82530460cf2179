//! Properties of the allocators under random operation sequences.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam::*;
use ipnet::IpNet;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Release the n-th (mod len) currently held item.
    Release(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![3 => Just(Op::Allocate), 1 => any::<usize>().prop_map(Op::Release)],
        0..600,
    )
}

fn subnets() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (24u8..=29).prop_map(|p| format!("10.244.1.0/{p}").parse::<IpNet>().unwrap()),
        (116u8..=126).prop_map(|p| format!("fd00:10:244:2::/{p}").parse::<IpNet>().unwrap()),
    ]
}

fn reserved(subnet: IpNet, ip: IpAddr) -> bool {
    let net = subnet.network();
    let off = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(a), IpAddr::V6(n)) => u128::from(a) - u128::from(n),
        _ => return true,
    };
    off <= 2 || (ip.is_ipv4() && ip == subnet.broadcast())
}

proptest! {
    /// Never the same address twice, never a reserved one, releases make room,
    /// and the allocator's view matches the model.
    #[test]
    fn pod_ips_unique_and_never_reserved(subnet in subnets(), ops in ops()) {
        let mut a = SubnetIpAllocator::new(subnet).unwrap();
        let mut held: Vec<IpAddr> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => match a.allocate() {
                    Ok(ip) => {
                        prop_assert!(subnet.contains(&ip.addr()));
                        prop_assert_eq!(ip.prefix_len(), subnet.prefix_len());
                        prop_assert!(!reserved(subnet, ip.addr()), "reserved {} handed out", ip);
                        prop_assert!(!held.contains(&ip.addr()), "{} handed out twice", ip);
                        held.push(ip.addr());
                    }
                    Err(IpamError::Exhausted { .. }) => prop_assert_eq!(held.len() as u64, a.capacity()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Release(n) if !held.is_empty() => {
                    let ip = held.swap_remove(n % held.len());
                    prop_assert_eq!(a.release(ip), Ok(true));
                    // Room again: the next allocation must succeed.
                    let again = a.allocate().unwrap();
                    prop_assert!(!held.contains(&again.addr()));
                    held.push(again.addr());
                }
                Op::Release(_) => {}
            }
            prop_assert_eq!(a.allocated_count(), held.len() as u64);
        }
        let mut sorted = held.clone();
        sorted.sort();
        prop_assert_eq!(a.allocated(), sorted);
    }

    /// Rebuilding from the list of existing allocations (restart) gives the
    /// same state, and the rebuilt allocator never hands out a held address.
    #[test]
    fn rebuild_gives_same_state(subnet in subnets(), ops in ops()) {
        let mut a = SubnetIpAllocator::new(subnet).unwrap();
        let mut held: Vec<IpAddr> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => if let Ok(ip) = a.allocate() { held.push(ip.addr()) },
                Op::Release(n) if !held.is_empty() => { let ip = held.swap_remove(n % held.len()); a.release(ip).unwrap(); }
                Op::Release(_) => {}
            }
        }
        let mut b = SubnetIpAllocator::new(subnet).unwrap();
        for ip in &held {
            b.mark_allocated(*ip).unwrap();
        }
        prop_assert_eq!(a.allocated(), b.allocated());
        prop_assert_eq!(a.allocated_count(), b.allocated_count());
        // Duplicates are reported, not absorbed.
        if let Some(ip) = held.first() {
            let dup_is_error = matches!(b.mark_allocated(*ip), Err(IpamError::AlreadyAllocated { .. }));
            prop_assert!(dup_is_error);
        }
        let set: BTreeSet<IpAddr> = held.iter().copied().collect();
        while let Ok(ip) = b.allocate() {
            prop_assert!(!set.contains(&ip.addr()));
        }
        prop_assert_eq!(b.allocated_count(), b.capacity());
    }

    /// Excluded ranges and disabled reservations are honoured under churn.
    #[test]
    fn excluded_ranges_never_handed_out(ex_off in 0u32..256, ex_len in 26u8..=30, gw in any::<bool>(), ops in ops()) {
        let subnet: IpNet = "10.9.0.0/24".parse().unwrap();
        let ex_base = u32::from(std::net::Ipv4Addr::new(10, 9, 0, 0)) + ex_off;
        let excluded: IpNet = IpNet::new(IpAddr::V4(ex_base.into()), ex_len).unwrap().trunc();
        let opts = SubnetOptions { reserve_gateway: gw, reserve_management: true, excluded: vec![excluded] };
        let mut a = SubnetIpAllocator::with_options(subnet, opts).unwrap();
        let mut held: Vec<IpAddr> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => if let Ok(ip) = a.allocate() {
                    let ip = ip.addr();
                    prop_assert!(!excluded.contains(&ip), "{} is in excluded {}", ip, excluded);
                    prop_assert!(ip != subnet.network() && ip != subnet.broadcast());
                    if gw { prop_assert_ne!(ip.to_string(), "10.9.0.1"); }
                    prop_assert_ne!(ip.to_string(), "10.9.0.2");
                    prop_assert!(!held.contains(&ip));
                    held.push(ip);
                } else {
                    prop_assert_eq!(held.len() as u64, a.capacity());
                },
                Op::Release(n) if !held.is_empty() => { let ip = held.swap_remove(n % held.len()); prop_assert_eq!(a.release(ip), Ok(true)); }
                Op::Release(_) => {}
            }
        }
    }

    /// Node subnets: unique, aligned, inside the cluster CIDR; rebuild matches.
    #[test]
    fn node_subnets_unique_and_rebuildable(host in 24u8..=28, ops in ops()) {
        let cidr = ClusterCidr::new("10.244.0.0/22".parse().unwrap(), host).unwrap();
        let mut a = ClusterSubnetAllocator::new(&[cidr]).unwrap();
        let mut held: Vec<IpNet> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => if let Ok(s) = a.allocate() {
                    prop_assert_eq!(s.len(), 1);
                    prop_assert!(cidr.cidr.contains(&s[0]));
                    prop_assert_eq!(s[0].prefix_len(), host);
                    prop_assert_eq!(s[0].trunc(), s[0]);
                    prop_assert!(!held.contains(&s[0]));
                    held.push(s[0]);
                },
                Op::Release(n) if !held.is_empty() => { let s = held.swap_remove(n % held.len()); prop_assert_eq!(a.release(s), Ok(true)); }
                Op::Release(_) => {}
            }
        }
        let mut b = ClusterSubnetAllocator::new(&[cidr]).unwrap();
        for s in &held {
            b.mark_allocated(*s).unwrap();
        }
        prop_assert_eq!(a.allocated(), b.allocated());
    }

    /// Node ids: unique, never 0 or 1, rebuild matches.
    #[test]
    fn node_ids_unique(max in 2u32..200, ops in ops()) {
        let mut a = NodeIdAllocator::new(max).unwrap();
        let mut held: Vec<u32> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => if let Ok(id) = a.allocate() {
                    prop_assert!((FIRST_NODE_ID..=max).contains(&id));
                    prop_assert!(!held.contains(&id));
                    held.push(id);
                } else {
                    prop_assert_eq!(held.len() as u32, max - 1);
                },
                Op::Release(n) if !held.is_empty() => { let id = held.swap_remove(n % held.len()); prop_assert_eq!(a.release(id), Ok(true)); }
                Op::Release(_) => {}
            }
        }
        let mut b = NodeIdAllocator::new(max).unwrap();
        for id in &held {
            b.mark_allocated(*id).unwrap();
        }
        prop_assert_eq!(a.allocated(), b.allocated());
    }

    /// Dual stack: both or neither, and a failed allocation leaks nothing.
    #[test]
    fn dual_stack_all_or_nothing(v4p in 26u8..=29, v6p in 121u8..=126, n in 0usize..80) {
        let mut d = DualStackIpAllocator::new(&[
            format!("10.244.1.0/{v4p}").parse().unwrap(),
            format!("fd00::/{v6p}").parse().unwrap(),
        ]).unwrap();
        let cap = d.family(Family::V4).unwrap().capacity().min(d.family(Family::V6).unwrap().capacity());
        for i in 0..n {
            match d.allocate() {
                Ok(ips) => { prop_assert_eq!(ips.len(), 2); prop_assert!((i as u64) < cap); }
                Err(_) => prop_assert!(i as u64 >= cap),
            }
            let c4 = d.family(Family::V4).unwrap().allocated_count();
            let c6 = d.family(Family::V6).unwrap().allocated_count();
            prop_assert_eq!(c4, c6);
        }
    }
}
