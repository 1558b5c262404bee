//! End-to-end load benchmark. Starts the release server (local mode, on
//! loopback) pinned to core 1 and pins itself, the load generator, to core 0
//! (where the machine has two cores and `taskset`), then drives the server
//! over several HTTP/2 connections:
//!
//! - unary Encrypt and Decrypt at concurrency 1, 16, 64 and 256, beside an
//!   empty RPC on the same server (grpc.health `Check`: the transport ceiling);
//! - unary Encrypt of 64-byte records paced at half the peak rate (open loop,
//!   latency counted from each call's scheduled start);
//! - EncryptBatch and DecryptBatch of 1,000 records, and EncryptStream with
//!   several batches in flight per stream, beside the same calls answered by
//!   an echo server (this binary, started pinned to the same core: the
//!   empty-batch ceiling) and raw in-process AES-256-GCM on one core (the
//!   crypto ceiling);
//! - EncryptColumn and DecryptColumn of 1,000 values with a row id each, and
//!   their streams, beside the echo server answering the same column
//!   messages and Envelope's own column seal and open in-process (the two
//!   irreducible costs: the ratio to their sum is the overhead);
//! - ComputeIndex of 1,000 values of 32 bytes, with one active master-key
//!   version and then two (after a rotation), beside HMAC-SHA256 in-process
//!   on one core (the token ceiling);
//!
//! at 16, 64, 256 and 4,096-byte records. It prints calls/s, records/s and
//! p50/p99/p99.9 latency (hdrhistogram) with Envelope's figure as a ratio of
//! each ceiling, counts the KMS and secret-store calls the server made
//! during the run (from its /metrics) and checks every call was audited.
//! Last, the peers (Tink and the AWS Encryption SDK, `benches/peers/run.sh`)
//! encrypt the same record sizes in-process on one core.
//! Results also go to `load.csv` in `ENVELOPE_BENCH_OUT` (default: Cargo's
//! bench scratch directory) for `benches/plot.sh`.
//!
//! Run: `cargo bench --bench load` (each scenario runs `ENVELOPE_BENCH_SECS`,
//! default 2).
//!
//! The parts: [`scenarios`] (the run, step by step), [`driver`] (closed and
//! open loops, streams), [`calls`], [`echo`] (the echo server), [`servers`]
//! (starting and stopping the processes, through `tests/common/process.rs`,
//! which the tests use too) and [`report`] (tables and CSV).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod calls;
mod driver;
mod echo;
#[path = "../../tests/common/process.rs"]
mod process;
mod report;
mod scenarios;
mod servers;

use std::path::{Path, PathBuf};

use scenarios::Run;

// The server's allocator, so the echo ceiling and the server compare like
// with like.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const CONNECTIONS: usize = 4;
pub const SIZES: [usize; 4] = [16, 64, 256, 4096];
pub const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
pub const BATCH: usize = 1000;
/// Batch callers (closed loop) and streams, one per connection.
pub const BATCH_CALLERS: usize = 4;
/// Batches in flight per stream.
pub const STREAM_WINDOW: usize = 4;

fn main() {
    if std::env::var_os("ENVELOPE_BENCH_ECHO").is_some() {
        return echo::serve();
    }
    let secs: f64 = std::env::var("ENVELOPE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let out_dir = std::env::var_os("ENVELOPE_BENCH_OUT")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    let pinned = servers::pin_generator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(secs, pinned, &out_dir));
}

async fn run(secs: f64, pinned: bool, out_dir: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(secs, pinned, dir.path()).await;
    run.intro(pinned);
    let peak_64 = run.unary().await;
    run.paced(peak_64).await;
    run.batches().await;
    run.columns().await;
    run.index().await;
    run.finish(out_dir);
    peers(secs);
}

/// The peers, in the same run on the same record sizes (in-process on
/// core 0; the script installs them into a virtualenv on first use).
/// ENVELOPE_BENCH_PEERS=0 skips them.
fn peers(secs: f64) {
    if std::env::var("ENVELOPE_BENCH_PEERS").as_deref() != Ok("0") {
        println!("\n## Peers, in-process on one core\n");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/run.sh");
        match std::process::Command::new(script)
            .arg(format!("{}", secs.min(2.0)))
            .status()
        {
            Ok(s) if s.success() => {}
            other => println!("peers did not run ({other:?}); run benches/peers/run.sh"),
        }
    }
}
