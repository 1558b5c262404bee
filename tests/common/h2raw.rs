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
pub const WINDOW_UPDATE: u8 = 0x8;
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

pub const DATA: u8 = 0x0;
pub const END_STREAM: u8 = 0x1;

/// Reads an HPACK integer with an `n`-bit prefix at `at` (RFC 7541, 5.1).
fn hpack_int(block: &[u8], at: &mut usize, n: u32) -> usize {
    let mask = (1usize << n) - 1;
    let mut v = usize::from(block[*at]) & mask;
    *at += 1;
    if v == mask {
        let mut shift = 0;
        loop {
            let b = block[*at];
            *at += 1;
            v += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    v
}

/// Skips an HPACK string literal (plain or Huffman: its length is plain).
fn hpack_skip_string(block: &[u8], at: &mut usize) {
    let len = hpack_int(block, at, 7);
    *at += len;
}

/// Walks an HPACK header block without decoding its strings: the number
/// of fields, and of those sent as never-indexed literals (RFC 7541,
/// 6.2.3), whether their name is a literal or a table entry.
pub fn never_indexed(block: &[u8]) -> (usize, usize) {
    let (mut fields, mut never) = (0, 0);
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        if b & 0x80 != 0 {
            hpack_int(block, &mut at, 7);
        } else if b & 0xc0 == 0x40 {
            if hpack_int(block, &mut at, 6) == 0 {
                hpack_skip_string(block, &mut at);
            }
            hpack_skip_string(block, &mut at);
        } else if b & 0xe0 == 0x20 {
            hpack_int(block, &mut at, 5);
            continue;
        } else {
            let is_never = b & 0x10 != 0;
            let named = hpack_int(block, &mut at, 4) == 0;
            if named {
                hpack_skip_string(block, &mut at);
            }
            hpack_skip_string(block, &mut at);
            if is_never {
                never += 1;
            }
        }
        fields += 1;
    }
    (fields, never)
}

/// Sends one unary Encrypt whose message is `message` on stream 1 of a new
/// connection, and returns the header blocks the server answers with, each
/// with whether it ended the stream.
pub async fn unary_header_blocks(addr: &str, message: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut conn = connect(addr).await;
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    let mut out = encrypt_headers(1);
    out.extend(frame(DATA, END_STREAM, 1, &body));
    conn.write_all(&out).await.unwrap();
    let mut blocks = Vec::new();
    loop {
        let f = read_frame(&mut conn)
            .await
            .expect("closed before the answer");
        if f.stream != 1 {
            continue;
        }
        assert_eq!(f.flags & 0x28, 0, "no padding or priority expected");
        let ended = f.flags & END_STREAM != 0;
        if f.kind == HEADERS {
            assert_ne!(f.flags & END_HEADERS, 0, "a CONTINUATION is not expected");
            blocks.push((f.payload, ended));
        }
        if ended || f.kind == RST_STREAM {
            return blocks;
        }
    }
}
