//! The lab kubelet as root, with a fake CNI plugin (a shell script that logs its
//! environment, its stdin and the namespace it runs in, and prints a result), against a
//! real lab API server. Every namespace is `ovnkt-<pid>-…` and is deleted on every path.

mod k8s_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_common::{cluster, create_pod, pod_json, wait_for};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use ovnk_lab::daemon::Supervisor;
use ovnk_lab::kubelet::{self, KubeletConfig, ResponderProgram};
use ovnk_lab::responder::{probe, ProbeProto};
use serde_json::{json, Value};

const FAKE_CNI: &str = r#"#!/bin/sh
# Fake CNI plugin for the lab kubelet test.
dir="$(dirname "$0")/../cni-log"
mkdir -p "$dir"
stdin="$(cat)"
echo "$CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH|$(readlink /proc/self/ns/net)" >> "$dir/calls"
printf '%s' "$stdin" > "$dir/stdin-$CNI_COMMAND-$CNI_CONTAINERID.json"
if [ "$CNI_COMMAND" = ADD ]; then
  if [ -e "$dir/fail" ]; then
    printf '{"cniVersion":"1.0.0","code":7,"msg":"fake failure: %s"}' "$(cat "$dir/fail")"
    exit 1
  fi
  echo x >> "$dir/adds"
  n=$(( $(wc -l < "$dir/adds") + 10 ))
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"address":"10.244.0.%s/24","gateway":"10.244.0.1","interface":0}]}' "$CNI_NETNS" "$n"
fi
exit 0
"#;

/// Helper process, not a test: the responder the kubelet starts (see `responder_program`).
#[test]
#[ignore = "helper process started by the kubelet test"]
fn responder_child_via_sh() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: ovnk_lab::responder::ResponderConfig,
    }
    let args = std::env::var("OVNKT_RESPONDER_ARGS").expect("OVNKT_RESPONDER_ARGS");
    let cli = <Cli as clap::Parser>::parse_from(
        std::iter::once("responder").chain(args.split_whitespace()),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(ovnk_lab::responder::serve(cli.cfg))
        .expect("responder serves");
}

/// `sh -c` hands the kubelet's per-pod arguments to this test binary's
/// `responder_child_via_sh`. The supervisor records `/bin/sh` as the program; the helper's
/// name carries "sh" so that a later kubelet's stale-responder check (the command line
/// must mention the recorded program) recognises it, as it does `ovnk` in the lab.
fn responder_program() -> ResponderProgram {
    let me = std::env::current_exe().unwrap();
    let script = format!(
        "OVNKT_RESPONDER_ARGS=\"$*\" exec '{}' --ignored --exact responder_child_via_sh --nocapture --test-threads=1",
        me.display()
    );
    ResponderProgram {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into(), "responder".into()],
    }
}

/// Deletes this test's namespaces and kills its responders, also when it panics.
struct Guard {
    prefix: String,
    pids_dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.pids_dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid") {
                    if let Some(pid) = std::fs::read_to_string(e.path())
                        .ok()
                        .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
                    {
                        if pid > 1
                            && ovnk_lab::daemon::process_matches(pid, "responder_child_via_sh")
                        {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
        for n in ovnk_netns::list_named(&self.prefix) {
            let _ = ovnk_netns::delete_named(&n);
        }
    }
}

fn calls(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("cni-log/calls"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

fn count(dir: &Path, cmd: &str, cid: &str) -> usize {
    calls(dir)
        .iter()
        .filter(|c| c[0] == cmd && c[1] == cid)
        .count()
}

async fn pod(client: &Client, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .ok()
}

async fn running_ip(client: &Client, name: &str) -> Option<String> {
    let st = pod(client, name).await?.status?;
    (st.phase.as_deref() == Some("Running")).then_some(())?;
    st.pod_ip
}

/// Probes from inside the pod's namespace (the responder listens on every address).
async fn probe_in(netns: &str, proto: ProbeProto) -> Result<String, String> {
    let ns = ovnk_netns::NetNs::named(netns).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        ns.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(probe(
                proto,
                "127.0.0.1".parse().unwrap(),
                80,
                None,
                Duration::from_secs(2),
            ))
            .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
    })
    .await
    .map_err(|e| e.to_string())?
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_namespaces_cni_responders_and_status() {
    if !testkit::require_env(&["root"]) {
        return;
    }
    let c = cluster().await;
    let client = c.client.clone();
    let dir = c.dir.path().to_path_buf();
    let prefix = format!("ovnkt-{}-", std::process::id());
    let lab_dir = dir.join("lab");
    let _guard = Guard {
        prefix: prefix.clone(),
        pids_dir: lab_dir.join("kubelet/n1"),
    };
    let node_ns = Arc::new(ovnk_netns::create_named(&format!("{prefix}node")).unwrap());

    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("fake-cni"), FAKE_CNI).unwrap();
    std::fs::set_permissions(
        bin.join("fake-cni"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The conf dir stays empty until the "node agent" (below) installs the conflist.
    let conf = dir.join("net.d");

    let sup = Supervisor::new();
    let mut cfg = KubeletConfig::new("n1", vec!["172.18.0.2".parse().unwrap()], &prefix, &lab_dir);
    cfg.node_netns = Some(node_ns.clone());
    cfg.cni_bin_dir = bin.clone();
    cfg.cni_conf_dir = conf.clone();
    cfg.responder = Some(responder_program());
    cfg.supervisor = sup.clone();
    cfg.cni_timeout = Duration::from_secs(10);

    create_pod(
        &client,
        &pod_json("web", json!({}), json!({"nodeName": "n1"})),
    )
    .await;
    create_pod(
        &client,
        &pod_json(
            "hostnet",
            json!({}),
            json!({"nodeName": "n1", "hostNetwork": true}),
        ),
    )
    .await;
    create_pod(
        &client,
        &pod_json("elsewhere", json!({}), json!({"nodeName": "n2"})),
    )
    .await;
    let kubelet_task = tokio::spawn(kubelet::run(client.clone(), cfg.clone()));

    // Before the node agent has installed its configuration: an Event, no namespace, no
    // plugin run; then the retry picks the configuration up.
    let ev_api: Api<Event> = Api::namespaced(client.clone(), "default");
    let msg = wait_for("event about the missing CNI configuration", 10, || {
        let ev_api = ev_api.clone();
        async move {
            let evs = ev_api.list(&ListParams::default()).await.ok()?.items;
            evs.into_iter()
                .find(|e| e.involved_object.name.as_deref() == Some("web"))
                .and_then(|e| e.message)
        }
    })
    .await;
    assert!(msg.contains("no CNI configuration"), "{msg}");
    assert!(calls(&dir).is_empty());
    assert!(kubelet::find_pod(&lab_dir, "default", "web")
        .unwrap()
        .is_none());
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-ovn-kubernetes.conflist"),
        serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "ovn-kubernetes",
            "plugins": [{"type": "fake-cni", "marker": "m1"}, {"type": "portmap"}]}))
        .unwrap(),
    )
    .unwrap();

    let ip = wait_for("web Running", 15, || running_ip(&client, "web")).await;
    assert_eq!(ip, "10.244.0.11");
    let web = pod(&client, "web").await.unwrap();
    let st = web.status.clone().unwrap();
    assert_eq!(st.host_ip.as_deref(), Some("172.18.0.2"));
    let conds: Vec<(String, String)> = st
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conds.contains(&(t.to_string(), "True".to_string())),
            "{t}: {conds:?}"
        );
    }
    assert!(st.container_statuses.unwrap()[0].ready);

    // The sandbox: recorded, namespace exists, ADD ran once with the runtime's env and config.
    let sb = kubelet::find_pod(&lab_dir, "default", "web")
        .unwrap()
        .expect("web recorded");
    let uid = web.metadata.uid.clone().unwrap();
    assert_eq!(sb.container_id, uid);
    assert!(sb.netns.starts_with(&format!("{prefix}pod-")) && sb.netns.len() <= 64);
    assert!(Path::new("/run/netns").join(&sb.netns).exists());
    let add = calls(&dir)
        .into_iter()
        .find(|c| c[0] == "ADD" && c[1] == uid)
        .expect("ADD call");
    assert_eq!(add[2], format!("/run/netns/{}", sb.netns));
    assert_eq!(add[3], "eth0");
    for part in [
        "K8S_POD_NAMESPACE=default",
        "K8S_POD_NAME=web",
        &format!("K8S_POD_UID={uid}"),
        "IgnoreUnknown=1",
    ] {
        assert!(
            add[4].split(';').any(|p| p == part),
            "CNI_ARGS {} lacks {part}",
            add[4]
        );
    }
    assert_eq!(add[5], bin.display().to_string());
    assert_eq!(
        add[6],
        format!(
            "net:[{}]",
            ino(&Path::new("/run/netns").join(format!("{prefix}node")))
        ),
        "plugin runs in the node namespace"
    );
    let stdin: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("cni-log/stdin-ADD-{uid}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stdin,
        json!({"type": "fake-cni", "marker": "m1", "name": "ovn-kubernetes", "cniVersion": "1.0.0"})
    );

    // The responder answers inside the pod's namespace.
    let netns = sb.netns.clone();
    let answer = wait_for("responder answers", 15, || {
        let netns = netns.clone();
        async move { probe_in(&netns, ProbeProto::Tcp).await.ok() }
    })
    .await;
    assert_eq!(answer, "web");
    assert_eq!(
        probe_in(&sb.netns, ProbeProto::Udp).await.as_deref(),
        Ok("web")
    );

    // hostNetwork: Running with the node's IP, no sandbox, no CNI.
    assert_eq!(
        wait_for("hostnet Running", 10, || running_ip(&client, "hostnet")).await,
        "172.18.0.2"
    );
    assert!(kubelet::find_pod(&lab_dir, "default", "hostnet")
        .unwrap()
        .is_none());
    assert!(
        pod(&client, "elsewhere")
            .await
            .unwrap()
            .status
            .unwrap()
            .pod_ip
            .is_none(),
        "other node's pod untouched"
    );

    // A failing ADD: an Event and a not-ready status with the plugin's message, then a retry.
    std::fs::write(dir.join("cni-log/fail"), "no port for you").unwrap();
    create_pod(
        &client,
        &pod_json("bad", json!({}), json!({"nodeName": "n1"})),
    )
    .await;
    let msg = wait_for("FailedCreatePodSandBox event", 10, || {
        let ev_api = ev_api.clone();
        async move {
            let evs = ev_api.list(&ListParams::default()).await.ok()?.items;
            evs.into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("FailedCreatePodSandBox")
                        && e.involved_object.name.as_deref() == Some("bad")
                })
                .and_then(|e| e.message)
        }
    })
    .await;
    assert!(msg.contains("fake failure: no port for you"), "{msg}");
    // The status is written right after the Event.
    let (bad, ready) = wait_for("bad has a Ready condition", 10, || {
        let client = client.clone();
        async move {
            let bad = pod(&client, "bad").await?;
            let ready = bad
                .status
                .clone()?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            Some((bad, ready))
        }
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(ready.message.unwrap_or_default().contains("fake failure"));
    let bad_uid = bad.metadata.uid.unwrap();
    assert!(
        count(&dir, "DEL", &bad_uid) >= 1,
        "a failed ADD is cleaned up with DEL"
    );
    std::fs::remove_file(dir.join("cni-log/fail")).unwrap();
    wait_for("bad Running after retry", 15, || running_ip(&client, "bad")).await;

    // Kubelet restart: the existing sandbox is kept (no second ADD), the responder too.
    let responder_pid = sup.pid("pod/n1/default/web");
    assert!(responder_pid.is_some());
    kubelet_task.abort();
    let _ = kubelet_task.await;
    let kubelet_task = tokio::spawn(kubelet::run(client.clone(), cfg.clone()));
    create_pod(
        &client,
        &pod_json("late", json!({}), json!({"nodeName": "n1"})),
    )
    .await;
    wait_for("late Running", 15, || running_ip(&client, "late")).await;
    assert_eq!(
        count(&dir, "ADD", &uid),
        1,
        "no second ADD for web after a restart"
    );
    assert_eq!(sup.pid("pod/n1/default/web"), responder_pid);

    // Pod deleted: DEL with the ADD result as prevResult, responder stopped, namespace gone.
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("web torn down", 15, || {
        let (dir, netns) = (dir.clone(), sb.netns.clone());
        let (lab_dir, uid) = (lab_dir.clone(), uid.clone());
        async move {
            let gone = !Path::new("/run/netns").join(&netns).exists()
                && kubelet::find_pod(&lab_dir, "default", "web")
                    .ok()?
                    .is_none();
            (gone && count(&dir, "DEL", &uid) == 1).then_some(())
        }
    })
    .await;
    let del: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("cni-log/stdin-DEL-{uid}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.244.0.11/24");
    let pid = responder_pid.unwrap() as i32;
    wait_for("responder stopped", 10, || async move {
        (!ovnk_lab::daemon::process_matches(pid, "responder_child_via_sh")).then_some(())
    })
    .await;
    assert_eq!(sup.pid("pod/n1/default/web"), None);

    // Lab down (sandboxes removed, responders stopped) with the kubelet down, and a pod
    // deleted meanwhile: on restart the deleted one is torn down (DEL first) and the
    // remaining one is set up again.
    kubelet_task.abort();
    let _ = kubelet_task.await;
    let late = kubelet::find_pod(&lab_dir, "default", "late")
        .unwrap()
        .expect("late recorded");
    let bad_sb = kubelet::find_pod(&lab_dir, "default", "bad")
        .unwrap()
        .expect("bad recorded");
    let bad_adds = count(&dir, "ADD", &bad_uid);
    assert_eq!(kubelet::remove_sandboxes(&cfg).unwrap(), 2);
    sup.stop_all().await;
    assert!(!Path::new("/run/netns").join(&bad_sb.netns).exists());
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    let kubelet_task = tokio::spawn(kubelet::run(client.clone(), cfg.clone()));
    wait_for("late torn down after restart", 15, || {
        let (dir, late) = (dir.clone(), late.clone());
        async move {
            (!Path::new("/run/netns").join(&late.netns).exists()
                && count(&dir, "DEL", &late.container_id) == 1)
                .then_some(())
        }
    })
    .await;
    wait_for("bad set up again", 15, || {
        let (dir, bad_uid, netns) = (dir.clone(), bad_uid.clone(), bad_sb.netns.clone());
        async move {
            let ok = count(&dir, "ADD", &bad_uid) == bad_adds + 1
                && probe_in(&netns, ProbeProto::Tcp).await.ok()? == "bad";
            ok.then_some(())
        }
    })
    .await;

    // A responder left behind by an earlier kubelet process (its supervisor gone) holds
    // the pod's ports; the next kubelet stops it through its pidfile and starts its own.
    kubelet_task.abort();
    let _ = kubelet_task.await;
    sup.stop_all().await;
    let prog = responder_program();
    let mut cmd = std::process::Command::new(&prog.program);
    cmd.args(&prog.args)
        .args(["--name", "stale", "--tcp", "80", "--udp", "80"])
        .stdout(std::process::Stdio::null());
    ovnk_netns::NetNs::named(&bad_sb.netns)
        .unwrap()
        .command_in(&mut cmd)
        .unwrap();
    let mut stale = tokio::process::Command::from(cmd).spawn().unwrap();
    let stale_pid = stale.id().unwrap() as i32;
    let (_, pidfile) = cfg.responder_files("default", "bad");
    // The supervisor's pidfile format: pid, then program.
    std::fs::write(&pidfile, format!("{stale_pid}\n/bin/sh\n")).unwrap();
    let netns = bad_sb.netns.clone();
    wait_for("stale responder answers", 15, || {
        let netns = netns.clone();
        async move { (probe_in(&netns, ProbeProto::Tcp).await.ok()? == "stale").then_some(()) }
    })
    .await;
    let sup2 = Supervisor::new();
    let mut cfg2 = cfg.clone();
    cfg2.supervisor = sup2.clone();
    let kubelet_task = tokio::spawn(kubelet::run(client.clone(), cfg2));
    wait_for("new responder replaces the stale one", 15, || {
        let netns = netns.clone();
        async move { (probe_in(&netns, ProbeProto::Tcp).await.ok()? == "bad").then_some(()) }
    })
    .await;
    assert!(!ovnk_lab::daemon::process_matches(
        stale_pid,
        "responder_child_via_sh"
    ));
    let _ = stale.wait().await;
    assert!(sup2.pid("pod/n1/default/bad").is_some());

    kubelet_task.abort();
    let _ = kubelet_task.await;
    sup2.stop_all().await;
}
