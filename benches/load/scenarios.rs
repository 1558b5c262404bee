//! The run, step by step: the servers up and warm, the unary scenarios, the
//! open loop, the batches and streams, and the closing counts.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tonic::transport::Channel;

use envelope::pb;

use crate::calls::{
    decrypt, decrypt_batch, decrypt_column, decrypt_column_request, decrypt_request, encrypt,
    encrypt_batch, encrypt_batch_request, encrypt_column, encrypt_column_request,
};
use crate::driver::{
    Outcome, StreamCall, column_in_process, connect, crypto_ceiling, drive, drive_streams, paced,
};
use crate::process::{Listening, envelope_client};
use crate::report::Report;
use crate::servers::{backend_calls, start_echo, start_envelope, stop};
use crate::{BATCH, BATCH_CALLERS, CONCURRENCY, CONNECTIONS, SIZES, STREAM_WINDOW};

mod index;

/// The servers, their connections, and what the run has counted so far.
pub struct Run {
    secs: f64,
    /// `ENVELOPE_BENCH_ONLY`: "unary", "batch", "column" or "index" runs only those scenarios.
    only: String,
    server: Listening,
    echo: Listening,
    metrics: String,
    audit: PathBuf,
    channels: Vec<Channel>,
    echo_channels: Vec<Channel>,
    /// Backend calls before the scenarios.
    before: (f64, f64),
    report: Report,
    /// Every call made to the server, and its records, to check the audit
    /// log against.
    calls: u64,
    records: u64,
}

impl Run {
    /// Starts Envelope and the echo server (on core 1 if `pinned`),
    /// connects to both, and warms Envelope up: the first data key (one KMS
    /// call) and the connections.
    pub async fn start(secs: f64, pinned: bool, dir: &Path) -> Run {
        let (server, audit) = start_envelope(pinned, dir);
        let metrics = server.metrics.clone().expect("metrics address");
        let echo = start_echo(pinned);
        let channels = connect(&server.addr).await;
        let echo_channels = connect(&echo.addr).await;
        encrypt(channels[0].clone(), Bytes::from_static(b"warm")).await;
        let before = backend_calls(&metrics);
        Run {
            secs,
            only: std::env::var("ENVELOPE_BENCH_ONLY").unwrap_or_default(),
            server,
            echo,
            metrics,
            audit,
            channels,
            echo_channels,
            before,
            report: Report::new(),
            calls: 1,
            records: 1,
        }
    }

    fn count(&mut self, calls: u64, records: u64) {
        self.calls += calls;
        self.records += records;
    }

    fn count_outcome(&mut self, o: &Outcome) {
        self.count(o.calls, o.records);
    }

    pub fn intro(&self, pinned: bool) {
        let secs = self.secs;
        println!(
            "Envelope load benchmark: {CONNECTIONS} connections, {secs} s per scenario, server and load generator on this machine, {}",
            if pinned {
                "server (and echo server) pinned to core 1, load generator to core 0"
            } else {
                "NOT pinned (needs 2 cores and taskset)"
            }
        );
    }

    /// Unary Encrypt and Decrypt beside the empty RPC, at every concurrency
    /// and size; returns the peak Encrypt rate of 64-byte records.
    pub async fn unary(&mut self) -> f64 {
        let secs = self.secs;
        Report::header("Unary calls", "concurrency");
        let mut peak_64 = 0.0f64;
        let only = self.only.clone();
        for concurrency in CONCURRENCY
            .into_iter()
            .filter(|_| only.is_empty() || only == "unary")
        {
            let empty = drive(&self.channels, concurrency, secs, |ch| async move {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
                1
            })
            .await;
            self.report
                .row("unary", "empty RPC (health)", 0, concurrency, &empty, &[]);
            let ceiling = [("empty RPC", empty.rps())];
            for size in SIZES {
                let pt = Bytes::from(vec![0x5au8; size]);
                let record = encrypt(self.channels[0].clone(), pt.clone()).await;
                self.count(1, 1);
                let o = drive(&self.channels, concurrency, secs, move |ch| {
                    let pt = pt.clone();
                    async move {
                        std::hint::black_box(encrypt(ch, pt).await);
                        1
                    }
                })
                .await;
                self.report
                    .row("unary", "Encrypt", size, concurrency, &o, &ceiling);
                if size == 64 {
                    peak_64 = peak_64.max(o.rps());
                }
                self.count_outcome(&o);
                let o = drive(&self.channels, concurrency, secs, move |ch| {
                    decrypt(ch, record.clone())
                })
                .await;
                self.report
                    .row("unary", "Decrypt", size, concurrency, &o, &ceiling);
                self.count_outcome(&o);
            }
        }
        peak_64
    }

    /// Unary Encrypt of 64-byte records at half `peak_64` (open loop).
    pub async fn paced(&mut self, peak_64: f64) {
        Report::header(
            "Unary Encrypt of 64-byte records at half the peak rate (open loop)",
            "rate",
        );
        // ENVELOPE_BENCH_RATE sets the rate; without it or a peak measured in
        // this run (ENVELOPE_BENCH_ONLY), 20k/s.
        let half = std::env::var("ENVELOPE_BENCH_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(if peak_64 > 0.0 {
                peak_64 / 2.0
            } else {
                20_000.0
            });
        let pt = Bytes::from(vec![0x5au8; 64]);
        let (o, late) = paced(&self.channels, half, self.secs.max(2.0), move |ch| {
            let pt = pt.clone();
            async move {
                std::hint::black_box(encrypt(ch, pt).await);
                1
            }
        })
        .await;
        self.report.row(
            "paced",
            "Encrypt at half peak, from send",
            64,
            half as usize,
            &o,
            &[],
        );
        self.count_outcome(&o);
        let o = Outcome { hist: late, ..o };
        self.report.row(
            "paced",
            "Encrypt at half peak, from schedule",
            64,
            half as usize,
            &o,
            &[],
        );
    }

    /// EncryptBatch, EncryptStream, DecryptBatch and DecryptStream beside
    /// the echo server and raw AES-256-GCM, at every size.
    pub async fn batches(&mut self) {
        let secs = self.secs;
        Report::header(
            &format!(
                "Batches of {BATCH} records ({BATCH_CALLERS} callers) and streams ({BATCH_CALLERS} streams × {STREAM_WINDOW} batches in flight)"
            ),
            "callers",
        );
        let only = self.only.clone();
        for size in SIZES
            .into_iter()
            .filter(|_| only.is_empty() || only == "batch")
        {
            let crypto = crypto_ceiling(size, secs.min(1.0));
            self.report.crypto_ceiling(size, crypto);
            let batch = encrypt_batch_request(size);
            let b = batch.clone();
            self.batch_pair("EncryptBatch", size, crypto, move |ch| {
                encrypt_batch(ch, b.clone())
            })
            .await;
            let message: pb::EncryptStreamRequest = batch.clone().into();
            self.stream_pair("EncryptStream", size, crypto, message)
                .await;

            // Decrypt the records of one batch, over and over.
            let sealed = envelope_client(self.channels[0].clone())
                .encrypt_batch(batch)
                .await
                .unwrap()
                .into_inner();
            self.count(1, BATCH as u64);
            let d = decrypt_request(sealed);
            let dd = d.clone();
            self.batch_pair("DecryptBatch", size, crypto, move |ch| {
                decrypt_batch(ch, dd.clone())
            })
            .await;
            let message: pb::DecryptStreamRequest = d.into();
            self.stream_pair("DecryptStream", size, crypto, message)
                .await;
        }
    }

    /// EncryptColumn, DecryptColumn and their streams (1,000 values with a
    /// row id each) beside the echo server answering the same messages and
    /// Envelope's own column seal and open in-process, at every size.
    pub async fn columns(&mut self) {
        let secs = self.secs;
        Report::header(
            &format!(
                "Columns of {BATCH} values with row ids ({BATCH_CALLERS} callers) and column streams ({BATCH_CALLERS} streams × {STREAM_WINDOW} columns in flight)"
            ),
            "callers",
        );
        let only = self.only.clone();
        for size in SIZES
            .into_iter()
            .filter(|_| only.is_empty() || only == "column")
        {
            let (seal, open) = column_in_process(size, secs.min(1.0)).await;
            self.report.in_process("Envelope column seal", size, seal);
            self.report.in_process("Envelope column open", size, open);
            let column = encrypt_column_request(size);
            let c = column.clone();
            self.column_pair("EncryptColumn", size, seal, move |ch| {
                encrypt_column(ch, c.clone())
            })
            .await;
            let msg = pb::EncryptColumnStreamRequest {
                column: Some(column.clone()),
            };
            self.column_stream_pair("EncryptColumnStream", size, seal, msg)
                .await;

            let sealed = envelope_client(self.channels[0].clone())
                .encrypt_column(column.clone())
                .await
                .unwrap()
                .into_inner();
            self.count(1, BATCH as u64);
            let d = decrypt_column_request(&column, sealed);
            let dd = d.clone();
            self.column_pair("DecryptColumn", size, open, move |ch| {
                decrypt_column(ch, dd.clone())
            })
            .await;
            let msg = pb::DecryptColumnStreamRequest { column: Some(d) };
            self.column_stream_pair("DecryptColumnStream", size, open, msg)
                .await;
        }
    }

    async fn column_pair<F, Fut>(&mut self, name: &str, size: usize, in_process: f64, call: F)
    where
        F: Fn(Channel) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = u64> + Send,
    {
        let echo_o = drive(&self.echo_channels, BATCH_CALLERS, self.secs, call.clone()).await;
        let o = drive(&self.channels, BATCH_CALLERS, self.secs, call).await;
        let o = self
            .report
            .column_pair("column", name, size, in_process, echo_o, o);
        self.count_outcome(&o);
    }

    async fn column_stream_pair<M: StreamCall>(
        &mut self,
        name: &str,
        size: usize,
        in_process: f64,
        msg: M,
    ) {
        let echo_o = drive_streams(&self.echo_channels, self.secs, msg.clone()).await;
        let o = drive_streams(&self.channels, self.secs, msg).await;
        let o = self
            .report
            .column_pair("column", name, size, in_process, echo_o, o);
        self.count_outcome(&o);
    }

    /// `call` from [`BATCH_CALLERS`] callers to the echo server, then to
    /// Envelope: both rows, and Envelope's calls counted.
    async fn batch_pair<F, Fut>(&mut self, name: &str, size: usize, crypto: f64, call: F)
    where
        F: Fn(Channel) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = u64> + Send,
    {
        let echo_o = drive(&self.echo_channels, BATCH_CALLERS, self.secs, call.clone()).await;
        let o = drive(&self.channels, BATCH_CALLERS, self.secs, call).await;
        let o = self.report.pair("batch", name, size, crypto, echo_o, o);
        self.count_outcome(&o);
    }

    /// `batch` over streams to the echo server, then to Envelope: both rows,
    /// and Envelope's calls counted.
    async fn stream_pair<M: StreamCall>(&mut self, name: &str, size: usize, crypto: f64, batch: M) {
        let echo_o = drive_streams(&self.echo_channels, self.secs, batch.clone()).await;
        let o = drive_streams(&self.channels, self.secs, batch).await;
        let o = self.report.pair("stream", name, size, crypto, echo_o, o);
        self.count_outcome(&o);
    }

    /// The backend calls of the run; then the servers stop (Envelope with
    /// SIGTERM, writing every queued audit line) and the audit log is
    /// counted against the calls made; then `load.csv` goes to `out_dir`.
    pub fn finish(self, out_dir: &Path) {
        let Run {
            server,
            echo,
            metrics,
            audit,
            before,
            mut report,
            calls,
            records,
            ..
        } = self;
        let after = backend_calls(&metrics);
        let (kms, store) = (after.0 - before.0, after.1 - before.1);
        println!(
            "\nBackend calls during the run: KMS {kms:.0}, secret store {store:.0}, for {records} records in {calls} calls ({:.2e} KMS calls per record)",
            kms / records.max(1) as f64
        );
        report.backend(kms, store, records);
        stop(server, echo);
        let audited = std::fs::read_to_string(&audit).map_or(0, |s| s.lines().count());
        println!("Audit lines written: {audited} for {calls} calls");
        report.write(out_dir);
        // docs/AUDIT.md promises one line per call: a run that shows
        // otherwise fails, with its report written.
        if u64::try_from(audited).ok() != Some(calls) {
            eprintln!("FAILED: {audited} audit lines for {calls} calls");
            std::process::exit(1);
        }
    }
}
