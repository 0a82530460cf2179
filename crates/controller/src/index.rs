//! The index: in-memory cluster state (nodes, pods, namespaces) and the allocators rebuilt
//! from annotations. Synchronous and IO-free: it decides, the driver talks to the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipam::{ClusterSubnetAllocator, DualStackIpAllocator, Family, NodeIdAllocator};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use ovnk_annotations::{
    self as ann, IfAddrs, L3GatewayConfig, MacAddr, NodeSubnets, PodNetwork, PodNetworks,
};

use crate::config::Resolved;
use crate::desired::{self, NodeState, PodState};
use crate::policy::{self, PodMeta, PolicyIndex};
use crate::rows::{DesiredRow, NetworkInfo, Owner, OwnerKind, RowBuilder, RowKey};
use crate::services::{self, NodeLb, ServiceInfo, SliceInfo};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// A problem with one object, reported as an Event on it and a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

fn problem(reason: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        reason,
        message: message.into(),
    }
}

/// What the driver must do for a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    Nothing,
    /// Write these annotations, then call [`Index::node_annotated`].
    Annotate(BTreeMap<String, String>),
    Report(Problem),
}

/// What the driver must do for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    Nothing,
    /// Write `k8s.ovn.org/pod-networks`, then [`Index::pod_annotated`] (or
    /// [`Index::pod_annotate_failed`]).
    Annotate {
        value: String,
        ips: Vec<IpNet>,
    },
    Report(Problem),
}

#[derive(Debug)]
struct NodeRec {
    chassis: Option<String>,
    gateway: Option<ann::L3Gateway>,
    /// Allocations persisted in the node's annotations.
    alloc: Option<(Vec<IpNet>, u32, Vec<IpNet>)>,
    /// Allocated, annotation write in flight.
    pending: Option<(Vec<IpNet>, u32)>,
}

#[derive(Debug)]
struct PodRec {
    uid: String,
    node: String,
    /// Addresses held in the node's allocator for this pod.
    held: Vec<IpNet>,
    state: Option<PodState>,
    pending: bool,
}

/// Cluster state and allocators.
pub struct Index {
    net: NetworkInfo,
    cfg: Resolved,
    nodes: BTreeMap<String, NodeRec>,
    pods: HashMap<String, PodRec>,
    namespaces: BTreeSet<String>,
    ns_pods: HashMap<String, BTreeSet<String>>,
    subnets: ClusterSubnetAllocator,
    ids: NodeIdAllocator,
    pod_ips: HashMap<String, DualStackIpAllocator>,
    /// Pods gone whose addresses are freed once their LSP is removed: key → (node, ips).
    releasing: HashMap<String, Vec<(String, Vec<IpAddr>)>>,
    /// Pods waiting for their node's subnet.
    waiting: HashMap<String, BTreeSet<String>>,
    /// Pods whose node became ready, to be re-applied by the driver.
    woken: Vec<String>,
    /// Services with something to balance, by `namespace:name`.
    services: HashMap<String, ServiceInfo>,
    /// EndpointSlices by (namespace, slice name): (service `namespace:name`, content).
    slices: HashMap<(String, String), (String, SliceInfo)>,
    /// Slice names per service `namespace:name`.
    service_slices: HashMap<String, BTreeSet<String>>,
    policies: PolicyIndex,
}

/// `namespace:name`, the owner name of a pod.
pub fn pod_key(ns: &str, name: &str) -> String {
    format!("{ns}:{name}")
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once(':').unwrap_or(("", key))
}

impl Index {
    pub fn new(net: NetworkInfo, cfg: Resolved) -> Result<Index, crate::ControllerError> {
        let subnets = ClusterSubnetAllocator::new(&cfg.cluster)
            .map_err(|e| crate::ControllerError::Config(e.to_string()))?;
        let ids = NodeIdAllocator::new(ipam::DEFAULT_MAX_NODE_ID)
            .map_err(|e| crate::ControllerError::Config(e.to_string()))?;
        Ok(Index {
            net,
            cfg,
            nodes: BTreeMap::new(),
            pods: HashMap::new(),
            namespaces: BTreeSet::new(),
            ns_pods: HashMap::new(),
            subnets,
            ids,
            pod_ips: HashMap::new(),
            releasing: HashMap::new(),
            waiting: HashMap::new(),
            woken: Vec::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            service_slices: HashMap::new(),
            policies: PolicyIndex::default(),
        })
    }

    pub fn config(&self) -> &Resolved {
        &self.cfg
    }

    // ------------------------------------------------------------------ nodes

    /// A node was added or changed. Existing allocations in its annotations are honoured;
    /// a node without them gets new ones (to be persisted before use).
    pub fn apply_node(&mut self, node: &Node, dirty: &mut Vec<Owner>) -> NodeAction {
        let Some(name) = node.metadata.name.clone() else {
            return NodeAction::Nothing;
        };
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let mut problems = Vec::new();
        let chassis = match annotations.get(ann::NODE_CHASSIS_ID) {
            Some(t) => match ann::parse_node_chassis_id(t) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            None => None,
        };
        let gateway = match annotations.get(ann::L3_GATEWAY_CONFIG) {
            Some(t) => match ann::parse_l3_gateway_config(t) {
                Ok(m) => match m.get(&self.net.name) {
                    Some(L3GatewayConfig::Enabled(g)) => Some(g.clone()),
                    _ => None,
                },
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            None => None,
        };
        let before = self.node_lb(&name);
        let rec = self.nodes.entry(name.clone()).or_insert(NodeRec {
            chassis: None,
            gateway: None,
            alloc: None,
            pending: None,
        });
        rec.chassis = chassis;
        rec.gateway = gateway;
        let allocated = rec.alloc.is_some() || rec.pending.is_some();
        dirty.push(Owner::node(&name));
        self.node_lb_changed(&name, before, dirty);
        if allocated {
            return report_first(problems);
        }

        // Allocations already in the annotations (restart, or another controller's).
        let subnets = annotations
            .get(ann::NODE_SUBNETS)
            .map(|t| ann::parse_node_subnets(t));
        let id = annotations.get(ann::NODE_ID).map(|t| ann::parse_node_id(t));
        if let (Some(subnets), Some(id)) = (subnets, id) {
            let parsed = subnets
                .map_err(|e| e.to_string())
                .and_then(|s| Ok((s, id.map_err(|e| e.to_string())?)));
            match parsed {
                Ok((s, id)) => {
                    let nets: Vec<IpNet> =
                        s.0.get(&self.net.name)
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|n| n.trunc())
                            .collect();
                    match self.mark_node(&name, &nets, id) {
                        Ok(join) => {
                            if let Some(rec) = self.nodes.get_mut(&name) {
                                rec.alloc = Some((nets, id, join.clone()));
                            }
                            self.wake_waiting(&name, dirty);
                            let want =
                                ann::render_gateway_router_lrp_ifaddrs(&lrp_map(&self.net, &join));
                            let have_lrp = annotations
                                .get(ann::NODE_GATEWAY_ROUTER_LRP_IFADDRS)
                                .map(|t| ann::parse_gateway_router_lrp_ifaddrs(t).ok());
                            let same = have_lrp.flatten().map(|m| m.get(&self.net.name).cloned())
                                == Some(lrp_map(&self.net, &join).get(&self.net.name).cloned());
                            if !same {
                                let mut a = BTreeMap::new();
                                a.insert(ann::NODE_GATEWAY_ROUTER_LRP_IFADDRS.to_string(), want);
                                return NodeAction::Annotate(a);
                            }
                            return report_first(problems);
                        }
                        Err(p) => return NodeAction::Report(p),
                    }
                }
                Err(e) => problems.push(format!("{e}; allocating new values")),
            }
        }

        // New node (or unusable annotations): allocate, persist, then use.
        let nets = match self.subnets.allocate() {
            Ok(n) => n,
            Err(e) => {
                return NodeAction::Report(problem(
                    "SubnetAllocationFailed",
                    format!("node {name}: no node subnet: {e}"),
                ))
            }
        };
        let id = match self.ids.allocate() {
            Ok(i) => i,
            Err(e) => {
                for n in &nets {
                    let _ = self.subnets.release(*n);
                }
                return NodeAction::Report(problem(
                    "NodeIdAllocationFailed",
                    format!("node {name}: no node id: {e}"),
                ));
            }
        };
        let join = self.cfg.join.gateway_router_ips(id).unwrap_or_default();
        if let Some(rec) = self.nodes.get_mut(&name) {
            rec.pending = Some((nets.clone(), id));
        }
        let mut subnets = NodeSubnets::default();
        subnets.0.insert(self.net.name.clone(), nets);
        let mut a = BTreeMap::new();
        a.insert(
            ann::NODE_SUBNETS.to_string(),
            ann::render_node_subnets(&subnets),
        );
        a.insert(ann::NODE_ID.to_string(), ann::render_node_id(id));
        a.insert(
            ann::NODE_GATEWAY_ROUTER_LRP_IFADDRS.to_string(),
            ann::render_gateway_router_lrp_ifaddrs(&lrp_map(&self.net, &join)),
        );
        NodeAction::Annotate(a)
    }

    fn mark_node(&mut self, name: &str, nets: &[IpNet], id: u32) -> Result<Vec<IpNet>, Problem> {
        if nets.is_empty() {
            return Err(problem(
                "InvalidNodeSubnets",
                format!("node {name}: no subnet for network {}", self.net.name),
            ));
        }
        let mut done = Vec::new();
        for n in nets {
            if let Err(e) = self.subnets.mark_allocated(*n) {
                for d in &done {
                    let _ = self.subnets.release(*d);
                }
                return Err(problem(
                    "NodeSubnetConflict",
                    format!("node {name}: subnet {n} from its annotation: {e}"),
                ));
            }
            done.push(*n);
        }
        if let Err(e) = self.ids.mark_allocated(id) {
            for d in &done {
                let _ = self.subnets.release(*d);
            }
            return Err(problem(
                "NodeIdConflict",
                format!("node {name}: node id {id} from its annotation: {e}"),
            ));
        }
        let alloc = DualStackIpAllocator::new(nets).map_err(|e| {
            problem(
                "InvalidNodeSubnets",
                format!("node {name}: subnets {nets:?}: {e}"),
            )
        })?;
        self.pod_ips.insert(name.to_string(), alloc);
        Ok(self.cfg.join.gateway_router_ips(id).unwrap_or_default())
    }

    /// The node's annotations were written: its allocations can be used.
    pub fn node_annotated(&mut self, name: &str, dirty: &mut Vec<Owner>) {
        let before = self.node_lb(name);
        self.node_annotated_inner(name, dirty);
        self.node_lb_changed(name, before, dirty);
    }

    fn node_annotated_inner(&mut self, name: &str, dirty: &mut Vec<Owner>) {
        let Some(rec) = self.nodes.get_mut(name) else {
            return;
        };
        if let Some((nets, id)) = rec.pending.take() {
            let join = self.cfg.join.gateway_router_ips(id).unwrap_or_default();
            rec.alloc = Some((nets.clone(), id, join));
            match DualStackIpAllocator::new(&nets) {
                Ok(a) => {
                    self.pod_ips.insert(name.to_string(), a);
                }
                Err(e) => tracing::error!(node = name, "pod allocator: {e}"),
            }
        }
        dirty.push(Owner::node(name));
        self.wake_waiting(name, dirty);
    }

    /// Writing the node's annotations failed: give the allocations back (retried later).
    pub fn node_annotate_failed(&mut self, name: &str) {
        if let Some((nets, id)) = self.nodes.get_mut(name).and_then(|r| r.pending.take()) {
            for n in nets {
                let _ = self.subnets.release(n);
            }
            let _ = self.ids.release(id);
        }
    }

    fn wake_waiting(&mut self, node: &str, _dirty: &mut Vec<Owner>) {
        if let Some(w) = self.waiting.remove(node) {
            self.woken.extend(w);
        }
    }

    /// Pods (`namespace:name`) whose node got its subnet since the last call.
    pub fn take_woken(&mut self) -> Vec<String> {
        std::mem::take(&mut self.woken)
    }

    pub fn delete_node(&mut self, name: &str, dirty: &mut Vec<Owner>) {
        if self.node_lb(name).is_some() {
            self.mark_node_services(dirty);
        }
        if let Some(rec) = self.nodes.remove(name) {
            let held = rec.alloc.map(|(n, i, _)| (n, i)).or(rec.pending);
            if let Some((nets, id)) = held {
                for n in nets {
                    let _ = self.subnets.release(n);
                }
                let _ = self.ids.release(id);
            }
        }
        self.pod_ips.remove(name);
        dirty.push(Owner::node(name));
    }

    /// The node as the per-node balancers see it (None until it has a switch).
    pub fn node_lb(&self, name: &str) -> Option<NodeLb> {
        let rec = self.nodes.get(name)?;
        rec.alloc.as_ref()?;
        let b = RowBuilder::new(&self.net, Owner::node(name));
        Some(NodeLb {
            name: name.to_string(),
            ips: rec
                .gateway
                .iter()
                .flat_map(|g| g.ip_addresses.iter().map(|n| n.addr()))
                .collect(),
            switch: desired::node_switch_key(&self.net, name),
            router: rec.chassis.as_ref().map(|_| RowKey {
                table: desired::LR,
                id: b.id("gateway-router"),
            }),
        })
    }

    fn node_lb_changed(&self, name: &str, before: Option<NodeLb>, dirty: &mut Vec<Owner>) {
        if self.node_lb(name) != before {
            self.mark_node_services(dirty);
        }
    }

    /// Services with rows per node follow the nodes.
    fn mark_node_services(&self, dirty: &mut Vec<Owner>) {
        dirty.extend(
            self.services
                .values()
                .filter(|s| s.per_node())
                .map(|s| services::service_owner(&s.namespace, &s.name)),
        );
    }

    fn node_lbs(&self) -> Vec<NodeLb> {
        self.nodes.keys().filter_map(|n| self.node_lb(n)).collect()
    }

    // ------------------------------------------------------------------ services

    /// A Service was added or changed; a problem is reported on it (its old rows stay).
    pub fn apply_service(&mut self, svc: &Service, dirty: &mut Vec<Owner>) -> Option<Problem> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let key = pod_key(&ns, &name);
        match services::parse_service(svc) {
            Ok(Some(info)) => {
                if self.services.get(&key) != Some(&info) {
                    self.services.insert(key, info);
                    dirty.push(Owner::service(&ns, &name));
                }
                None
            }
            Ok(None) => {
                if self.services.remove(&key).is_some() {
                    dirty.push(Owner::service(&ns, &name));
                }
                None
            }
            Err(p) => Some(p),
        }
    }

    pub fn delete_service(&mut self, ns: &str, name: &str, dirty: &mut Vec<Owner>) {
        self.services.remove(&pod_key(ns, name));
        dirty.push(Owner::service(ns, name));
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice, dirty: &mut Vec<Owner>) {
        let (Some(ns), Some(name)) = (
            slice.metadata.namespace.clone(),
            slice.metadata.name.clone(),
        ) else {
            return;
        };
        let parsed = services::parse_slice(slice);
        let new_key = parsed.as_ref().map(|(k, _)| k.replacen('/', ":", 1));
        let k = (ns.clone(), name.clone());
        if let Some((old, info)) = self.slices.get(&k) {
            if Some(old) == new_key.as_ref() && parsed.as_ref().map(|p| &p.1) == Some(info) {
                return;
            }
            let old = old.clone();
            self.unlink_slice(&old, &name, dirty);
        }
        self.slices.remove(&k);
        if let (Some(key), Some((_, info))) = (new_key, parsed) {
            self.service_slices
                .entry(key.clone())
                .or_default()
                .insert(name.clone());
            self.mark_service_key(&key, dirty);
            self.slices.insert(k, (key, info));
        }
    }

    pub fn delete_slice(&mut self, ns: &str, name: &str, dirty: &mut Vec<Owner>) {
        if let Some((key, _)) = self.slices.remove(&(ns.to_string(), name.to_string())) {
            self.unlink_slice(&key, name, dirty);
        }
    }

    fn unlink_slice(&mut self, key: &str, slice: &str, dirty: &mut Vec<Owner>) {
        if let Some(s) = self.service_slices.get_mut(key) {
            s.remove(slice);
            if s.is_empty() {
                self.service_slices.remove(key);
            }
        }
        self.mark_service_key(key, dirty);
    }

    fn mark_service_key(&self, key: &str, dirty: &mut Vec<Owner>) {
        let (ns, name) = split_key(key);
        dirty.push(Owner::service(ns, name));
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn node_state(&self, name: &str) -> Option<NodeState> {
        let rec = self.nodes.get(name)?;
        let (subnets, node_id, join_ips) = rec.alloc.clone()?;
        Some(NodeState {
            name: name.to_string(),
            node_id,
            subnets,
            join_ips,
            chassis_id: rec.chassis.clone(),
            gateway: rec.gateway.clone(),
        })
    }

    // ------------------------------------------------------------------ pods

    /// A pod was added or changed.
    pub fn apply_pod(&mut self, pod: &Pod, dirty: &mut Vec<Owner>) -> PodAction {
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            return PodAction::Nothing;
        };
        let key = pod_key(ns, name);
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            return PodAction::Nothing;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            self.delete_pod(ns, name, dirty);
            return PodAction::Nothing;
        }
        let mut meta = PodMeta {
            namespace: ns.to_string(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports: Vec::new(),
            ips: self
                .policies
                .pod_meta(&key)
                .map(|m| m.ips.clone())
                .unwrap_or_default(),
        };
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for p in c.ports.iter().flatten() {
                if let (Some(n), Some(proto), Ok(num)) = (
                    p.name.as_ref(),
                    services::Proto::parse(p.protocol.as_deref()),
                    u16::try_from(p.container_port),
                ) {
                    meta.ports.push((n.clone(), proto, num));
                }
            }
        }
        self.update_pod_meta(&key, meta, dirty);
        let Some(node) = spec.and_then(|s| s.node_name.clone()) else {
            return PodAction::Nothing;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(rec) = self.pods.get(&key) {
            if rec.uid == uid && (rec.state.is_some() || rec.pending) {
                return PodAction::Nothing;
            }
            if rec.uid != uid {
                // Same name, new pod: the old one's addresses go once its LSP is replaced.
                self.delete_pod(ns, name, dirty);
            }
        }
        let Some(alloc) = self.pod_ips.get_mut(&node) else {
            self.waiting.entry(node).or_default().insert(key);
            return PodAction::Nothing;
        };
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ann::POD_NETWORKS));
        if let Some(text) = annotated {
            let parsed = ann::parse_pod_networks(text).map_err(|e| e.to_string());
            let net = parsed.and_then(|p| {
                p.0.get(&self.net.name)
                    .cloned()
                    .ok_or_else(|| format!("no entry for network {:?}", self.net.name))
            });
            return match net {
                Ok(pn) => {
                    let ips: Vec<IpAddr> = pn.ip_addresses.iter().map(|n| n.addr()).collect();
                    if let Err(e) = alloc.mark_allocated(&ips) {
                        // Never silently reuse: the pod stays without a port until fixed.
                        return PodAction::Report(problem(
                            "PodAddressConflict",
                            format!("pod {ns}/{name}: address from {}: {e}", ann::POD_NETWORKS),
                        ));
                    }
                    self.set_pod_state(
                        &key,
                        uid,
                        node,
                        pn.ip_addresses.clone(),
                        pn.mac_address,
                        dirty,
                    );
                    dirty.push(Owner::pod(ns, name));
                    dirty.push(Owner::namespace(ns));
                    PodAction::Nothing
                }
                Err(e) => PodAction::Report(problem(
                    "InvalidPodNetworks",
                    format!("pod {ns}/{name}: {e}"),
                )),
            };
        }
        let ips = match alloc.allocate() {
            Ok(ips) => ips,
            Err(e) => {
                return PodAction::Report(problem(
                    "PodAddressAllocationFailed",
                    format!("pod {ns}/{name} on node {node}: {e}"),
                ))
            }
        };
        let mac = MacAddr::from_ip(ips[0].addr());
        let gateways: Vec<IpAddr> = alloc
            .subnets()
            .iter()
            .map(|s| desired::nth_addr(s, 1).addr())
            .collect();
        let pn = PodNetwork {
            ip_addresses: ips.clone(),
            mac_address: mac,
            gateway_ips: gateways,
            routes: Vec::new(),
            tunnel_id: 0,
            role: Some(ann::NetworkRole::Primary),
        };
        let mut nets = PodNetworks::default();
        nets.0.insert(self.net.name.clone(), pn);
        self.pods.insert(
            key,
            PodRec {
                uid,
                node,
                held: ips.clone(),
                state: None,
                pending: true,
            },
        );
        PodAction::Annotate {
            value: ann::render_pod_networks(&nets),
            ips,
        }
    }

    fn set_pod_state(
        &mut self,
        key: &str,
        uid: String,
        node: String,
        ips: Vec<IpNet>,
        mac: MacAddr,
        dirty: &mut Vec<Owner>,
    ) {
        let (ns, name) = split_key(key);
        let state = PodState {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: uid.clone(),
            node: node.clone(),
            ips: ips.clone(),
            mac,
        };
        self.ns_pods
            .entry(ns.to_string())
            .or_default()
            .insert(name.to_string());
        let mut meta = self.policies.pod_meta(key).cloned().unwrap_or_default();
        meta.namespace = ns.to_string();
        meta.ips = ips.iter().map(|n| n.addr()).collect();
        self.policies.set_pod(key, meta, dirty);
        self.pods.insert(
            key.to_string(),
            PodRec {
                uid,
                node,
                held: ips,
                state: Some(state),
                pending: false,
            },
        );
    }

    /// The pod's annotation was written.
    pub fn pod_annotated(&mut self, ns: &str, name: &str, uid: &str, dirty: &mut Vec<Owner>) {
        let key = pod_key(ns, name);
        let Some(rec) = self.pods.get(&key) else {
            return;
        };
        if rec.uid != uid || !rec.pending {
            return;
        }
        let ips = rec.held.clone();
        let node = rec.node.clone();
        let mac = MacAddr::from_ip(ips[0].addr());
        self.set_pod_state(&key, uid.to_string(), node, ips, mac, dirty);
        dirty.push(Owner::pod(ns, name));
        dirty.push(Owner::namespace(ns));
    }

    /// Writing the annotation failed (pod gone, conflict): free the addresses now, since
    /// no LSP was ever created with them.
    pub fn pod_annotate_failed(&mut self, ns: &str, name: &str, uid: &str) {
        let key = pod_key(ns, name);
        if self
            .pods
            .get(&key)
            .is_some_and(|r| r.uid == uid && r.pending)
        {
            if let Some(rec) = self.pods.remove(&key) {
                if let Some(a) = self.pod_ips.get_mut(&rec.node) {
                    let ips: Vec<IpAddr> = rec.held.iter().map(|n| n.addr()).collect();
                    let _ = a.release(&ips);
                }
            }
        }
    }

    /// The pod is gone (deleted, or completed): its LSP goes, then its addresses.
    pub fn delete_pod(&mut self, ns: &str, name: &str, dirty: &mut Vec<Owner>) {
        let key = pod_key(ns, name);
        for w in self.waiting.values_mut() {
            w.remove(&key);
        }
        self.policies.remove_pod(&key, dirty);
        if let Some(rec) = self.pods.remove(&key) {
            let ips: Vec<IpAddr> = rec.held.iter().map(|n| n.addr()).collect();
            self.releasing
                .entry(key.clone())
                .or_default()
                .push((rec.node, ips));
            if let Some(s) = self.ns_pods.get_mut(ns) {
                s.remove(name);
            }
        }
        dirty.push(Owner::pod(ns, name));
        dirty.push(Owner::namespace(ns));
    }

    /// Owners whose rows were committed: free the addresses of deleted pods among them.
    pub fn committed(&mut self, owners: &[Owner]) {
        for o in owners {
            if o.kind != OwnerKind::Pod {
                continue;
            }
            if let Some(list) = self.releasing.remove(&o.name) {
                for (node, ips) in list {
                    if let Some(a) = self.pod_ips.get_mut(&node) {
                        let _ = a.release(&ips);
                    }
                }
            }
        }
    }

    /// Pods waiting for a node: re-applied by the driver when the node is ready.
    pub fn is_waiting(&self, key: &str) -> bool {
        self.waiting.values().any(|w| w.contains(key))
    }

    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    // ------------------------------------------------------------------ namespaces

    /// A namespace was added or changed (labels for policy peers, ACL logging); a bad
    /// `k8s.ovn.org/acl-logging` is reported and logging stays off.
    pub fn apply_namespace(&mut self, ns: &Namespace, dirty: &mut Vec<Owner>) -> Option<Problem> {
        let name = ns.metadata.name.as_deref()?;
        if self.namespaces.insert(name.to_string()) {
            dirty.push(Owner::namespace(name));
        }
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let (logging, problem) = match ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(policy::ACL_LOGGING_ANNOTATION))
        {
            None => (Default::default(), None),
            Some(t) => match policy::parse_acl_logging(name, t) {
                Ok(l) => (l, None),
                Err(p) => (Default::default(), Some(p)),
            },
        };
        self.policies.set_namespace(name, labels, logging, dirty);
        problem
    }

    pub fn apply_policy(&mut self, pol: &NetworkPolicy, dirty: &mut Vec<Owner>) -> Option<Problem> {
        self.policies.apply(pol, dirty).err()
    }

    pub fn delete_policy(&mut self, ns: &str, name: &str, dirty: &mut Vec<Owner>) {
        self.policies.delete(ns, name, dirty);
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policy_count()
    }

    /// Keeps what policies know of a pod (labels, named ports, addresses) current.
    fn update_pod_meta(&mut self, key: &str, meta: PodMeta, dirty: &mut Vec<Owner>) {
        if self.policies.pod_meta(key) != Some(&meta) {
            self.policies.set_pod(key, meta, dirty);
            dirty.push(Owner {
                kind: OwnerKind::Pod,
                name: key.to_string(),
            });
        }
    }

    pub fn delete_namespace(&mut self, name: &str, dirty: &mut Vec<Owner>) {
        self.namespaces.remove(name);
        self.policies.remove_namespace(name, dirty);
        dirty.push(Owner::namespace(name));
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.iter().cloned().collect()
    }

    // ------------------------------------------------------------------ desired state

    /// Every row `owner` should have now (empty: all its rows go).
    pub fn desired(&self, owner: &Owner) -> Vec<DesiredRow> {
        match owner.kind {
            OwnerKind::Cluster => desired::cluster_rows(&self.net, &self.cfg),
            OwnerKind::Node => self
                .node_state(&owner.name)
                .map(|n| desired::node_rows(&self.net, &self.cfg, &n))
                .unwrap_or_default(),
            // A pod of a node that is gone has no switch to sit on (OVSDB already dropped
            // its port with the switch); wanting it would retry forever.
            OwnerKind::Pod => self
                .pods
                .get(&owner.name)
                .and_then(|r| r.state.as_ref())
                .filter(|p| self.nodes.get(&p.node).is_some_and(|n| n.alloc.is_some()))
                .map(|p| {
                    let mut rows = desired::pod_rows(&self.net, p);
                    let groups = self.policies.pod_port_groups(&self.net, &owner.name);
                    for g in groups {
                        rows[0] = rows[0].clone().also_in(&g, "ports");
                    }
                    rows
                })
                .unwrap_or_default(),
            OwnerKind::Service => {
                let Some(svc) = self.services.get(&owner.name) else {
                    return Vec::new();
                };
                let (ns, _) = split_key(&owner.name);
                let slices: Vec<&SliceInfo> = self
                    .service_slices
                    .get(&owner.name)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| self.slices.get(&(ns.to_string(), n.clone())))
                    .map(|(_, i)| i)
                    .collect();
                let nodes = if svc.per_node() {
                    self.node_lbs()
                } else {
                    Vec::new()
                };
                services::service_rows(&self.net, svc, &slices, &nodes)
            }
            OwnerKind::NetworkPolicy => {
                self.policies
                    .policy_rows(&self.net, &self.cfg.families, &owner.name)
            }
            OwnerKind::PeerSelector => {
                self.policies
                    .peer_rows(&self.net, &self.cfg.families, &owner.name)
            }
            OwnerKind::Namespace => {
                if !self.namespaces.contains(&owner.name) {
                    return Vec::new();
                }
                let ips: Vec<IpAddr> = self
                    .ns_pods
                    .get(&owner.name)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| self.pods.get(&pod_key(&owner.name, p)))
                    .filter_map(|r| r.state.as_ref())
                    .flat_map(|s| s.ips.iter().map(|n| n.addr()))
                    .collect();
                let mut rows = desired::namespace_rows(&self.net, &self.cfg, &owner.name, &ips);
                rows.extend(self.policies.namespace_rows(&self.net, &owner.name));
                rows
            }
        }
    }

    /// Every owner the index knows.
    pub fn all_owners(&self) -> Vec<Owner> {
        let mut v = vec![Owner::cluster()];
        v.extend(self.nodes.keys().map(|n| Owner::node(n)));
        v.extend(self.namespaces.iter().map(|n| Owner::namespace(n)));
        v.extend(self.policies.policy_owners());
        v.extend(self.services.keys().map(|k| Owner {
            kind: OwnerKind::Service,
            name: k.clone(),
        }));
        v.extend(self.pods.keys().map(|k| Owner {
            kind: OwnerKind::Pod,
            name: k.clone(),
        }));
        v
    }

    /// Addresses in use per node (tests: no address handed out twice).
    pub fn pod_addresses(&self) -> Vec<(String, Vec<IpNet>)> {
        self.pods
            .iter()
            .map(|(k, r)| (k.clone(), r.held.clone()))
            .collect()
    }

    pub fn families(&self) -> Vec<Family> {
        self.cfg.families.clone()
    }
}

fn lrp_map(net: &NetworkInfo, join: &[IpNet]) -> BTreeMap<String, IfAddrs> {
    let mut ifa = IfAddrs::default();
    for j in join {
        match Family::of_net(j) {
            Family::V4 => ifa.ipv4 = Some(*j),
            Family::V6 => ifa.ipv6 = Some(*j),
        }
    }
    let mut m = BTreeMap::new();
    m.insert(net.name.clone(), ifa);
    m
}

fn report_first(problems: Vec<String>) -> NodeAction {
    match problems.into_iter().next() {
        Some(p) => NodeAction::Report(problem("InvalidNodeAnnotation", p)),
        None => NodeAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn index() -> Index {
        let cfg = ControllerConfig::with_cluster_subnets(&["10.244.0.0/16/24"])
            .resolve()
            .unwrap();
        Index::new(NetworkInfo::default_network(), cfg).unwrap()
    }

    fn node(name: &str, a: BTreeMap<String, String>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(a),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(name: &str, node: &str, a: BTreeMap<String, String>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(a),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Applies a node and acknowledges its annotation write; returns what was written.
    fn ready_node(ix: &mut Index, name: &str) -> BTreeMap<String, String> {
        let mut d = Vec::new();
        match ix.apply_node(&node(name, BTreeMap::new()), &mut d) {
            NodeAction::Annotate(a) => {
                ix.node_annotated(name, &mut d);
                a
            }
            other => panic!("expected annotations, got {other:?}"),
        }
    }

    fn annotate_pod(ix: &mut Index, name: &str, node: &str) -> String {
        let mut d = Vec::new();
        match ix.apply_pod(&pod(name, node, BTreeMap::new()), &mut d) {
            PodAction::Annotate { value, .. } => {
                ix.pod_annotated("ns", name, &format!("uid-{name}"), &mut d);
                value
            }
            other => panic!("expected annotation, got {other:?}"),
        }
    }

    #[test]
    fn allocations_skip_reserved_and_survive_restart() {
        let mut ix = index();
        let n1 = ready_node(&mut ix, "n1");
        assert!(n1[ann::NODE_SUBNETS].contains("10.244.0.0/24"), "{n1:?}");
        assert_eq!(n1[ann::NODE_ID], "2");
        let a = annotate_pod(&mut ix, "a", "n1");
        // .0 network, .1 gateway, .2 management port are never handed out.
        assert!(a.contains("10.244.0.3/24"), "{a}");

        // Restart: a new index honours the annotations (same subnet, same id, no reuse).
        let mut ix2 = index();
        let mut d = Vec::new();
        assert_eq!(
            ix2.apply_node(&node("n1", n1.clone()), &mut d),
            NodeAction::Nothing
        );
        let mut pa = BTreeMap::new();
        pa.insert(ann::POD_NETWORKS.to_string(), a.clone());
        assert_eq!(
            ix2.apply_pod(&pod("a", "n1", pa.clone()), &mut d),
            PodAction::Nothing
        );
        let b = annotate_pod(&mut ix2, "b", "n1");
        assert!(b.contains("10.244.0.4/24"), "{b}");
        // Another node never gets n1's subnet.
        let n2 = ready_node(&mut ix2, "n2");
        assert!(n2[ann::NODE_SUBNETS].contains("10.244.1.0/24"), "{n2:?}");

        // A second pod claiming a's address is reported, not reused.
        match ix2.apply_pod(&pod("dup", "n1", pa), &mut d) {
            PodAction::Report(p) => assert_eq!(p.reason, "PodAddressConflict"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pods_wait_for_their_node_and_addresses_free_after_commit() {
        let mut ix = index();
        let mut d = Vec::new();
        assert_eq!(
            ix.apply_pod(&pod("a", "n1", BTreeMap::new()), &mut d),
            PodAction::Nothing
        );
        assert!(ix.is_waiting("ns:a"));
        ready_node(&mut ix, "n1");
        assert_eq!(ix.take_woken(), vec!["ns:a".to_string()]);
        let a = annotate_pod(&mut ix, "a", "n1");
        assert!(a.contains("10.244.0.3/24"));
        assert_eq!(ix.desired(&Owner::pod("ns", "a")).len(), 1);

        // Deleted: the LSP goes from the desired state at once, the address only after the
        // removal is committed.
        ix.delete_pod("ns", "a", &mut d);
        assert!(ix.desired(&Owner::pod("ns", "a")).is_empty());
        let a_ip: IpAddr = "10.244.0.3".parse().unwrap();
        assert!(ix.pod_ips["n1"].is_allocated(a_ip));
        let b = annotate_pod(&mut ix, "b", "n1");
        assert!(b.contains("10.244.0.4/24"), "{b}");
        ix.committed(&[Owner::pod("ns", "a")]);
        assert!(!ix.pod_ips["n1"].is_allocated(a_ip));
    }

    #[test]
    fn malformed_annotations_are_reported() {
        let mut ix = index();
        let mut d = Vec::new();
        let mut a = BTreeMap::new();
        a.insert(ann::NODE_SUBNETS.to_string(), "{garbage".to_string());
        a.insert(ann::NODE_ID.to_string(), "7".to_string());
        // Unusable allocations: new ones are made (and written) instead.
        match ix.apply_node(&node("n1", a), &mut d) {
            NodeAction::Annotate(w) => assert!(w.contains_key(ann::NODE_SUBNETS)),
            other => panic!("{other:?}"),
        }
        ix.node_annotated("n1", &mut d);
        let mut pa = BTreeMap::new();
        pa.insert(ann::POD_NETWORKS.to_string(), "[]".to_string());
        match ix.apply_pod(&pod("p", "n1", pa), &mut d) {
            PodAction::Report(p) => {
                assert_eq!(p.reason, "InvalidPodNetworks");
                assert!(p.message.contains("ns/p"), "{}", p.message);
            }
            other => panic!("{other:?}"),
        }
    }
}
