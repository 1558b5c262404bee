//! SIGTERM with a call in flight (docs/OPERATIONS.md, "Shutdown and
//! drain"): the server finishes it, writes its audit line and exits 0; past
//! `drain_timeout_secs` it exits 0 anyway and says so. The call is held in
//! flight for real: a Decrypt of a record under a version the replica has
//! not loaded, fetched on demand through a proxy that delays the AWS API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::aws_config::{Timeouts, aws_config, secret_key};
use common::moto::{
    Proxy, TEST_ENV, create_envelope_secret, envelope_doc, kms_key, moto, unique, uuid,
};
use common::requests::{CTX, decrypt, round_trip};

/// Attempts long enough for the delayed API.
const PATIENT: Timeouts = Timeouts {
    connect_secs: 2,
    attempt_secs: 15,
    operation_secs: 30,
    max_attempts: Some(1),
};

/// A replica on `proxy` that has loaded only the first version, and a
/// record sealed under a second version (by another replica, on moto
/// directly) that the first replica can open only by fetching it; `tls`
/// adds tables to the replica's configuration.
async fn setup(dir: &std::path::Path, drain_secs: u64, tls: &str) -> (Server, Proxy, bytes::Bytes) {
    let key = kms_key().await;
    let secret = unique("envelope/drain");
    create_envelope_secret(&secret, &key, "default", &uuid()).await;
    let proxy = Proxy::start(moto().addr);
    let keys = secret_key("default", &secret);
    let top = format!(
        "refresh_interval_secs = 3600\ndrain_timeout_secs = {drain_secs}\nmetrics_listen = \"127.0.0.1:0\"\n"
    );
    let cfg = aws_config(&proxy.url(), &key, PATIENT, &top, &format!("{keys}{tls}"));
    let replica = Server::start_with(&dir.join("a"), Some(&cfg), TEST_ENV);
    let v2 = uuid();
    let doc = envelope_doc(&key, "default", &v2).await;
    common::moto::put_version(&secret, &v2, doc, "AWSCURRENT").await;
    let direct = aws_config(&moto().url(), &key, PATIENT, "", &keys);
    let other = Server::start_with(&dir.join("b"), Some(&direct), TEST_ENV);
    let record = round_trip(&other, "", "in flight at SIGTERM").await;
    assert_eq!(record.key_version, v2);
    (replica, proxy, record.ciphertext)
}

/// Starts the Decrypt and returns once the replica is fetching the version
/// (the proxy has its GetSecretValue): the call is then in flight.
async fn decrypt_in_flight(
    client: envelope::pb::envelope_client::EnvelopeClient<tonic::transport::Channel>,
    proxy: &Proxy,
    record: bytes::Bytes,
    delay: Duration,
) -> tokio::task::JoinHandle<Result<envelope::pb::DecryptResponse, tonic::Status>> {
    let before = proxy.count("secretsmanager.GetSecretValue");
    proxy.set_delay(delay);
    let call = tokio::spawn(async move { decrypt(&client, "", &record, CTX).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.count("secretsmanager.GetSecretValue") == before {
        assert!(
            Instant::now() < deadline,
            "the replica never fetched the version"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call
}

/// Whether a gRPC health check on a new connection is answered within 1 s.
async fn health_answers(url: String) -> bool {
    let check = async move {
        let ch = tonic::transport::Channel::from_shared(url)?
            .connect()
            .await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        let req = tonic_health::pb::HealthCheckRequest::default();
        Ok::<_, Box<dyn std::error::Error>>(health.check(req).await?)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn sigterm_waits_for_the_call_in_flight_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut replica, proxy, record) = setup(dir.path(), 20, "").await;
    assert!(health_answers(replica.url()).await);
    // A data key made now, so the Encrypt below needs no (delayed) KMS call.
    common::requests::encrypt(&replica.client().await, "", "warm", CTX)
        .await
        .unwrap();
    let call = decrypt_in_flight(
        replica.client().await,
        &proxy,
        record,
        Duration::from_secs(4),
    )
    .await;
    // A call made after it, answered before it: audit lines are queued in
    // order of completion (AUDIT.md, "Back-pressure").
    let quick = replica
        .client()
        .await
        .encrypt(common::requests::enc("", "quick", CTX))
        .await
        .unwrap();
    let quick_id = common::requests::request_id(quick.metadata());
    // An idle connection opened before the signal.
    let mut idle = common::h2raw::connect(&replica.addr).await;
    replica.sigterm();
    // It is told to go away (NO_ERROR) at once, while the call still runs.
    let goaway = loop {
        let f = common::h2raw::read_frame(&mut idle)
            .await
            .expect("closed without GOAWAY");
        if f.kind == common::h2raw::GOAWAY {
            break f;
        }
    };
    assert_eq!(goaway.code(), 0, "GOAWAY NO_ERROR");
    assert!(!call.is_finished(), "GOAWAY came only after the drain");
    // The call is still waiting on the slow API: the server must too.
    assert_eq!(
        replica.wait_exit(Duration::from_millis(500)),
        None,
        "exited with a call in flight: {}",
        replica.logs()
    );
    // Health keeps its answer through the drain: routing is the operator's
    // to stop (a preStop sleep), not a readiness flip.
    let metrics = replica.metrics.clone().unwrap();
    assert_eq!(common::http_get(&metrics, "/readyz").0, 200);
    assert_eq!(common::http_get(&metrics, "/healthz").0, 200);
    // gRPC health is not answered on a connection made now: the server
    // accepts no new connections while it drains.
    assert!(
        !health_answers(replica.url()).await,
        "health answered mid-drain"
    );
    let answer = call
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the call in flight is answered: {e:?} {}", replica.logs()));
    assert_eq!(answer.plaintext.as_ref(), b"in flight at SIGTERM");
    let code = replica
        .wait_exit(Duration::from_secs(30))
        .expect("exits once drained");
    assert_eq!(code, Some(0));
    let logs = replica.logs();
    assert!(
        logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
    assert!(!logs.contains("drain bound reached"), "{logs}");
    let audit = replica.audit_with(&["\"rpc\":\"Decrypt\""]).await;
    assert_eq!(
        audit.matches("\"rpc\":\"Decrypt\"").count(),
        1,
        "the drained call's audit line: {audit}"
    );
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let at = |pick: &dyn Fn(&serde_json::Value) -> bool| lines.iter().position(pick).unwrap();
    let quick_at = at(&|l| l["request_id"] == quick_id.as_str());
    let held_at = at(&|l| l["rpc"] == "Decrypt");
    assert!(quick_at < held_at, "{audit}");
    // AUDIT.md, `latency_us`: from the handler's start to the end of the
    // call, so it covers the 4 s the store was held.
    let latency = lines[held_at]["latency_us"].as_u64().unwrap();
    assert!(latency >= 4_000_000, "{latency}");
}

#[tokio::test]
async fn past_the_drain_bound_it_exits_zero_and_says_so() {
    // A bound of 0 exits at once (CONFIG.md), not after the default 20 s.
    for bound in [1, 0] {
        past_the_drain_bound(bound).await;
    }
}

async fn past_the_drain_bound(bound: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut replica, proxy, record) = setup(dir.path(), bound, "").await;
    let call = decrypt_in_flight(
        replica.client().await,
        &proxy,
        record,
        Duration::from_secs(10),
    )
    .await;
    replica.sigterm();
    // The call is held 10 s: the exit comes at the bound (with room for a
    // loaded machine), long before the call ends.
    let code = replica
        .wait_exit(Duration::from_secs(5))
        .expect("exits at the drain bound, before the call ends");
    assert_eq!(code, Some(0));
    let logs = replica.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("drain bound reached; exiting with requests still in flight"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        line.contains(" WARN ") && line.contains("in_flight=1"),
        "{line}"
    );
    // The cut call fails on the client; nothing was answered or audited.
    assert!(call.await.unwrap().is_err());
    assert!(
        !replica.stdout().contains("\"rpc\":\"Decrypt\""),
        "{}",
        replica.stdout()
    );
}

/// OPERATIONS.md, "Shutdown and drain": the listening socket closes as the
/// drain begins, so a new connection is refused at once; with `[tls]`, a
/// connection accepted before it whose handshake ends during the drain is
/// closed at once, not held until the exit. Meanwhile the call in flight
/// on an older connection (held 8 s) is answered.
#[tokio::test]
async fn connections_made_during_the_drain_are_refused_or_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = common::pki::server_tls(dir.path());
    let (mut replica, proxy, record) = setup(dir.path(), 20, &tls).await;
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", replica.addr))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = envelope::pb::envelope_client::EnvelopeClient::new(channel);
    let call = decrypt_in_flight(client, &proxy, record, Duration::from_secs(8)).await;
    // Accepted now; its handshake is left until the drain has begun (within
    // the 5 s handshake timeout).
    let early = tokio::net::TcpStream::connect(&replica.addr).await.unwrap();
    replica.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(&replica.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting during the drain: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let connector = common::pki::connector(&ca.pem);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut late = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, early))
        .await
        .expect("the handshake under way was left hanging")
        .expect("the handshake under way completes");
    tokio::io::AsyncWriteExt::write_all(&mut late, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .ok();
    common::process::closed_unserved(
        &mut late,
        Duration::from_secs(10),
        "a connection whose handshake ended in the drain",
    )
    .await;
    // Closed at once, not held until the drain ends and the process exits.
    assert!(!call.is_finished(), "closed only once the drain ended");
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.plaintext.as_ref(), b"in flight at SIGTERM");
    assert_eq!(replica.wait_exit(Duration::from_secs(30)), Some(Some(0)));
}

/// OPERATIONS.md: before serving starts, SIGTERM ends the process at once,
/// even while start-up waits on a slow AWS API (here held 20 s a call).
#[tokio::test]
async fn sigterm_during_start_up_ends_the_process_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/early");
    create_envelope_secret(&secret, &key, "default", &uuid()).await;
    let proxy = Proxy::start(moto().addr);
    proxy.set_delay(Duration::from_secs(20));
    let cfg = aws_config(
        &proxy.url(),
        &key,
        PATIENT,
        "metrics_listen = \"127.0.0.1:0\"",
        &secret_key("default", &secret),
    );
    let config = dir.path().join("envelope.toml");
    std::fs::write(&config, cfg).unwrap();
    let data = dir.path().join("data");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&data)
        .unwrap();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(common::process::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .envs(TEST_ENV.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // Start-up is under way once its first AWS call is held at the proxy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.count("secretsmanager.DescribeSecret")
        + proxy.count("secretsmanager.GetSecretValue")
        == 0
    {
        assert!(Instant::now() < deadline, "no AWS call: {}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // CONFIG.md, "Start-up": the gRPC port is bound before the keys load,
    // and a connection made now is not answered (no HTTP/2 SETTINGS) while
    // they load; the metrics port (OPERATIONS.md) is not open yet at all.
    let ports = common::process::listening_ports(child.id());
    assert_eq!(ports.len(), 1, "{ports:?}: {}", logs());
    let mut early = common::h2raw::connect_raw(&format!("127.0.0.1:{}", ports[0])).await;
    let mut buf = [0u8; 9];
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read(&mut early, &mut buf),
    )
    .await;
    assert!(answer.is_err(), "answered while starting: {answer:?}");
    let sent = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still starting 10 s after SIGTERM: {}", logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", logs());
    let logs = logs();
    assert!(
        logs.contains("stopped before serving") && !logs.contains("serving addr="),
        "{logs}"
    );
}

/// OPERATIONS.md, "Shutdown and drain": a stream waiting between messages
/// is not a running call, so it does not hold the drain (20 s here) open;
/// the process exits within the 1 s flush grace.
#[tokio::test]
async fn an_idle_stream_does_not_hold_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), Some("drain_timeout_secs = 20\n"));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(envelope::pb::EncryptStreamRequest::from(
        common::requests::batch("", 0, 1),
    ))
    .await
    .unwrap();
    let mut client = server.client().await;
    let mut answers = client
        .encrypt_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().unwrap();
    server.sigterm();
    // Well inside the 20 s the drain would wait for a running call.
    let code = server
        .wait_exit(Duration::from_secs(10))
        .expect("an idle stream held the drain");
    assert_eq!(code, Some(0));
    drop(tx);
}

/// OPERATIONS.md, "Shutdown and drain": health and reflection calls are
/// not waited for. A gRPC health Watch never ends by itself, nor does a
/// reflection stream whose client sends no more; open at SIGTERM, they do
/// not hold the drain (20 s here) open, and the process exits within the
/// flush grace.
#[tokio::test]
async fn a_health_watch_and_a_reflection_stream_do_not_hold_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), Some("drain_timeout_secs = 20\n"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let (ask, asked) = tokio::sync::mpsc::channel(1);
    ask.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    })
    .await
    .unwrap();
    let mut reflection = ServerReflectionClient::new(server.channel().await)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(asked))
        .await
        .unwrap()
        .into_inner();
    reflection.message().await.unwrap().unwrap();
    server.sigterm();
    let code = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a stream held the drain: {}", server.logs()));
    assert_eq!(code, Some(0));
    assert!(
        !server.logs().contains("drain bound reached"),
        "{}",
        server.logs()
    );
    drop(ask);
}

/// OPERATIONS.md, "Shutdown and drain": a plaintext connection accepted
/// before the drain whose preface arrives during it is closed at once, while
/// the call in flight on an older connection (held 8 s) is still running.
#[tokio::test]
async fn a_plaintext_preface_sent_in_the_drain_is_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut replica, proxy, record) = setup(dir.path(), 20, "").await;
    let call = decrypt_in_flight(
        replica.client().await,
        &proxy,
        record,
        Duration::from_secs(8),
    )
    .await;
    let mut early = tokio::net::TcpStream::connect(&replica.addr).await.unwrap();
    // Time for the accept loop to take it off the backlog (a connection
    // left there is reset with the listener, which proves nothing here).
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.sigterm();
    // The drain has begun once the listener refuses.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(&replica.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting during the drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::io::AsyncWriteExt::write_all(&mut early, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .ok();
    common::process::closed_unserved(
        &mut early,
        Duration::from_secs(10),
        "a connection whose preface came in the drain",
    )
    .await;
    assert!(!call.is_finished(), "closed only once the drain ended");
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.plaintext.as_ref(), b"in flight at SIGTERM");
    assert_eq!(replica.wait_exit(Duration::from_secs(30)), Some(Some(0)));
}
