//! `ovnk lab …`: up, down, status, exec, kubeconfig, and the lab's own daemons.
//!
//! `up` starts a detached supervisor (`ovnk lab supervise`) that owns every daemon of
//! the lab, shows its progress as it goes, and returns once the lab is ready; `down`
//! signals that supervisor and then removes whatever is left by pidfile and by the
//! lab's namespace prefix.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use ovnk_lab::cluster::{self, Lab, LabOptions};
use ovnk_lab::layout::{LabLayout, LAB_ROOT};

#[derive(clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Args, Clone)]
struct NameArg {
    /// The lab's name: labs with different names run side by side.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where labs keep their files.
    #[arg(long, default_value = LAB_ROOT, hide = true)]
    root: PathBuf,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    #[command(flatten)]
    lab: NameArg,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Run the OVN Northbound database as a 3-member Raft cluster.
    #[arg(long = "nb-raft", value_parser = clap::value_parser!(u8).range(3..=3))]
    nb_raft: Option<u8>,
    /// Use an existing Kubernetes API server instead of the lab's own.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Bring a lab up (OVN central, nodes, ovnk, API server) and return when it is ready.
    Up(UpArgs),
    /// Stop every daemon of the lab and remove its namespaces (the API objects are kept).
    Down(NameArg),
    /// Nodes, daemons and pods of a lab.
    Status(NameArg),
    /// Run a command inside a pod's network namespace: `ovnk lab exec -n NS POD -- CMD…`.
    Exec {
        #[command(flatten)]
        lab: NameArg,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Play the seed-003 scenario against a running lab and print what was measured.
    Demo {
        #[command(flatten)]
        lab: NameArg,
        /// The scenario's manifests.
        #[arg(long, default_value = "demo/seed-003")]
        manifests: PathBuf,
    },
    /// Print the path of the lab's kubeconfig.
    Kubeconfig(NameArg),
    /// Run the lab API server alone, in the foreground.
    Apiserver {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
    },
    /// (lab part) A pod's built-in responder: answers TCP, UDP and HTTP with the pod's name.
    Responder(ovnk_lab::responder::ResponderConfig),
    /// (lab part) One request to a responder; prints the answer.
    Probe(ovnk_lab::responder::ProbeConfig),
    /// (internal) The process `up` detaches: it owns the lab's daemons.
    #[command(hide = true)]
    Supervise(UpArgs),
}

fn layout_of(lab: &NameArg, nodes: usize) -> anyhow::Result<LabLayout> {
    LabLayout::with_root(&lab.name, nodes, &lab.root).map_err(anyhow::Error::msg)
}

pub fn run(rt: tokio::runtime::Runtime, args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up(up) => run_up(&up),
        LabCommand::Supervise(up) => rt.block_on(supervise(up)),
        LabCommand::Down(lab) => run_down(&lab),
        LabCommand::Status(lab) => rt.block_on(status(&lab)),
        LabCommand::Exec {
            lab,
            namespace,
            pod,
            command,
        } => exec(&lab, &namespace, &pod, &command),
        LabCommand::Demo { lab, manifests } => rt.block_on(demo(&lab, &manifests)),
        LabCommand::Kubeconfig(lab) => {
            println!("{}", layout_of(&lab, 1)?.kubeconfig().display());
            Ok(())
        }
        LabCommand::Apiserver { data_dir, listen } => rt.block_on(async {
            crate::init_tracing();
            let mut cfg = lab_apiserver::Config::new(data_dir);
            cfg.listen = listen;
            let server = lab_apiserver::Server::start(cfg).await?;
            println!("lab API server on {}", server.url());
            println!("kubeconfig: {}", server.kubeconfig_path().display());
            tokio::signal::ctrl_c().await?;
            server.shutdown().await;
            Ok(())
        }),
        LabCommand::Responder(cfg) => rt.block_on(async {
            crate::init_tracing();
            ovnk_lab::responder::serve(cfg).await?;
            Ok(())
        }),
        LabCommand::Probe(cfg) => rt.block_on(async {
            match ovnk_lab::responder::run_probe(&cfg).await {
                Ok(answer) => {
                    println!("{answer}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
        }),
    }
}

/// Starts the supervisor detached, relays its progress, returns when it says READY.
fn run_up(up: &UpArgs) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab needs root (network namespaces, OVS): run `sudo ovnk lab up`");
    }
    let layout = layout_of(&up.lab, up.nodes)?;
    if let Some(pid) = cluster::running_supervisor(&layout) {
        bail!(
            "lab {:?} is already running (supervisor pid {pid}); `ovnk lab down --name {}` first",
            layout.name,
            layout.name
        );
    }
    std::fs::create_dir_all(&layout.dir)
        .with_context(|| format!("creating {}", layout.dir.display()))?;
    let log = std::fs::File::create(layout.supervisor_log())
        .with_context(|| format!("creating {}", layout.supervisor_log().display()))?;
    let exe = std::env::current_exe().context("finding the ovnk binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["lab", "supervise", "--name", &up.lab.name, "--nodes"])
        .arg(up.nodes.to_string())
        .arg("--root")
        .arg(&up.lab.root);
    if up.nb_raft.is_some() {
        cmd.args(["--nb-raft", "3"]);
    }
    if let Some(k) = &up.kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from our terminal
    // so it outlives this command.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let t0 = Instant::now();
    println!("ovnk lab {:?}: bringing up {} nodes", layout.name, up.nodes);
    let mut child = cmd.spawn().context("starting the lab supervisor")?;
    let out = child.stdout.take().context("supervisor stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap_or_default();
        if line == "READY" {
            println!(
                "lab {:?} is up in {:.1}s\n  kubectl --kubeconfig {} get nodes -o wide\n  ovnk lab status --name {}\n  ovnk lab down --name {}",
                layout.name,
                t0.elapsed().as_secs_f64(),
                layout.kubeconfig().display(),
                layout.name,
                layout.name
            );
            return Ok(());
        }
        println!("  {line}");
        let _ = std::io::stdout().flush();
    }
    let status = child.wait().ok();
    let tail = std::fs::read_to_string(layout.supervisor_log()).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
    bail!(
        "the lab did not come up (supervisor {status:?}); last lines of {}:\n{}",
        layout.supervisor_log().display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

async fn supervise(up: UpArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    let layout = layout_of(&up.lab, up.nodes)?;
    std::fs::create_dir_all(&layout.dir)?;
    let exe = std::env::current_exe()?;
    std::fs::write(
        layout.supervisor_pidfile(),
        format!("{}\n{}\n", std::process::id(), exe.display()),
    )?;
    let opts = LabOptions {
        name: up.lab.name.clone(),
        nodes: up.nodes,
        nb_raft: up.nb_raft.is_some(),
        kubeconfig: up.kubeconfig.clone(),
        ovnk: exe,
        root: up.lab.root.clone(),
    };
    let say = |line: &str| {
        println!("{line}");
        let _ = std::io::stdout().flush();
        tracing::info!("{line}");
    };
    let lab = match Lab::up(&opts, &say).await {
        Ok(lab) => lab,
        Err(e) => {
            say(&format!("error: {e}"));
            let _ = std::fs::remove_file(layout.supervisor_pidfile());
            return Err(e.into());
        }
    };
    say("READY");
    // `up` has gone: further output goes to the log only.
    detach_stdout();
    let mut events = lab.supervisor.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => match ev {
                Ok(ev) => tracing::warn!("lab daemon: {ev:?}"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }
    tracing::info!("stopping lab {}", layout.name);
    lab.shutdown().await;
    let _ = std::fs::remove_file(layout.supervisor_pidfile());
    Ok(())
}

fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto our own stdout fd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

fn run_down(lab: &NameArg) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("`ovnk lab down` needs root");
    }
    let layout = layout_of(lab, 1)?;
    if let Some(pid) = cluster::running_supervisor(&layout) {
        println!("stopping lab {:?} (supervisor pid {pid})", layout.name);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while ovnk_lab::daemon::process_matches(pid, "ovnk") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if ovnk_lab::daemon::process_matches(pid, "ovnk") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let left = cluster::cleanup(&layout)?;
    for l in &left {
        println!("  removed leftover {l}");
    }
    let _ = std::fs::remove_file(layout.supervisor_pidfile());
    println!(
        "lab {:?} is down (API objects kept in {})",
        layout.name,
        layout.api_dir().display()
    );
    Ok(())
}

async fn status(lab: &NameArg) -> anyhow::Result<()> {
    let layout = layout_of(lab, 1)?;
    match cluster::running_supervisor(&layout) {
        Some(pid) => println!("lab {:?}: running (supervisor pid {pid})", layout.name),
        None => {
            println!("lab {:?}: not running", layout.name);
            return Ok(());
        }
    }
    println!("\nDAEMON                                   STATE  PID");
    for (name, pid, up) in daemon_states(&layout.dir) {
        println!(
            "{name:<40} {:<6} {}",
            if up { "up" } else { "DOWN" },
            pid.map(|p| p.to_string()).unwrap_or_default()
        );
    }
    let client = crate::kube_client(Some(&layout.kubeconfig())).await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    println!("\nNODE                 INTERNAL-IP      SUBNETS");
    for n in nodes.list(&Default::default()).await?.items {
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let subnets = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("k8s.ovn.org/node-subnets").cloned())
            .unwrap_or_default();
        println!(
            "{:<20} {ip:<16} {subnets}",
            n.metadata.name.unwrap_or_default()
        );
    }
    let pods: kube::Api<Pod> = kube::Api::all(client);
    println!(
        "\nNAMESPACE            POD                            NODE                 PHASE     IPS"
    );
    for p in pods.list(&Default::default()).await?.items {
        let st = p.status.clone().unwrap_or_default();
        let ips: Vec<String> = st
            .pod_ips
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip)
            .collect();
        println!(
            "{:<20} {:<30} {:<20} {:<9} {}",
            p.metadata.namespace.unwrap_or_default(),
            p.metadata.name.unwrap_or_default(),
            p.spec.and_then(|s| s.node_name).unwrap_or_default(),
            st.phase.unwrap_or_default(),
            ips.join(",")
        );
    }
    Ok(())
}

async fn demo(lab: &NameArg, manifests: &Path) -> anyhow::Result<()> {
    let layout = layout_of(lab, 1)?;
    if cluster::running_supervisor(&layout).is_none() {
        bail!("lab {:?} is not running: `ovnk lab up` first", layout.name);
    }
    println!("playing the seed-003 scenario on lab {:?}", layout.name);
    let say = |l: &str| {
        println!("  {l}");
        let _ = std::io::stdout().flush();
    };
    let results = ovnk_lab::demo::play(
        &layout,
        &layout.kubeconfig(),
        manifests,
        SERVICES_PROGRAMMED,
        POLICIES_PROGRAMMED,
        &say,
    )
    .await?;
    println!("\n{}", ovnk_lab::demo::render(&results));
    if !ovnk_lab::demo::all_ok(&results) {
        bail!("the scenario did not behave as expected (see the table above)");
    }
    Ok(())
}

/// Whether this build programs Services (issue #7) and NetworkPolicies (issue #8):
/// the demo plays those steps only then, and says so otherwise.
const SERVICES_PROGRAMMED: bool = true;
const POLICIES_PROGRAMMED: bool = true;

/// (name, pid, alive) of every daemon pidfile under the lab's `pids/`.
fn daemon_states(dir: &Path) -> Vec<(String, Option<i32>, bool)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("pids")) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rec = ovnk_lab::daemon::read_pidfile(&path).unwrap_or_default();
        out.push((name, rec.pid, rec.alive().is_some()));
    }
    out.sort();
    out
}

fn exec(lab: &NameArg, namespace: &str, pod: &str, command: &[String]) -> anyhow::Result<()> {
    let layout = layout_of(lab, 1)?;
    let sandbox = ovnk_lab::kubelet::find_pod(&layout.dir, namespace, pod)?.with_context(|| {
        format!(
            "pod {namespace}/{pod} has no sandbox in lab {:?}",
            layout.name
        )
    })?;
    let ns = ovnk_netns::NetNs::named(&sandbox.netns)
        .with_context(|| format!("pod {namespace}/{pod}"))?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    ns.command_in(&mut cmd)?;
    let status = cmd
        .status()
        .with_context(|| format!("running {} in pod {namespace}/{pod}", command[0]))?;
    std::process::exit(status.code().unwrap_or(1))
}
