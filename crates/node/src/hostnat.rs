//! The host's own connections to its NodePorts and to external IPs. They never leave the
//! kernel (the node IP is local), so breth0's flows cannot steer them to the gateway
//! router. As upstream does with iptables, an nftables table `ip ovnk` in the node's
//! namespace DNATs them to the service's ClusterIP, which the management port routes
//! into the node switch's balancers, and SNATs them to the management port's address on
//! the way out, so that replies come back through the switch that balanced them.
//!
//! [`host_nat_table`] computes the table (pure); [`run`] keeps it in place through a
//! [`HostNat`] (the nf_tables seam; [`ovnk_nft::NftSocket`] is the real one).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ovnk_nft::{DnatRule, NatTable, NftError, NftSocket, SnatRule, L4};
use ovnk_openflow::L4Proto;
use tokio::sync::watch;

use crate::gateway::ServiceView;
use crate::kube_watch::ServiceMap;
use crate::mgmt::MGMT_PORT;

/// The table ovnk owns (replaced whole on every change).
pub const TABLE: &str = "ovnk";
/// How often the table is rewritten even without a change (someone may have flushed it).
pub const REASSERT_INTERVAL: Duration = Duration::from_secs(30);

fn l4(p: L4Proto) -> L4 {
    match p {
        L4Proto::Tcp => L4::Tcp,
        L4Proto::Udp => L4::Udp,
        L4Proto::Sctp => L4::Sctp,
    }
}

/// The table for these services (pure). IPv4 only, like the gateway bridge's flows.
pub fn host_nat_table<'a>(
    node_ip: Ipv4Addr,
    mgmt_ip: Ipv4Addr,
    services: impl IntoIterator<Item = &'a ServiceView>,
) -> NatTable {
    let mut output = BTreeSet::new();
    for s in services {
        let Some(cluster_ip) = s.cluster_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }) else {
            continue;
        };
        for &(proto, port, node_port) in &s.ports {
            let to = |daddr, dport| DnatRule {
                daddr,
                proto: l4(proto),
                dport,
                to_addr: cluster_ip,
                to_port: port,
            };
            if let Some(np) = node_port {
                output.insert(to(node_ip, np));
            }
            for ext in &s.external_ips {
                if let IpAddr::V4(e) = ext {
                    output.insert(to(*e, port));
                }
            }
        }
    }
    NatTable {
        name: TABLE.into(),
        output: output.into_iter().collect(),
        postrouting: vec![SnatRule {
            oif: MGMT_PORT.into(),
            saddr: node_ip,
            to_addr: mgmt_ip,
        }],
    }
}

/// Writes the host's NAT table (a seam: a fake in tests, nf_tables for real).
pub trait HostNat: Send + 'static {
    fn replace(&mut self, table: &NatTable) -> Result<(), NftError>;
}

impl HostNat for NftSocket {
    fn replace(&mut self, table: &NatTable) -> Result<(), NftError> {
        NftSocket::replace(self, table)
    }
}

/// Keeps the table in place, forever: at start, on every change of the services, and
/// every `reassert` (retrying sooner after an error).
pub async fn run<H: HostNat>(
    nat: H,
    node_ip: Ipv4Addr,
    mgmt_ip: Ipv4Addr,
    mut services: watch::Receiver<ServiceMap>,
    reassert: Duration,
) {
    let mut nat = Some(nat);
    let mut applied: Option<(NatTable, Instant)> = None;
    let mut last_error: Option<String> = None;
    loop {
        let desired = {
            let svcs = services.borrow_and_update();
            host_nat_table(node_ip, mgmt_ip, svcs.values())
        };
        let due = match &applied {
            Some((t, at)) => *t != desired || at.elapsed() >= reassert,
            None => true,
        };
        if due {
            let Some(mut n) = nat.take() else { return };
            let t = desired.clone();
            // Netlink here is a blocking socket with a receive timeout.
            let joined = tokio::task::spawn_blocking(move || {
                let r = n.replace(&t);
                (n, r)
            })
            .await;
            let Ok((n, r)) = joined else {
                tracing::error!("host NAT: the writer panicked; giving up");
                return;
            };
            nat = Some(n);
            match r {
                Ok(()) => {
                    if applied.as_ref().map(|(t, _)| t) != Some(&desired) {
                        tracing::info!(
                            "host NAT table {TABLE}: {} NodePort/external IP rules",
                            desired.output.len()
                        );
                    }
                    applied = Some((desired, Instant::now()));
                    last_error = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("host NAT: {msg}; retrying");
                    }
                    last_error = Some(msg);
                    applied = None;
                }
            }
        }
        let wait = if last_error.is_some() {
            Duration::from_secs(1).min(reassert)
        } else {
            reassert
        };
        crate::kube_watch::sleep_or_changed(&mut services, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const MGMT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);

    fn view(cluster: &[&str], ports: &[(L4Proto, u16, Option<u16>)], ext: &[&str]) -> ServiceView {
        ServiceView {
            ports: ports.to_vec(),
            external_ips: ext.iter().map(|s| s.parse().unwrap()).collect(),
            cluster_ips: cluster.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn dnat(daddr: &str, proto: L4, dport: u16, to: &str, to_port: u16) -> DnatRule {
        DnatRule {
            daddr: daddr.parse().unwrap(),
            proto,
            dport,
            to_addr: to.parse().unwrap(),
            to_port,
        }
    }

    #[test]
    fn node_ports_and_external_ips_go_to_the_cluster_ip() {
        let views = [
            view(
                &["10.96.0.10", "fd00:10:96::a"],
                &[
                    (L4Proto::Tcp, 80, Some(30080)),
                    (L4Proto::Udp, 53, Some(30053)),
                ],
                &["192.0.2.5", "2001:db8::5"],
            ),
            // Headless: nothing to DNAT to.
            view(&[], &[(L4Proto::Tcp, 80, Some(30090))], &[]),
            // IPv6 only: the host table is IPv4.
            view(&["fd00:10:96::b"], &[(L4Proto::Tcp, 80, Some(30091))], &[]),
            // ClusterIP without node port or external IP: nothing.
            view(&["10.96.0.11"], &[(L4Proto::Sctp, 9, None)], &[]),
        ];
        let t = host_nat_table(NODE, MGMT, views.iter());
        assert_eq!(t.name, "ovnk");
        assert_eq!(
            t.output,
            vec![
                dnat("172.18.0.2", L4::Tcp, 30080, "10.96.0.10", 80),
                dnat("172.18.0.2", L4::Udp, 30053, "10.96.0.10", 53),
                dnat("192.0.2.5", L4::Tcp, 80, "10.96.0.10", 80),
                dnat("192.0.2.5", L4::Udp, 53, "10.96.0.10", 53),
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(
            t.postrouting,
            vec![SnatRule {
                oif: "ovn-k8s-mp0".into(),
                saddr: NODE,
                to_addr: MGMT,
            }]
        );
    }

    #[derive(Clone, Default)]
    struct FakeNat {
        writes: Arc<Mutex<Vec<NatTable>>>,
        fail_next: Arc<Mutex<u32>>,
    }

    impl HostNat for FakeNat {
        fn replace(&mut self, t: &NatTable) -> Result<(), NftError> {
            let mut f = self.fail_next.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(NftError::NoAck {
                    table: t.name.clone(),
                    what: "add table".into(),
                    timeout: Duration::from_secs(2),
                });
            }
            self.writes.lock().unwrap().push(t.clone());
            Ok(())
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn writes_at_start_on_change_only_and_retries_errors() {
        let fake = FakeNat::default();
        *fake.fail_next.lock().unwrap() = 1;
        let (tx, rx) = watch::channel(ServiceMap::new());
        let task = tokio::spawn(run(
            fake.clone(),
            NODE,
            MGMT,
            rx,
            Duration::from_millis(300),
        ));
        // The first write fails, the retry (within a second) lands the SNAT-only table.
        for _ in 0..200 {
            if !fake.writes.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = fake.writes.lock().unwrap().clone();
        assert_eq!(first.len(), 1);
        assert!(first[0].output.is_empty());
        // A service appears: one more write, with its rule.
        let mut m = BTreeMap::new();
        m.insert(
            ("ns".to_string(), "web".to_string()),
            view(&["10.96.0.10"], &[(L4Proto::Tcp, 80, Some(30080))], &[]),
        );
        tx.send_replace(m.clone());
        settle().await;
        assert_eq!(fake.writes.lock().unwrap().len(), 2);
        assert_eq!(fake.writes.lock().unwrap()[1].output.len(), 1);
        // The same map again: nothing is written before the re-assert interval.
        tx.send_replace(m);
        settle().await;
        assert_eq!(fake.writes.lock().unwrap().len(), 2);
        // After the interval the table is written again (someone may have flushed it).
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(fake.writes.lock().unwrap().len() >= 3);
        task.abort();
    }
}
