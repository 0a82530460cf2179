//! The server: configuration, start-up (credentials, storage, bootstrap objects), the TLS
//! accept loop, and shutdown.

use crate::api::{handle, App};
use crate::error::{ApiError, Error};
use crate::objects::{self, Ctx, SYSTEM_NAMESPACES};
use crate::registry::{Registry, ResourceDef};
use crate::services::ServiceNet;
use crate::store::Store;
use crate::tls::{write_kubeconfig, Credentials};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How to run a lab API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `state.db`, the credentials and `kubeconfig` (created if missing).
    pub data_dir: PathBuf,
    /// Must be a loopback address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Service CIDRs, primary first; two (one per family) make the cluster dual-stack.
    pub service_cidrs: Vec<IpNet>,
    pub node_port_range: (u16, u16),
    /// Events kept for watches; watching from an older RV answers 410.
    pub event_window: usize,
    pub bookmark_interval: Duration,
    pub max_body_bytes: usize,
    /// Extra kinds served besides [`crate::BUILTIN_KINDS`].
    pub extra_kinds: Vec<ResourceDef>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_cidrs: vec![IpNet::from(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                16,
            ))],
            node_port_range: (30000, 32767),
            event_window: 20_000,
            bookmark_interval: Duration::from_secs(60),
            max_body_bytes: 3 * 1024 * 1024,
            extra_kinds: Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {}: the lab API server binds loopback addresses only",
                self.listen
            )));
        }
        match self.service_cidrs.as_slice() {
            [_] => {}
            [a, b] if a.addr().is_ipv4() != b.addr().is_ipv4() => {}
            _ => {
                return Err(Error::Config(
                    "service CIDRs: give one, or two of different IP families".into(),
                ))
            }
        }
        let (lo, hi) = self.node_port_range;
        if lo == 0 || lo > hi {
            return Err(Error::Config(format!("node port range {lo}-{hi} is empty")));
        }
        Ok(())
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves the tasks running until
/// the runtime ends.
pub struct Server {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    creds: Credentials,
    app: Arc<App>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the data dir, binds, writes the kubeconfig and starts serving.
    pub async fn start(cfg: Config) -> Result<Server, Error> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| Error::io(format!("create {}", cfg.data_dir.display()), e))?;
        restrict_dir(&cfg.data_dir)?;
        let creds = Credentials::load_or_create(&cfg.data_dir)?;
        let tls = tokio_rustls::TlsAcceptor::from(creds.server_config()?);
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::io(format!("bind {}", cfg.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        let reg = Arc::new(Registry::new(&cfg.extra_kinds));
        let db = cfg.data_dir.join("state.db");
        let store = block::block_in_place_or_spawn(move || {
            Store::open(&db, reg.clone(), cfg.event_window).map(|s| (s, reg))
        })?;
        let (store, reg) = store;
        let app = Arc::new(App {
            store,
            reg,
            net: ServiceNet {
                cidrs: cfg.service_cidrs.clone(),
                node_ports: cfg.node_port_range,
            },
            token: creds.token.clone(),
            server_addr: addr.to_string(),
            max_body: cfg.max_body_bytes,
            bookmark_interval: cfg.bookmark_interval,
        });
        bootstrap(&app, addr.port())
            .await
            .map_err(|e| Error::Config(format!("creating the built-in objects: {e}")))?;
        let url = format!("https://{addr}");
        let kubeconfig = write_kubeconfig(&cfg.data_dir, &creds, &url)?;
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, tls, app.clone(), stop.clone()));
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "lab API server listening");
        Ok(Server {
            addr,
            kubeconfig,
            creds,
            app,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn token(&self) -> &str {
        &self.creds.token
    }

    pub fn ca_pem(&self) -> &str {
        &self.creds.ca_pem
    }

    /// Stops accepting, closes every connection (ending watches) and flushes storage.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
        let app = self.app;
        let _ = tokio::task::spawn_blocking(move || app.store.close()).await;
    }
}

/// Keeps the data dir private: it holds the token and the server key.
fn restrict_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))
}

mod block {
    /// Opening the store reads the whole database; on a multi-thread runtime let tokio move
    /// other tasks away, on a current-thread runtime just run it.
    pub fn block_in_place_or_spawn<T>(f: impl FnOnce() -> T) -> T {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
            _ => f(),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    app: Arc<App>,
    stop: Arc<Notify>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, _) = tokio::select! {
            _ = stop.notified() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Watch events are small writes that must leave at once.
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        conns.spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(app, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// The objects every cluster has: system namespaces, and the `default/kubernetes` Service with
/// its EndpointSlice pointing at this server.
async fn bootstrap(app: &Arc<App>, port: u16) -> Result<(), ApiError> {
    let reg = app.reg.clone();
    let find = |g: &str, p: &str| {
        reg.find(g, "v1", p)
            .ok_or_else(|| ApiError::internal(format!("{p} missing from the registry")))
    };
    let (ns_res, svc_res, eps_res) = (
        find("", "namespaces")?,
        find("", "services")?,
        find("discovery.k8s.io", "endpointslices")?,
    );
    let ctx = Ctx {
        reg: &reg,
        net: &app.net,
        dry_run: false,
    };
    let net = app.net.clone();
    app.store
        .mutate(|txn| {
            for ns in SYSTEM_NAMESPACES {
                if txn.get(ns_res, "", ns).is_none() {
                    objects::create(
                        txn,
                        &ctx,
                        ns_res,
                        None,
                        json!({"metadata": {"name": ns}}),
                    )?;
                }
            }
            let ips: Vec<String> = (0..net.cidrs.len())
                .filter_map(|i| net.first_ip(i))
                .map(|ip| ip.to_string())
                .collect();
            let ports = json!([{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}]);
            match txn.get(svc_res, "default", "kubernetes") {
                None => {
                    objects::create(
                        txn,
                        &ctx,
                        svc_res,
                        Some("default"),
                        json!({"metadata": {"name": "kubernetes",
                                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
                               "spec": {"type": "ClusterIP", "clusterIPs": ips,
                                        "ipFamilyPolicy": if ips.len() > 1 { "RequireDualStack" } else { "SingleStack" },
                                        "ports": ports}}),
                    )?;
                }
                Some(svc) if svc.pointer("/spec/ports/0/targetPort") != Some(&json!(port)) => {
                    let mut s = (*svc).clone();
                    objects::set_field(&mut s, &["spec", "ports"], ports);
                    objects::update(txn, &ctx, svc_res, "default", "kubernetes", s, objects::Sub::Main)?;
                }
                Some(_) => {}
            }
            let eps = json!({
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
            });
            match txn.get(eps_res, "default", "kubernetes") {
                None => {
                    objects::create(txn, &ctx, eps_res, Some("default"), eps)?;
                }
                Some(old) if old.pointer("/ports/0/port") != Some(&json!(port)) => {
                    let mut e = (*old).clone();
                    objects::set_field(&mut e, &["ports"], eps["ports"].clone());
                    objects::update(txn, &ctx, eps_res, "default", "kubernetes", e, objects::Sub::Main)?;
                }
                Some(_) => {}
            }
            Ok(())
        })
        .await
}
