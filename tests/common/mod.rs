//! Shared helpers: start the real `envelope` binary on a free loopback port
//! and talk gRPC to it ([`Server`], built on [`process`]); build requests
//! ([`requests`]); run the CLI ([`cli`]); AWS mode against moto ([`moto`],
//! [`aws_config`]); certificates ([`pki`]).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod aws_config;
pub mod cli;
pub mod doctor;
pub mod h2raw;
pub mod moto;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod requests;

// What most test files use, by its short path (each binary uses some).
#[allow(unused_imports)]
pub use cli::{run, run_stdin};
#[allow(unused_imports)]
pub use process::{BIN, http_get};
#[allow(unused_imports)]
pub use requests::ctx;

use envelope::pb::admin_client::AdminClient;
use envelope::pb::envelope_client::EnvelopeClient;
use process::{Listening, envelope_client, spawn_listening};
use tonic::transport::Channel;

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
        // Owner only, as the server requires of a data directory.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(data_dir)
            .unwrap();
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
        cmd.stderr(Stdio::from(stderr));
        // Stdout after "listening on" (the audit log) goes to a file the
        // tests read.
        let out_file = std::fs::File::create(data_dir.with_extension("stdout")).unwrap();
        let Listening {
            child,
            addr,
            metrics,
        } = spawn_listening(&mut cmd, Some(out_file)).unwrap_or_else(|mut child| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not start within {:?}: {}",
                process::START_TIMEOUT,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
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

    /// Sends SIGTERM: the server drains and exits (docs/OPERATIONS.md).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.pid());
    }

    /// Whether the process has exited (by now, without waiting).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = Channel::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        for _ in 0..50 {
            if let Ok(Ok(ch)) =
                tokio::time::timeout(Duration::from_secs(10), endpoint.connect()).await
            {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot connect to {}: {}", self.addr, self.logs());
    }

    pub async fn client(&self) -> EnvelopeClient<Channel> {
        envelope_client(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server log's lines holding `needle` once there are `count` of
    /// them; fails the test with the log if that takes longer than `limit`.
    pub async fn log_lines(&self, needle: &str, count: usize, limit: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let logs = self.logs();
            let lines: Vec<String> = logs
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} log lines with {needle:?} not seen within {limit:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls gRPC health for both names the data plane answers to (`""` and
    /// `envelope.v1.Envelope`, set once a second) until each is `SERVING`
    /// when `serving`, or not; fails the test after 5 s per name.
    pub async fn wait_health(&self, serving: bool) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        for service in ["", "envelope.v1.Envelope"] {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                if (status == ServingStatus::Serving as i32) == serving {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "health of {service:?} is {status}, not serving={serving}:\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
