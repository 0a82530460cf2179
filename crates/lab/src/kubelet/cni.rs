//! Running a CNI plugin as a container runtime does: the network configuration from the
//! node's conf dir on stdin, the parameters in `CNI_*` variables, the result (or a CNI
//! error object) on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ovnk_netns::NetNs;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::KubeletError;

/// The network configuration a runtime hands to the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// The plugin's own object with the list's `name` and `cniVersion` added.
    pub plugin: Value,
    /// The plugin's `type`: the binary's name in the CNI bin dir.
    pub plugin_type: String,
}

/// Reads the first configuration of `dir` in name order (as libcni does): a `.conflist`
/// contributes its first plugin, a `.conf`/`.json` its single object. `Ok(None)` when the
/// dir has none yet (the node agent has not installed it).
pub fn load_network_config(dir: &Path) -> Result<Option<NetworkConfig>, KubeletError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KubeletError::CniConfig {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "conflist" | "conf" | "json"))
        })
        .collect();
    files.sort();
    let Some(file) = files.into_iter().next() else {
        return Ok(None);
    };
    let text = std::fs::read(&file).map_err(|e| KubeletError::CniConfig {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    parse_network_config(&file, &text).map(Some)
}

/// Parses one configuration file's text (see [`load_network_config`]).
pub fn parse_network_config(file: &Path, text: &[u8]) -> Result<NetworkConfig, KubeletError> {
    let bad = |reason: String| KubeletError::CniConfig {
        path: file.to_path_buf(),
        reason,
    };
    let v: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let is_list = file.extension().is_some_and(|x| x == "conflist") || v.get("plugins").is_some();
    let mut plugin = if is_list {
        v.get("plugins")
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .cloned()
            .ok_or_else(|| bad("\"plugins\" is missing or empty".into()))?
    } else {
        v.clone()
    };
    let obj = plugin
        .as_object_mut()
        .ok_or_else(|| bad("the plugin configuration is not an object".into()))?;
    if is_list {
        for k in ["name", "cniVersion"] {
            if let Some(x) = v.get(k) {
                obj.insert(k.to_string(), x.clone());
            }
        }
    }
    let plugin_type = obj
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(|| bad("the plugin has no valid \"type\"".into()))?
        .to_string();
    Ok(NetworkConfig {
        file: file.to_path_buf(),
        plugin,
        plugin_type,
    })
}

/// Everything one invocation needs besides the command.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub bin_dir: &'a Path,
    pub node_netns: Option<&'a Arc<NetNs>>,
    pub config: &'a NetworkConfig,
    pub container_id: &'a str,
    pub netns_path: &'a Path,
    pub ifname: &'a str,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub timeout: Duration,
}

/// How a plugin run ended, when it ran at all.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginOutcome {
    /// Exit 0; stdout parsed as JSON (`Null` when empty, as DEL prints nothing).
    Success(Value),
    /// A non-zero exit: the CNI error object's message, or stderr/stdout when there is none.
    Failed(String),
}

/// Runs the plugin for `command` (ADD or DEL), inside the node's namespace.
pub async fn invoke(
    inv: &Invocation<'_>,
    command: &str,
    prev_result: Option<&Value>,
) -> Result<PluginOutcome, KubeletError> {
    let program = inv.bin_dir.join(&inv.config.plugin_type);
    let run_err = |reason: String| KubeletError::Cni {
        pod: format!("{}/{}", inv.pod_namespace, inv.pod_name),
        command: command.to_string(),
        reason,
    };
    let mut conf = inv.config.plugin.clone();
    if let (Some(prev), Some(obj)) = (prev_result, conf.as_object_mut()) {
        obj.insert("prevResult".into(), prev.clone());
    }
    let stdin = serde_json::to_vec(&conf).map_err(|e| run_err(e.to_string()))?;
    let mut cmd = std::process::Command::new(&program);
    cmd.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns_path)
        .env("CNI_IFNAME", inv.ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                inv.pod_namespace, inv.pod_name, inv.container_id, inv.pod_uid
            ),
        )
        .env("CNI_PATH", inv.bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = inv.node_netns {
        ns.command_in(&mut cmd)?;
    }
    let mut cmd = tokio::process::Command::from(cmd);
    // A cancelled kubelet must not leave plugin processes behind.
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| run_err(format!("cannot run {}: {e}", program.display())))?;
    if let Some(mut si) = child.stdin.take() {
        // A plugin that exits without reading stdin is judged by its exit status below.
        let _ = si.write_all(&stdin).await;
        drop(si);
    }
    let out = match tokio::time::timeout(inv.timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| run_err(e.to_string()))?,
        Err(_) => {
            return Err(run_err(format!(
                "{} did not finish within {:?}",
                program.display(),
                inv.timeout
            )))
        }
    };
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(PluginOutcome::Success(Value::Null));
        }
        let v: Value = serde_json::from_str(text.trim())
            .map_err(|e| run_err(format!("the result is not JSON ({e}): {}", text.trim())))?;
        return Ok(PluginOutcome::Success(v));
    }
    let msg = match ovnk_cni::CniError::from_json(&out.stdout) {
        Some(e) => e.to_string(),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let detail = [stderr.trim(), stdout.trim()]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("no output")
                .to_string();
            format!("{} exited with {}: {detail}", program.display(), out.status)
        }
    };
    Ok(PluginOutcome::Failed(msg))
}

/// The pod's addresses in an ADD result, in the result's order.
pub fn result_ips(pod: &str, result: &Value) -> Result<Vec<std::net::IpAddr>, KubeletError> {
    let parsed = ovnk_cni::CniResult::from_json(result).map_err(|e| KubeletError::Cni {
        pod: pod.to_string(),
        command: "ADD".into(),
        reason: format!("invalid result: {e}"),
    })?;
    let ips: Vec<std::net::IpAddr> = parsed.ips.iter().map(|i| i.address.addr()).collect();
    if ips.is_empty() {
        return Err(KubeletError::Cni {
            pod: pod.to_string(),
            command: "ADD".into(),
            reason: format!("the result has no IP address: {result}"),
        });
    }
    Ok(ips)
}

/// A minimal conflist in the shape `ovnk node` installs (for tests and docs).
pub fn example_conflist(plugin_type: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "ovn-kubernetes",
        "plugins": [{"type": plugin_type, "ipam": {}, "dns": {}, "logFile": "/var/log/ovn-kubernetes/ovn-k8s-cni-overlay.log"}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_first_plugin_gets_name_and_version() {
        let text = serde_json::to_vec(&json!({
            "cniVersion": "1.1.0", "name": "ovn-kubernetes",
            "plugins": [{"type": "ovn-k8s-cni-overlay", "mtu": 1400}, {"type": "portmap"}]
        }))
        .unwrap();
        let c = parse_network_config(Path::new("/x/10-ovn.conflist"), &text).unwrap();
        assert_eq!(c.plugin_type, "ovn-k8s-cni-overlay");
        assert_eq!(
            c.plugin,
            json!({"type": "ovn-k8s-cni-overlay", "mtu": 1400, "name": "ovn-kubernetes", "cniVersion": "1.1.0"})
        );
    }

    #[test]
    fn bad_configs_name_the_file() {
        for text in [
            &b"{"[..],
            br#"{"plugins": []}"#,
            br#"{"plugins": [{"type": "../x"}]}"#,
        ] {
            let e = parse_network_config(Path::new("/x/bad.conflist"), text).unwrap_err();
            assert!(e.to_string().contains("/x/bad.conflist"), "{e}");
        }
    }

    #[test]
    fn missing_dir_is_not_an_error() {
        assert_eq!(
            load_network_config(Path::new("/nonexistent/cni/net.d")).unwrap(),
            None
        );
    }

    #[test]
    fn result_ips_in_order() {
        let r = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.244.1.5/24", "interface": 0}, {"address": "fd00:10:244:1::5/64", "interface": 0}]});
        let ips = result_ips("d/p", &r).unwrap();
        assert_eq!(
            ips,
            vec![
                "10.244.1.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00:10:244:1::5".parse().unwrap()
            ]
        );
        assert!(result_ips("d/p", &json!({"cniVersion": "1.0.0", "ips": []})).is_err());
    }
}
