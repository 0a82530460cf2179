//! Credentials: a CA, a server certificate for 127.0.0.1/localhost, a bearer token, and the
//! kubeconfig that ties them together. Generated once, reused from the data dir on restart.

use crate::error::Error;
use base64::Engine;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The credential files of a data dir.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

/// Writes a file readable only by its owner (the token and keys are secrets).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename {}", path.display()), e))
}

fn read_opt(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    /// Loads the credentials from `dir`, generating whatever is missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        let p = |n: &str| dir.join(n);
        let token = match read_opt(&p("token"))? {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = random_token();
                write_private(&p("token"), t.as_bytes())?;
                t
            }
        };
        if let (Some(ca), Some(cert), Some(key)) = (
            read_opt(&p("ca.crt"))?,
            read_opt(&p("server.crt"))?,
            read_opt(&p("server.key"))?,
        ) {
            return Ok(Credentials {
                ca_pem: ca,
                cert_pem: cert,
                key_pem: key,
                token,
            });
        }
        let tls = |e: rcgen::Error| Error::Tls(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ovnk-lab-ca");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().map_err(tls)?;
        let mut params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .map_err(tls)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ovnk-lab-apiserver");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        let creds = Credentials {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            token,
        };
        // The CA key is not kept: nothing else is ever signed with it.
        write_private(&p("ca.crt"), creds.ca_pem.as_bytes())?;
        write_private(&p("server.key"), creds.key_pem.as_bytes())?;
        write_private(&p("server.crt"), creds.cert_pem.as_bytes())?;
        Ok(creds)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Tls(format!("server.crt: {e}")))?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("server.key: {e}")))?
            .ok_or_else(|| Error::Tls("server.key holds no private key".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        // HTTP/1.1 only: kubectl offers h2 too, and must not pick it.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The kubeconfig text for a server at `url`.
    pub fn kubeconfig(&self, url: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ovnk-lab\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: ovnk-lab\n  user:\n    token: {}\ncontexts:\n- name: ovnk-lab\n  context:\n    cluster: ovnk-lab\n    user: ovnk-lab\n    namespace: default\ncurrent-context: ovnk-lab\n",
            self.token
        )
    }
}

/// Writes the kubeconfig into `dir` and returns its path.
pub fn write_kubeconfig(dir: &Path, creds: &Credentials, url: &str) -> Result<PathBuf, Error> {
    let path = dir.join("kubeconfig");
    write_private(&path, creds.kubeconfig(url).as_bytes())?;
    Ok(path)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub fn token_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
