//! What the lab kubelet has set up, kept in a JSON file per node under the lab dir so that
//! a restarted kubelet (and `ovnk lab exec`) knows every pod's namespace, container id and
//! CNI result without asking anyone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KubeletError;

/// How far a pod's sandbox got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SandboxPhase {
    /// The namespace may exist and CNI ADD may have run (recorded before either happens,
    /// so that a crash in between is cleaned up with a DEL on restart).
    Creating,
    /// CNI ADD succeeded; `result` holds its output.
    Ready,
}

/// One pod's sandbox: its network namespace and CNI attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSandbox {
    pub node: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Name under /run/netns.
    pub netns: String,
    pub container_id: String,
    pub phase: SandboxPhase,
    /// The pod's addresses from the CNI result, in its order.
    #[serde(default)]
    pub ips: Vec<std::net::IpAddr>,
    /// The plugin's ADD result as printed (given back as `prevResult` on DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl PodSandbox {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// By `namespace/name`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodSandbox>,
}

/// The directory holding the kubelets' state files and responder logs.
pub fn kubelet_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("kubelet")
}

pub fn state_path(lab_dir: &Path, node: &str) -> PathBuf {
    kubelet_dir(lab_dir).join(format!("{node}.json"))
}

impl NodeState {
    /// A missing file is an empty state; an unreadable one is an error naming the file
    /// (silently starting empty would leak every namespace it recorded).
    pub fn load(path: &Path) -> Result<NodeState, KubeletError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| KubeletError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(e) => Err(KubeletError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), KubeletError> {
        let err = |e: &dyn std::fmt::Display| KubeletError::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(&e))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| err(&e))
    }
}

/// Finds a pod's sandbox by namespace and name in every node's state file (for
/// `ovnk lab exec`). `Ok(None)` when no kubelet has set the pod up.
pub fn find_pod(
    lab_dir: &Path,
    namespace: &str,
    name: &str,
) -> Result<Option<PodSandbox>, KubeletError> {
    let dir = kubelet_dir(lab_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KubeletError::State {
                path: dir,
                reason: e.to_string(),
            })
        }
    };
    let key = format!("{namespace}/{name}");
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        if let Some(sb) = NodeState::load(&f)?.pods.remove(&key) {
            return Ok(Some(sb));
        }
    }
    Ok(None)
}

/// 64-bit FNV-1a: a stable hash (std's hasher may change between Rust releases, and the
/// names it makes must survive a rebuild of ovnk).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The pod's namespace name: `<prefix>pod-<12 hex of hash(ns, name, uid)>`. Deterministic
/// (a recreated pod with the same name gets a new uid, hence a new namespace) and short
/// whatever the pod's name (netns names are limited to 64 characters).
pub fn pod_netns_name(prefix: &str, namespace: &str, name: &str, uid: &str) -> String {
    let h = fnv1a(&[namespace, name, uid]);
    format!("{prefix}pod-{:012x}", h & 0xffff_ffff_ffff)
}

/// The CNI container id: the pod uid when it has the spec's allowed characters, else a hash.
pub fn container_id(namespace: &str, name: &str, uid: &str) -> String {
    let ok = !uid.is_empty()
        && uid
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && uid.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        uid.to_string()
    } else {
        format!("lab{:016x}", fnv1a(&[namespace, name, uid]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = pod_netns_name("ovnk-lab-", "default", &"x".repeat(253), "u1");
        assert!(a.len() <= 64 && a.starts_with("ovnk-lab-pod-"), "{a}");
        assert_eq!(
            a,
            pod_netns_name("ovnk-lab-", "default", &"x".repeat(253), "u1")
        );
        assert_ne!(
            a,
            pod_netns_name("ovnk-lab-", "default", &"x".repeat(253), "u2")
        );
        // Field boundaries matter: ("a","bc") is not ("ab","c").
        assert_ne!(fnv1a(&["a", "bc"]), fnv1a(&["ab", "c"]));
    }

    #[test]
    fn container_ids_follow_the_spec_charset() {
        assert_eq!(container_id("d", "p", "0b6f-11aa"), "0b6f-11aa");
        let odd = container_id("d", "p", "Weird/UID");
        assert!(odd.starts_with("lab") && odd.len() == 19, "{odd}");
    }

    #[test]
    fn state_round_trips_and_lookup_finds_pods() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = NodeState::default();
        let sb = PodSandbox {
            node: "n1".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u".into(),
            netns: "ovnk-pod-1".into(),
            container_id: "u".into(),
            phase: SandboxPhase::Ready,
            ips: vec!["10.244.0.5".parse().unwrap()],
            result: None,
        };
        st.pods.insert(sb.key(), sb.clone());
        st.save(&state_path(dir.path(), "n1")).unwrap();
        assert_eq!(find_pod(dir.path(), "default", "web").unwrap(), Some(sb));
        assert_eq!(find_pod(dir.path(), "default", "nope").unwrap(), None);
        std::fs::write(state_path(dir.path(), "n2"), b"{garbage").unwrap();
        let err = NodeState::load(&state_path(dir.path(), "n2")).unwrap_err();
        assert!(err.to_string().contains("n2.json"), "{err}");
    }
}
