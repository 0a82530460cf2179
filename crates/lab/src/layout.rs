//! Where everything of one lab lives: names of namespaces, addresses, directories and
//! sockets. Pure: computing the layout touches nothing, so `down` after a crash can
//! find every leftover from the lab's name alone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The root of all labs' files.
pub const LAB_ROOT: &str = "/var/lib/ovnk-lab";

/// One lab's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabLayout {
    /// The lab's name (`default` unless given); two labs with different names coexist.
    pub name: String,
    /// Prefix of every namespace this lab makes.
    pub prefix: String,
    pub dir: PathBuf,
    pub nodes: Vec<NodeLayout>,
    /// Underlay /24; `.1` is the underlay namespace ("external host" and default gateway).
    pub underlay_net: Ipv4Addr,
    /// Loopback address for the Raft members' cluster traffic (one per lab).
    pub raft_base: Ipv4Addr,
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    pub name: String,
    pub index: usize,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The node's host end on the underlay bridge (in the underlay namespace).
    pub underlay_port: String,
    pub dir: PathBuf,
}

/// Kind-style node names, as in OVN-Kubernetes' own kind clusters (and seed 003).
pub fn node_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i {
            0 => "ovn-control-plane".to_string(),
            1 => "ovn-worker".to_string(),
            k => format!("ovn-worker{k}"),
        })
        .collect()
}

/// Lab names end up in namespace names and paths: keep them short and plain.
pub fn check_lab_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 16
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "invalid lab name {name:?}: use 1-16 lowercase letters, digits or '-'"
        ));
    }
    Ok(())
}

impl LabLayout {
    pub fn new(name: &str, nodes: usize) -> Result<Self, String> {
        Self::with_root(name, nodes, Path::new(LAB_ROOT))
    }

    pub fn with_root(name: &str, nodes: usize, root: &Path) -> Result<Self, String> {
        check_lab_name(name)?;
        if nodes == 0 || nodes > 50 {
            return Err(format!("--nodes {nodes}: between 1 and 50"));
        }
        let prefix = format!("ovnk-{name}");
        let dir = root.join(name);
        // The underlay lives inside the lab's own namespaces, so every lab can use the
        // same addresses; the seed documents' kind network is 172.18.0.0/16.
        let underlay_net = Ipv4Addr::new(172, 18, 0, 0);
        let h = name
            .bytes()
            .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
        let raft_base = Ipv4Addr::new(127, 33, (h % 250) as u8 + 1, 1);
        let nodes = node_names(nodes)
            .into_iter()
            .enumerate()
            .map(|(i, n)| NodeLayout {
                netns: format!("{prefix}-{n}"),
                ip: Ipv4Addr::new(172, 18, 0, 2 + i as u8),
                underlay_port: format!("ul{i}"),
                dir: dir.join("nodes").join(&n),
                index: i,
                name: n,
            })
            .collect();
        Ok(Self {
            name: name.to_string(),
            prefix,
            dir,
            nodes,
            underlay_net,
            raft_base,
        })
    }

    pub fn underlay_netns(&self) -> String {
        format!("{}-underlay", self.prefix)
    }
    /// The underlay's own address: the external host and the nodes' default gateway.
    pub fn underlay_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 18, 0, 1)
    }
    pub const UNDERLAY_PREFIX_LEN: u8 = 24;
    pub fn central_dir(&self) -> PathBuf {
        self.dir.join("central")
    }
    pub fn nb_socket(&self) -> PathBuf {
        self.central_dir().join("nb.sock")
    }
    pub fn nb_member_socket(&self, k: usize) -> PathBuf {
        self.central_dir().join(format!("nb{k}.sock"))
    }
    pub fn sb_socket(&self) -> PathBuf {
        self.central_dir().join("sb.sock")
    }
    /// Every log of the lab; kept by `down`, replaced by the next `up`.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn central_log_dir(&self) -> PathBuf {
        self.logs_dir().join("central")
    }
    pub fn api_dir(&self) -> PathBuf {
        self.dir.join("api")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.api_dir().join("kubeconfig")
    }
    pub fn supervisor_pidfile(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn node(&self, name: &str) -> Option<&NodeLayout> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl NodeLayout {
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Logs live outside the node's run directory so they survive `down` for a post-mortem
    /// (the next `up` starts them afresh).
    pub fn log_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .and_then(|nodes| nodes.parent())
            .map(|lab| lab.join("logs").join(&self.name))
            .unwrap_or_else(|| self.dir.join("log"))
    }
    pub fn ovs_db(&self) -> PathBuf {
        self.dir.join("conf.db")
    }
    pub fn ovs_socket(&self) -> PathBuf {
        self.run_dir().join("db.sock")
    }
    pub fn cni_socket(&self) -> PathBuf {
        self.run_dir().join("cni").join("ovn-cni-server.sock")
    }
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni").join("bin")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni").join("net.d")
    }
    /// The node's gateway router address on the underlay (`.10x` for node `x`).
    pub fn gateway_router_ip(&self) -> Ipv4Addr {
        let o = self.ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 100 + self.index as u8)
    }
    /// OVS system-id = OVN chassis name; stable across restarts of the lab.
    pub fn system_id(&self) -> String {
        format!("{}-chassis", self.name)
    }
    /// breth0's MAC: its own (LAB.md pitfall 3), derived from the node IP.
    pub fn breth0_mac(&self) -> [u8; 6] {
        let o = self.ip.octets();
        [0x02, 0x42, o[0], o[1], o[2], o[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_node_layout() {
        let l = LabLayout::with_root("default", 3, Path::new("/tmp/x")).unwrap();
        let names: Vec<_> = l.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["ovn-control-plane", "ovn-worker", "ovn-worker2"]);
        assert_eq!(l.nodes[2].netns, "ovnk-default-ovn-worker2");
        assert_eq!(l.nodes[0].ip, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(l.nodes[2].ip, Ipv4Addr::new(172, 18, 0, 4));
        assert!(l.nodes.iter().all(|n| n.netns.len() <= 64));
        assert_eq!(l.nb_socket(), Path::new("/tmp/x/default/central/nb.sock"));
    }

    #[test]
    fn names_are_checked() {
        assert!(LabLayout::new("Bad Name", 3).is_err());
        assert!(LabLayout::new("a", 0).is_err());
        assert!(LabLayout::new("two", 2).is_ok());
        let a = LabLayout::new("a", 1).unwrap();
        let b = LabLayout::new("b", 1).unwrap();
        assert_ne!(a.prefix, b.prefix);
        assert_ne!(a.raft_base, b.raft_base);
    }
}
