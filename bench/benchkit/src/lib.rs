//! Support shared by the benchmark commands in `bench/`: one copy of the helpers they all
//! need, so every bench computes its figures the same way.
//!
//! * [`percentile`] / [`percentile_of`]: nearest-rank percentiles of sorted samples;
//! * [`thousands`]: `12345` → `"12,345"`;
//! * [`status_kib`] / [`pid_status_kib`]: `VmHWM`, `VmRSS`, … from `/proc/<pid>/status`;
//! * [`raw::RawConn`]: the floor client, pre-serialized JSON-RPC over a plain unix socket;
//! * with feature `cluster`: [`MemKube`] (in-memory `KubeOps`), [`node`] (a synthetic
//!   annotated Node), [`controller`], [`desired_groups`] and [`FloorDb`] (the floor as one
//!   transaction through the controller's NB client).

pub mod raw;

#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "cluster")]
pub use cluster::*;

use std::time::Duration;

/// The value at fraction `p` (0.0–1.0) of `sorted`: index `round((len - 1) · p)`, clamped.
/// `None` when there are no samples.
pub fn percentile_of<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// [`percentile_of`] for latencies; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    percentile_of(sorted, p).unwrap_or(Duration::ZERO)
}

/// `n` with commas between groups of three digits.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A KiB figure of this process's `/proc/self/status`, by field name (`"VmHWM"`, `"VmRSS"`);
/// 0 when it cannot be read.
pub fn status_kib(field: &str) -> u64 {
    read_status_kib("/proc/self/status", field)
}

/// [`status_kib`] for another process (e.g. a child server).
pub fn pid_status_kib(pid: u32, field: &str) -> u64 {
    read_status_kib(&format!("/proc/{pid}/status"), field)
}

fn read_status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_round_to_the_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(6));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile_of(&[1.0, 2.0, 3.0], 0.5), Some(2.0));
        assert_eq!(percentile_of::<f64>(&[], 0.5), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn status_fields_are_read() {
        assert!(status_kib("VmHWM") > 0);
        assert!(status_kib("VmRSS") > 0);
        assert_eq!(status_kib("NoSuchField"), 0);
        assert!(pid_status_kib(std::process::id(), "VmRSS") > 0);
    }
}
