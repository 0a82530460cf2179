//! `ovnk`: one binary for the controller, the node agent and the lab.

mod lab_cli;
mod node_cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ovnk", version, about = "OVN-Kubernetes, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster-side controller (ovnkube-master / cluster-manager upstream).
    Controller(ControllerArgs),
    /// The node agent and its CNI server (ovnkube-node upstream).
    Node(node_cli::NodeArgs),
    /// A whole multi-node cluster network on this machine, with real OVN/OVS.
    Lab(lab_cli::LabArgs),
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    config: ovnk_controller::ControllerConfig,
}

/// A kube-rs client from an explicit kubeconfig, or kube-rs's own discovery.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    match kubeconfig {
        Some(path) => Ok(ovnk_lab::cluster::kube_client(path).await?),
        None => kube::Client::try_default()
            .await
            .context("no kubeconfig given and none found (KUBECONFIG, ~/.kube/config, in-cluster)"),
    }
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGTERM (how Kubernetes and `ovnk lab down` stop a daemon) or Ctrl-C.
fn terminated() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match cli.command {
        Command::Controller(args) => rt.block_on(async {
            init_tracing();
            let client = kube_client(args.kubeconfig.as_deref()).await?;
            ovnk_controller::run_until(args.config, client, terminated()?)
                .await
                .context("ovnk controller")
        }),
        Command::Node(args) => rt.block_on(node_cli::run(args)),
        Command::Lab(args) => lab_cli::run(rt, args),
    }
}
