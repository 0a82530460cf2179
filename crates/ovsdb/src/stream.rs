//! Transports: `unix:PATH`, `tcp:IP:PORT` and `ssl:IP:PORT` (rustls) remotes.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// An OVSDB remote as the OVS/OVN daemons spell it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(SocketAddr),
    Ssl(SocketAddr),
    /// `tcp:HOST:PORT` with a host name, resolved at each connect.
    TcpHost {
        host: String,
        port: u16,
    },
    /// `ssl:HOST:PORT` with a host name, resolved at each connect.
    SslHost {
        host: String,
        port: u16,
    },
}

/// A remote string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OVSDB remote {remote:?}: {msg}")]
pub struct RemoteParseError {
    pub remote: String,
    pub msg: String,
}

impl FromStr for Remote {
    type Err = RemoteParseError;
    fn from_str(s: &str) -> Result<Remote, RemoteParseError> {
        let err = |msg: &str| RemoteParseError {
            remote: s.to_owned(),
            msg: msg.to_owned(),
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| err("expected unix:PATH, tcp:IP:PORT or ssl:IP:PORT"))?;
        // IP:PORT, or HOST:PORT with a DNS-like host name.
        let addr = |rest: &str| -> Result<Result<SocketAddr, (String, u16)>, RemoteParseError> {
            if let Ok(a) = rest.parse::<SocketAddr>() {
                return Ok(Ok(a));
            }
            let bad = || err("expected IP:PORT or HOST:PORT (IPv6 as [addr]:port)");
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if !host_ok {
                return Err(bad());
            }
            Ok(Err((host.to_owned(), port)))
        };
        match kind {
            "unix" if !rest.is_empty() => Ok(Remote::Unix(PathBuf::from(rest))),
            "unix" => Err(err("empty socket path")),
            "tcp" => Ok(match addr(rest)? {
                Ok(a) => Remote::Tcp(a),
                Err((host, port)) => Remote::TcpHost { host, port },
            }),
            "ssl" => Ok(match addr(rest)? {
                Ok(a) => Remote::Ssl(a),
                Err((host, port)) => Remote::SslHost { host, port },
            }),
            _ => Err(err("unknown remote type (expected unix:, tcp: or ssl:)")),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(a) => write!(f, "tcp:{a}"),
            Remote::Ssl(a) => write!(f, "ssl:{a}"),
            Remote::TcpHost { host, port } => write!(f, "tcp:{host}:{port}"),
            Remote::SslHost { host, port } => write!(f, "ssl:{host}:{port}"),
        }
    }
}

/// TLS settings as OVN's daemons take them: `--private-key`, `--certificate`, `--ca-cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

/// TLS configuration problems (unreadable or invalid PEM files).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| TlsError::Invalid {
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            msg: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// OVS/OVN certificates name chassis and daemons, not hosts, and OVS does not check peer
/// names: like OVS we verify the chain against the CA but not the host name.
#[derive(Debug)]
struct CaOnlyVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl TlsFiles {
    /// Loads the files into a rustls client configuration (client certificate included).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&self.ca_cert)? {
            roots.add(c).map_err(|e| TlsError::Invalid {
                path: self.ca_cert.clone(),
                msg: e.to_string(),
            })?;
        }
        let chain = certs(&self.certificate)?;
        let pem = read_pem(&self.private_key)?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| TlsError::Invalid {
                path: self.private_key.clone(),
                msg: e.to_string(),
            })?
            .ok_or_else(|| TlsError::Invalid {
                path: self.private_key.clone(),
                msg: "no PEM private key found".into(),
            })?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Invalid {
            path: self.ca_cert.clone(),
            msg: e.to_string(),
        })?;
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaOnlyVerifier(webpki)))
            .with_client_auth_cert(chain, key)?;
        Ok(Arc::new(cfg))
    }
}

/// A connected byte stream of any transport.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `remote`; `tls` is required for `ssl:` remotes.
    pub async fn connect(
        remote: &Remote,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Stream> {
        match remote {
            Remote::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
            Remote::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Remote::Ssl(a) => {
                let s = TcpStream::connect(a).await?;
                Self::tls(s, ServerName::IpAddress(a.ip().into()), remote, tls).await
            }
            Remote::TcpHost { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Remote::SslHost { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                let name = ServerName::try_from(host.clone()).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
                })?;
                Self::tls(s, name, remote, tls).await
            }
        }
    }

    async fn tls(
        s: TcpStream,
        name: ServerName<'static>,
        remote: &Remote,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Stream> {
        let cfg = tls.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{remote} needs --private-key, --certificate and --ca-cert"),
            )
        })?;
        s.set_nodelay(true)?;
        let c = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, s)
            .await?;
        Ok(Stream::Tls(Box::new(c)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
