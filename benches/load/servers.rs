//! The processes under load: Envelope (the real binary, started and read
//! through `tests/common/process.rs`) and the echo server, on core 1 when
//! pinning works; the server's backend calls from its /metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{BIN, Listening, http_get, spawn_listening};

/// Pins this process (the load generator) to core 0 where the machine has
/// two cores and `taskset`, so the servers can have core 1.
pub fn pin_generator() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores >= 2
        && Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        && pin_self(0)
}

/// Core `core` alone for this process and the threads it starts after.
pub fn pin_self(core: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// Starts `program args` on core 1 when pinning works, and returns it with
/// the addresses it printed.
fn start(pinned: bool, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Listening {
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("1").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .envs(envs.iter().copied())
        .stderr(Stdio::null());
    spawn_listening(&mut cmd, None).unwrap_or_else(|_| panic!("the server printed its address"))
}

/// Starts Envelope in local mode with its data, config and audit log in
/// `dir`; returns it and the audit log's path.
pub fn start_envelope(pinned: bool, dir: &Path) -> (Listening, PathBuf) {
    let audit = dir.join("audit.log");
    let config = dir.join("envelope.toml");
    // A policy only so the index scenario's quota does not throttle it.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[allow]]\nanonymous = true\nkeys = [\"*\"]\noperations = [\"encrypt\", \"decrypt\", \"index\", \"admin\"]\nindex_tokens_per_second = 1000000000000\nindex_tokens_per_day = 1000000000000000\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlog_level = \"warn\"\npolicy_file = {:?}\n\n[limits]\n# 1,000 records of 4 KiB.\nmax_request_bytes = 8388608\n\n[audit]\noutput = {:?}\n\n[[keys]]\nname = \"default\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 16\n",
            dir.join("data"),
            policy,
            audit
        ),
    )
    .unwrap();
    let server = start(
        pinned,
        Path::new(BIN),
        &["serve", "--config", config.to_str().unwrap()],
        &[],
    );
    (server, audit)
}

/// Starts the echo server: this binary with `ENVELOPE_BENCH_ECHO` set.
pub fn start_echo(pinned: bool) -> Listening {
    let me = std::env::current_exe().unwrap();
    start(pinned, &me, &[], &[("ENVELOPE_BENCH_ECHO", "1")])
}

/// SIGTERM to Envelope, which drains and writes every queued audit line,
/// and waits for it; kills the echo server.
pub fn stop(mut server: Listening, mut echo: Listening) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let _ = server.child.wait();
    let _ = echo.child.kill();
    let _ = echo.child.wait();
}

/// KMS and secret-store calls so far, from the server's /metrics.
pub fn backend_calls(metrics: &str) -> (f64, f64) {
    let body = http_get(metrics, "/metrics").1;
    let (mut kms, mut store) = (0.0, 0.0);
    for l in body
        .lines()
        .filter(|l| l.starts_with("envelope_backend_calls_total{"))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if l.contains("service=\"kms\"") {
            kms += v;
        } else {
            store += v;
        }
    }
    (kms, store)
}
