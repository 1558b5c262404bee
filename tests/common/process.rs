//! A server process and the ways to reach it, shared by the tests
//! ([`super::Server`]) and the load bench (`benches/load`, which includes
//! this file alone): start a process that prints "listening on ADDR", keep
//! its stdout drained, connect a gRPC client, GET its metrics endpoints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use envelope::pb::envelope_client::EnvelopeClient;
use tonic::transport::Channel;

/// The `envelope` binary Cargo built for this test or bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_envelope");

/// A started process and the addresses it printed.
pub struct Listening {
    pub child: Child,
    /// From its "listening on ADDR" line.
    pub addr: String,
    /// From a "metrics on ADDR" line before it, when there was one.
    pub metrics: Option<String>,
}

/// Spawns `cmd` with stdout piped and reads stdout up to its "listening on
/// ADDR" line. A thread then keeps reading stdout, so the process never
/// blocks on a full pipe, writing the lines to `rest` (or nowhere).
/// If stdout ends before that line, returns the child, still running or not.
pub fn spawn_listening(cmd: &mut Command, rest: Option<std::fs::File>) -> Result<Listening, Child> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut metrics = None;
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(m) = line.strip_prefix("metrics on ") {
                    metrics = Some(m.trim().to_owned());
                }
                if let Some(a) = line.strip_prefix("listening on ") {
                    break a.trim().to_owned();
                }
            }
            _ => return Err(child),
        }
    };
    std::thread::spawn(move || match rest {
        Some(mut file) => {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
            }
        }
        None => for _ in lines {},
    });
    Ok(Listening {
        child,
        addr,
        metrics,
    })
}

/// An Envelope client on `ch` that sends and takes messages up to 64 MiB.
pub fn envelope_client(ch: Channel) -> EnvelopeClient<Channel> {
    EnvelopeClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
