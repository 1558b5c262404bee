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

use std::time::Duration;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC Encrypt request's header block, in HPACK literals (no
/// compression state to keep), for a stream left open for its body.
fn encrypt_headers(stream: u32) -> Vec<u8> {
    fn literal(out: &mut Vec<u8>, name_index: u8, value: &str) {
        out.push(name_index); // literal without indexing, indexed name (< 15)
        out.push(u8::try_from(value.len()).unwrap());
        out.extend_from_slice(value.as_bytes());
    }
    // :method POST (static 3), :scheme http (static 6).
    let mut block = vec![0x83, 0x86];
    literal(&mut block, 0x04, "/envelope.v1.Envelope/Encrypt"); // :path
    literal(&mut block, 0x01, "localhost"); // :authority
    // content-type (static 31: 0x0f then 31 - 15).
    block.extend_from_slice(&[0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/grpc");
    // te: trailers, a new name.
    block.extend_from_slice(&[0x00, 2]);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    frame(HEADERS, END_HEADERS, stream, &block)
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

async fn read_frame(conn: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_exact(&mut head))
        .await
        .expect("the server sent nothing for 20 s");
    read.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
        payload,
    })
}

/// A connection past the preface, with both sides' SETTINGS acknowledged
/// (the server enforces its stream limit only once the client has).
async fn connect(addr: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    conn.write_all(&hello).await.unwrap();
    let (mut theirs, mut ours) = (false, false);
    while !(theirs && ours) {
        let f = read_frame(&mut conn)
            .await
            .expect("closed during the handshake");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            conn.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
            theirs = true;
        } else if f.kind == SETTINGS {
            ours = true;
        }
    }
    conn
}

/// Reads until GOAWAY or the end; returns the RST_STREAM codes seen
/// before it and the GOAWAY's code.
async fn until_goaway(conn: &mut TcpStream) -> (Vec<u32>, Option<u32>) {
    let mut resets = Vec::new();
    while let Some(f) = read_frame(conn).await {
        match f.kind {
            RST_STREAM => resets.push(f.code()),
            GOAWAY => return (resets, Some(f.code())),
            _ => {}
        }
    }
    (resets, None)
}

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
