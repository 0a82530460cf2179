//! Shared test helpers: start a server in a temp dir and build kube-rs clients for it.
#![allow(dead_code)]

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use lab_apiserver::Server;
use std::path::Path;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn config(dir: &Path) -> lab_apiserver::Config {
    lab_apiserver::Config::new(dir.join("data"))
}

pub async fn start(cfg: lab_apiserver::Config) -> Result<Server, lab_apiserver::Error> {
    Server::start(cfg).await
}

/// The kube-rs config exactly as a user's kubeconfig gives it.
pub async fn kube_config(
    kubeconfig: &Path,
) -> Result<Config, Box<dyn std::error::Error + Send + Sync>> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

pub async fn client(server: &Server) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Client::try_from(
        kube_config(server.kubeconfig_path()).await?,
    )?)
}

/// The HTTP status of a kube-rs error, if it came from the server.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// `CI=true` turns a missing prerequisite into a failure instead of a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
