//! The lab's wires: the underlay (a Linux bridge in its own namespace that stands for
//! the physical network and the external host) and each node's uplink `eth0`, all
//! made with rtnetlink inside namespaces the lab owns — never in the root namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ovnk_netns::NetNs;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::layout::{LabLayout, NodeLayout};
use crate::LabError;

pub const UNDERLAY_BRIDGE: &str = "br-underlay";

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LabError {
    let what = what.into();
    move |e| LabError::Network(format!("{what}: {e}"))
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, LabError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(LabError::Network(format!("get link {name}: {e}"))),
    }
}

pub async fn link_index(h: &Handle, name: &str) -> Result<u32, LabError> {
    link_by_name(h, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| LabError::Network(format!("link {name} not found")))
}

async fn set_up(h: &Handle, name: &str) -> Result<(), LabError> {
    let idx = link_index(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))
}

async fn add_addr(h: &Handle, name: &str, ip: Ipv4Addr, plen: u8) -> Result<(), LabError> {
    let idx = link_index(h, name).await?;
    h.address()
        .add(idx, IpAddr::V4(ip), plen)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("address {ip}/{plen} on {name}")))
}

/// Checksums are computed in software on these links: frames whose checksum the kernel
/// left to "hardware" are forwarded broken by the userspace datapath (LAB.md pitfall 1).
fn tx_off(ns: &NetNs, names: &[&str]) -> Result<(), LabError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    ns.run(move || {
        for n in &names {
            ovnk_netns::ethtool::disable_tx_checksum(n)?;
        }
        Ok::<_, LabError>(())
    })?
}

/// Creates the underlay namespace with its bridge holding the gateway address.
pub async fn create_underlay(layout: &LabLayout) -> Result<NetNs, LabError> {
    let ns = ovnk_netns::create_named(&layout.underlay_netns())?;
    let h = ns.rtnetlink()?;
    set_up(&h, "lo").await?;
    h.link()
        .add(LinkBridge::new(UNDERLAY_BRIDGE).up().build())
        .execute()
        .await
        .map_err(nl("create underlay bridge"))?;
    add_addr(
        &h,
        UNDERLAY_BRIDGE,
        layout.underlay_gateway(),
        LabLayout::UNDERLAY_PREFIX_LEN,
    )
    .await?;
    tx_off(&ns, &[UNDERLAY_BRIDGE])?;
    Ok(ns)
}

/// Wires a node's `eth0` to the underlay bridge (the veth is made inside the underlay
/// namespace and its peer moved straight into the node's).
pub async fn attach_node(
    underlay: &NetNs,
    node: &NodeLayout,
    node_ns: &NetNs,
) -> Result<(), LabError> {
    let uh = underlay.rtnetlink()?;
    let tmp = format!("ulp{}", node.index);
    uh.link()
        .add(LinkVeth::new(&node.underlay_port, &tmp).mtu(1500).build())
        .execute()
        .await
        .map_err(nl(format!("veth for {}", node.name)))?;
    let tmp_idx = link_index(&uh, &tmp).await?;
    uh.link()
        .set(
            LinkUnspec::new_with_index(tmp_idx)
                .setns_by_fd(node_ns.raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("move uplink into {}", node.netns)))?;
    let br = link_index(&uh, UNDERLAY_BRIDGE).await?;
    let port = link_index(&uh, &node.underlay_port).await?;
    uh.link()
        .set(LinkUnspec::new_with_index(port).controller(br).up().build())
        .execute()
        .await
        .map_err(nl(format!("attach {} to the underlay", node.underlay_port)))?;
    tx_off(underlay, &[&node.underlay_port])?;

    let nh = node_ns.rtnetlink()?;
    set_up(&nh, "lo").await?;
    let idx = link_index(&nh, &tmp).await?;
    // eth0 belongs to OVS (a port of breth0): no ARP, no IPv6 from the node kernel, or
    // every request gets two answers (LAB.md pitfall 3).
    nh.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name("eth0".to_string())
                .arp(false)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("rename uplink of {}", node.name)))?;
    set_up(&nh, "eth0").await?;
    node_ns.run(|| ovnk_netns::ethtool::disable_ipv6("eth0"))??;
    tx_off(node_ns, &["eth0"])?;
    Ok(())
}

/// Once ovs-vswitchd has made `breth0`: the node IP on it, up, default route via the
/// underlay gateway.
pub async fn configure_gateway_bridge(
    layout: &LabLayout,
    node: &NodeLayout,
    node_ns: &NetNs,
) -> Result<(), LabError> {
    let nh = node_ns.rtnetlink()?;
    // vswitchd creates the tap asynchronously after the bridge row commits.
    let mut found = false;
    for _ in 0..200 {
        if link_by_name(&nh, "breth0").await?.is_some() {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    if !found {
        return Err(LabError::Network(format!(
            "breth0 did not appear in {} within 5 s (see {})",
            node.netns,
            node.log_dir().join("ovs-vswitchd.log").display()
        )));
    }
    set_up(&nh, "breth0").await?;
    add_addr(&nh, "breth0", node.ip, LabLayout::UNDERLAY_PREFIX_LEN).await?;
    let idx = link_index(&nh, "breth0").await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(layout.underlay_gateway())
        .output_interface(idx)
        .build();
    nh.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("default route of {}", node.name)))?;
    Ok(())
}
