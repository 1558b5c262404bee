//! Shared helpers: start the real `envelope` binary on a free loopback port
//! and talk gRPC to it.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod moto;
pub mod pki;

use envelope::pb::admin_client::AdminClient;
use envelope::pb::envelope_client::EnvelopeClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_envelope");

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    /// Where /metrics, /healthz and /readyz are served, when configured.
    pub metrics: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts `envelope serve` on 127.0.0.1:0 with `data_dir` and an optional TOML config.
    pub fn start(data_dir: &Path, config: Option<&str>) -> Server {
        Self::start_with(data_dir, config, &[])
    }

    /// As [`Server::start`], with extra environment variables.
    pub fn start_with(data_dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if let Some(c) = config {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, c).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.envs(env.iter().copied());
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn envelope");
        let stdout = child.stdout.take().unwrap();
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
                _ => {
                    let _ = child.kill();
                    panic!(
                        "server did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        // Keep draining stdout (the audit log) into a file, so the child
        // never blocks on a full pipe and tests can read it.
        let out_path = data_dir.with_extension("stdout");
        let mut out_file = std::fs::File::create(&out_path).unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(out_file, "{line}");
            }
        });
        Server {
            child,
            addr,
            metrics,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// Waits up to `limit` for the server to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        for _ in 0..50 {
            if let Ok(ch) = Channel::from_shared(self.url()).unwrap().connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot connect to {}", self.addr);
    }

    pub async fn client(&self) -> EnvelopeClient<Channel> {
        EnvelopeClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the server printed on stdout after "listening on": the audit log.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("stdout")).unwrap_or_default()
    }

    /// The audit log once it holds every one of `needles` (the writer
    /// gathers lines for up to 10 ms), or as it is after 5 s.
    pub async fn audit_with(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.stdout();
            if needles.iter().all(|n| out.contains(n)) || std::time::Instant::now() >= deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with SIGKILL, as a crash would (audit lines of the
    /// last 10 ms are lost then; SIGTERM writes them all).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion: (success, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run envelope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A policy file granting every operation on every key to calls without a
/// verified identity: what AWS-mode tests over loopback plaintext need.
pub fn open_policy() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("envelope-open-policy-{}.toml", std::process::id()));
        std::fs::write(
            &p,
            "[[allow]]\nanonymous = true\nkeys = [\"*\"]\n\
             operations = [\"encrypt\", \"decrypt\", \"rewrap\", \"generate_data_key\", \"admin\"]\n",
        )
        .unwrap();
        p.display().to_string()
    })
    .clone()
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
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

pub fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
