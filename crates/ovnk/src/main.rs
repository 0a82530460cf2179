//! `ovnk`: one binary for the controller, the node agent and the lab.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ovnk", version, about = "OVN-Kubernetes, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            println!("ovnk {}: try `ovnk --help`", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
