//! Lab stand-in for Kubernetes' `agnhost netexec`: the process every lab pod runs, and a
//! small client to probe it.
//!
//! The server ([`serve`]) answers on every given port:
//! - TCP: a request line `GET /<path> HTTP/1.x` gets an HTTP/1.1 answer (`/`, `/hostname`
//!   → the pod name, `/clientip` → the peer's `ip:port`, `/echo?msg=x` → `x`, `/healthz` →
//!   `ok`, anything else 404). A text line (`hostname`, `clientip`, `echo x`) gets its answer
//!   plus `\n`; a client that sends nothing within [`SILENT_CLIENT_WAIT`] gets the pod name
//!   plus `\n`. The connection is then closed.
//! - UDP: every datagram gets one datagram back, with the same text commands.
//!
//! Without `--bind` it listens on `[::]` (dual-stack) and also on `0.0.0.0` when the kernel
//! keeps IPv6 sockets v6-only, so pods of every family are answered. Peer addresses are
//! reported in their IPv4 form when they arrive as v4-mapped IPv6 addresses.
//!
//! The client ([`probe`]) is what `ovnk lab probe` runs inside a pod's namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long the server waits for a client's first bytes before answering a silent one.
pub const SILENT_CLIENT_WAIT: Duration = Duration::from_millis(200);
/// Bound on reading one request (a slow or stuck client must not hold a task forever).
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests are tiny; anything longer is cut here.
const MAX_REQUEST: usize = 8192;

/// `ovnk lab responder`: what one pod's responder serves.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ResponderConfig {
    /// The name returned to every request (the pod's name).
    #[arg(long)]
    pub name: String,
    /// TCP ports to serve (repeatable; HTTP is detected on the same ports).
    #[arg(long = "tcp", value_name = "PORT")]
    pub tcp: Vec<u16>,
    /// UDP ports to serve (repeatable).
    #[arg(long = "udp", value_name = "PORT")]
    pub udp: Vec<u16>,
    /// Listen on this address only (default: every address of both families).
    #[arg(long)]
    pub bind: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("responder {name}: no port to serve (give --tcp and/or --udp)")]
    NoPorts { name: String },
    #[error("responder {name}: cannot listen on {proto} {addr}: {source}")]
    Bind {
        name: String,
        proto: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Bound sockets, ready to serve: [`Responder::local_addrs`] tells the ports (useful with
/// port 0), [`Responder::run`] serves them.
pub struct Responder {
    name: Arc<str>,
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl Responder {
    /// Binds every port of `cfg`; a port that cannot be bound is an error (naming it).
    pub async fn bind(cfg: &ResponderConfig) -> Result<Responder, ResponderError> {
        if cfg.tcp.is_empty() && cfg.udp.is_empty() {
            return Err(ResponderError::NoPorts {
                name: cfg.name.clone(),
            });
        }
        let mut tcp = Vec::new();
        for &port in &cfg.tcp {
            let bind_err = |addr, source| ResponderError::Bind {
                name: cfg.name.clone(),
                proto: "TCP",
                addr,
                source,
            };
            for addr in listen_addrs(cfg.bind, port, &mut tcp, |a| async move {
                TcpListener::bind(a).await
            })
            .await
            .map_err(|(a, e)| bind_err(a, e))?
            {
                tracing::debug!(name = %cfg.name, %addr, "responder listening on TCP");
            }
        }
        let mut udp = Vec::new();
        for &port in &cfg.udp {
            let bind_err = |addr, source| ResponderError::Bind {
                name: cfg.name.clone(),
                proto: "UDP",
                addr,
                source,
            };
            listen_addrs(cfg.bind, port, &mut udp, |a| async move {
                UdpSocket::bind(a).await
            })
            .await
            .map_err(|(a, e)| bind_err(a, e))?;
        }
        Ok(Responder {
            name: Arc::from(cfg.name.as_str()),
            tcp,
            udp,
        })
    }

    /// The bound addresses: TCP ones first, then UDP ones.
    pub fn local_addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        (
            self.tcp
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect(),
            self.udp
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .collect(),
        )
    }

    /// Serves forever (until the future is dropped).
    pub async fn run(self) {
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.tcp {
            tasks.spawn(serve_tcp(l, self.name.clone()));
        }
        for s in self.udp {
            tasks.spawn(serve_udp(s, self.name.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Binds every port of `cfg` and serves them forever. Returns only on a bind error.
pub async fn serve(cfg: ResponderConfig) -> Result<(), ResponderError> {
    let r = Responder::bind(&cfg).await?;
    tracing::info!(name = %cfg.name, tcp = ?cfg.tcp, udp = ?cfg.udp, "responder serving");
    r.run().await;
    Ok(())
}

/// Binds `port` on `bind`, or on `[::]` and (when IPv6 sockets are v6-only here, or IPv6 is
/// off) on `0.0.0.0`. Returns the addresses bound, pushing the sockets onto `out`.
async fn listen_addrs<S, F, Fut>(
    bind: Option<IpAddr>,
    port: u16,
    out: &mut Vec<S>,
    bind_fn: F,
) -> Result<Vec<SocketAddr>, (SocketAddr, io::Error)>
where
    S: HasLocalAddr,
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = io::Result<S>>,
{
    if let Some(ip) = bind {
        let a = SocketAddr::new(ip, port);
        let s = bind_fn(a).await.map_err(|e| (a, e))?;
        let bound = s.addr().unwrap_or(a);
        out.push(s);
        return Ok(vec![bound]);
    }
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    match bind_fn(v6).await {
        Ok(s) => {
            let bound = s.addr().unwrap_or(v6);
            out.push(s);
            let mut addrs = vec![bound];
            // With port 0 the second socket must take the port the first one got.
            let v4 = SocketAddr::new(v4.ip(), bound.port());
            match bind_fn(v4).await {
                Ok(s4) => {
                    addrs.push(s4.addr().unwrap_or(v4));
                    out.push(s4);
                }
                // The usual case: `[::]` already receives IPv4 (bindv6only=0).
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err((v4, e)),
            }
            Ok(addrs)
        }
        // No IPv6 in this namespace (disabled, or no kernel support): IPv4 only.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
            ) =>
        {
            let s = bind_fn(v4).await.map_err(|e| (v4, e))?;
            let bound = s.addr().unwrap_or(v4);
            out.push(s);
            Ok(vec![bound])
        }
        Err(e) => Err((v6, e)),
    }
}

trait HasLocalAddr {
    fn addr(&self) -> Option<SocketAddr>;
}
impl HasLocalAddr for TcpListener {
    fn addr(&self) -> Option<SocketAddr> {
        self.local_addr().ok()
    }
}
impl HasLocalAddr for UdpSocket {
    fn addr(&self) -> Option<SocketAddr> {
        self.local_addr().ok()
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`: clients should see the address they came from.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

async fn serve_tcp(listener: TcpListener, name: Arc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(answer_tcp(stream, canonical(peer), name.clone()));
            }
            Err(e) => {
                // EMFILE and friends are transient; don't spin on them.
                tracing::warn!(%name, "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_udp(sock: UdpSocket, name: Arc<str>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let reply = text_answer(&text, &name, canonical(peer));
                if let Err(e) = sock.send_to(reply.as_bytes(), peer).await {
                    tracing::debug!(%name, %peer, "UDP reply: {e}");
                }
            }
            Err(e) => {
                // ICMP errors from earlier replies surface here on Linux; keep serving.
                tracing::debug!(%name, "UDP receive: {e}");
            }
        }
    }
}

/// The answer to a text command (UDP datagram or a non-HTTP TCP line).
fn text_answer(text: &str, name: &str, peer: SocketAddr) -> String {
    let cmd = text.trim();
    if cmd == "clientip" {
        peer.to_string()
    } else if let Some(msg) = cmd.strip_prefix("echo ") {
        msg.to_string()
    } else {
        name.to_string()
    }
}

async fn answer_tcp(mut stream: TcpStream, peer: SocketAddr, name: Arc<str>) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    // Silent clients (plain "connect and read") get the name after a short wait.
    let first = tokio::time::timeout(SILENT_CLIENT_WAIT, stream.read(&mut chunk)).await;
    match first {
        Err(_) | Ok(Ok(0)) => {
            let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        Ok(Err(_)) => return,
    }
    // Read the rest of the first line, and for HTTP the rest of the header block.
    let deadline = tokio::time::Instant::now() + REQUEST_READ_TIMEOUT;
    loop {
        let http = is_http_request_line(first_line(&buf));
        let complete = if http {
            find(&buf, b"\r\n\r\n").is_some() || find(&buf, b"\n\n").is_some()
        } else {
            buf.contains(&b'\n')
        };
        if complete || buf.len() >= MAX_REQUEST {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(first_line(&buf)).into_owned();
    let reply = if is_http_request_line(line.as_bytes()) {
        http_answer(&line, &name, peer)
    } else {
        format!("{}\n", text_answer(&line, &name, peer))
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn first_line(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..end];
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD SP target SP HTTP/1.x`.
fn is_http_request_line(line: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = s.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && (version == "HTTP/1.1" || version == "HTTP/1.0")
}

fn http_answer(request_line: &str, name: &str, peer: SocketAddr) -> String {
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("GET");
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, body) = match path {
        "/" | "/hostname" => (200, name.to_string()),
        "/clientip" => (200, peer.to_string()),
        "/healthz" => (200, "ok".to_string()),
        "/echo" => (
            200,
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("msg="))
                .map(percent_decode)
                .unwrap_or_default(),
        ),
        _ => (404, "404 page not found".to_string()),
    };
    let reason = if code == 200 { "OK" } else { "Not Found" };
    let shown = if method == "HEAD" { "" } else { body.as_str() };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{shown}",
        body.len()
    )
}

/// `%XX` and `+` decoding for `/echo?msg=`; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match hex_byte(b[i + 1], b[i + 2]) {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16);
    Some((d(hi)? * 16 + d(lo)?) as u8)
}

/// What [`probe`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeProto {
    /// Connect, send the payload line (default `hostname`), read until the server closes.
    Tcp,
    /// One datagram (default `hostname`), one datagram back.
    Udp,
    /// `GET <payload>` (default `/hostname`); the body of a 200 answer.
    Http,
}

impl std::fmt::Display for ProbeProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeProto::Tcp => "tcp",
            ProbeProto::Udp => "udp",
            ProbeProto::Http => "http",
        })
    }
}

/// `ovnk lab probe`: one request to a responder.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ProbeConfig {
    /// tcp, udp or http.
    #[arg(long, value_enum, default_value_t = ProbeProto::Tcp)]
    pub proto: ProbeProto,
    /// The address to probe (IPv4 or IPv6).
    pub addr: IpAddr,
    /// The port to probe.
    #[arg(default_value_t = 80)]
    pub port: u16,
    /// What to send: a command (`hostname`, `clientip`, `echo x`) or, for http, a path.
    #[arg(long)]
    pub payload: Option<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{proto} probe of {addr}: no answer within {timeout:?}")]
    Timeout {
        proto: ProbeProto,
        addr: SocketAddr,
        timeout: Duration,
    },
    #[error("{proto} probe of {addr}: {source}")]
    Io {
        proto: ProbeProto,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("http probe of {addr}: {status}")]
    HttpStatus { addr: SocketAddr, status: String },
    #[error("http probe of {addr}: malformed answer: {reason}")]
    BadAnswer { addr: SocketAddr, reason: String },
}

/// Runs a [`ProbeConfig`].
pub async fn run_probe(cfg: &ProbeConfig) -> Result<String, ProbeError> {
    probe(
        cfg.proto,
        cfg.addr,
        cfg.port,
        cfg.payload.as_deref(),
        Duration::from_millis(cfg.timeout_ms),
    )
    .await
}

/// Sends one request to `addr:port` and returns the answer without its trailing newline.
/// The whole exchange (connect included) is bounded by `timeout`.
pub async fn probe(
    proto: ProbeProto,
    addr: IpAddr,
    port: u16,
    payload: Option<&str>,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let target = SocketAddr::new(addr, port);
    let io_err = |source| ProbeError::Io {
        proto,
        addr: target,
        source,
    };
    let exchange = async {
        match proto {
            ProbeProto::Tcp => {
                let mut s = TcpStream::connect(target).await.map_err(io_err)?;
                let line = format!("{}\n", payload.unwrap_or("hostname"));
                s.write_all(line.as_bytes()).await.map_err(io_err)?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.map_err(io_err)?;
                Ok(trim_answer(&out))
            }
            ProbeProto::Udp => {
                let local = match addr {
                    IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                };
                let s = UdpSocket::bind(local).await.map_err(io_err)?;
                s.connect(target).await.map_err(io_err)?;
                s.send(payload.unwrap_or("hostname").as_bytes())
                    .await
                    .map_err(io_err)?;
                let mut buf = vec![0u8; 65536];
                let n = s.recv(&mut buf).await.map_err(io_err)?;
                Ok(trim_answer(&buf[..n]))
            }
            ProbeProto::Http => {
                let mut s = TcpStream::connect(target).await.map_err(io_err)?;
                let path = payload.unwrap_or("/hostname");
                let path = if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                };
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: ovnk-lab-probe\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.map_err(io_err)?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.map_err(io_err)?;
                parse_http_answer(target, &out)
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            proto,
            addr: target,
            timeout,
        }),
    }
}

fn trim_answer(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// The body of a `200` answer (read until close); any other status is an error.
fn parse_http_answer(addr: SocketAddr, raw: &[u8]) -> Result<String, ProbeError> {
    let bad = |reason: &str| ProbeError::BadAnswer {
        addr,
        reason: reason.to_string(),
    };
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head.lines().next().unwrap_or_default().to_string();
    let mut parts = status.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad("no status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(&format!("status line {status:?}")));
    }
    if code != "200" {
        return Err(ProbeError::HttpStatus { addr, status });
    }
    let body = &raw[head_end + 4..];
    // Honour Content-Length when present (the server closes anyway).
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = match len {
        Some(n) if n <= body.len() => &body[..n],
        _ => body,
    };
    Ok(trim_answer(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.244.1.5:40000".parse().unwrap()
    }

    #[test]
    fn text_commands() {
        assert_eq!(text_answer("hostname\n", "pod-a", peer()), "pod-a");
        assert_eq!(text_answer("clientip", "pod-a", peer()), "10.244.1.5:40000");
        assert_eq!(text_answer("echo hi there\n", "pod-a", peer()), "hi there");
        assert_eq!(text_answer("", "pod-a", peer()), "pod-a");
    }

    #[test]
    fn http_requests_are_recognised() {
        assert!(is_http_request_line(b"GET /hostname HTTP/1.1"));
        assert!(is_http_request_line(b"HEAD / HTTP/1.0"));
        assert!(!is_http_request_line(b"hostname"));
        assert!(!is_http_request_line(b"GET hostname HTTP/1.1"));
        assert!(!is_http_request_line(b"echo GET / HTTP/1.1"));
    }

    #[test]
    fn http_answers() {
        let a = http_answer("GET /clientip HTTP/1.1", "p", peer());
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.ends_with("\r\n\r\n10.244.1.5:40000"), "{a}");
        let a = http_answer("GET /echo?msg=a%20b+c HTTP/1.1", "p", peer());
        assert!(a.ends_with("\r\n\r\na b c"), "{a}");
        let a = http_answer("GET /nope HTTP/1.1", "p", peer());
        assert!(a.starts_with("HTTP/1.1 404 Not Found"), "{a}");
        let parsed = parse_http_answer(
            peer(),
            http_answer("GET / HTTP/1.1", "p", peer()).as_bytes(),
        );
        assert_eq!(parsed.ok().as_deref(), Some("p"));
        assert!(matches!(
            parse_http_answer(
                peer(),
                http_answer("GET /x HTTP/1.1", "p", peer()).as_bytes()
            ),
            Err(ProbeError::HttpStatus { .. })
        ));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn cli_structs_parse() {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            cfg: ProbeConfig,
        }
        #[derive(clap::Parser)]
        struct Resp {
            #[command(flatten)]
            cfg: ResponderConfig,
        }
        use clap::Parser;
        let p = Probe::parse_from([
            "probe",
            "--proto",
            "udp",
            "fd00::5",
            "53",
            "--payload",
            "clientip",
        ])
        .cfg;
        assert_eq!(p.proto, ProbeProto::Udp);
        assert_eq!((p.addr.to_string(), p.port), ("fd00::5".to_string(), 53));
        assert_eq!(p.payload.as_deref(), Some("clientip"));
        let p = Probe::parse_from(["probe", "10.0.0.1"]).cfg;
        assert_eq!((p.proto, p.port, p.timeout_ms), (ProbeProto::Tcp, 80, 2000));
        let r = Resp::parse_from([
            "responder",
            "--name",
            "web",
            "--tcp",
            "80",
            "--tcp",
            "8080",
            "--udp",
            "53",
        ])
        .cfg;
        assert_eq!((r.tcp, r.udp, r.bind), (vec![80, 8080], vec![53], None));
        assert!(Probe::try_parse_from(["probe", "not-an-ip"]).is_err());
    }

    #[test]
    fn v4_mapped_peers_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(mapped).to_string(), "10.0.0.1:5");
        let v6: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
