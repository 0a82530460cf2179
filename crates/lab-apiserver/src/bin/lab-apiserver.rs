//! `lab-apiserver`: runs the lab API server in the foreground (for manual runs and tests).

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "A small Kubernetes-compatible API server on SQLite, for the ovnk lab")]
struct Args {
    /// Data directory (state.db, credentials, kubeconfig).
    #[arg(long)]
    data_dir: PathBuf,
    /// Listen address; loopback only. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Service CIDR; repeat once for dual-stack (one per family).
    #[arg(long = "service-cidr", default_value = "10.96.0.0/16")]
    service_cidrs: Vec<ipnet::IpNet>,
    /// Write the bound address (host:port) to this file once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = lab_apiserver::Config::new(&args.data_dir);
    cfg.listen = args.listen;
    cfg.service_cidrs = args.service_cidrs;
    let server = lab_apiserver::Server::start(cfg)
        .await
        .context("starting the lab API server")?;
    println!("listening on {}", server.url());
    println!("kubeconfig: {}", server.kubeconfig_path().display());
    if let Some(f) = &args.addr_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, server.local_addr().to_string())
            .and_then(|_| std::fs::rename(&tmp, f))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}
