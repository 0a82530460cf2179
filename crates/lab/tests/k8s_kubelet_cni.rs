//! The lab kubelet with the REAL plugin logic (`ovnk_cni::shim::run`, what
//! `ovn-k8s-cni-overlay` runs) talking the real protocol to a CNI server whose handler
//! records what arrives: the kubelet's env, CNI_ARGS and config must survive the shim's
//! validation and reach the node agent's side intact. Root: the kubelet creates
//! namespaces (`ovnkt-<pid>-…`, deleted on every path).

mod k8s_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_common::{cluster, create_pod, pod_json, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use ovnk_cni::{CniError, CniHandler, CniRequest, CniResult, Interface, IpConfig};
use ovnk_lab::kubelet::{self, KubeletConfig};
use serde_json::json;

/// Helper process, not a test: the plugin binary the kubelet runs (see `plugin_script`).
#[test]
#[ignore = "helper process run as the CNI plugin by the kubelet test"]
fn cni_plugin_child() {
    use std::os::fd::FromRawFd;
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_"))
        .collect();
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin).expect("stdin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(ovnk_cni::shim::run(&env, &stdin));
    // SAFETY: the wrapper script opened fd 3 as the plugin's real stdout (libtest owns 1)
    // and nothing else in this process uses it.
    let mut out = unsafe { std::fs::File::from_raw_fd(3) };
    if !outcome.stdout.is_empty() {
        let _ = writeln!(out, "{}", outcome.stdout);
    }
    for l in &outcome.stderr {
        eprintln!("{l}");
    }
    std::process::exit(outcome.exit_code);
}

fn plugin_script() -> String {
    let me = std::env::current_exe().unwrap();
    format!(
        "#!/bin/sh\nexec 3>&1\nexec '{}' --ignored --exact cni_plugin_child --test-threads=1 >/dev/null\n",
        me.display()
    )
}

/// The node agent's side: answers ADD with a fixed address and records every request.
#[derive(Default)]
struct Agent {
    seen: Mutex<Vec<CniRequest>>,
}

impl CniHandler for Agent {
    async fn add(&self, req: CniRequest) -> Result<CniResult, CniError> {
        let sandbox = req.netns.as_ref().map(|p| p.display().to_string());
        self.seen.lock().unwrap().push(req);
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:f4:05:07".into()),
                mtu: None,
                sandbox,
            }],
            ips: vec![IpConfig {
                address: "10.244.5.7/24".parse().unwrap(),
                gateway: Some("10.244.5.1".parse().unwrap()),
                interface: Some(0),
            }],
            ..Default::default()
        })
    }
    async fn del(&self, req: CniRequest) -> Result<(), CniError> {
        self.seen.lock().unwrap().push(req);
        Ok(())
    }
    async fn check(&self, _req: CniRequest) -> Result<(), CniError> {
        Ok(())
    }
    async fn status(&self, _req: CniRequest) -> Result<(), CniError> {
        Ok(())
    }
    async fn gc(&self, _req: CniRequest) -> Result<(), CniError> {
        Ok(())
    }
}

struct Guard(String);
impl Drop for Guard {
    fn drop(&mut self) {
        for n in ovnk_netns::list_named(&self.0) {
            let _ = ovnk_netns::delete_named(&n);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_speaks_cni_to_the_real_shim() {
    if !testkit::require_env(&["root"]) {
        return;
    }
    let c = cluster().await;
    let client = c.client.clone();
    let dir = c.dir.path().to_path_buf();
    let prefix = format!("ovnkt-{}-", std::process::id());
    let _guard = Guard(prefix.clone());
    let node_ns = Arc::new(ovnk_netns::create_named(&format!("{prefix}node")).unwrap());

    let sock = dir.join("cni.sock");
    let agent = Arc::new(Agent::default());
    let server = tokio::spawn(ovnk_cni::serve(
        tokio::net::UnixListener::bind(&sock).unwrap(),
        agent.clone(),
    ));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("ovn-k8s-cni-overlay");
    std::fs::write(&plugin, plugin_script()).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-ovn-kubernetes.conflist"),
        serde_json::to_vec(&json!({"cniVersion": "1.1.0", "name": "ovn-kubernetes",
            "plugins": [{"type": "ovn-k8s-cni-overlay", "serverSocket": sock}]}))
        .unwrap(),
    )
    .unwrap();

    let lab_dir = dir.join("lab");
    let mut cfg = KubeletConfig::new("n1", vec!["172.18.0.2".parse().unwrap()], &prefix, &lab_dir);
    cfg.node_netns = Some(node_ns);
    cfg.cni_bin_dir = bin.clone();
    cfg.cni_conf_dir = conf;
    cfg.cni_timeout = Duration::from_secs(20);
    let task = tokio::spawn(kubelet::run(client.clone(), cfg));

    create_pod(
        &client,
        &pod_json("real", json!({}), json!({"nodeName": "n1"})),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ip = wait_for("real Running", 20, || {
        let api = api.clone();
        async move {
            let st = api.get("real").await.ok()?.status?;
            (st.phase.as_deref() == Some("Running")).then_some(st.pod_ip?)
        }
    })
    .await;
    assert_eq!(ip, "10.244.5.7");
    let uid = api.get("real").await.unwrap().metadata.uid.unwrap();
    let sb = kubelet::find_pod(&lab_dir, "default", "real")
        .unwrap()
        .unwrap();
    {
        let seen = agent.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one ADD");
        let add = &seen[0];
        assert_eq!(add.command, ovnk_cni::Command::Add);
        assert_eq!(add.container_id, uid);
        assert_eq!(add.ifname, "eth0");
        assert_eq!(
            add.netns.as_deref(),
            Some(Path::new("/run/netns").join(&sb.netns).as_path())
        );
        assert_eq!(add.args.pod_namespace.as_deref(), Some("default"));
        assert_eq!(add.args.pod_name.as_deref(), Some("real"));
        assert_eq!(add.args.pod_uid.as_deref(), Some(uid.as_str()));
        assert_eq!(add.cni_path, vec![PathBuf::from(&bin)]);
        assert_eq!(add.config.name, "ovn-kubernetes");
        assert_eq!(add.config.cni_version.as_str(), "1.1.0");
    }

    api.delete("real", &DeleteParams::default()).await.unwrap();
    let netns = sb.netns.clone();
    wait_for("real torn down", 20, || {
        let netns = netns.clone();
        let agent = agent.clone();
        async move {
            let dels = agent.seen.lock().unwrap().len() == 2;
            (dels && !Path::new("/run/netns").join(&netns).exists()).then_some(())
        }
    })
    .await;
    let seen = agent.seen.lock().unwrap();
    let del = &seen[1];
    assert_eq!(del.command, ovnk_cni::Command::Del);
    assert_eq!(del.container_id, uid);
    let prev = del
        .config
        .prev_result
        .as_ref()
        .expect("DEL carries prevResult");
    assert_eq!(prev.ips[0].address.to_string(), "10.244.5.7/24");
    drop(seen);
    task.abort();
    server.abort();
}
