//! Transport: TLS 1.3 (1.2 only if configured) with rustls over aws-lc-rs,
//! server certificate and key from files and reloaded without restart when
//! they change, client certificates verified against a CA bundle (mTLS).
//! Every connection, TLS or plaintext, carries a [`PeerInfo`] into request
//! extensions, so handlers read the caller's identity and never re-parse
//! certificates.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;

/// TLS settings from the configuration file.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to (mTLS); `None`
    /// accepts clients without certificates.
    pub client_ca: Option<PathBuf>,
    /// Also offer TLS 1.2 (TLS 1.3 only otherwise).
    pub allow_tls12: bool,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The path.
        path: String,
        /// What is missing or wrong (never the file's content).
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Who is calling: the identity from the client certificate (its SPIFFE URI
/// SAN, else its subject CN), or `None` on plaintext or certificate-less TLS.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The caller's identity.
    pub identity: Option<String>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's address.
    pub remote: Option<std::net::SocketAddr>,
}

fn pem_err(path: &std::path::Path, what: &str) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        what: what.to_owned(),
    }
}

/// The CAs of the client CA bundle at `ca`, each parsed as the handshake
/// will use it (`envelope doctor` checks the bundle with it too).
pub fn client_roots(ca: &PathBuf) -> Result<rustls::RootCertStore, TlsError> {
    let pem = read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|_| pem_err(ca, "not a PEM CA bundle"))?;
        roots.add(c).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem_err(ca, "no CA CERTIFICATE found"));
    }
    Ok(roots)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Builds a rustls server configuration from the files.
pub fn server_config(s: &TlsSettings, require_client_cert: bool) -> Result<ServerConfig, TlsError> {
    let cert_pem = read(&s.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| pem_err(&s.cert, "not a PEM certificate chain"))?;
    let Some(leaf) = certs.first() else {
        return Err(pem_err(&s.cert, "no CERTIFICATE found"));
    };
    // Every client would refuse it: better a clear refusal here (at start,
    // or a reload that keeps the previous files) than failed handshakes.
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf)
        && !cert.validity().is_valid()
    {
        let v = cert.validity();
        let why = if v.not_before.timestamp() <= now_secs() {
            format!("the certificate expired on {}", v.not_after)
        } else {
            format!("the certificate is not valid before {}", v.not_before)
        };
        return Err(pem_err(&s.cert, &why));
    }
    let key_pem = zeroize::Zeroizing::new(read(&s.key)?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| pem_err(&s.key, "no PEM private key found"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if s.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &s.client_ca {
        Some(ca) => {
            let roots = client_roots(ca)?;
            // Without an anonymous grant a certificate-less client is refused
            // at the handshake, before it can send a byte of a request; with
            // one it may connect and the policy answers it. A certificate
            // that does not chain to the bundle always fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The caller identity in a DER certificate: the first `spiffe://` URI SAN,
/// else the subject's common name.
pub fn identity_of(cert: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                return Some((*uri).to_owned());
            }
        }
    }
    // A CN that looks like a URI could pass for a SPIFFE ID in the policy:
    // such a certificate has no identity.
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty() && !cn.contains("://"))
        .map(str::to_owned)
}

/// A server configuration that follows its files.
pub struct ReloadingConfig {
    settings: TlsSettings,
    /// Refuse certificate-less clients at the handshake (no anonymous grant
    /// at start; a policy reload does not change it).
    require_client_cert: bool,
    current: ArcSwap<ServerConfig>,
    stamp: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for ReloadingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingConfig")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ReloadingConfig {
    /// Loads the files; fails if they are not usable.
    pub fn new(settings: TlsSettings, require_client_cert: bool) -> Result<Self, TlsError> {
        let config = server_config(&settings, require_client_cert)?;
        let stamp = std::sync::Mutex::new(stamps(&settings));
        Ok(Self {
            settings,
            require_client_cert,
            current: ArcSwap::from_pointee(config),
            stamp,
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reloads if any file changed; a bad new file is refused and the old
    /// configuration kept. Returns whether a new configuration is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.settings);
        let Ok(mut stamp) = self.stamp.lock() else {
            return false;
        };
        if *stamp == now {
            return false;
        }
        *stamp = now;
        match server_config(&self.settings, self.require_client_cert) {
            Ok(c) => {
                self.current.store(Arc::new(c));
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "new TLS files refused; keeping the previous certificate");
                false
            }
        }
    }
}

fn stamps(s: &TlsSettings) -> Vec<Option<SystemTime>> {
    [Some(&s.cert), Some(&s.key), s.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::identity_of;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, uris: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap_or_default();
        // Not rcgen's default CN.
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        for u in uris {
            if let Ok(u) = (*u).try_into() {
                p.subject_alt_names.push(SanType::URI(u));
            }
        }
        let key = KeyPair::generate().ok();
        key.and_then(|k| p.self_signed(&k).ok())
            .map(|c| c.der().to_vec())
            .unwrap_or_default()
    }

    /// SECURITY.md, "Identity": the first SPIFFE URI SAN, else the first
    /// CN; a CN that is empty or holds `://` gives none, so it cannot pass
    /// for a SPIFFE ID.
    #[test]
    fn identities_come_from_spiffe_sans_or_plain_common_names() {
        let spiffe = "spiffe://example.org/ns/pii/sa/app";
        let id = |cn: Option<&str>, uris: &[&str]| identity_of(&cert(cn, uris));
        assert_eq!(
            id(Some("app"), &["https://x", spiffe]).as_deref(),
            Some(spiffe)
        );
        assert_eq!(id(Some("app"), &["https://x"]).as_deref(), Some("app"));
        assert_eq!(id(Some("app"), &[]).as_deref(), Some("app"));
        assert_eq!(id(Some(spiffe), &[]), None);
        assert_eq!(id(Some("x://y"), &[]), None);
        assert_eq!(id(Some(""), &[]), None);
        assert_eq!(id(None, &[]), None);
        assert_eq!(identity_of(b"not a certificate"), None);
    }
}
