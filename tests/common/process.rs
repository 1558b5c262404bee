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

/// How long a process may take to print its "listening on" line.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Spawns `cmd` with stdout piped and reads stdout up to its "listening on
/// ADDR" line. A thread then keeps reading stdout, so the process never
/// blocks on a full pipe, writing the lines to `rest` (or nowhere).
/// If stdout ends before that line, or it does not come within
/// [`START_TIMEOUT`], returns the child, still running or not.
pub fn spawn_listening(cmd: &mut Command, rest: Option<std::fs::File>) -> Result<Listening, Child> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
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
                _ => return drop(tx.send(None)),
            }
        };
        let _ = tx.send(Some((addr, metrics)));
        match rest {
            Some(mut file) => {
                for line in lines.map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                }
            }
            None => for _ in lines {},
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some((addr, metrics))) => Ok(Listening {
            child,
            addr,
            metrics,
        }),
        _ => Err(child),
    }
}

/// An Envelope client on `ch` that sends and takes messages up to 64 MiB.
pub fn envelope_client(ch: Channel) -> EnvelopeClient<Channel> {
    EnvelopeClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A plain HTTP/1.1 GET on loopback: (status code, body). Fails the test
/// if there is no answer within [`HTTP_TIMEOUT`].
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}"))
}

/// How long [`http_get`] waits to connect, and for each read and write.
pub const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// As [`http_get`], or `None` when there is no complete answer in time.
pub fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Runs `cmd` to completion with `stdin` (or /dev/null) and its output
/// captured, killing it and failing the test with what it printed if it
/// takes longer than `limit`.
pub fn output_within(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Readers that share what they have read so far: a grandchild that keeps
    // a pipe open (a daemon) must not keep the test waiting for its end.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let shared = buf.clone();
        std::thread::spawn(move || {
            let mut r = r;
            let mut chunk = [0u8; 8192];
            while let Some(Ok(n @ 1..)) = r.as_mut().map(|r| r.read(&mut chunk)) {
                shared.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            drop(done_tx);
        });
        move |until: std::time::Instant| {
            let _ = done.recv_timeout(until.saturating_duration_since(std::time::Instant::now()));
            std::mem::take(&mut *buf.lock().unwrap())
        }
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // A writer thread: a child that stops reading must not block us.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out(
                    std::time::Instant::now() + std::time::Duration::from_secs(1)
                )),
                String::from_utf8_lossy(&err(
                    std::time::Instant::now() + std::time::Duration::from_secs(1)
                ))
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    std::process::Output {
        status,
        // After the exit the pipes end at once, unless a daemon keeps them.
        stdout: out(until),
        stderr: err(until),
    }
}

/// Reads from `conn` until the server closes it, failing the test with
/// `what` if it stays open past `limit` or sends anything.
pub async fn closed_unserved<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut S,
    limit: std::time::Duration,
    what: &str,
) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(conn, &mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: kept open past {limit:?}"));
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: served: {read:?}");
}

/// The TCP ports process `pid` listens on, from /proc (for a server that
/// has bound its port but not yet said so on stdout).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 the inode.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or_default();
                if let Ok(p) = u16::from_str_radix(port, 16) {
                    ports.push(p);
                }
            }
        }
    }
    ports
}
