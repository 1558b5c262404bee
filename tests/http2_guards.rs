//! HTTP/2's own guards, as SECURITY.md states them, seen on the wire by a
//! client that writes raw frames (an h2 client would not misbehave):
//! a stream over `max_streams_per_connection` is refused with
//! REFUSED_STREAM; 1,024 resets the server had to send close the connection
//! with ENHANCE_YOUR_CALM; so do more than 20 streams reset by the peer
//! before the server took them (HTTP/2 rapid reset).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Server;
use tokio::io::AsyncWriteExt;

use common::h2raw::*;

#[tokio::test]
async fn refused_streams_and_local_resets_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("[limits]\nmax_streams_per_connection = 2\n"),
    );
    let mut conn = connect(&server.addr).await;
    // Two streams held open (their bodies never come), then a third.
    let mut out = Vec::new();
    for stream in [1, 3, 5] {
        out.extend(encrypt_headers(stream));
    }
    conn.write_all(&out).await.unwrap();
    let refused = loop {
        let f = read_frame(&mut conn).await.expect("closed");
        if f.kind == RST_STREAM {
            break f;
        }
    };
    assert_eq!((refused.stream, refused.code()), (5, REFUSED_STREAM));
    // Each refusal is a reset the server sends: 1,023 more are taken, and
    // the next one closes the connection.
    let mut flood = Vec::new();
    for i in 0..1_100u32 {
        flood.extend(encrypt_headers(7 + 2 * i));
    }
    conn.write_all(&flood).await.ok();
    let (resets, goaway) = until_goaway(&mut conn).await;
    assert!(resets.iter().all(|c| *c == REFUSED_STREAM), "{resets:?}");
    assert_eq!(resets.len(), 1_023);
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn streams_reset_before_they_are_taken_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    // `count` streams opened and cancelled at once, in one write, then a
    // PING: the connection survives 20, and a 21st closes it.
    for (count, survives) in [(20u32, true), (21, false)] {
        let mut conn = connect(&server.addr).await;
        let mut out = Vec::new();
        for i in 0..count {
            out.extend(encrypt_headers(1 + 2 * i));
            out.extend(frame(RST_STREAM, 0, 1 + 2 * i, &CANCEL.to_be_bytes()));
        }
        out.extend(frame(PING, 0, 0, b"envelope"));
        conn.write_all(&out).await.ok();
        let mut pong = false;
        let mut goaway = None;
        while let Some(f) = read_frame(&mut conn).await {
            match f.kind {
                PING if f.flags & ACK != 0 => {
                    pong = true;
                    break;
                }
                GOAWAY => {
                    goaway = Some(f.code());
                    break;
                }
                _ => {}
            }
        }
        if survives {
            assert!(pong && goaway.is_none(), "{count}: {goaway:?}");
        } else {
            assert_eq!(goaway, Some(ENHANCE_YOUR_CALM), "{count}");
        }
    }
}

/// AUDIT.md, "Correlating with `x-request-id`", and BENCHMARKS.md: the id
/// is sent as a never-indexed HPACK literal (it is marked sensitive, and a
/// value used once would only push reusable entries out of the tables), in
/// the response headers on success and in the trailers-only answer on
/// error. No other field of the answer is sent so.
#[tokio::test]
async fn x_request_id_is_a_never_indexed_literal_in_headers_or_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    // Success: headers (the id), data, trailers (no id).
    let ok = unary_header_blocks(&server.addr, &[]).await;
    assert_eq!(ok.len(), 2, "headers and trailers");
    let (headers, trailers) = (&ok[0], &ok[1]);
    assert!(!headers.1 && trailers.1);
    assert_eq!(
        never_indexed(&headers.0).1,
        1,
        "{:?}",
        never_indexed(&headers.0)
    );
    assert_eq!(never_indexed(&trailers.0).1, 0);
    // An unknown key (field 1, "nope"): one trailers-only answer, with the id.
    let refused = unary_header_blocks(&server.addr, b"\x0a\x04nope").await;
    assert_eq!(refused.len(), 1, "a trailers-only answer");
    assert!(refused[0].1);
    assert_eq!(never_indexed(&refused[0].0).1, 1);
}

/// CONFIG.md, `max_connections`: a connection may hold up to hyper's 1 MiB
/// connection window of unread data. Soon after the handshake the server
/// opens the connection window from HTTP/2's 65,535 bytes to exactly 1 MiB,
/// in one WINDOW_UPDATE.
#[tokio::test]
async fn the_connection_window_is_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut conn = connect_raw(&server.addr).await;
    let increment = loop {
        let f = read_frame(&mut conn).await.expect("closed");
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => {
                conn.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
            }
            WINDOW_UPDATE if f.stream == 0 => break f.code() & 0x7fff_ffff,
            _ => {}
        }
    };
    assert_eq!(65_535 + u64::from(increment), 1 << 20);
}
