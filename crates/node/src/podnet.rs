//! Pod interfaces: the veth pair between a pod's namespace and the node, and the
//! host-side links (management port) the node agent configures.
//!
//! Everything with a side effect goes through [`NetOps`], so the CNI logic is tested
//! with [`crate::fake::FakeNet`] without root; [`Netlink`] is the real thing.

use std::future::Future;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::NetError;
use ovnk_netns::ethtool;
use ovnk_netns::NetNs;

/// A MAC address.
pub type Mac = [u8; 6];

/// A route to install: destination and optional next hop (none = on-link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dest: IpNet,
    pub via: Option<IpAddr>,
}

/// What a pod's interface must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterfaceSpec {
    /// Path of the pod's network namespace (CNI_NETNS).
    pub netns: String,
    /// Interface name inside the pod (CNI_IFNAME, usually `eth0`).
    pub ifname: String,
    /// Name of the host end in the node namespace (OVN-K: first 15 chars of the container id).
    pub host_ifname: String,
    pub mac: Mac,
    pub mtu: u32,
    /// Addresses with their prefix length, one per family.
    pub addresses: Vec<IpNet>,
    pub routes: Vec<Route>,
    /// Turn TX checksum offload off on both ends (userspace datapath).
    pub tx_checksum_off: bool,
}

/// What was created, for the CNI result and the OVS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub host_ifname: String,
    pub host_mac: Mac,
    pub pod_ifname: String,
    pub pod_mac: Mac,
}

/// A host-side link (e.g. the management port `ovn-k8s-mp0`) to configure in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLinkSpec {
    pub name: String,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<Route>,
}

/// The network side effects of the node agent.
pub trait NetOps: Send + Sync + 'static {
    /// Creates (or re-creates) the pod's veth pair and configures the pod end.
    fn setup_pod(
        &self,
        spec: &PodInterfaceSpec,
    ) -> impl Future<Output = Result<PodInterface, NetError>> + Send;
    /// Removes the host end (and so the pair). Succeeds when it is already gone.
    fn teardown_pod(&self, host_ifname: &str) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Verifies the pod end: exists, MAC, addresses and routes as in `spec`.
    fn check_pod(
        &self,
        spec: &PodInterfaceSpec,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Brings a host link to the given MAC, MTU, addresses and routes (idempotent).
    fn configure_host_link(
        &self,
        spec: &HostLinkSpec,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Whether a link of this name exists in the node namespace.
    fn link_exists(&self, name: &str) -> impl Future<Output = Result<bool, NetError>> + Send;
}

/// The real [`NetOps`]: rtnetlink in the node's namespace (the agent's own).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The node's namespace: host ends live here.
    node_ns: std::sync::Arc<NetNs>,
}

impl Netlink {
    /// Binds to the current namespace (where `ovnk node` runs). Call inside a tokio runtime.
    pub fn new() -> Result<Self, NetError> {
        Self::in_netns(NetNs::current()?)
    }

    /// Binds to another namespace as the node's (the lab and tests use this).
    pub fn in_netns(node_ns: NetNs) -> Result<Self, NetError> {
        let handle = node_ns.rtnetlink()?;
        Ok(Self {
            handle,
            node_ns: std::sync::Arc::new(node_ns),
        })
    }
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    link_by_name(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| NetError::LinkNotFound(name.to_string()))
}

fn link_mac(link: &LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(b);
            Some(m)
        }
        _ => None,
    })
}

async fn add_addresses(handle: &Handle, index: u32, addrs: &[IpNet]) -> Result<(), NetError> {
    for a in addrs {
        let mut req = handle
            .address()
            .add(index, a.addr(), a.prefix_len())
            .replace();
        if a.addr().is_ipv6() {
            // No DAD: the pod must be usable the moment CNI ADD returns.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await?;
    }
    Ok(())
}

async fn add_routes(handle: &Handle, index: u32, routes: &[Route]) -> Result<(), NetError> {
    for r in routes {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dest.addr(), r.dest.prefix_len())
            .map_err(|e| NetError::InvalidRoute(format!("{}: {e}", r.dest)))?
            .output_interface(index);
        if let Some(via) = r.via {
            b = b
                .gateway(via)
                .map_err(|e| NetError::InvalidRoute(format!("{} via {via}: {e}", r.dest)))?;
        }
        handle.route().add(b.build()).replace().execute().await?;
    }
    Ok(())
}

async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<IpNet>, NetError> {
    let mut out = Vec::new();
    let mut s = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = s.try_next().await? {
        let prefix = msg.header.prefix_len;
        for attr in &msg.attributes {
            if let AddressAttribute::Address(ip) = attr {
                if let Ok(net) = IpNet::new(*ip, prefix) {
                    out.push(net);
                }
            }
        }
    }
    Ok(out)
}

async fn routes_of(handle: &Handle, index: u32) -> Result<Vec<Route>, NetError> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        let msg = if v4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let mut s = handle.route().get(msg).execute();
        while let Some(r) = s.try_next().await? {
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif != Some(index) {
                continue;
            }
            let mut dest = None;
            let mut via = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        dest = Some(IpAddr::V4(*ip))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                        dest = Some(IpAddr::V6(*ip))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some(IpAddr::V6(*ip)),
                    _ => {}
                }
            }
            let dest = dest.unwrap_or(if v4 {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            });
            if let Ok(dest) = IpNet::new(dest, r.header.destination_prefix_length) {
                out.push(Route { dest, via });
            }
        }
    }
    Ok(out)
}

impl NetOps for Netlink {
    async fn setup_pod(&self, spec: &PodInterfaceSpec) -> Result<PodInterface, NetError> {
        let ns = NetNs::open(&spec.netns)?;
        let h = &self.handle;
        // A repeated ADD for the same container starts from scratch.
        if let Some(old) = link_by_name(h, &spec.host_ifname).await? {
            h.link().del(old.header.index).execute().await?;
        }
        // The pod end is created directly inside the pod's namespace with its final
        // name, MAC and MTU (like `ip link add … peer name eth0 netns X`): moving a device
        // between namespaces afterwards waits for an RCU grace period under the RTNL lock,
        // which serialises a burst of ADDs.
        let peer = LinkMessageBuilder::<LinkUnspec>::default()
            .name(spec.ifname.clone())
            .address(spec.mac.to_vec())
            .mtu(spec.mtu)
            .setns_by_fd(ns.raw_fd())
            .build();
        h.link()
            .add(
                LinkVeth::new(&spec.host_ifname, &spec.ifname)
                    .mtu(spec.mtu)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build(),
            )
            .execute()
            .await?;
        let result = self.finish_setup(&ns, spec).await;
        if result.is_err() {
            // Leave nothing half made: deleting the host end deletes the pair.
            if let Ok(Some(l)) = link_by_name(h, &spec.host_ifname).await {
                let _ = h.link().del(l.header.index).execute().await;
            }
        }
        result
    }

    async fn teardown_pod(&self, host_ifname: &str) -> Result<(), NetError> {
        match link_by_name(&self.handle, host_ifname).await? {
            None => Ok(()),
            Some(l) => match self.handle.link().del(l.header.index).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn check_pod(&self, spec: &PodInterfaceSpec) -> Result<(), NetError> {
        let ns = NetNs::open(&spec.netns)?;
        let ph = ns.rtnetlink()?;
        let link = link_by_name(&ph, &spec.ifname)
            .await?
            .ok_or_else(|| NetError::LinkNotFound(format!("{} in {}", spec.ifname, spec.netns)))?;
        if link_mac(&link) != Some(spec.mac) {
            return Err(NetError::Mismatch(format!(
                "{}: MAC is {:?}, expected {}",
                spec.ifname,
                link_mac(&link).map(|m| format_mac(&m)),
                format_mac(&spec.mac)
            )));
        }
        let have = addresses_of(&ph, link.header.index).await?;
        for a in &spec.addresses {
            if !have.contains(a) {
                return Err(NetError::Mismatch(format!(
                    "{}: address {a} missing (has {have:?})",
                    spec.ifname
                )));
            }
        }
        let routes = routes_of(&ph, link.header.index).await?;
        for r in &spec.routes {
            if !routes.contains(r) {
                return Err(NetError::Mismatch(format!(
                    "{}: route {} via {:?} missing",
                    spec.ifname, r.dest, r.via
                )));
            }
        }
        if link_by_name(&self.handle, &spec.host_ifname)
            .await?
            .is_none()
        {
            return Err(NetError::LinkNotFound(spec.host_ifname.clone()));
        }
        Ok(())
    }

    async fn configure_host_link(&self, spec: &HostLinkSpec) -> Result<(), NetError> {
        let h = &self.handle;
        let index = link_index(h, &spec.name).await?;
        let mut b = LinkUnspec::new_with_index(index).mtu(spec.mtu).up();
        if let Some(mac) = spec.mac {
            b = b.address(mac.to_vec());
        }
        h.link().set(b.build()).execute().await?;
        add_addresses(h, index, &spec.addresses).await?;
        add_routes(h, index, &spec.routes).await?;
        Ok(())
    }

    async fn link_exists(&self, name: &str) -> Result<bool, NetError> {
        Ok(link_by_name(&self.handle, name).await?.is_some())
    }
}

impl Netlink {
    async fn finish_setup(
        &self,
        ns: &NetNs,
        spec: &PodInterfaceSpec,
    ) -> Result<PodInterface, NetError> {
        let h = &self.handle;

        // Host end: no ARP and no IPv6 (OVS owns its frames), up.
        let host = link_by_name(h, &spec.host_ifname)
            .await?
            .ok_or_else(|| NetError::LinkNotFound(spec.host_ifname.clone()))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(host.header.index)
                    .arp(false)
                    .up()
                    .build(),
            )
            .execute()
            .await?;
        let (name, tx_off) = (spec.host_ifname.clone(), spec.tx_checksum_off);
        self.node_ns.run(move || {
            ethtool::disable_ipv6(&name)?;
            if tx_off {
                ethtool::disable_tx_checksum(&name)?;
            }
            Ok::<_, NetError>(())
        })??;

        // Pod end, from a handle inside the pod's namespace.
        let ph = ns.rtnetlink()?;
        let idx = link_index(&ph, &spec.ifname).await?;
        ph.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await?;
        if let Some(lo) = link_by_name(&ph, "lo").await? {
            ph.link()
                .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                .execute()
                .await?;
        }
        add_addresses(&ph, idx, &spec.addresses).await?;
        add_routes(&ph, idx, &spec.routes).await?;
        if spec.tx_checksum_off {
            let name = spec.ifname.clone();
            ns.run(move || ethtool::disable_tx_checksum(&name))??;
        }
        let host_mac = link_by_name(h, &spec.host_ifname)
            .await?
            .as_ref()
            .and_then(link_mac)
            .ok_or_else(|| NetError::LinkNotFound(spec.host_ifname.clone()))?;
        Ok(PodInterface {
            host_ifname: spec.host_ifname.clone(),
            host_mac,
            pod_ifname: spec.ifname.clone(),
            pod_mac: spec.mac,
        })
    }
}

/// `0a:58:0a:f4:01:03` form.
pub fn format_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
