//! Transport security and least privilege against the real binary: TLS 1.3
//! with mTLS identities, policy decisions and reloads, certificate reload,
//! audit lines, and refusal of unsafe transports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::{Ca, Issued};
use common::requests::encrypt;
use common::{Server, ctx, run, run_stdin};
use envelope::pb;
use envelope::pb::admin_client::AdminClient;
use envelope::pb::envelope_client::EnvelopeClient;
use rustls::pki_types::pem::PemObject;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const BILLING: &str = "spiffe://example.org/ns/billing/sa/api";

const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://example.org/ns/billing/*"]
keys = ["pii"]
operations = ["encrypt", "decrypt"]

[[allow]]
callers = ["batch-job"]
keys = ["*"]
operations = ["rewrap", "decrypt"]

[[allow]]
callers = ["ops-admin"]
keys = ["*"]
operations = ["admin"]
"#;

struct Pki {
    ca: Ca,
    dir: std::path::PathBuf,
}

impl Pki {
    fn write(&self, name: &str, issued: &Issued) {
        std::fs::write(self.dir.join(format!("{name}.crt")), &issued.cert).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), &issued.key).unwrap();
    }
}

fn setup(dir: &Path) -> (Pki, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Ca::new("Envelope test CA");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let pki = Pki {
        ca,
        dir: dir.to_path_buf(),
    };
    pki.write("server", &pki.ca.server(&["localhost"]));
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let config = format!(
        "policy_file = \"{d}/policy.toml\"\n[tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n\
         client_ca = \"{d}/ca.pem\"\nreload_interval_secs = 1\n[[keys]]\nname = \"default\"\n[[keys]]\nname = \"pii\"\n",
        d = dir.display()
    );
    (pki, config)
}

async fn channel(
    server: &Server,
    ca_pem: &str,
    client: Option<&Issued>,
    domain: &str,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain);
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mtls_identities_meet_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let config = format!("metrics_listen = \"127.0.0.1:0\"\n{config}");
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let billing = pki.ca.client("billing-api", Some(BILLING));
    let batch = pki.ca.client("batch-job", None);
    let ops = pki.ca.client("ops-admin", None);

    let ch = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    let ct = encrypt(&ch, "pii", "x", &[]).await.unwrap().ciphertext;
    let s = encrypt(&ch, "default", "x", &[]).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(
        s.message().contains(BILLING)
            && s.message().contains("encrypt")
            && s.message().contains("default"),
        "{}",
        s.message()
    );
    let rewrap = |ch: &Channel, ct: &Bytes| {
        let mut c = EnvelopeClient::new(ch.clone());
        let req = pb::RewrapRequest {
            indexes: Vec::new(),
            key: "pii".into(),
            ciphertext: ct.clone(),
            context: ctx(&[]),
        };
        async move { c.rewrap(req).await }
    };
    assert_eq!(
        rewrap(&ch, &ct).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        AdminClient::new(ch.clone())
            .key_status(pb::KeyStatusRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // A CN identity, by exact match.
    let ch_batch = channel(&server, &pki.ca.pem, Some(&batch), "localhost")
        .await
        .unwrap();
    assert!(rewrap(&ch_batch, &ct).await.is_ok());
    // No grant has `encrypt` for batch-job on any key: refused from the
    // request headers, naming key "*" (SECURITY.md, "Policy"), and counted
    // under key "*" (OPERATIONS.md, `key`).
    let denied = encrypt(&ch_batch, "pii", "x", &[]).await.unwrap_err();
    assert_eq!(
        (denied.code(), denied.message()),
        (
            Code::PermissionDenied,
            "caller \"batch-job\" may not encrypt with key \"*\""
        )
    );
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        metrics.contains(
            "envelope_requests_total{rpc=\"Encrypt\",key=\"*\",code=\"PERMISSION_DENIED\"} 1\n"
        ),
        "{metrics}"
    );
    let ch_ops = channel(&server, &pki.ca.pem, Some(&ops), "localhost")
        .await
        .unwrap();
    assert!(
        AdminClient::new(ch_ops)
            .key_status(pb::KeyStatusRequest::default())
            .await
            .is_ok()
    );

    // No client certificate, and no anonymous grant in the policy: refused at
    // the handshake, before a byte of a request (a policy answer would mean
    // the server took the connection).
    let anon = match channel(&server, &pki.ca.pem, None, "localhost").await {
        Err(_) => true,
        Ok(ch) => encrypt(&ch, "pii", "x", &[])
            .await
            .is_err_and(|s| !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)),
    };
    assert!(anon, "a client without a certificate was let in");
    // A client certificate from another CA never gets through the handshake.
    let rogue = Ca::new("rogue").client("billing-api", Some(BILLING));
    let refused = match channel(&server, &pki.ca.pem, Some(&rogue), "localhost").await {
        Err(_) => true,
        // With TLS 1.3 the client may only learn of the refusal on its first
        // request; any transport failure will do, a policy answer would mean
        // the server accepted the certificate.
        Ok(ch) => encrypt(&ch, "pii", "x", &[])
            .await
            .is_err_and(|s| !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)),
    };
    assert!(refused, "a certificate from an untrusted CA was accepted");

    // Every call is audited with its caller and outcome; denied ones included.
    let audit = server
        .audit_with(&["\"code\":\"OK\"", "\"code\":\"PERMISSION_DENIED\""])
        .await;
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["caller"] == BILLING
        && l["rpc"] == "Encrypt"
        && l["outcome"] == "ok"
        && l["code"] == "OK"));
    assert!(lines.iter().any(|l| l["caller"] == BILLING
        && l["outcome"] == "denied"
        && l["code"] == "PERMISSION_DENIED"));
    let header_refusal = lines
        .iter()
        .find(|l| l["caller"] == "batch-job" && l["rpc"] == "Encrypt")
        .unwrap();
    assert_eq!(
        (&header_refusal["key"], &header_refusal["outcome"]),
        (&"*".into(), &"denied".into())
    );
    assert!(
        header_refusal.get("context_keys").is_none(),
        "{header_refusal}"
    );
    for l in &lines {
        for field in [
            "time",
            "request_id",
            "rpc",
            "operation",
            "key",
            "key_version",
            "outcome",
            "code",
            "latency_us",
        ] {
            assert!(!l[field].is_null(), "{field} missing in {l}");
        }
    }
}

#[tokio::test]
async fn the_cli_speaks_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    pki.write("billing", &pki.ca.client("billing-api", Some(BILLING)));
    let d = dir.path().display().to_string();
    let tls = [
        "--addr".to_string(),
        server.addr.clone(),
        "--ca".into(),
        format!("{d}/ca.pem"),
        "--client-cert".into(),
        format!("{d}/billing.crt"),
        "--client-key".into(),
        format!("{d}/billing.key"),
        "--server-name".into(),
        "localhost".into(),
        "--key".into(),
        "pii".into(),
        "--base64".into(),
    ];
    let run_cli = |cmd: &str, stdin: &[u8]| {
        let args: Vec<&str> = std::iter::once(cmd)
            .chain(tls.iter().map(String::as_str))
            .collect();
        run_stdin(&args, stdin)
    };
    let (ok, ct, err) = run_cli("encrypt", b"555-0100");
    assert!(ok, "{err}");
    let (ok, pt, err) = run_cli("decrypt", &ct);
    assert!(ok, "{err}");
    assert_eq!(pt, b"555-0100");
    // Without the client certificate the handshake is refused.
    let (ok, _, err) = run(
        &[
            "encrypt",
            "--addr",
            &server.addr,
            "--ca",
            &format!("{d}/ca.pem"),
            "--server-name",
            "localhost",
            "--key",
            "pii",
        ],
        &[],
    );
    // With TLS 1.3 the client may learn of the refusal only on its first
    // request, as a transport error or a cancelled stream: any failure but a
    // policy answer (which would mean the server took the connection).
    assert!(!ok, "{err}");
    assert!(
        !err.contains("Unauthenticated") && !err.contains("PermissionDenied"),
        "{err}"
    );
}

/// CONFIG.md, client TLS flags: without `--server-name` the name verified
/// is the host of `--addr`. The server's certificate names envelope.test
/// and 127.0.0.1 only, so `127.0.0.1:PORT` passes, `localhost:PORT` fails
/// (the same server), and `--server-name envelope.test` makes it pass.
#[tokio::test]
async fn the_cli_verifies_the_host_of_addr_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    pki.write("server", &pki.ca.server(&["envelope.test"]));
    let server = Server::start(&dir.path().join("data"), Some(&config));
    pki.write("billing", &pki.ca.client("billing-api", Some(BILLING)));
    let d = dir.path().display().to_string();
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let encrypt_via = |addr: &str, name: Option<&str>| {
        let (ca, cert, key) = (
            format!("{d}/ca.pem"),
            format!("{d}/billing.crt"),
            format!("{d}/billing.key"),
        );
        let mut args = vec![
            "encrypt",
            "--addr",
            addr,
            "--ca",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "--key",
            "pii",
        ];
        if let Some(n) = name {
            args.extend(["--server-name", n]);
        }
        run_stdin(&args, b"555-0100")
    };
    let (ok, _, err) = encrypt_via(&format!("127.0.0.1:{port}"), None);
    assert!(ok, "{err}");
    let (ok, _, err) = encrypt_via(&format!("localhost:{port}"), None);
    assert!(
        !ok && err.contains("certificate not valid for name \"localhost\""),
        "{err}"
    );
    // And says what to do (OPERATIONS.md, client errors).
    assert!(
        err.contains("fix: give --server-name with a name the server's certificate holds"),
        "{err}"
    );
    // A --ca that did not sign the server's certificate.
    let rogue = format!("{d}/rogue.pem");
    std::fs::write(&rogue, &Ca::new("rogue").pem).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (ok, _, err) = run_stdin(
        &["encrypt", "--addr", &addr, "--ca", &rogue, "--key", "pii"],
        b"x",
    );
    assert!(
        !ok && err.contains(&format!("error: cannot connect to https://{addr}"))
            && err.contains("invalid peer certificate: UnknownIssuer")
            && err.contains("fix: give --ca the CA bundle that signed the server's certificate"),
        "{err}"
    );
    let (ok, _, err) = encrypt_via(&format!("localhost:{port}"), Some("envelope.test"));
    assert!(ok, "{err}");
}

#[tokio::test]
async fn policy_and_certificate_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let billing = pki.ca.client("billing-api", Some(BILLING));
    let ch = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    assert_eq!(
        encrypt(&ch, "default", "x", &[]).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Grant billing the default key too: picked up without a restart.
    std::fs::write(
        dir.path().join("policy.toml"),
        POLICY.replace("keys = [\"pii\"]", "keys = [\"pii\", \"default\"]"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while encrypt(&ch, "default", "x", &[]).await.is_err() {
        assert!(Instant::now() < deadline, "policy change not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ch2 = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    assert!(encrypt(&ch2, "default", "x", &[]).await.is_ok());
    // Taking the grant away applies to the next call on every open
    // connection; then it is given back for what follows.
    let reloads = || {
        server
            .logs()
            .matches("authorization policy reloaded")
            .count()
    };
    for (policy, code) in [
        (POLICY.to_owned(), Some(Code::PermissionDenied)),
        (
            POLICY.replace("keys = [\"pii\"]", "keys = [\"pii\", \"default\"]"),
            None,
        ),
    ] {
        let seen = reloads();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while reloads() == seen {
            assert!(Instant::now() < deadline, "policy change not picked up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in [&ch, &ch2] {
            let got = encrypt(c, "default", "x", &[])
                .await
                .err()
                .map(|s| s.code());
            assert_eq!(got, code);
        }
    }
    // A malformed policy is refused and the previous one kept.
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[allow]]\ncallers = \"not a list\"\n",
    )
    .unwrap();
    server
        .log_lines("new policy refused", 1, Duration::from_secs(15))
        .await;
    assert!(encrypt(&ch, "default", "x", &[]).await.is_ok());
    // So is a deleted one.
    std::fs::remove_file(dir.path().join("policy.toml")).unwrap();
    server
        .log_lines("new policy refused", 2, Duration::from_secs(15))
        .await;
    assert!(encrypt(&ch, "default", "x", &[]).await.is_ok());
    // And an unreadable one: a directory in its place, which no user (root
    // included, as tests may run) can read as a file.
    std::fs::create_dir(dir.path().join("policy.toml")).unwrap();
    let refusals = server
        .log_lines("new policy refused", 3, Duration::from_secs(15))
        .await;
    assert!(encrypt(&ch, "default", "x", &[]).await.is_ok());
    assert!(
        refusals.iter().all(|l| l.contains(" ERROR ")),
        "{refusals:?}"
    );

    // A new server certificate (now for envelope.test only) is served to new
    // connections without a restart.
    assert!(
        channel(&server, &pki.ca.pem, Some(&billing), "envelope.test")
            .await
            .is_err()
    );
    pki.write("server", &pki.ca.server(&["envelope.test"]));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(ch) = channel(&server, &pki.ca.pem, Some(&billing), "envelope.test").await
            && encrypt(&ch, "pii", "x", &[]).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certificate change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.logs().contains("TLS certificate reloaded"));

    // Unusable files are refused and the previous certificate kept: a
    // certificate with another certificate's key, an expired one, a file
    // with no PEM item, and a deleted one.
    let refused = "new TLS files refused; keeping the previous certificate";
    let other = pki.ca.server(&["other.test"]);
    let expired = pki.ca.expired_server();
    let mismatched = || std::fs::write(dir.path().join("server.crt"), &other.cert).unwrap();
    let outdated = || pki.write("server", &expired);
    let no_pem = || std::fs::write(dir.path().join("server.crt"), "not a certificate\n").unwrap();
    let deleted = || std::fs::remove_file(dir.path().join("server.crt")).unwrap();
    for (n, replace) in [&mismatched as &dyn Fn(), &outdated, &no_pem, &deleted]
        .into_iter()
        .enumerate()
    {
        replace();
        let deadline = Instant::now() + Duration::from_secs(15);
        while server.logs().matches(refused).count() <= n {
            assert!(
                Instant::now() < deadline,
                "unusable TLS files {n} not refused"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ch = channel(&server, &pki.ca.pem, Some(&billing), "envelope.test")
            .await
            .unwrap();
        assert!(encrypt(&ch, "pii", "x", &[]).await.is_ok());
        assert!(
            channel(&server, &pki.ca.pem, Some(&billing), "other.test")
                .await
                .is_err()
        );
    }
    let refusals = server.log_lines(refused, 4, Duration::from_secs(1)).await;
    assert!(
        refusals.iter().all(|l| l.contains(" ERROR ")),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn tls_1_2_is_refused_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let roots = common::pki::roots(&pki.ca.pem);
    let handshake = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let roots = roots.clone();
        let addr = server.addr.clone();
        async move {
            let config = rustls::ClientConfig::builder_with_protocol_versions(versions)
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            connector
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .map(|s| s.get_ref().1.protocol_version())
        }
    };
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    assert!(handshake(&TLS12).await.is_err());
    assert_eq!(
        handshake(&TLS13).await.unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(server);
    // With allow_tls12 it is offered.
    let tls12 = config.replacen("[tls]\n", "[tls]\nallow_tls12 = true\n", 1);
    let server = Server::start(&dir.path().join("data12"), Some(&tls12));
    let roots = common::pki::roots(&pki.ca.pem);
    // TLS 1.2 ends the handshake only after the server checked the client's
    // certificate, so this client shows one.
    let client = pki.ca.client("batch-job", None);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(client.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_protocol_versions(&TLS12)
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

/// A peer that completes the TLS handshake (with a valid client
/// certificate) but never sends the HTTP/2 preface is closed after the
/// handshake timeout, not kept until its connection's maximum age, and a
/// peer that sends it in time is served on the same listener.
#[tokio::test]
async fn a_tls_peer_without_a_preface_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let config = format!(
        "metrics_listen = \"127.0.0.1:0\"\nlog_level = \"info,envelope=debug\"\n{config}[limits]\ntls_handshake_timeout_secs = 2\n"
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let roots = common::pki::roots(&pki.ca.pem);
    let billing = pki.ca.client("billing", Some(BILLING));
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(billing.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(billing.key.as_bytes()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut idle = connector
        .connect(
            name.clone(),
            tokio::net::TcpStream::connect(&server.addr).await.unwrap(),
        )
        .await
        .expect("the handshake with a valid client certificate");
    let started = Instant::now();
    // Served meanwhile, on its own connection.
    let ch = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    assert!(encrypt(&ch, "pii", "x", &[]).await.is_ok());
    // The idle peer's connection ends (EOF or reset) well before any
    // connection age, and not before its timeout.
    common::process::closed_unserved(
        &mut idle,
        Duration::from_secs(20),
        "a TLS peer without a preface",
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before its timeout"
    );
    // A peer that never starts its TLS handshake is closed at the same
    // timeout; one that speaks something other than TLS, at once.
    let stalled_at = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut garbage, &mut rest),
    )
    .await
    .expect("a peer speaking plain HTTP was kept open")
    .ok();
    common::process::closed_unserved(&mut stalled, Duration::from_secs(20), "a stalled handshake")
        .await;
    assert!(
        stalled_at.elapsed() >= Duration::from_secs(1),
        "a stalled handshake closed before its timeout"
    );
    let (_, text) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    for reason in ["preface_timeout", "tls_handshake_timeout", "tls_handshake"] {
        assert!(
            text.contains(&format!(
                "envelope_refused_calls_total{{reason=\"{reason}\"}} 1\n"
            )),
            "{reason}: {text}"
        );
    }
    // The failed and timed-out handshakes left no audit line: the one line
    // is the Encrypt served meanwhile (SECURITY.md).
    let audit = server.audit_with(&["\"rpc\":\"Encrypt\""]).await;
    let lines: Vec<&str> = audit.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "{audit}");
    assert!(lines[0].contains("\"rpc\":\"Encrypt\""), "{audit}");
    // Each is logged at debug, with the peer's address (SECURITY.md).
    for (what, level) in [
        ("no HTTP/2 preface in time after the TLS handshake", "DEBUG"),
        ("TLS handshake timed out", "DEBUG"),
        ("TLS handshake failed", "DEBUG"),
    ] {
        let line = server
            .log_lines(what, 1, Duration::from_secs(5))
            .await
            .remove(0);
        assert!(
            line.contains(level) && line.contains("remote=127.0.0.1:"),
            "{line}"
        );
    }
}

#[test]
fn unsafe_transports_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Plaintext off loopback.
    let (ok, _, err) = run(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !ok && err.contains("plaintext gRPC only on a loopback address"),
        "{err}"
    );
    // AWS mode without TLS.
    let cfg = dir.path().join("aws.toml");
    std::fs::write(&cfg, "mode = \"aws\"\n[aws]\nkms_key_id = \"alias/k\"\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert!(
        !ok && err.contains("AWS mode serves only over TLS"),
        "{err}"
    );
}

/// SECURITY.md, "Authorization": health and reflection are not gated by
/// the policy. A client the CA vouches for but the policy grants nothing
/// checks health and lists the services, while its Encrypt is denied.
#[tokio::test]
async fn health_and_reflection_answer_callers_the_policy_grants_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let nobody = pki.ca.client("nobody", None);
    let ch = channel(&server, &pki.ca.pem, Some(&nobody), "localhost")
        .await
        .unwrap();
    assert_eq!(
        encrypt(&ch, "pii", "x", &[]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envelope.v1.Envelope".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let listed = stream.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(&listed, Some(MessageResponse::ListServicesResponse(l)) if l.service.iter().any(|s| s.name == "envelope.v1.Envelope")),
        "{listed:?}"
    );
}

/// SECURITY.md, "Transport": a client certificate outside its validity
/// dates fails the handshake, like one from another CA.
#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let expired = pki.ca.expired_client("batch-job");
    // With TLS 1.3 the client may learn of the refusal only on its first
    // call: any transport failure will do; a policy answer (the identity has
    // a grant for decrypt, none for encrypt) would mean it was accepted.
    let refused = match channel(&server, &pki.ca.pem, Some(&expired), "localhost").await {
        Err(_) => true,
        Ok(ch) => encrypt(&ch, "pii", "x", &[])
            .await
            .is_err_and(|s| !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)),
    };
    assert!(refused, "an expired client certificate was accepted");
    // The same identity with a valid certificate gets through to the policy.
    let valid = pki.ca.client("batch-job", None);
    let ch = channel(&server, &pki.ca.pem, Some(&valid), "localhost")
        .await
        .unwrap();
    assert_eq!(
        encrypt(&ch, "pii", "x", &[]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

/// SECURITY.md, "Reload": an open connection keeps the client CA and
/// identity it was accepted with; removing its CA from `client_ca` refuses
/// new connections, not that one.
#[tokio::test]
async fn an_open_connection_keeps_what_it_was_accepted_with() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let billing = pki.ca.client("billing", Some(BILLING));
    let open = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    assert!(encrypt(&open, "pii", "x", &[]).await.is_ok());
    // The client CA now trusts only another CA.
    let other = Ca::new("Another CA");
    std::fs::write(dir.path().join("ca.pem"), &other.pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fresh = channel(&server, &pki.ca.pem, Some(&billing), "localhost").await;
        let refused = match fresh {
            Err(_) => true,
            Ok(ch) => encrypt(&ch, "pii", "x", &[]).await.is_err(),
        };
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new client CA was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        encrypt(&open, "pii", "x", &[]).await.is_ok(),
        "the open connection lost its identity"
    );
}

/// Writes POLICY with an anonymous grant of encrypt on "default".
fn grant_anonymous(dir: &Path) {
    std::fs::write(
        dir.join("policy.toml"),
        format!("{POLICY}\n[[allow]]\nanonymous = true\nkeys = [\"default\"]\noperations = [\"encrypt\"]\n"),
    )
    .unwrap();
}

/// SECURITY.md, "Client certificates": with an `anonymous` grant, a client
/// without a certificate may connect over TLS; its calls carry no identity,
/// so only the anonymous grant applies.
#[tokio::test]
async fn an_anonymous_grant_admits_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    grant_anonymous(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let anonymous = channel(&server, &pki.ca.pem, None, "localhost")
        .await
        .unwrap();
    assert!(encrypt(&anonymous, "default", "x", &[]).await.is_ok());
    // Not the billing grant: that needs the identity.
    let denied = encrypt(&anonymous, "pii", "x", &[]).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let billing = pki.ca.client("billing", Some(BILLING));
    let ch = channel(&server, &pki.ca.pem, Some(&billing), "localhost")
        .await
        .unwrap();
    assert!(encrypt(&ch, "pii", "x", &[]).await.is_ok());
}

/// SECURITY.md, "Client certificates": whether the handshake asks for a
/// certificate is decided at start. An anonymous grant added by a reload
/// is in force for the calls, but a client without a certificate is still
/// refused at the handshake until a restart.
#[tokio::test]
async fn an_anonymous_grant_added_by_reload_needs_a_restart_to_admit_certificate_less_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    grant_anonymous(dir.path());
    server
        .log_lines("authorization policy reloaded", 1, Duration::from_secs(15))
        .await;
    let refused = match channel(&server, &pki.ca.pem, None, "localhost").await {
        Err(_) => true,
        Ok(ch) => encrypt(&ch, "default", "x", &[])
            .await
            .is_err_and(|s| !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)),
    };
    assert!(
        refused,
        "a client without a certificate got through the handshake"
    );
}

/// SECURITY.md, "Client certificates": removing the anonymous grant by a
/// reload does not change the handshake until a restart: a client without a
/// certificate still connects, and its calls are refused UNAUTHENTICATED.
#[tokio::test]
async fn an_anonymous_grant_removed_by_reload_leaves_the_handshake_open_and_refuses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, config) = setup(dir.path());
    grant_anonymous(dir.path());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let before = channel(&server, &pki.ca.pem, None, "localhost")
        .await
        .unwrap();
    assert!(encrypt(&before, "default", "x", &[]).await.is_ok());
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    server
        .log_lines("authorization policy reloaded", 1, Duration::from_secs(15))
        .await;
    let after = channel(&server, &pki.ca.pem, None, "localhost")
        .await
        .expect("a client without a certificate still completes the handshake");
    let refused = encrypt(&after, "default", "x", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = encrypt(&before, "default", "x", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// SECURITY.md, "Policy file": without `[tls]` the policy file is checked
/// every 5 s, and a change applies to the next call without a restart.
#[tokio::test]
async fn the_policy_reloads_without_tls_too() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let grant = |keys: &str| {
        format!("[[allow]]\nanonymous = true\nkeys = [{keys}]\noperations = [\"encrypt\"]\n")
    };
    std::fs::write(&policy, grant("\"other\"")).unwrap();
    let config = format!(
        "policy_file = \"{}\"\n[[keys]]\nname = \"default\"\n[[keys]]\nname = \"other\"\n",
        policy.display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let client = server.client().await;
    let refused = encrypt(&client, "default", "x", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A complete file renamed into place, as SECURITY.md asks.
    let next = dir.path().join("policy.next");
    std::fs::write(&next, grant("\"default\", \"other\"")).unwrap();
    std::fs::rename(&next, &policy).unwrap();
    let changed = Instant::now();
    while encrypt(&client, "default", "x", &[]).await.is_err() {
        // 5 s, and slack for a loaded machine.
        assert!(changed.elapsed() < Duration::from_secs(15), "not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server stores the new policy, then logs it.
    server
        .log_lines("authorization policy reloaded", 1, Duration::from_secs(5))
        .await;
}
