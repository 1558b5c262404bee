//! What a peer that is not yet authorized can make the server hold, tried
//! with a raw HTTP/2 client (the `h2` crate) against the real binary: a
//! flood of streams announcing large messages and never finishing them, idle
//! streams, more connections than allowed, and a caller with no grant sending
//! a large message. Each is bounded, refused and counted, and a legitimate
//! call is served throughout (docs/SECURITY.md, "Threats").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Server;
use common::process::http_get;
use common::requests::{CTX, encrypt};

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// A counter from /metrics (0 when absent).
fn metric(server: &Server, series: &str) -> f64 {
    let (_, text) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A gRPC message prefix announcing `len` bytes.
fn prefix(len: u32) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&len.to_be_bytes());
    Bytes::from(v)
}

/// An HTTP/2 connection to `addr` speaking prior knowledge (plaintext).
async fn h2_connect(addr: &str) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn grpc_request(addr: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A response's grpc-status: in its headers (a trailers-only answer) or its
/// trailers, once the body has ended.
async fn grpc_status(resp: http::Response<h2::RecvStream>) -> Option<String> {
    let in_headers = resp.headers().get("grpc-status").cloned();
    let mut body = resp.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.ok().flatten();
    in_headers
        .or_else(|| trailers.and_then(|t| t.get("grpc-status").cloned()))
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

const BUDGET: u64 = 32 << 20;

/// 120 streams each announce a message of almost 4 MiB and send 3 MiB of it
/// (360 MiB offered): the server holds at most its 32 MiB budget of them,
/// refuses the rest with RESOURCE_EXHAUSTED before buffering them, and
/// serves a legitimate call meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_message_flood_is_held_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "metrics_listen = \"127.0.0.1:0\"\n[limits]\nrequest_bytes_budget = {BUDGET}\n\
         max_streams = 500\nmax_streams_per_caller = 500\nmessage_read_timeout_secs = 60\n\
         stream_idle_timeout_secs = 60\n"
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let before = rss_bytes(server.pid());
    let chunk = Bytes::from(vec![0x41u8; 1 << 20]);
    let mut streams = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..4 {
        let mut send = h2_connect(&server.addr).await;
        for _ in 0..30 {
            send = send.ready().await.unwrap();
            let (resp, mut body) = send
                .send_request(
                    grpc_request(&server.addr, "/envelope.v1.Envelope/EncryptStream"),
                    false,
                )
                .unwrap();
            body.send_data(prefix(4 * 1024 * 1024 - 128 * 1024), false)
                .unwrap();
            for _ in 0..3 {
                body.send_data(chunk.clone(), false).unwrap();
            }
            streams.push(body);
            responses.push(resp);
        }
    }
    // Let the server take in what it will.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let offered = 120u64 * 3 * (1 << 20);
    let held = rss_bytes(server.pid()).saturating_sub(before);
    let refused = metric(
        &server,
        "envelope_refused_calls_total{reason=\"request_bytes_budget\"} ",
    );
    // A legitimate call during the attack.
    let client = server.client().await;
    let ok = encrypt(&client, "", b"alice@example.com", CTX).await;
    println!("offered {offered} bytes; resident memory grew {held} bytes; refused {refused}");
    assert!(
        ok.is_ok(),
        "a legitimate call failed during the flood: {ok:?}"
    );
    assert!(held < 3 * BUDGET, "held {held} bytes of {offered} offered");
    assert!(refused >= 100.0, "only {refused} streams refused");
    drop(streams);
    drop(responses);
}

/// Streams that send headers and nothing else are reset once their idle
/// timeout has passed, and before a bound several times larger.
#[tokio::test]
async fn idle_streams_are_reset_after_their_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = "metrics_listen = \"127.0.0.1:0\"\n[limits]\nstream_idle_timeout_secs = 2\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let mut send = h2_connect(&server.addr).await;
    let start = Instant::now();
    let mut pending = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        send = send.ready().await.unwrap();
        let (resp, body) = send
            .send_request(
                grpc_request(&server.addr, "/envelope.v1.Envelope/DecryptStream"),
                false,
            )
            .unwrap();
        bodies.push(body);
        pending.push(tokio::spawn(async move {
            // The stream ends, with DEADLINE_EXCEEDED.
            let status = grpc_status(resp.await.unwrap()).await;
            (Instant::now(), status)
        }));
    }
    let bound = Duration::from_secs(10);
    for p in pending {
        let (at, status) = tokio::time::timeout(bound, p).await.unwrap().unwrap();
        let after = at.duration_since(start);
        assert!(
            after >= Duration::from_secs(2),
            "reset before its idle timeout: {after:?}"
        );
        assert!(after < bound);
        assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    }
    let idle = metric(
        &server,
        "envelope_refused_calls_total{reason=\"stream_idle_timeout\"} ",
    );
    assert_eq!(idle, 20.0);
    drop(bodies);
}

/// The bytes of the first read on `conn` (0 when the server closed it),
/// failing with `why` if nothing comes within `limit`.
async fn first_read(mut conn: tokio::net::TcpStream, limit: Duration, why: &str) -> usize {
    let mut buf = [0u8; 16];
    tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut conn, &mut buf))
        .await
        .expect(why)
        .unwrap_or(0)
}

/// Connections over `max_connections` are closed at once, and a caller with
/// a connection keeps being served.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = "metrics_listen = \"127.0.0.1:0\"\n[limits]\nmax_connections = 8\ntls_handshake_timeout_secs = 3\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let client = server.client().await;
    assert!(encrypt(&client, "", b"x", CTX).await.is_ok());
    // The client holds one slot; 7 idle TCP connections take the rest.
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    // Let the server accept them (a loaded machine is slow to).
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The next ones are closed by the server without a byte.
    for _ in 0..5 {
        let extra = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let n = first_read(
            extra,
            Duration::from_secs(5),
            "an over-the-cap connection was kept open",
        )
        .await;
        assert_eq!(n, 0, "the server wrote to an over-the-cap connection");
    }
    assert!(encrypt(&client, "", b"y", CTX).await.is_ok());
    let refused = metric(
        &server,
        "envelope_refused_calls_total{reason=\"max_connections\"} ",
    );
    assert_eq!(refused, 5.0);
    // The idle ones never sent the HTTP/2 preface: closed after the handshake
    // timeout (3 s here), which gives their slots back.
    // All seven read at once, each closing time taken by itself: each was
    // accepted after `opened`, so none may close before 3 s from it.
    let closes: Vec<_> = idle
        .into_iter()
        .map(|conn| {
            tokio::spawn(async move {
                let why = "an idle connection without a preface was kept open";
                (
                    first_read(conn, Duration::from_secs(10), why).await,
                    opened.elapsed(),
                )
            })
        })
        .collect();
    for close in closes {
        let (n, at) = close.await.unwrap();
        assert_eq!(n, 0);
        assert!(
            at >= Duration::from_secs(3),
            "closed before its timeout: {at:?}"
        );
    }
    let mut fresh = Vec::new();
    for _ in 0..7 {
        fresh.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    assert!(encrypt(&client, "", b"z", CTX).await.is_ok());
    let timed_out = metric(
        &server,
        "envelope_refused_calls_total{reason=\"preface_timeout\"} ",
    );
    assert_eq!(timed_out, 7.0);
    drop(fresh);
}

/// A caller with no grant for the method is refused from the request
/// headers: its (large) message is never taken in, and the refusal is
/// audited with the key `*`.
#[tokio::test]
async fn a_caller_without_a_grant_is_refused_before_its_message_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[allow]]\ncallers = [\"billing-api\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
    )
    .unwrap();
    let config = format!(
        "policy_file = \"{}/policy.toml\"\nmetrics_listen = \"127.0.0.1:0\"\n",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let mut send = h2_connect(&server.addr).await;
    send = send.ready().await.unwrap();
    let (resp, mut body) = send
        .send_request(
            grpc_request(&server.addr, "/envelope.v1.Envelope/Encrypt"),
            false,
        )
        .unwrap();
    // Announce 3 MiB and send none of it: a server that read bodies before
    // authorizing would wait for it (and the request timeout).
    body.send_data(prefix(3 << 20), false).unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("the refusal waited for the message")
        .unwrap();
    let status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        status.as_deref(),
        Some("16"),
        "UNAUTHENTICATED from the headers"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(resp.headers().contains_key("x-request-id"));
    let audit = server.audit_with(&["\"code\":\"UNAUTHENTICATED\""]).await;
    let line = audit
        .lines()
        .find(|l| l.contains("UNAUTHENTICATED"))
        .expect("an audit line for the refusal");
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["rpc"], "Encrypt");
    assert_eq!(line["key"], "*");
    assert!(line["caller"].is_null());
    let refused = metric(
        &server,
        "envelope_refused_calls_total{reason=\"unauthenticated\"} ",
    );
    assert_eq!(refused, 1.0);
}

/// Saturation is refused at once, never queued: with one request slot held
/// by a call whose message never arrives, the next call gets
/// RESOURCE_EXHAUSTED straight away; once the slow message times out, the
/// slot is free again. The slot is shared by every service (CONFIG.md,
/// `max_concurrent_requests`): a stalled health check holds it from an
/// Encrypt, and a stalled Encrypt holds it from health and reflection.
#[tokio::test]
async fn saturation_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = "metrics_listen = \"127.0.0.1:0\"\n[limits]\nmax_concurrent_requests = 1\nmessage_read_timeout_secs = 3\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let client = server.client().await;
    const ENCRYPT: &str = "/envelope.v1.Envelope/Encrypt";
    let cases: [(&str, &[&str]); 2] = [
        ("/grpc.health.v1.Health/Check", &[ENCRYPT]),
        (
            ENCRYPT,
            &[
                "/grpc.health.v1.Health/Check",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ],
        ),
    ];
    for (round, (held_by, refused_calls)) in cases.into_iter().enumerate() {
        let mut send = h2_connect(&server.addr).await;
        send = send.ready().await.unwrap();
        let (slow, mut body) = send
            .send_request(grpc_request(&server.addr, held_by), false)
            .unwrap();
        body.send_data(prefix(1024), false).unwrap();
        // Let the stalled call take the slot first (a loaded machine is slow to).
        tokio::time::sleep(Duration::from_secs(1)).await;
        for path in refused_calls {
            let started = Instant::now();
            let status = if *path == ENCRYPT {
                let refused = encrypt(&client, "", b"x", CTX).await.unwrap_err();
                assert_eq!(
                    refused.message(),
                    "Too many active requests for the connection"
                );
                refused.code() as i32
            } else {
                let mut send = h2_connect(&server.addr).await.ready().await.unwrap();
                let (resp, mut body) = send
                    .send_request(grpc_request(&server.addr, path), false)
                    .unwrap();
                body.send_data(prefix(0), true).unwrap();
                let status = grpc_status(resp.await.unwrap()).await;
                status.and_then(|s| s.parse().ok()).unwrap_or(-1)
            };
            assert_eq!(
                status,
                tonic::Code::ResourceExhausted as i32,
                "{path} while {held_by} held the slot"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the refusal of {path} waited"
            );
        }
        // The slow call ends with its read timeout and gives its slot back.
        let slow = tokio::time::timeout(Duration::from_secs(15), slow)
            .await
            .expect("the slow call was never ended")
            .unwrap();
        assert_eq!(
            grpc_status(slow).await.as_deref(),
            Some("4"),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(
            metric(
                &server,
                "envelope_refused_calls_total{reason=\"message_read_timeout\"} "
            ),
            (round + 1) as f64
        );
        assert!(encrypt(&client, "", b"x", CTX).await.is_ok());
        drop(body);
    }
}

/// Local mode refuses a data directory that group or others may read,
/// naming it and the fix, and starts once it is owner-only.
#[test]
fn a_data_directory_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a data directory others can read");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&data.display().to_string()) && err.contains("chmod 700"),
        "{err}"
    );
    assert!(
        !data.join("root.key").exists(),
        "nothing was written into it"
    );
}

/// With `on_failure = "refuse"`, data-plane calls get UNAVAILABLE once the
/// audit log cannot be written (here /dev/full), and /readyz says why; with
/// "continue" they go on.
#[tokio::test]
async fn an_unwritable_audit_log_refuses_calls_in_refuse_mode() {
    for (mode, refuses) in [("refuse", true), ("continue", false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "metrics_listen = \"127.0.0.1:0\"\n[audit]\noutput = \"/dev/full\"\non_failure = \"{mode}\"\n"
        );
        let server = Server::start(&dir.path().join("data"), Some(&config));
        let client = server.client().await;
        let mut refused = None;
        for _ in 0..100 {
            match encrypt(&client, "", b"x", CTX).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(s) => {
                    refused = Some(s);
                    break;
                }
            }
        }
        if refuses {
            let s = refused.expect("calls went on while the audit log could not be written");
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert!(
                s.message().contains("audit log cannot be written"),
                "{}",
                s.message()
            );
            let (code, body) = http_get(server.metrics.as_deref().unwrap(), "/readyz");
            assert_eq!(code, 503, "{body}");
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(ready["status"], "not_ready", "{body}");
            assert_eq!(
                ready["checks"]["audit"],
                "failing: calls are refused until it can be written"
            );
            // Admin calls are not refused: an operator can still look.
            server
                .admin()
                .await
                .key_status(envelope::pb::KeyStatusRequest::default())
                .await
                .unwrap();
        } else {
            assert!(refused.is_none(), "{refused:?}");
        }
        // AUDIT.md's log lines, in both modes; dropped lines only when going on.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !server.logs().contains("cannot write the audit log") {
            assert!(std::time::Instant::now() < deadline, "{}", server.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !refuses {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !server.logs().contains("audit lines dropped") {
                assert!(std::time::Instant::now() < deadline, "{}", server.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            assert!(!server.logs().contains("audit lines dropped"));
        }
        // gRPC health follows /readyz (OPERATIONS.md, "gRPC health"), and the
        // log names the audit log as the cause, not stale keys.
        let not_ready = "the audit log cannot be written and calls are refused; not ready";
        if refuses {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !server.logs().contains(not_ready) {
                assert!(std::time::Instant::now() < deadline, "{}", server.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!server.logs().contains("stale past the bound"));
        }
        // Both names follow it (OPERATIONS.md, "gRPC health").
        server.wait_health(!refuses).await;
        assert_eq!(server.logs().contains(not_ready), refuses);
    }
}

/// API.md, "Status codes": no compression is enabled, so a message
/// compressed with any `grpc-encoding` (a decompression bomb's way in) is
/// refused with UNIMPLEMENTED before it is read.
#[tokio::test]
async fn compressed_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    // 16 bytes behind a frame header whose flag says compressed (1) or not.
    let send = |encoding: Option<&'static str>, flag: u8| {
        let addr = server.addr.clone();
        async move {
            let mut send = h2_connect(&addr).await.ready().await.unwrap();
            let mut req = grpc_request(&addr, "/envelope.v1.Envelope/Encrypt");
            if let Some(e) = encoding {
                req.headers_mut()
                    .insert("grpc-encoding", e.parse().unwrap());
            }
            let (resp, mut body) = send.send_request(req, false).unwrap();
            let mut msg = vec![flag];
            msg.extend_from_slice(&16u32.to_be_bytes());
            msg.extend_from_slice(&[0x1f; 16]);
            body.send_data(Bytes::from(msg), true).unwrap();
            grpc_status(resp.await.unwrap()).await
        }
    };
    for encoding in ["gzip", "deflate", "zstd"] {
        let status = send(Some(encoding), 1).await;
        assert_eq!(status.as_deref(), Some("12"), "{encoding}: UNIMPLEMENTED");
    }
    // The control: the same frame uncompressed is read (and refused for
    // what it says, not for its encoding).
    let status = send(None, 0).await;
    assert!(
        status.is_some() && status.as_deref() != Some("12"),
        "{status:?}"
    );
    // And the server still serves.
    let client = server.client().await;
    assert!(encrypt(&client, "", b"x", CTX).await.is_ok());
}

/// SECURITY.md, "Limits": a connection may open at most
/// `max_streams_per_connection` streams at once, as the server's HTTP/2
/// SETTINGS say (a client that opens more gets REFUSED_STREAM): 100 by
/// default, or as configured.
#[tokio::test]
async fn the_server_advertises_its_streams_per_connection() {
    for (config, want) in [
        (None, 100),
        (Some("[limits]\nmax_streams_per_connection = 7\n"), 7),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), config);
        let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let (tx, rx) = tokio::sync::watch::channel(usize::MAX);
        tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                let polled = std::future::Future::poll(std::pin::Pin::new(&mut conn), cx);
                let _ = tx.send(conn.max_concurrent_send_streams());
                polled
            })
            .await
        });
        // One call: the server's SETTINGS have arrived once it is answered.
        let mut send = send.ready().await.unwrap();
        let (resp, _) = send
            .send_request(
                grpc_request(&server.addr, "/envelope.v1.Envelope/Encrypt"),
                true,
            )
            .unwrap();
        let _ = grpc_status(resp.await.unwrap()).await;
        assert_eq!(*rx.borrow(), want);
    }
}

/// CONFIG.md and CLIENTS.md: a connection is sent GOAWAY and closed at
/// `max_connection_age_secs` (plus its grace), so clients reconnect and
/// find new replicas; without the setting an idle connection stays.
#[tokio::test]
async fn connections_end_at_their_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let aged = Server::start(
        &dir.path().join("aged"),
        Some("[limits]\nmax_connection_age_secs = 1\nmax_connection_age_grace_secs = 1\n"),
    );
    let default = Server::start(&dir.path().join("default"), None);
    let open = |addr: String| async move {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        (send, tokio::spawn(conn))
    };
    let started = Instant::now();
    let (_aged_send, aged_conn) = open(aged.addr.clone()).await;
    let (_default_send, default_conn) = open(default.addr.clone()).await;
    let ended = tokio::time::timeout(Duration::from_secs(15), aged_conn)
        .await
        .expect("the connection outlived its maximum age");
    assert!(ended.unwrap().is_ok(), "closed by GOAWAY, not an error");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before its age"
    );
    assert!(
        !default_conn.is_finished(),
        "the default age (1 h) closed a connection"
    );
}

/// CONFIG.md, `max_connection_age_secs` and `max_connection_age_grace_secs`,
/// on the wire: at the age the server sends GOAWAY (NO_ERROR); a connection
/// still open at the end of the grace (here a stream waits for its body,
/// which the 10 s message read timeout would otherwise end) is closed then.
#[tokio::test]
async fn a_connection_gets_goaway_at_its_age_and_is_closed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let aged = Server::start(
        &dir.path().join("aged"),
        Some("[limits]\nmax_connection_age_secs = 1\nmax_connection_age_grace_secs = 2\n"),
    );
    let mut raw = common::h2raw::connect(&aged.addr).await;
    let start = Instant::now();
    tokio::io::AsyncWriteExt::write_all(&mut raw, &common::h2raw::encrypt_headers(1))
        .await
        .unwrap();
    let (resets, goaway) = common::h2raw::until_goaway(&mut raw).await;
    let at = start.elapsed();
    assert_eq!(
        goaway,
        Some(0),
        "GOAWAY NO_ERROR at the age ({resets:?}): {}",
        aged.logs()
    );
    assert!(
        at >= Duration::from_millis(900),
        "GOAWAY before the age: {at:?}"
    );
    // The client answers the server's PING (the round trip h2 waits for
    // before its final GOAWAY) and keeps its stream open.
    while let Some(f) = common::h2raw::read_frame(&mut raw).await {
        if f.kind == common::h2raw::PING && f.flags & common::h2raw::ACK == 0 {
            let pong = common::h2raw::frame(common::h2raw::PING, common::h2raw::ACK, 0, &f.payload);
            tokio::io::AsyncWriteExt::write_all(&mut raw, &pong)
                .await
                .unwrap();
        }
    }
    let closed = start.elapsed();
    assert!(
        closed >= Duration::from_millis(2900),
        "closed before the grace ended: {closed:?}: {}",
        aged.logs()
    );
    assert!(
        closed < Duration::from_secs(9),
        "the grace did not bound the connection: {closed:?}"
    );
}

/// CONFIG.md, `max_header_list_bytes`: a request whose header list is over
/// the limit (16 KiB by default) is refused before any handler runs; one
/// under it is served.
#[tokio::test]
async fn a_header_list_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let outcome = |pad: usize| {
        let addr = server.addr.clone();
        async move {
            let mut send = h2_connect(&addr).await;
            let mut req = grpc_request(&addr, "/envelope.v1.Envelope/Encrypt");
            req.headers_mut()
                .insert("x-pad", "a".repeat(pad).parse().unwrap());
            let (resp, mut body) = send.send_request(req, false).unwrap();
            let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
            match resp.await {
                Ok(resp) => Ok((resp.status().as_u16(), grpc_status(resp).await)),
                Err(e) => Err(format!("{e:?}")),
            }
        }
    };
    assert_eq!(outcome(8 << 10).await, Ok((200, Some("0".to_owned()))));
    // hyper answers 431 (Request Header Fields Too Large), not gRPC.
    assert_eq!(outcome(20 << 10).await, Ok((431, None)));
    // The server still serves.
    let client = server.client().await;
    assert!(encrypt(&client, "", b"x", CTX).await.is_ok());
}

/// CONFIG.md, `keepalive_*_secs`: an idle connection is sent an HTTP/2
/// PING every `keepalive_interval_secs`, and one that does not answer
/// within `keepalive_timeout_secs` is closed. A raw peer sends the preface
/// and its SETTINGS, then never answers: closed with a 1 s interval and
/// timeout; still open at the same time with a 60 s interval.
#[tokio::test]
async fn a_peer_that_misses_a_ping_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    for (interval, closed) in [(1, true), (60, false)] {
        let config =
            format!("[limits]\nkeepalive_interval_secs = {interval}\nkeepalive_timeout_secs = 1\n");
        let server = Server::start(&dir.path().join(format!("d{interval}")), Some(&config));
        let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let ended = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
        assert_eq!(
            ended,
            closed,
            "interval {interval}: {} bytes read",
            seen.len()
        );
        // A PING frame (type 6) was among what the server sent.
        let pinged = seen.windows(4).any(|w| w == [0, 0, 8, 6]);
        assert_eq!(pinged, closed, "interval {interval}");
    }
}
