//! Desired NB rows, ownership `external_ids` and the networks rows belong to.
//!
//! Every row ovnk writes carries upstream's dbobjects ownership keys
//! (`k8s.ovn.org/owner-controller`, `k8s.ovn.org/owner-type`, `k8s.ovn.org/name`,
//! `k8s.ovn.org/id`). `k8s.ovn.org/id` is unique per table and is how the reconcile engine
//! matches a desired row with the row in the database; (owner-type, name) is how it finds
//! every row one Kubernetes key owns, including stale ones.

use std::collections::BTreeMap;
use std::fmt;

use ovsdb::{Atom, Row, Value};

pub const OWNER_CONTROLLER_KEY: &str = "k8s.ovn.org/owner-controller";
pub const OWNER_TYPE_KEY: &str = "k8s.ovn.org/owner-type";
pub const OBJECT_NAME_KEY: &str = "k8s.ovn.org/name";
pub const PRIMARY_ID_KEY: &str = "k8s.ovn.org/id";
pub const IP_FAMILY_KEY: &str = "k8s.ovn.org/ip-family";
pub const NETWORK_KEY: &str = "k8s.ovn.org/network";

/// Which network the rows belong to (ROADMAP: secondary and user-defined networks later).
/// OVN-Kubernetes prefixes the NB names of a non-default network with `<network>_` and runs
/// one controller per network, named after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkInfo {
    pub name: String,
}

impl NetworkInfo {
    pub fn default_network() -> Self {
        NetworkInfo {
            name: ovnk_annotations::DEFAULT_NETWORK.to_string(),
        }
    }

    pub fn is_default(&self) -> bool {
        self.name == ovnk_annotations::DEFAULT_NETWORK
    }

    /// Upstream's controller names: `default-network-controller`, `<network>-network-controller`.
    pub fn controller_name(&self) -> String {
        format!("{}-network-controller", self.name)
    }

    /// The network a controller name ([`Self::controller_name`]) stands for.
    pub fn of_controller(controller: &str) -> Option<Self> {
        let name = controller.strip_suffix("-network-controller")?;
        Some(NetworkInfo {
            name: name.to_string(),
        })
    }

    /// Prefix of NB object names: empty for the default network.
    pub fn prefix(&self) -> String {
        if self.is_default() {
            String::new()
        } else {
            format!("{}_", self.name)
        }
    }
}

/// The kinds of Kubernetes keys that own NB rows (upstream's owner types where they exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    /// Cluster-wide topology (`ovn_cluster_router`, `join`).
    Cluster,
    Node,
    Namespace,
    /// A NetworkPolicy: its port group, ACLs.
    NetworkPolicy,
    /// The pods a policy peer selects (upstream's shared peer address sets).
    PeerSelector,
    /// A Service: its load balancers.
    Service,
    /// Pods come last: their ports join port groups made earlier in the same transaction.
    Pod,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Cluster => "Cluster",
            OwnerKind::Node => "Node",
            OwnerKind::Namespace => "Namespace",
            OwnerKind::NetworkPolicy => "NetworkPolicy",
            OwnerKind::PeerSelector => "PodSelector",
            OwnerKind::Service => "Service",
            OwnerKind::Pod => "Pod",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Cluster" => OwnerKind::Cluster,
            "Node" => OwnerKind::Node,
            "Namespace" => OwnerKind::Namespace,
            "Pod" => OwnerKind::Pod,
            "NetworkPolicy" => OwnerKind::NetworkPolicy,
            "PodSelector" => OwnerKind::PeerSelector,
            "Service" => OwnerKind::Service,
            _ => return None,
        })
    }
}

/// One Kubernetes key (or the cluster) that owns a group of NB rows. The name of
/// namespaced objects is `namespace:name` (upstream `BuildNamespaceNameKey`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
}

impl Owner {
    pub fn cluster() -> Self {
        Owner {
            kind: OwnerKind::Cluster,
            name: "cluster".into(),
        }
    }
    pub fn node(name: &str) -> Self {
        Owner {
            kind: OwnerKind::Node,
            name: name.into(),
        }
    }
    pub fn namespace(name: &str) -> Self {
        Owner {
            kind: OwnerKind::Namespace,
            name: name.into(),
        }
    }
    pub fn service(namespace: &str, name: &str) -> Self {
        Owner {
            kind: OwnerKind::Service,
            name: format!("{namespace}:{name}"),
        }
    }
    pub fn policy(namespace: &str, name: &str) -> Self {
        Owner {
            kind: OwnerKind::NetworkPolicy,
            name: format!("{namespace}:{name}"),
        }
    }
    pub fn pod(namespace: &str, name: &str) -> Self {
        Owner {
            kind: OwnerKind::Pod,
            name: format!("{namespace}:{name}"),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// Identifies one desired row: its table and primary id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub table: &'static str,
    pub id: String,
}

/// A row listed in a parent's set column (`Logical_Switch.ports`, `Logical_Router.nat`, …).
/// The engine adds/removes it there with `mutate`, so writers of other children of the same
/// parent are never clobbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    pub parent: RowKey,
    pub column: &'static str,
}

/// One row as ovnk wants it. `columns` are the columns ovnk manages (each wholly);
/// columns not listed are left as they are in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRow {
    pub key: RowKey,
    pub columns: Row,
    pub parent: Option<ParentLink>,
    /// Further parents holding the row in a set column: a pod's port in the port groups of
    /// the policies selecting it, a node's load balancer on its switch and its router.
    /// Links in [`crate::engine::LINK_COLUMNS`] that are no longer wanted are removed.
    pub also_in: Vec<ParentLink>,
    /// Reference columns given as row keys, resolved to uuids when planned (a node switch's
    /// `load_balancer_group`). The column is managed wholly, like any other.
    pub refs: Vec<(&'static str, Vec<RowKey>)>,
}

impl DesiredRow {
    /// Adds a further parent (see [`DesiredRow::also_in`]).
    pub fn also_in(mut self, parent: &RowKey, column: &'static str) -> Self {
        self.also_in.push(ParentLink {
            parent: parent.clone(),
            column,
        });
        self
    }

    /// Sets the reference column `column` to the rows `keys`.
    pub fn with_refs(mut self, column: &'static str, keys: Vec<RowKey>) -> Self {
        self.refs.push((column, keys));
        self
    }
}

/// Builds rows with ownership ids for one (network, owner).
#[derive(Debug, Clone)]
pub struct RowBuilder {
    controller: String,
    network: NetworkInfo,
    owner: Owner,
}

impl RowBuilder {
    pub fn new(network: &NetworkInfo, owner: Owner) -> Self {
        RowBuilder {
            controller: network.controller_name(),
            network: network.clone(),
            owner,
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Upstream's primary id: `<controller>:<owner-type>:<name>:<role>`.
    pub fn id(&self, role: &str) -> String {
        format!(
            "{}:{}:{}:{role}",
            self.controller,
            self.owner.kind.as_str(),
            self.owner.name
        )
    }

    /// The ownership `external_ids` of the row `role`, plus `extra` keys.
    pub fn external_ids(&self, role: &str, extra: &[(&str, &str)]) -> Value {
        let id = self.id(role);
        let mut m: BTreeMap<&str, &str> = BTreeMap::new();
        m.insert(OWNER_CONTROLLER_KEY, &self.controller);
        m.insert(OWNER_TYPE_KEY, self.owner.kind.as_str());
        m.insert(OBJECT_NAME_KEY, &self.owner.name);
        m.insert(PRIMARY_ID_KEY, &id);
        if !self.network.is_default() {
            m.insert(NETWORK_KEY, &self.network.name);
        }
        for (k, v) in extra {
            m.insert(k, v);
        }
        Value::string_map(m)
    }

    /// A row of `table` with role `role`; `columns` get the ownership `external_ids` (merged
    /// with any `external_ids` given).
    pub fn row(
        &self,
        table: &'static str,
        role: &str,
        columns: Vec<(&str, Value)>,
        parent: Option<ParentLink>,
    ) -> DesiredRow {
        let mut row = Row::new();
        let mut extra: Vec<(String, String)> = Vec::new();
        for (c, v) in columns {
            if c == "external_ids" {
                extra.extend(v.to_string_map());
            } else {
                row.insert(c.to_string(), v);
            }
        }
        let extra_ref: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        row.insert("external_ids".into(), self.external_ids(role, &extra_ref));
        DesiredRow {
            key: RowKey {
                table,
                id: self.id(role),
            },
            columns: row,
            parent,
            also_in: Vec::new(),
            refs: Vec::new(),
        }
    }
}

/// Reads the owner recorded in a row's `external_ids`, if the row is owned by `controller`.
/// `Load_Balancer_Group` has no `external_ids`: the cluster's group is known by its name.
pub fn owner_of(row: &Row, controller: &str) -> Option<(Owner, String)> {
    let Some(ext) = row.get("external_ids") else {
        if let Some(port) = row.get("logical_port") {
            return static_mac_binding_owner(port.as_str()?, row.get("ip")?.as_str()?, controller);
        }
        let name = row.get("name")?.as_str()?;
        let prefix = NetworkInfo::of_controller(controller)?.prefix();
        if name == format!("{prefix}clusterLBGroup") {
            return Some((
                Owner::cluster(),
                format!("{controller}:Cluster:cluster:cluster-lb-group"),
            ));
        }
        return None;
    };
    if ext.map_get(OWNER_CONTROLLER_KEY)?.as_str()? != controller {
        return None;
    }
    let kind = OwnerKind::parse(ext.map_get(OWNER_TYPE_KEY)?.as_str()?)?;
    let name = ext.map_get(OBJECT_NAME_KEY)?.as_str()?.to_string();
    let id = ext.map_get(PRIMARY_ID_KEY)?.as_str()?.to_string();
    Some((Owner { kind, name }, id))
}

/// The role of a GR's static binding of the cluster router's join address (per family).
pub fn gr_join_mac_role(family_label: &str) -> String {
    format!("gr-join-mac-{family_label}")
}

/// A `Static_MAC_Binding` (no `external_ids`) is ovnk's when it is on one of its gateway
/// routers' join ports (`rtoj-[<net>_]GR_<node>`): it belongs to that node.
fn static_mac_binding_owner(port: &str, ip: &str, controller: &str) -> Option<(Owner, String)> {
    let net = NetworkInfo::of_controller(controller)?;
    let gr_prefix = crate::desired::gateway_router_name(&net, "");
    let node = port.strip_prefix("rtoj-")?.strip_prefix(&gr_prefix)?;
    let label = if ip.contains(':') { "v6" } else { "v4" };
    let owner = Owner {
        kind: OwnerKind::Node,
        name: node.to_string(),
    };
    let id = format!(
        "{controller}:{}:{node}:{}",
        owner.kind.as_str(),
        gr_join_mac_role(label)
    );
    Some((owner, id))
}

/// A string column value.
pub fn s(v: impl Into<String>) -> Value {
    Value::Atom(Atom::String(v.into()))
}

/// A set of strings.
pub fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Value {
    Value::set(items.into_iter().map(|x| Atom::String(x.into())))
}

/// A map of strings.
pub fn smap(pairs: &[(&str, &str)]) -> Value {
    Value::string_map(pairs.iter().copied())
}

/// Upstream's `HashForOVN`: `a` + the decimal FNV-1a 64-bit hash, used for address set
/// and port group names (they must start with a letter and stay short).
pub fn hash_for_ovn(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("a{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // FNV-1a 64 of "" and "a" (published test vectors).
        assert_eq!(hash_for_ovn(""), format!("a{}", 0xcbf29ce484222325u64));
        assert_eq!(hash_for_ovn("a"), format!("a{}", 0xaf63dc4c8601ec8cu64));
    }

    #[test]
    fn ownership_round_trips() {
        let b = RowBuilder::new(&NetworkInfo::default_network(), Owner::pod("ns", "p"));
        let r = b.row(
            "Logical_Switch_Port",
            "port",
            vec![("name", s("ns_p"))],
            None,
        );
        assert_eq!(
            r.key.id,
            "default-network-controller:Pod:ns:p:port".to_string()
        );
        let (o, id) = owner_of(&r.columns, "default-network-controller").unwrap();
        assert_eq!(o, Owner::pod("ns", "p"));
        assert_eq!(id, r.key.id);
        assert!(owner_of(&r.columns, "other-controller").is_none());
    }
}
