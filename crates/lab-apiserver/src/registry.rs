//! The table of kinds the server serves.
//!
//! Every kind is one [`ResourceDef`] entry: adding a CRD-like kind (EgressIP, AdminNetworkPolicy,
//! NetworkAttachmentDefinition, ...) needs no code, only a row. Kinds with server-side
//! behaviour beyond the generic rules (ClusterIP allocation, namespace lifecycle, ...) name it
//! through [`Behavior`].

/// Special server-side behaviour of a kind; everything else is generic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Generic,
    Pod,
    Service,
    Namespace,
    Node,
}

/// A printer column for `as=Table`: `path` is a dotted JSON path into the object.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub path: &'static str,
    pub priority: u8,
}

/// One served kind.
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores status writes and vice versa.
    pub status_subresource: bool,
    /// `metadata.generation` is kept (1 on create, +1 on spec change or deletion start).
    pub generation: bool,
    /// Field selectors beyond `metadata.name`/`metadata.namespace`: (label, dotted JSON path).
    pub field_selectors: &'static [(&'static str, &'static str)],
    /// Extra Table columns shown after NAME (AGE is appended); ignored for kinds with a
    /// hand-written Table (pods).
    pub columns: &'static [Column],
    pub categories: &'static [&'static str],
    pub behavior: Behavior,
}

impl ResourceDef {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Stable storage name, independent of the table order.
    pub fn storage_key(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Label used in messages: `pods`, `endpointslices.discovery.k8s.io`.
    pub fn qualified_plural(&self) -> String {
        self.storage_key()
    }

    /// The path of the field label in the selector table, if supported.
    pub fn field_path(&self, label: &str) -> Option<&'static str> {
        match label {
            "metadata.name" => Some("metadata.name"),
            "metadata.namespace" => Some("metadata.namespace"),
            _ => self
                .field_selectors
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, p)| *p),
        }
    }
}

const fn def(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced,
        status_subresource: false,
        generation: false,
        field_selectors: &[],
        columns: &[],
        categories: &[],
        behavior: Behavior::Generic,
    }
}

const fn col(name: &'static str, path: &'static str, priority: u8) -> Column {
    Column {
        name,
        path,
        priority,
    }
}

/// Every kind the lab API server serves.
pub const BUILTIN_KINDS: &[ResourceDef] = &[
    ResourceDef {
        short_names: &["ns"],
        status_subresource: true,
        field_selectors: &[("status.phase", "status.phase")],
        columns: &[col("Status", "status.phase", 0)],
        behavior: Behavior::Namespace,
        ..def("", "v1", "Namespace", "namespaces", "namespace", false)
    },
    ResourceDef {
        short_names: &["no"],
        status_subresource: true,
        field_selectors: &[("spec.unschedulable", "spec.unschedulable")],
        columns: &[
            col("Status", "status.conditions[type=Ready].status", 0),
            col("Version", "status.nodeInfo.kubeletVersion", 0),
            col(
                "Internal-IP",
                "status.addresses[type=InternalIP].address",
                1,
            ),
        ],
        behavior: Behavior::Node,
        ..def("", "v1", "Node", "nodes", "node", false)
    },
    ResourceDef {
        short_names: &["po"],
        status_subresource: true,
        generation: true,
        field_selectors: &[
            ("spec.nodeName", "spec.nodeName"),
            ("spec.restartPolicy", "spec.restartPolicy"),
            ("spec.schedulerName", "spec.schedulerName"),
            ("spec.serviceAccountName", "spec.serviceAccountName"),
            ("spec.hostNetwork", "spec.hostNetwork"),
            ("status.phase", "status.phase"),
            ("status.podIP", "status.podIP"),
            ("status.podIPs", "status.podIP"),
            ("status.nominatedNodeName", "status.nominatedNodeName"),
        ],
        categories: &["all"],
        behavior: Behavior::Pod,
        ..def("", "v1", "Pod", "pods", "pod", true)
    },
    ResourceDef {
        short_names: &["svc"],
        status_subresource: true,
        field_selectors: &[
            ("spec.clusterIP", "spec.clusterIP"),
            ("spec.type", "spec.type"),
        ],
        columns: &[
            col("Type", "spec.type", 0),
            col("Cluster-IP", "spec.clusterIP", 0),
            col("Selector", "spec.selector", 1),
        ],
        categories: &["all"],
        behavior: Behavior::Service,
        ..def("", "v1", "Service", "services", "service", true)
    },
    ResourceDef {
        short_names: &["ev"],
        field_selectors: &[
            ("involvedObject.kind", "involvedObject.kind"),
            ("involvedObject.name", "involvedObject.name"),
            ("involvedObject.namespace", "involvedObject.namespace"),
            ("involvedObject.uid", "involvedObject.uid"),
            ("reason", "reason"),
            ("type", "type"),
            ("source", "source.component"),
        ],
        columns: &[
            col("Type", "type", 0),
            col("Reason", "reason", 0),
            col("Message", "message", 0),
        ],
        ..def("", "v1", "Event", "events", "event", true)
    },
    ResourceDef {
        short_names: &["cm"],
        ..def("", "v1", "ConfigMap", "configmaps", "configmap", true)
    },
    ResourceDef {
        short_names: &["sa"],
        ..def(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    ResourceDef {
        short_names: &["ep"],
        ..def("", "v1", "Endpoints", "endpoints", "endpoints", true)
    },
    ResourceDef {
        generation: true,
        columns: &[col("AddressType", "addressType", 0)],
        ..def(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
        )
    },
    ResourceDef {
        short_names: &["netpol"],
        generation: true,
        columns: &[col("Pod-Selector", "spec.podSelector.matchLabels", 0)],
        ..def(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    ResourceDef {
        columns: &[col("Holder", "spec.holderIdentity", 0)],
        ..def(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            "lease",
            true,
        )
    },
    ResourceDef {
        short_names: &["ev"],
        field_selectors: &[("reason", "reason"), ("type", "type")],
        ..def("events.k8s.io", "v1", "Event", "events", "event", true)
    },
    // ovnk's own kinds and the CRDs it consumes: one row each, no code.
    ResourceDef {
        short_names: &["eip"],
        status_subresource: true,
        generation: true,
        columns: &[col("EgressIPs", "spec.egressIPs", 0)],
        ..def(
            "k8s.ovn.org",
            "v1",
            "EgressIP",
            "egressips",
            "egressip",
            false,
        )
    },
    ResourceDef {
        short_names: &["ef"],
        status_subresource: true,
        generation: true,
        columns: &[col("EgressFirewall Status", "status.status", 0)],
        ..def(
            "k8s.ovn.org",
            "v1",
            "EgressFirewall",
            "egressfirewalls",
            "egressfirewall",
            true,
        )
    },
    ResourceDef {
        short_names: &["anp"],
        status_subresource: true,
        generation: true,
        columns: &[col("Priority", "spec.priority", 0)],
        ..def(
            "policy.networking.k8s.io",
            "v1alpha1",
            "AdminNetworkPolicy",
            "adminnetworkpolicies",
            "adminnetworkpolicy",
            false,
        )
    },
    ResourceDef {
        short_names: &["net-attach-def"],
        generation: true,
        ..def(
            "k8s.cni.cncf.io",
            "v1",
            "NetworkAttachmentDefinition",
            "network-attachment-definitions",
            "network-attachment-definition",
            true,
        )
    },
];

/// The kinds served by one server: the built-ins plus any extra rows from the config.
#[derive(Debug, Clone)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Registry {
    pub fn new(extra: &[ResourceDef]) -> Self {
        let mut defs = BUILTIN_KINDS.to_vec();
        defs.extend_from_slice(extra);
        Registry { defs }
    }

    pub fn defs(&self) -> &[ResourceDef] {
        &self.defs
    }

    pub fn get(&self, idx: usize) -> &ResourceDef {
        &self.defs[idx]
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.defs.len()
    }

    /// Index of the kind served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.defs
            .iter()
            .position(|d| d.group == group && d.version == version && d.plural == plural)
    }

    pub fn by_storage_key(&self, key: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.storage_key() == key)
    }

    pub fn index_of(&self, behavior: Behavior) -> Option<usize> {
        self.defs.iter().position(|d| d.behavior == behavior)
    }

    /// The served group-versions: core `v1` first, then groups in table order.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for d in &self.defs {
            if !out.contains(&(d.group, d.version)) {
                out.push((d.group, d.version));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_unique_paths_and_crd_rows() {
        let r = Registry::new(&[]);
        let mut seen = std::collections::HashSet::new();
        for d in r.defs() {
            assert!(seen.insert((d.group, d.version, d.plural)), "{d:?}");
        }
        let eip = r.find("k8s.ovn.org", "v1", "egressips").map(|i| r.get(i));
        assert_eq!(eip.map(|d| d.kind), Some("EgressIP"));
        assert!(r
            .find("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
            .is_some());
        assert_eq!(r.get(0).api_version(), "v1");
        let anp = r
            .find(
                "policy.networking.k8s.io",
                "v1alpha1",
                "adminnetworkpolicies",
            )
            .map(|i| r.get(i).api_version());
        assert_eq!(anp.as_deref(), Some("policy.networking.k8s.io/v1alpha1"));
    }
}
