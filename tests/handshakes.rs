//! At most 256 TLS handshakes run at once (SECURITY.md, "Transport";
//! `MAX_HANDSHAKES` in src/edge/listener.rs): a peer that connects and
//! never sends its ClientHello holds one until the handshake timeout, and
//! further connections wait, unanswered, until one is given back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Server;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

#[tokio::test]
async fn at_most_256_handshakes_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = common::pki::server_tls(dir.path());
    // Stalled peers must hold their handshakes for the whole test.
    // 260 connections: 256 stalled, the two served below, and two more.
    let config =
        format!("{tls}[limits]\ntls_handshake_timeout_secs = 120\nmax_connections = 260\n");
    let mut server = Server::start(&dir.path().join("data"), Some(&config));
    let connector = common::pki::connector(&ca.pem);
    let handshake = || {
        let (connector, addr) = (connector.clone(), server.addr.clone());
        tokio::spawn(async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        })
    };
    // The server accepts in connection order, so a handshake started after
    // the stalled peers' connections is accepted after them.
    let mut stalled = Vec::new();
    for _ in 0..255 {
        stalled.push(TcpStream::connect(&server.addr).await.unwrap());
    }
    // 255 stalled and this one: 256 at once, within the bound.
    let done = tokio::time::timeout(Duration::from_secs(30), handshake())
        .await
        .expect("the 256th handshake waited")
        .unwrap()
        .expect("the 256th handshake");
    // Served: the server is past its handshake and has given back the slot
    // (the client's side of TLS 1.3 may finish first).
    let _served = served(done).await;
    stalled.push(TcpStream::connect(&server.addr).await.unwrap());
    // 256 stalled: the next one waits.
    let waiting = handshake();
    tokio::time::sleep(Duration::from_secs(2)).await;
    if waiting.is_finished() {
        panic!("a 257th handshake ran: {:?}", waiting.await);
    }
    // One stalled peer leaves: its handshake ends, and the waiting one runs.
    drop(stalled.pop());
    let done = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting handshake never ran once a slot was free")
        .unwrap()
        .expect("the waiting handshake");
    let _served = served(done).await;
    // All 256 taken again, and one more waiting. The accept loop does not
    // wait with it: the next connection is accepted too (the 260th), and
    // the one past max_connections is closed at once.
    stalled.push(TcpStream::connect(&server.addr).await.unwrap());
    let waiting = handshake();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a 257th handshake ran");
    let _last = TcpStream::connect(&server.addr).await.unwrap();
    let mut over = TcpStream::connect(&server.addr).await.unwrap();
    common::process::closed_unserved(
        &mut over,
        Duration::from_secs(10),
        "the connection past max_connections",
    )
    .await;
    // SIGTERM closes the listener, and the waiting connection is closed,
    // not handshaken.
    server.sigterm();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(&server.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still accepting after SIGTERM with every handshake slot taken: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting connection was kept")
        .unwrap();
    assert!(ended.is_err(), "a handshake ran after SIGTERM");
    drop(stalled);
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(Some(0)));
}

/// Sends the HTTP/2 preface on `tls` and waits for the server's first
/// frame: the server has finished its side of the handshake.
async fn served(
    mut tls: tokio_rustls::client::TlsStream<TcpStream>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(common::h2raw::frame(common::h2raw::SETTINGS, 0, 0, &[]));
    tls.write_all(&hello).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(30), tls.read_exact(&mut head))
        .await
        .expect("no answer after the handshake")
        .unwrap();
    tls
}
