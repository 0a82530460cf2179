//! The CNI server's handler: ADD/DEL/CHECK/STATUS/GC for pods on this node.
//!
//! ADD: wait (bounded, on the pod cache) for the pod's `k8s.ovn.org/pod-networks` and
//! check its UID, create the veth ([`NetOps::setup_pod`]), add the host end to br-int
//! with OVN-Kubernetes' `external_ids`, and answer only once ovn-controller has marked
//! the interface `ovn-installed`. A failed ADD removes what it made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use ovnk_annotations::PodNetwork;
use ovnk_cni::{CniError, CniHandler, CniRequest, CniResult, ErrorCode, Interface, IpConfig};
use tokio::sync::watch;

use crate::ovs::{Ovs, PortSpec};
use crate::podnet::{format_mac, NetOps, PodInterfaceSpec, Route};
use crate::pods::{PodCache, PodWaitError};

/// Knobs of the CNI handler (from [`crate::NodeConfig`]).
#[derive(Debug, Clone)]
pub struct CniSettings {
    pub mtu: u32,
    /// Userspace datapath: veth TX checksum offload off.
    pub tx_checksum_off: bool,
    pub pod_annotation_timeout: Duration,
    pub ovn_installed_timeout: Duration,
    /// The node's network namespace; a request naming it (or the agent's own) is refused.
    pub node_netns: Option<PathBuf>,
}

/// OVN-Kubernetes names the host end after the sandbox: its first 15 characters.
pub fn host_ifname(container_id: &str) -> String {
    container_id.chars().take(15).collect()
}

/// The OVN logical switch port of a pod.
pub fn iface_id(namespace: &str, pod: &str) -> String {
    format!("{namespace}_{pod}")
}

/// The pod interface as the annotation describes it.
pub fn pod_interface_spec(
    net: &PodNetwork,
    netns: &Path,
    ifname: &str,
    host_if: &str,
    settings: &CniSettings,
) -> PodInterfaceSpec {
    let mut routes = Vec::new();
    for gw in &net.gateway_ips {
        let default: IpNet = match gw {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        routes.push(Route {
            dest: default,
            via: Some(*gw),
        });
    }
    for r in &net.routes {
        routes.push(Route {
            dest: r.dest,
            via: r.next_hop,
        });
    }
    PodInterfaceSpec {
        netns: netns.display().to_string(),
        ifname: ifname.to_string(),
        host_ifname: host_if.to_string(),
        mac: net.mac_address.0,
        mtu: settings.mtu,
        addresses: net.ip_addresses.clone(),
        routes,
        tx_checksum_off: settings.tx_checksum_off,
    }
}

/// The Interface `external_ids` OVN-Kubernetes sets on a pod port.
pub fn pod_port_spec(
    namespace: &str,
    pod: &str,
    uid: &str,
    container_id: &str,
    host_if: &str,
    net: &PodNetwork,
) -> PortSpec {
    let mut ids = BTreeMap::new();
    ids.insert("iface-id".to_string(), iface_id(namespace, pod));
    ids.insert("iface-id-ver".to_string(), uid.to_string());
    ids.insert("attached_mac".to_string(), net.mac_address.to_string());
    ids.insert("sandbox".to_string(), container_id.to_string());
    if !net.ip_addresses.is_empty() {
        let ips: Vec<String> = net.ip_addresses.iter().map(|a| a.to_string()).collect();
        ids.insert("ip_addresses".to_string(), ips.join(","));
    }
    let mut port_other = BTreeMap::new();
    // Scrubbed by OVS on a hard reboot, like upstream's pod ports.
    port_other.insert("transient".to_string(), "true".to_string());
    PortSpec {
        name: host_if.to_string(),
        internal: false,
        external_ids: ids,
        mac: None,
        mtu_request: None,
        port_other_config: port_other,
    }
}

fn result_for(
    req: &CniRequest,
    net: &PodNetwork,
    spec: &PodInterfaceSpec,
    host_mac: &[u8; 6],
) -> CniResult {
    let netns = req.netns.as_ref().map(|p| p.display().to_string());
    CniResult {
        interfaces: vec![
            Interface {
                name: spec.host_ifname.clone(),
                mac: Some(format_mac(host_mac)),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: spec.ifname.clone(),
                mac: Some(format_mac(&spec.mac)),
                mtu: Some(spec.mtu),
                sandbox: netns,
            },
        ],
        ips: net
            .ip_addresses
            .iter()
            .map(|a| IpConfig {
                address: *a,
                gateway: net
                    .gateway_ips
                    .iter()
                    .find(|g| g.is_ipv4() == a.addr().is_ipv4())
                    .copied(),
                interface: Some(1),
            })
            .collect(),
        routes: spec
            .routes
            .iter()
            .map(|r| ovnk_cni::Route {
                dst: r.dest,
                gw: r.via,
                mtu: None,
            })
            .collect(),
        dns: Default::default(),
    }
}

fn pod_wait_to_cni(e: PodWaitError) -> CniError {
    let code = match &e {
        PodWaitError::UidMismatch { .. } => ErrorCode::InvalidEnvironment,
        PodWaitError::PodNotFound { .. } | PodWaitError::NoAnnotation { .. } => ErrorCode::Timeout,
        PodWaitError::BadAnnotation { .. } => ErrorCode::NodeAgentFailure,
    };
    CniError::new(code, e.to_string())
}

/// The node agent's [`CniHandler`].
pub struct CniAgent<N: NetOps> {
    net: Arc<N>,
    ovs: Ovs,
    pods: Arc<PodCache>,
    settings: CniSettings,
    /// True once the node's subnets are known and the management port is up.
    ready: watch::Receiver<bool>,
    /// One request at a time per container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl<N: NetOps> CniAgent<N> {
    pub fn new(
        net: Arc<N>,
        ovs: Ovs,
        pods: Arc<PodCache>,
        settings: CniSettings,
        ready: watch::Receiver<bool>,
    ) -> Self {
        CniAgent {
            net,
            ovs,
            pods,
            settings,
            ready,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn container_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Drop entries nobody holds, so the map does not grow with every sandbox.
        g.retain(|_, m| Arc::strong_count(m) > 1);
        g.entry(id.to_string()).or_default().clone()
    }

    /// Refuses a netns path that does not exist or that is the node's own (a pod's
    /// eth0 must never land in the node namespace). Whether it is a namespace at all is
    /// checked by [`NetOps::setup_pod`] when it opens it.
    fn check_netns(&self, netns: &Path) -> Result<(), CniError> {
        let bad =
            |why: String| CniError::invalid_env(format!("CNI_NETNS {}: {why}", netns.display()));
        let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let req = id(netns).map_err(|e| bad(e.to_string()))?;
        let own = [
            Some(PathBuf::from("/proc/self/ns/net")),
            self.settings.node_netns.clone(),
        ];
        for p in own.iter().flatten() {
            if id(p).ok() == Some(req) {
                return Err(bad("is the node's own network namespace".into()));
            }
        }
        Ok(())
    }

    async fn remove(&self, names: &[String]) -> Result<(), CniError> {
        self.ovs
            .del_ports(names)
            .await
            .map_err(|e| CniError::failure(e.to_string()))?;
        for n in names {
            self.net
                .teardown_pod(n)
                .await
                .map_err(|e| CniError::failure(format!("deleting veth {n}: {e}")))?;
        }
        Ok(())
    }

    /// Removes the OVS ports (and veths) of pods that no longer exist or were
    /// re-created with another UID. Needs a synced pod cache; returns what it removed.
    pub async fn remove_stale_ports(&self) -> Result<Vec<String>, CniError> {
        if !self.pods.is_synced() {
            return Err(CniError::failure("pod list not synced yet"));
        }
        let mut stale = Vec::new();
        for p in self.ovs.pod_ports() {
            let alive = p
                .iface_id
                .as_deref()
                .and_then(|id| id.split_once('_'))
                .is_some_and(|(ns, name)| {
                    self.pods
                        .get(ns, name)
                        .is_some_and(|e| p.iface_id_ver.as_deref().is_none_or(|v| v == e.uid))
                });
            if !alive {
                stale.push(p.name);
            }
        }
        self.remove(&stale).await?;
        Ok(stale)
    }
}

impl<N: NetOps> CniHandler for CniAgent<N> {
    async fn add(&self, req: CniRequest) -> Result<CniResult, CniError> {
        let (Some(ns), Some(name)) = (&req.args.pod_namespace, &req.args.pod_name) else {
            return Err(CniError::invalid_env(
                "CNI_ARGS needs K8S_POD_NAMESPACE and K8S_POD_NAME",
            ));
        };
        let pod = format!("{ns}/{name}");
        let netns = req
            .netns
            .clone()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
        self.check_netns(&netns)?;
        let lock = self.container_lock(&req.container_id);
        let _held = lock.lock().await;

        let (uid, net) = self
            .pods
            .wait_pod_network(
                ns,
                name,
                req.args.pod_uid.as_deref(),
                self.settings.pod_annotation_timeout,
            )
            .await
            .map_err(pod_wait_to_cni)?;
        let host_if = host_ifname(&req.container_id);
        let spec = pod_interface_spec(&net, &netns, &req.ifname, &host_if, &self.settings);
        let made =
            self.net.setup_pod(&spec).await.map_err(|e| {
                CniError::failure(format!("pod {pod}: creating its interface: {e}"))
            })?;

        let port = pod_port_spec(ns, name, &uid, &req.container_id, &host_if, &net);
        let events = self.ovs.subscribe();
        let plugged = async {
            self.ovs
                .add_port(&port)
                .await
                .map_err(|e| CniError::failure(format!("pod {pod}: {e}")))?;
            self.ovs
                .wait_installed(events, &host_if, self.settings.ovn_installed_timeout)
                .await
                .map_err(|e| {
                    CniError::new(
                        ErrorCode::Timeout,
                        format!("pod {pod}: OVN did not install its port: {e}"),
                    )
                })
        };
        if let Err(e) = plugged.await {
            // Leave nothing behind for a failed ADD; the runtime's DEL finds nothing.
            if let Err(c) = self.remove(std::slice::from_ref(&host_if)).await {
                tracing::warn!("pod {pod}: cleanup after failed ADD: {c}");
            }
            return Err(e);
        }
        tracing::info!(pod = %pod, iface = %host_if, "pod network ready");
        Ok(result_for(&req, &net, &spec, &made.host_mac))
    }

    async fn del(&self, req: CniRequest) -> Result<(), CniError> {
        let lock = self.container_lock(&req.container_id);
        let _held = lock.lock().await;
        let host_if = host_ifname(&req.container_id);
        let mut names: Vec<String> = self
            .ovs
            .pod_ports()
            .into_iter()
            .filter(|p| p.sandbox == req.container_id)
            .map(|p| p.name)
            .collect();
        if !names.contains(&host_if) {
            names.push(host_if);
        }
        self.remove(&names).await
    }

    async fn check(&self, req: CniRequest) -> Result<(), CniError> {
        let (Some(ns), Some(name)) = (&req.args.pod_namespace, &req.args.pod_name) else {
            return Err(CniError::invalid_env(
                "CNI_ARGS needs K8S_POD_NAMESPACE and K8S_POD_NAME",
            ));
        };
        let pod = format!("{ns}/{name}");
        let netns = req
            .netns
            .clone()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;
        let (_, net) = self
            .pods
            .wait_pod_network(
                ns,
                name,
                req.args.pod_uid.as_deref(),
                Duration::from_secs(5),
            )
            .await
            .map_err(pod_wait_to_cni)?;
        let host_if = host_ifname(&req.container_id);
        let spec = pod_interface_spec(&net, &netns, &req.ifname, &host_if, &self.settings);
        self.net
            .check_pod(&spec)
            .await
            .map_err(|e| CniError::failure(format!("pod {pod}: {e}")))?;
        let want = iface_id(ns, name);
        let row = self.ovs.interface(&host_if).ok_or_else(|| {
            CniError::failure(format!("pod {pod}: OVS port {host_if} is missing"))
        })?;
        let ids = row
            .get("external_ids")
            .map(ovsdb::Value::to_string_map)
            .unwrap_or_default();
        if ids.get("iface-id") != Some(&want) {
            return Err(CniError::failure(format!(
                "pod {pod}: OVS port {host_if} has iface-id {:?}, expected {want}",
                ids.get("iface-id")
            )));
        }
        if !self.ovs.is_installed(&host_if) {
            return Err(CniError::failure(format!(
                "pod {pod}: OVS port {host_if} is not ovn-installed"
            )));
        }
        Ok(())
    }

    async fn status(&self, _req: CniRequest) -> Result<(), CniError> {
        if !self.ovs.is_connected() {
            return Err(CniError::new(
                ErrorCode::PluginNotAvailable,
                format!("not connected to the OVS database {}", self.ovs.db()),
            ));
        }
        if !*self.ready.borrow() {
            return Err(CniError::new(
                ErrorCode::PluginNotAvailable,
                "node not ready: its k8s.ovn.org/node-subnets are not known yet",
            ));
        }
        Ok(())
    }

    async fn gc(&self, req: CniRequest) -> Result<(), CniError> {
        // Without the list there is nothing safe to do: everything would look stale.
        let Some(valid) = &req.config.valid_attachments else {
            return Ok(());
        };
        let keep: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let stale: Vec<String> = self
            .ovs
            .pod_ports()
            .into_iter()
            .filter(|p| !keep.contains(p.sandbox.as_str()))
            .map(|p| p.name)
            .collect();
        if !stale.is_empty() {
            tracing::info!("GC: removing ports {stale:?}");
        }
        self.remove(&stale).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovnk_annotations::parse_pod_networks;

    fn net() -> PodNetwork {
        let text = r#"{"default":{"ip_addresses":["10.244.1.5/24"],"mac_address":"0a:58:0a:f4:01:05","gateway_ips":["10.244.1.1"],"routes":[{"dest":"10.96.0.0/16","nextHop":"10.244.1.1"}],"ip_address":"10.244.1.5/24","gateway_ip":"10.244.1.1"}}"#;
        parse_pod_networks(text)
            .unwrap()
            .default_network()
            .cloned()
            .unwrap()
    }

    fn settings() -> CniSettings {
        CniSettings {
            mtu: 1400,
            tx_checksum_off: true,
            pod_annotation_timeout: Duration::from_secs(1),
            ovn_installed_timeout: Duration::from_secs(1),
            node_netns: None,
        }
    }

    #[test]
    fn host_ifname_is_the_first_15_chars() {
        assert_eq!(host_ifname("0123456789abcdef0123"), "0123456789abcde");
        assert_eq!(host_ifname("short"), "short");
    }

    #[test]
    fn spec_follows_the_annotation() {
        let s = pod_interface_spec(
            &net(),
            Path::new("/run/netns/p"),
            "eth0",
            "abc",
            &settings(),
        );
        assert_eq!(s.mac, [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]);
        assert_eq!(s.addresses, vec!["10.244.1.5/24".parse::<IpNet>().unwrap()]);
        assert_eq!(s.mtu, 1400);
        assert!(s.tx_checksum_off);
        assert_eq!(
            s.routes,
            vec![
                Route {
                    dest: "0.0.0.0/0".parse().unwrap(),
                    via: Some("10.244.1.1".parse().unwrap())
                },
                Route {
                    dest: "10.96.0.0/16".parse().unwrap(),
                    via: Some("10.244.1.1".parse().unwrap())
                },
            ]
        );
    }

    #[test]
    fn port_carries_upstream_external_ids() {
        let p = pod_port_spec("ns1", "web-0", "uid-1", "sandbox123", "sandbox123", &net());
        let ids = &p.external_ids;
        assert_eq!(ids["iface-id"], "ns1_web-0");
        assert_eq!(ids["iface-id-ver"], "uid-1");
        assert_eq!(ids["attached_mac"], "0a:58:0a:f4:01:05");
        assert_eq!(ids["sandbox"], "sandbox123");
        assert_eq!(ids["ip_addresses"], "10.244.1.5/24");
        assert!(!p.internal);
    }
}
