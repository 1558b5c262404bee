//! The TLS key exchange is the hybrid post-quantum X25519MLKEM768 with
//! rustls's default client (the CLI's, and the AWS SDK's towards KMS), and
//! classical clients still connect: the server takes the key share a client
//! sends first rather than forcing a retry (docs/SECURITY.md, "Cryptography").
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Server;
use rustls::NamedGroup;
use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::ServerName;

/// The group a TLS 1.3 handshake with `addr` negotiates when the client
/// offers `groups`, in that order of preference.
async fn negotiated(
    addr: &str,
    ca_pem: &str,
    groups: &[&'static dyn SupportedKxGroup],
) -> NamedGroup {
    let roots = common::pki::roots(ca_pem);
    let provider = CryptoProvider {
        kx_groups: groups.to_vec(),
        ..default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref()
        .1
        .negotiated_key_exchange_group()
        .unwrap()
        .name()
}

#[tokio::test]
async fn default_clients_get_the_post_quantum_hybrid() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, config) = common::pki::server_tls(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let hybrid = kx_group::X25519MLKEM768;
    let x25519 = kx_group::X25519;

    // rustls's own default order (the CLI's and the AWS SDK's client).
    let defaults = default_provider().kx_groups;
    assert_eq!(
        negotiated(&server.addr, &ca.pem, &defaults).await,
        NamedGroup::X25519MLKEM768
    );
    // The client's first choice wins: no HelloRetryRequest round trip.
    assert_eq!(
        negotiated(&server.addr, &ca.pem, &[hybrid, x25519]).await,
        NamedGroup::X25519MLKEM768
    );
    assert_eq!(
        negotiated(&server.addr, &ca.pem, &[x25519, hybrid]).await,
        NamedGroup::X25519
    );
    // A classical-only client still connects.
    assert_eq!(
        negotiated(&server.addr, &ca.pem, &[x25519]).await,
        NamedGroup::X25519
    );
}
