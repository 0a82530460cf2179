//! The seed-003 scenario, played against a running lab: manifests from the repository
//! applied with the stock `kubectl`, then real packets between pods, and a small table
//! of what was measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Api;

use crate::layout::LabLayout;
use crate::LabError;

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub step: String,
    pub expect: &'static str,
    pub outcome: Outcome,
    pub took: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Behaved as the scenario expects.
    Ok(String),
    /// Did not.
    Failed(String),
    /// Not played, with the reason.
    Skipped(String),
}

fn err(m: impl std::fmt::Display) -> LabError {
    LabError::Setup(m.to_string())
}

/// Finds kubectl (the stock one a person would use).
pub fn kubectl() -> Result<PathBuf, LabError> {
    crate::daemons::find_program("kubectl")
        .ok_or_else(|| err("kubectl not found: the demo drives the lab with the stock kubectl"))
}

fn kubectl_run(kubeconfig: &Path, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(kubectl()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .map_err(|e| err(format!("kubectl {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl apply -f FILE`.
pub fn apply(kubeconfig: &Path, file: &Path) -> Result<String, LabError> {
    kubectl_run(kubeconfig, &["apply", "-f", &file.display().to_string()])
}

/// `kubectl delete -f FILE`.
pub fn delete(kubeconfig: &Path, file: &Path) -> Result<String, LabError> {
    kubectl_run(
        kubeconfig,
        &["delete", "--wait=false", "-f", &file.display().to_string()],
    )
}

/// Waits until the pods are Running with an IP; returns their IPs in order.
pub async fn wait_running(
    client: &kube::Client,
    pods: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<String>, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ips = Vec::new();
        let mut waiting = Vec::new();
        for (ns, name) in pods {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let pod = api.get_opt(name).await.ok().flatten();
            let st = pod.and_then(|p| p.status);
            match st {
                Some(s) if s.phase.as_deref() == Some("Running") && s.pod_ip.is_some() => {
                    ips.push(s.pod_ip.unwrap_or_default())
                }
                s => waiting.push(format!(
                    "{ns}/{name} ({})",
                    s.and_then(|s| s.phase)
                        .unwrap_or_else(|| "no status".into())
                )),
            }
        }
        if waiting.is_empty() {
            return Ok(ips);
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "pods not running after {timeout:?}: {}",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `cmd` inside the pod's network namespace; true when it exits 0.
pub fn in_pod(layout: &LabLayout, ns: &str, pod: &str, cmd: &[&str]) -> Result<bool, LabError> {
    let sandbox = crate::kubelet::find_pod(&layout.dir, ns, pod)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("pod {ns}/{pod} has no sandbox")))?;
    let netns = ovnk_netns::NetNs::named(&sandbox.netns)?;
    let mut c = Command::new(cmd[0]);
    c.args(&cmd[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    netns.command_in(&mut c)?;
    let status = c
        .status()
        .map_err(|e| err(format!("{} in {ns}/{pod}: {e}", cmd[0])))?;
    Ok(status.success())
}

/// `ovnk lab probe ADDR PORT` from inside the network namespace `netns`: the answer (the
/// backend's name), or None.
pub fn probe_from(netns: &str, addr: &str, port: u16) -> Result<Option<String>, LabError> {
    let exe = std::env::current_exe().map_err(|e| err(format!("own executable: {e}")))?;
    let ns = ovnk_netns::NetNs::named(netns)?;
    let mut c = Command::new(exe);
    c.args([
        "lab",
        "probe",
        addr,
        &port.to_string(),
        "--timeout-ms",
        "1500",
    ])
    .stderr(std::process::Stdio::null());
    ns.command_in(&mut c)?;
    let out = c
        .output()
        .map_err(|e| err(format!("probe {addr}:{port} in {netns}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success() && !text.is_empty()).then_some(text))
}

fn pod_netns(layout: &LabLayout, ns: &str, pod: &str) -> Result<String, LabError> {
    Ok(crate::kubelet::find_pod(&layout.dir, ns, pod)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("pod {ns}/{pod} has no sandbox")))?
        .netns)
}

/// Probes `addr:port` from `netns` up to `tries` times until every name in `want`
/// answered; the names seen.
fn backends_seen(
    netns: &str,
    addr: &str,
    port: u16,
    want: &[&str],
    tries: usize,
) -> Result<std::collections::BTreeSet<String>, LabError> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..tries {
        if let Some(n) = probe_from(netns, addr, port)? {
            seen.insert(n);
        }
        if want.iter().all(|w| seen.contains(*w)) {
            break;
        }
    }
    Ok(seen)
}

/// One ping; the first packet to a new remote node may be lost while OVS resolves the
/// tunnel's next hop (LAB.md pitfall 6), so a reachable target gets up to 3 tries.
pub fn ping(
    layout: &LabLayout,
    ns: &str,
    pod: &str,
    ip: &str,
    tries: usize,
) -> Result<bool, LabError> {
    for _ in 0..tries.max(1) {
        if in_pod(layout, ns, pod, &["ping", "-c", "1", "-W", "1", ip])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Plays the scenario. `services` and `policies` say whether this build programs them;
/// steps that need them are reported as skipped otherwise.
pub async fn play(
    layout: &LabLayout,
    kubeconfig: &Path,
    manifests: &Path,
    services: bool,
    policies: bool,
    say: &(dyn Fn(&str) + Send + Sync),
) -> Result<Vec<StepResult>, LabError> {
    let client = crate::cluster::kube_client(kubeconfig).await?;
    let mut results = Vec::new();
    let mut record = |step: &str, expect: &'static str, outcome: Outcome, took: Duration| {
        let mark = match &outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Failed(_) => "FAILED",
            Outcome::Skipped(_) => "skipped",
        };
        say(&format!("{step}: {mark}"));
        results.push(StepResult {
            step: step.to_string(),
            expect,
            outcome,
            took,
        });
    };

    let t = Instant::now();
    for f in ["00-namespaces.yaml", "10-alpine-pods.yaml"] {
        say(&format!("kubectl apply -f {f}"));
        apply(kubeconfig, &manifests.join(f))?;
    }
    let pods = [
        ("alpine-worker", "alpine-worker"),
        ("my-namespace", "alpine-worker"),
        ("alpine-worker2", "alpine-worker"),
    ];
    let ips = wait_running(&client, &pods, Duration::from_secs(90)).await?;
    record(
        "3 pods created and running",
        "Running",
        Outcome::Ok(ips.join(", ")),
        t.elapsed(),
    );

    let same_node = &ips[1];
    let other_node = &ips[2];
    let check = |name: &str, ip: &str, want: bool| -> Result<(Outcome, Duration), LabError> {
        let t = Instant::now();
        // A policy takes effect once the controller and every ovn-controller applied it
        // (eventually, as in Kubernetes): "no reply" is awaited up to a deadline.
        let got = if want {
            ping(layout, "alpine-worker", "alpine-worker", ip, 3)?
        } else {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if !ping(layout, "alpine-worker", "alpine-worker", ip, 1)? {
                    break false;
                }
                if Instant::now() >= deadline {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let outcome = if got == want {
            Outcome::Ok(if got {
                "reply".into()
            } else {
                "no reply".into()
            })
        } else {
            Outcome::Failed(format!(
                "{name}: {} {ip}",
                if got {
                    "unexpected reply from"
                } else {
                    "no reply from"
                }
            ))
        };
        Ok((outcome, t.elapsed()))
    };
    let (o, d) = check("same node", same_node, true)?;
    record(
        &format!("ping same node  alpine-worker -> my-namespace ({same_node})"),
        "reply",
        o,
        d,
    );
    let (o, d) = check("across nodes", other_node, true)?;
    record(
        &format!("ping other node alpine-worker -> alpine-worker2 ({other_node})"),
        "reply",
        o,
        d,
    );

    if services {
        say("kubectl apply -f 20-nginx.yaml");
        let t = Instant::now();
        apply(kubeconfig, &manifests.join("20-nginx.yaml"))?;
        let nginx = [
            ("nginx-namespace", "nginx-1"),
            ("nginx-namespace", "nginx-2"),
            ("nginx-namespace", "nginx-3"),
        ];
        let nips = wait_running(&client, &nginx, Duration::from_secs(90)).await?;
        record(
            "3 nginx pods running",
            "Running",
            Outcome::Ok(nips.join(", ")),
            t.elapsed(),
        );
        let names = ["nginx-1", "nginx-2", "nginx-3"];
        let judge = |seen: std::collections::BTreeSet<String>| {
            let list: Vec<String> = seen.iter().cloned().collect();
            if names.iter().all(|n| seen.contains(*n)) {
                Outcome::Ok(format!("answered by {}", list.join(", ")))
            } else {
                Outcome::Failed(format!("answered by [{}] only", list.join(", ")))
            }
        };

        let t = Instant::now();
        let svcs: Api<Service> = Api::namespaced(client.clone(), "nginx-namespace");
        let cluster_ip = svcs
            .get("nginx-service")
            .await
            .map_err(|e| err(format!("service nginx-service: {e}")))?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();
        let from = pod_netns(layout, "alpine-worker", "alpine-worker")?;
        let seen = backends_seen(&from, &cluster_ip, 80, &names, 30)?;
        record(
            &format!("ClusterIP nginx-service {cluster_ip}:80 from alpine-worker"),
            "all 3 backends",
            judge(seen),
            t.elapsed(),
        );

        // NodePort from the external client (the underlay) on every node's gateway IP.
        let t = Instant::now();
        let nodes: Api<Node> = Api::all(client.clone());
        let mut seen = std::collections::BTreeSet::new();
        let mut addrs = Vec::new();
        for n in nodes
            .list(&Default::default())
            .await
            .map_err(|e| err(format!("list nodes: {e}")))?
        {
            let gw = n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ovnk_annotations::L3_GATEWAY_CONFIG))
                .and_then(|t| ovnk_annotations::parse_l3_gateway_config(t).ok())
                .and_then(|m| m.get(ovnk_annotations::DEFAULT_NETWORK).cloned());
            if let Some(ovnk_annotations::L3GatewayConfig::Enabled(g)) = gw {
                for ip in g.ip_addresses.iter().filter(|i| i.addr().is_ipv4()) {
                    let a = ip.addr().to_string();
                    seen.extend(backends_seen(
                        &layout.underlay_netns(),
                        &a,
                        30080,
                        &names,
                        15,
                    )?);
                    addrs.push(a);
                }
            }
        }
        record(
            &format!(
                "NodePort {{{}}}:30080 from the external client",
                addrs.join(",")
            ),
            "all 3 backends",
            judge(seen),
            t.elapsed(),
        );
    } else {
        record(
            "ClusterIP and NodePort services",
            "answers",
            Outcome::Skipped("Services arrive with issue #7".into()),
            Duration::ZERO,
        );
    }

    if policies {
        let policy = manifests.join("30-namespace-isolation.yaml");
        say("kubectl apply -f 30-namespace-isolation.yaml");
        apply(kubeconfig, &policy)?;
        let (o, d) = check("isolated", same_node, false)?;
        record("ping with the namespace-isolation policy", "no reply", o, d);
        say("kubectl delete -f 30-namespace-isolation.yaml");
        delete(kubeconfig, &policy)?;
        let (o, d) = check("policy deleted", same_node, true)?;
        record("ping after the policy is deleted", "reply", o, d);
    } else {
        record(
            "namespace-isolation NetworkPolicy",
            "no reply, then reply",
            Outcome::Skipped("NetworkPolicy arrives with issue #8".into()),
            Duration::ZERO,
        );
    }
    Ok(results)
}

/// The table a person reads at the end.
pub fn render(results: &[StepResult]) -> String {
    let w = results
        .iter()
        .map(|r| r.step.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<20}  {:<8}  {:>8}  DETAIL\n",
        "STEP", "EXPECT", "RESULT", "TIME"
    );
    for r in results {
        let (res, detail) = match &r.outcome {
            Outcome::Ok(d) => ("ok", d.as_str()),
            Outcome::Failed(d) => ("FAILED", d.as_str()),
            Outcome::Skipped(d) => ("skipped", d.as_str()),
        };
        out.push_str(&format!(
            "{:<w$}  {:<20}  {:<8}  {:>6}ms  {}\n",
            r.step,
            r.expect,
            res,
            r.took.as_millis(),
            detail
        ));
    }
    out
}

/// Whether every played step behaved as expected.
pub fn all_ok(results: &[StepResult]) -> bool {
    results
        .iter()
        .all(|r| !matches!(r.outcome, Outcome::Failed(_)))
}
