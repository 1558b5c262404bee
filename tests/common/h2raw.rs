//! A client that writes raw HTTP/2 frames, for the tests of the server's
//! HTTP/2 guards and shutdown: what a conforming client (h2) would never
//! send, and the frames the server answers with.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC Encrypt request's header block, in HPACK literals (no
/// compression state to keep), for a stream left open for its body.
pub fn encrypt_headers(stream: u32) -> Vec<u8> {
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

pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

pub async fn read_frame(conn: &mut TcpStream) -> Option<Frame> {
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

/// A connection that has sent the preface and empty SETTINGS, and read
/// nothing yet.
pub async fn connect_raw(addr: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    conn.write_all(&hello).await.unwrap();
    conn
}

/// A connection past the preface, with both sides' SETTINGS acknowledged
/// (the server enforces its stream limit only once the client has).
pub async fn connect(addr: &str) -> TcpStream {
    let mut conn = connect_raw(addr).await;
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
pub async fn until_goaway(conn: &mut TcpStream) -> (Vec<u32>, Option<u32>) {
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
