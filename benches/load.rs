//! End-to-end load benchmark: starts the release server (local mode, on
//! loopback), drives it over several HTTP/2 connections, and reports
//! calls/s, records/s and p50/p99/p99.9 latency beside two ceilings measured
//! in the same run: an empty RPC on the same server (grpc.health Check, the
//! transport ceiling) and raw in-process AES-256-GCM on one core (the crypto
//! ceiling). Run: `cargo bench --bench load` (each scenario runs a bounded
//! time, `ENVELOPE_BENCH_SECS`, default 3).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envelope::crypto::{AeadKey, KeyBytes};
use envelope::pb;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

const CONNECTIONS: usize = 4;

struct Outcome {
    calls: u64,
    records: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Outcome {
    fn line(&self, name: &str, ceiling: Option<f64>) -> String {
        let cps = self.calls as f64 / self.secs;
        let rps = self.records as f64 / self.secs;
        let ratio = ceiling.map_or(String::new(), |c| format!("{:.2}", rps / c));
        format!(
            "| {name} | {cps:.0} | {rps:.0} | {} | {} | {} | {ratio} |",
            us(self.hist.value_at_quantile(0.5)),
            us(self.hist.value_at_quantile(0.99)),
            us(self.hist.value_at_quantile(0.999)),
        )
    }
}

fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1000.0)
}

/// Runs `concurrency` tasks spread over the channels, each calling `call`
/// back to back until the time is up. `call` returns how many records it did.
async fn drive<F, Fut>(channels: &[Channel], concurrency: usize, secs: f64, call: F) -> Outcome
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let call = Arc::new(call);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let ch = channels[t % channels.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
            let (mut calls, mut records) = (0u64, 0u64);
            while Instant::now() < deadline {
                let start = Instant::now();
                records += call(ch.clone()).await;
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
                calls += 1;
            }
            (calls, records, hist)
        }));
    }
    let mut out = Outcome {
        calls: 0,
        records: 0,
        secs,
        hist: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap(),
    };
    for t in tasks {
        let (c, r, h) = t.await.unwrap();
        out.calls += c;
        out.records += r;
        out.hist.add(h).unwrap();
    }
    out
}

fn crypto_ceiling(size: usize, secs: f64) -> f64 {
    let key = AeadKey::new(&KeyBytes::random().unwrap()).unwrap();
    let mut buf = vec![0x5au8; size];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for i in 0..1000u32 {
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&i.to_be_bytes());
            std::hint::black_box(key.seal(nonce, b"aad", &mut buf).unwrap());
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::var("ENVELOPE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_envelope"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.strip_prefix("listening on ") {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    println!(
        "Envelope load benchmark: {CONNECTIONS} connections, {secs} s per scenario, server and load generator on this machine"
    );
    println!("\n| scenario | calls/s | records/s | p50 | p99 | p99.9 | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for concurrency in [1usize, 16, 64, 256] {
        let empty = drive(&channels, concurrency, secs, |ch| async move {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
            1
        })
        .await;
        println!(
            "{}",
            empty.line(&format!("empty RPC (health), c={concurrency}"), None)
        );
        let ceiling = empty.calls as f64 / empty.secs;
        for size in [16usize, 64, 256, 4096] {
            let pt = Bytes::from(vec![0x5au8; size]);
            let o = drive(&channels, concurrency, secs, move |ch| {
                let pt = pt.clone();
                async move {
                    let mut c = pb::envelope_client::EnvelopeClient::new(ch);
                    let ct = c
                        .encrypt(pb::EncryptRequest {
                            key: String::new(),
                            plaintext: pt,
                            context: Default::default(),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .ciphertext;
                    std::hint::black_box(ct);
                    1
                }
            })
            .await;
            println!(
                "{}",
                o.line(&format!("Encrypt {size} B, c={concurrency}"), Some(ceiling))
            );
        }
    }
    // Batches of 1,000 records against the crypto ceiling.
    for size in [16usize, 64, 256, 4096] {
        let ceiling = crypto_ceiling(size, secs.min(2.0));
        let items: Vec<pb::EncryptItem> = (0..1000)
            .map(|_| pb::EncryptItem {
                plaintext: Bytes::from(vec![0x5au8; size]),
                context: Default::default(),
            })
            .collect();
        let o = drive(&channels, 8, secs, move |ch| {
            let items = items.clone();
            async move {
                let mut c = pb::envelope_client::EnvelopeClient::new(ch)
                    .max_decoding_message_size(64 << 20);
                let r = c
                    .encrypt_batch(pb::EncryptBatchRequest {
                        key: String::new(),
                        items,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                r.results.len() as u64
            }
        })
        .await;
        println!("| raw AES-256-GCM seal {size} B, one core | | {ceiling:.0} | | | | |");
        println!(
            "{}",
            o.line(
                &format!("EncryptBatch 1,000 × {size} B, c=8"),
                Some(ceiling)
            )
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
