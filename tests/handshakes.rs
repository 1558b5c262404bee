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
    let config = format!("{tls}[limits]\ntls_handshake_timeout_secs = 120\n");
    let server = Server::start(&dir.path().join("data"), Some(&config));
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
    tokio::time::timeout(Duration::from_secs(30), handshake())
        .await
        .expect("the 256th handshake waited")
        .unwrap()
        .expect("the 256th handshake");
    stalled.push(TcpStream::connect(&server.addr).await.unwrap());
    // 256 stalled: the next one waits.
    let waiting = handshake();
    tokio::time::sleep(Duration::from_secs(2)).await;
    if waiting.is_finished() {
        panic!("a 257th handshake ran: {:?}", waiting.await);
    }
    // One stalled peer leaves: its handshake ends, and the waiting one runs.
    drop(stalled.pop());
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting handshake never ran once a slot was free")
        .unwrap()
        .expect("the waiting handshake");
    drop(stalled);
}
