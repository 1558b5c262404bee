//! Transport: TLS 1.3 (1.2 only if configured) with rustls over aws-lc-rs,
//! server certificate and key from files and reloaded without restart when
//! they change, client certificates verified against a CA bundle (mTLS).
//! Every connection, TLS or plaintext, carries a [`PeerInfo`] into request
//! extensions, so handlers read the caller's identity and never re-parse
//! certificates.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Builds a rustls server configuration from the files.
pub fn server_config(s: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let pem_err = |path: &PathBuf, what: &str| TlsError::Pem {
        path: path.display().to_string(),
        what: what.to_owned(),
    };
    let cert_pem = read(&s.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| pem_err(&s.cert, "not a PEM certificate chain"))?;
    if certs.is_empty() {
        return Err(pem_err(&s.cert, "no CERTIFICATE found"));
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
            let pem = read(ca)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|_| pem_err(ca, "not a PEM CA bundle"))?;
                roots.add(c).map_err(|e| TlsError::Rustls(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(pem_err(ca, "no CA CERTIFICATE found"));
            }
            // Certificate-less clients may connect, so that the policy can
            // answer them UNAUTHENTICATED; a certificate that does not chain
            // to the bundle fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
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
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = server_config(&settings)?;
        let stamp = std::sync::Mutex::new(stamps(&settings));
        Ok(Self {
            settings,
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
        match server_config(&self.settings) {
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

/// A served connection: plaintext TCP or TLS over TCP.
pub enum Conn {
    /// Plaintext (local mode on loopback, or an explicitly insecure setting).
    Plain(TcpStream, PeerInfo),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>, PeerInfo),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// Most TLS handshakes in flight at once; more connections wait in the
/// listen backlog.
const MAX_HANDSHAKES: usize = 256;
/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener`: TLS when `tls` is given, plaintext
/// otherwise. Yields established connections; failed handshakes are logged
/// and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingConfig>>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &tls else {
                let info = PeerInfo {
                    identity: None,
                    tls: false,
                    remote: Some(remote),
                };
                if tx.send(Ok(Conn::Plain(tcp, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| identity_of(c.as_ref()));
                        let info = PeerInfo {
                            identity,
                            tls: true,
                            remote: Some(remote),
                        };
                        let _ = tx.send(Ok(Conn::Tls(Box::new(stream), info))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
