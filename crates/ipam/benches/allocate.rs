//! Allocation throughput of the pod address and node subnet allocators.
//! Goal: allocation stays O(1) amortized, i.e. the per-address cost of
//! filling a 65k-address subnet is about the same as filling a /24, and a
//! churning, nearly full subnet does not degrade to a linear scan per call.

use std::hint::black_box;
use std::time::Instant;

use ipam::{ClusterCidr, ClusterSubnetAllocator, SubnetIpAllocator};

fn report(name: &str, ops: u64, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<48} {ops:>9} ops {ns:>9.1} ns/op");
}

fn fill(subnet: &str) -> Result<(), ipam::IpamError> {
    let mut a = SubnetIpAllocator::new(
        subnet
            .parse()
            .map_err(|e| ipam::IpamError::InvalidConfig(format!("{e}")))?,
    )?;
    let start = Instant::now();
    let mut n = 0;
    while let Ok(ip) = a.allocate() {
        black_box(ip);
        n += 1;
    }
    report(&format!("fill {subnet}"), n, start);
    Ok(())
}

fn churn_nearly_full() -> Result<(), ipam::IpamError> {
    let subnet = "fd00:10:244:2::/64"
        .parse()
        .map_err(|e| ipam::IpamError::InvalidConfig(format!("{e}")))?;
    let mut a = SubnetIpAllocator::new(subnet)?;
    let mut held = Vec::new();
    while let Ok(ip) = a.allocate() {
        held.push(ip.addr());
    }
    // Free every 64th address, then release/allocate in a loop: each allocate
    // must find the next hole without rescanning from the start.
    let holes: Vec<_> = held.iter().step_by(64).copied().collect();
    for ip in &holes {
        a.release(*ip)?;
    }
    let rounds = 200_000u64;
    let start = Instant::now();
    for i in 0..rounds {
        let ip = a.allocate()?;
        black_box(ip);
        let victim = holes[(i as usize) % holes.len()];
        if a.is_allocated(victim) {
            a.release(victim)?;
        } else {
            a.release(ip.addr())?;
        }
    }
    report(
        "churn on a 98%-full 65k subnet (alloc+release)",
        rounds,
        start,
    );
    Ok(())
}

fn node_subnets() -> Result<(), ipam::IpamError> {
    let mut a = ClusterSubnetAllocator::new(&[
        "10.0.0.0/8/24".parse::<ClusterCidr>()?,
        "fd00::/40/64".parse()?,
    ])?;
    let start = Instant::now();
    let n = 60_000u64;
    for _ in 0..n {
        black_box(a.allocate()?);
    }
    report(
        "dual-stack node subnets from 10.0.0.0/8, fd00::/40",
        n,
        start,
    );
    Ok(())
}

fn main() -> Result<(), ipam::IpamError> {
    fill("10.244.1.0/24")?;
    fill("10.244.0.0/16")?;
    fill("fd00:10:244:2::/64")?;
    churn_nearly_full()?;
    node_subnets()?;
    Ok(())
}
