//! Controller configuration: plain fields with serde (config files) and clap (CLI) derives.

use std::path::PathBuf;

use ipam::{ClusterCidr, Family, JoinSubnets};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::ControllerError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, rename_all = "kebab-case")]
pub struct ControllerConfig {
    /// Cluster networks with the per-node prefix, `10.244.0.0/16/24` (one or more per family).
    #[arg(
        long = "cluster-subnets",
        value_delimiter = ',',
        default_value = "10.244.0.0/16/24"
    )]
    pub cluster_subnets: Vec<String>,
    /// Service networks (one per family).
    #[arg(
        long = "service-cidrs",
        value_delimiter = ',',
        default_value = "10.96.0.0/16"
    )]
    pub service_cidrs: Vec<IpNet>,
    /// Join subnets between the cluster router and the gateway routers; a family that has a
    /// cluster subnet but no join subnet here gets OVN-Kubernetes' default (100.64.0.0/16,
    /// fd98::/64).
    #[arg(long = "join-subnets", value_delimiter = ',')]
    pub join_subnets: Vec<IpNet>,
    /// MTU of the pod network.
    #[arg(long, default_value_t = 1400)]
    pub mtu: u32,
    /// NB database remotes (`unix:/path`, `tcp:ip:port`); more than one for a Raft cluster.
    #[arg(
        long = "nb-address",
        value_delimiter = ',',
        default_value = "unix:/var/run/ovn/ovnnb_db.sock"
    )]
    pub nb_remotes: Vec<String>,
    /// TLS files for `ssl:` remotes.
    #[arg(long = "nb-client-privkey")]
    pub nb_tls_key: Option<PathBuf>,
    #[arg(long = "nb-client-cert")]
    pub nb_tls_cert: Option<PathBuf>,
    #[arg(long = "nb-client-cacert")]
    pub nb_tls_ca: Option<PathBuf>,
    /// Name of the physical network of the gateway bridge (`ovn-bridge-mappings`).
    #[arg(long, default_value = "physnet")]
    pub physical_network: String,
    /// Leader election on a coordination.k8s.io/v1 Lease.
    #[arg(long = "leader-elect", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "ovn-kubernetes")]
    pub lease_namespace: String,
    #[arg(long, default_value = "ovn-kubernetes-master")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long)]
    pub identity: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, default_value_t = 10)]
    pub lease_duration_secs: u32,
    /// Maximum number of Kubernetes keys reconciled in one NB transaction.
    #[arg(long, default_value_t = 500)]
    pub max_batch: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_subnets: vec!["10.244.0.0/16/24".into()],
            service_cidrs: vec!["10.96.0.0/16".parse().unwrap_or_default()],
            join_subnets: Vec::new(),
            mtu: 1400,
            nb_remotes: vec!["unix:/var/run/ovn/ovnnb_db.sock".into()],
            nb_tls_key: None,
            nb_tls_cert: None,
            nb_tls_ca: None,
            physical_network: "physnet".into(),
            leader_elect: true,
            lease_namespace: "ovn-kubernetes".into(),
            lease_name: "ovn-kubernetes-master".into(),
            identity: None,
            lease_duration_secs: 10,
            max_batch: 500,
        }
    }
}

/// The configuration checked and parsed once, used by everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub cluster: Vec<ClusterCidr>,
    pub families: Vec<Family>,
    pub service: Vec<IpNet>,
    pub join: JoinSubnets,
    pub mtu: u32,
    pub physical_network: String,
}

impl Resolved {
    /// The cluster networks of one family.
    pub fn cluster_cidrs(&self, f: Family) -> Vec<IpNet> {
        self.cluster
            .iter()
            .filter(|c| Family::of_net(&c.cidr) == f)
            .map(|c| c.cidr)
            .collect()
    }
}

impl ControllerConfig {
    /// A config for the given cluster subnets (tests, benchmarks).
    pub fn with_cluster_subnets(subnets: &[&str]) -> Self {
        ControllerConfig {
            cluster_subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn resolve(&self) -> Result<Resolved, ControllerError> {
        let bad = |m: String| ControllerError::Config(m);
        let mut cluster = Vec::new();
        for s in &self.cluster_subnets {
            let c: ClusterCidr = s
                .parse()
                .map_err(|e| bad(format!("cluster subnet {s:?}: {e}")))?;
            cluster.push(c);
        }
        if cluster.is_empty() {
            return Err(bad("no cluster subnet configured".into()));
        }
        let mut families: Vec<Family> = cluster.iter().map(|c| Family::of_net(&c.cidr)).collect();
        families.sort();
        families.dedup();
        let mut v4: Option<Ipv4Net> = None;
        let mut v6: Option<Ipv6Net> = None;
        for j in &self.join_subnets {
            match j {
                IpNet::V4(n) if v4.is_none() => v4 = Some(n.trunc()),
                IpNet::V6(n) if v6.is_none() => v6 = Some(n.trunc()),
                _ => return Err(bad(format!("two join subnets of the family of {j}"))),
            }
        }
        let join = JoinSubnets {
            v4: families
                .contains(&Family::V4)
                .then(|| v4.unwrap_or(ipam::DEFAULT_JOIN_SUBNET_V4)),
            v6: families
                .contains(&Family::V6)
                .then(|| v6.unwrap_or(ipam::DEFAULT_JOIN_SUBNET_V6)),
        };
        for c in &cluster {
            for j in [join.subnet(Family::V4), join.subnet(Family::V6)]
                .into_iter()
                .flatten()
            {
                if c.cidr.contains(&j.network()) || j.contains(&c.cidr.network()) {
                    return Err(bad(format!("cluster subnet {c} overlaps join subnet {j}")));
                }
            }
        }
        if self.mtu < 576 {
            return Err(bad(format!("MTU {} is too small", self.mtu)));
        }
        Ok(Resolved {
            cluster,
            families,
            service: self.service_cidrs.clone(),
            join,
            mtu: self.mtu,
            physical_network: self.physical_network.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_to_ipv4_only() {
        let r = ControllerConfig::default().resolve().unwrap();
        assert_eq!(r.families, vec![Family::V4]);
        assert_eq!(r.join.v4.unwrap().to_string(), "100.64.0.0/16");
        assert!(r.join.v6.is_none());
    }

    #[test]
    fn dual_stack_gets_both_join_subnets() {
        let c =
            ControllerConfig::with_cluster_subnets(&["10.244.0.0/16/24", "fd00:10:244::/48/64"]);
        let r = c.resolve().unwrap();
        assert_eq!(r.families, vec![Family::V4, Family::V6]);
        assert_eq!(r.join.v6.unwrap().to_string(), "fd98::/64");
    }

    #[test]
    fn overlap_with_join_is_an_error() {
        let c = ControllerConfig::with_cluster_subnets(&["100.64.0.0/10/24"]);
        assert!(c.resolve().is_err());
        let c = ControllerConfig::with_cluster_subnets(&["bogus"]);
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
