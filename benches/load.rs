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
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envelope::pb;
use envelope::primitives::crypto::{AeadKey, KeyBytes};
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

// The server's allocator, so the echo ceiling and the server compare like
// with like.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 4;
const SIZES: [usize; 4] = [16, 64, 256, 4096];
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
const BATCH: usize = 1000;
/// Batch callers (closed loop) and streams, one per connection.
const BATCH_CALLERS: usize = 4;
/// Batches in flight per stream.
const STREAM_WINDOW: usize = 4;

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap()
}

struct Outcome {
    calls: u64,
    records: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// The printed table and the CSV rows.
struct Report {
    csv: String,
}

impl Report {
    fn row(
        &mut self,
        group: &str,
        name: &str,
        size: usize,
        c: usize,
        o: &Outcome,
        ceilings: &[(&str, f64)],
    ) {
        let cps = o.calls as f64 / o.secs;
        let rps = o.rps();
        let q = |p: f64| o.hist.value_at_quantile(p) as f64 / 1000.0;
        let ratios: Vec<String> = ceilings
            .iter()
            .map(|(n, v)| format!("{:.2} of {n}", rps / v))
            .collect();
        println!(
            "| {name} | {size} B | {c} | {cps:.0} | {rps:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} |",
            q(0.5),
            q(0.99),
            q(0.999),
            ratios.join(", ")
        );
        let ratio = ceilings
            .first()
            .map_or(String::new(), |(_, v)| format!("{:.4}", rps / v));
        let _ = writeln!(
            self.csv,
            "{group},{name},{size},{c},{cps:.1},{rps:.1},{:.1},{:.1},{:.1},{ratio}",
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }
}

/// Runs `concurrency` tasks spread over the channels, each calling `call`
/// back to back until the time is up. `call` returns how many records it did.
async fn drive<F, Fut>(channels: &[Channel], concurrency: usize, secs: f64, call: F) -> Outcome
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let ch = channels[t % channels.len()].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut calls, mut records) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                records += call(ch.clone()).await;
                hist.record(t0.elapsed().as_nanos() as u64).unwrap();
                calls += 1;
            }
            (calls, records, hist)
        }));
    }
    collect(tasks, start).await
}

/// Calls at a fixed total `rate` (open loop), spread evenly over the
/// channels. A dispatcher thread wakes every 100 µs and starts the calls due
/// by then (tokio's own timer ticks in milliseconds and would bunch them).
/// Returns the latency from each call's send, and (second) from its
/// scheduled start, which also counts any lateness of the load generator
/// and does not hide a stall behind the calls it delayed.
async fn paced<F, Fut>(
    channels: &[Channel],
    rate: f64,
    secs: f64,
    call: F,
) -> (Outcome, Histogram<u64>)
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now() + Duration::from_millis(10);
    let total = (rate * secs) as u64;
    let channels = channels.to_vec();
    let runtime = tokio::runtime::Handle::current();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let tasks = tokio::task::spawn_blocking(move || {
        let mut tasks = Vec::with_capacity(total as usize);
        let mut k = 0u64;
        while k < total {
            let now = Instant::now();
            loop {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if k >= total || due > now {
                    break;
                }
                let ch = channels[k as usize % channels.len()].clone();
                let call = call.clone();
                // Bounded: a load generator that falls behind sends late
                // (counted from the schedule) rather than without limit.
                let permit = runtime.block_on(in_flight.clone().acquire_owned()).unwrap();
                tasks.push(runtime.spawn(async move {
                    let sent = Instant::now();
                    let records = call(ch).await;
                    drop(permit);
                    (records, sent.elapsed(), due.elapsed())
                }));
                k += 1;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        tasks
    })
    .await
    .unwrap();
    let (mut from_send, mut from_due) = (new_hist(), new_hist());
    let mut records = 0;
    for t in tasks {
        let (r, a, b) = t.await.unwrap();
        records += r;
        from_send.record(a.as_nanos() as u64).unwrap();
        from_due.record(b.as_nanos() as u64).unwrap();
    }
    let o = Outcome {
        calls: total,
        records,
        secs: start.elapsed().as_secs_f64(),
        hist: from_send,
    };
    (o, from_due)
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Histogram<u64>)>>,
    start: Instant,
) -> Outcome {
    let mut out = Outcome {
        calls: 0,
        records: 0,
        secs: 0.0,
        hist: new_hist(),
    };
    for t in tasks {
        let (c, r, h) = t.await.unwrap();
        out.calls += c;
        out.records += r;
        out.hist.add(h).unwrap();
    }
    out.secs = start.elapsed().as_secs_f64();
    out
}

/// A batch message that has a streaming RPC.
trait StreamCall: Clone + Send + 'static {
    type Resp: Send + 'static;
    fn open(
        client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> impl std::future::Future<Output = Streaming<Self::Resp>> + Send;
    fn items(r: &Self::Resp) -> u64;
}

impl StreamCall for pb::EncryptBatchRequest {
    type Resp = pb::EncryptBatchResponse;
    async fn open(
        mut client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> Streaming<Self::Resp> {
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        client.encrypt_stream(s).await.unwrap().into_inner()
    }
    fn items(r: &Self::Resp) -> u64 {
        r.results.len() as u64
    }
}

impl StreamCall for pb::DecryptBatchRequest {
    type Resp = pb::DecryptBatchResponse;
    async fn open(
        mut client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> Streaming<Self::Resp> {
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        client.decrypt_stream(s).await.unwrap().into_inner()
    }
    fn items(r: &Self::Resp) -> u64 {
        r.results.len() as u64
    }
}

/// [`BATCH_CALLERS`] streams, one per connection, each keeping
/// [`STREAM_WINDOW`] batches in flight until the time is up. Latency is per
/// batch, from sending it to reading its answer.
async fn drive_streams<M: StreamCall>(channels: &[Channel], secs: f64, batch: M) -> Outcome {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for ch in channels.iter().take(BATCH_CALLERS) {
        let client = client(ch.clone());
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(STREAM_WINDOW);
            let mut responses = M::open(client, rx).await;
            let mut sent = VecDeque::new();
            let mut hist = new_hist();
            let (mut calls, mut records) = (0u64, 0u64);
            let mut tx = Some(tx);
            loop {
                while let Some(t) = &tx {
                    if sent.len() >= STREAM_WINDOW {
                        break;
                    }
                    if Instant::now() >= deadline {
                        tx = None;
                        break;
                    }
                    t.send(batch.clone()).await.unwrap();
                    sent.push_back(Instant::now());
                }
                if sent.is_empty() {
                    break;
                }
                let r = responses.message().await.unwrap().unwrap();
                hist.record(sent.pop_front().unwrap().elapsed().as_nanos() as u64)
                    .unwrap();
                calls += 1;
                records += M::items(&r);
            }
            (calls, records, hist)
        }));
    }
    collect(tasks, start).await
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

/// The echo server: the Envelope API with no work behind it (batches come
/// back as their own plaintexts), so the same calls measure what protobuf,
/// HTTP/2 and tonic cost on their own.
#[derive(Clone, Copy)]
struct Echo;

fn echo_batch(req: pb::EncryptBatchRequest) -> pb::EncryptBatchResponse {
    pb::EncryptBatchResponse {
        results: req
            .items
            .into_iter()
            .map(|i| pb::EncryptResult {
                result: Some(pb::encrypt_result::Result::Ciphertext(i.plaintext)),
                key_version: "00000000-0000-0000-0000-000000000000".to_owned(),
            })
            .collect(),
    }
}

fn echo_decrypt_batch(req: pb::DecryptBatchRequest) -> pb::DecryptBatchResponse {
    pb::DecryptBatchResponse {
        results: req
            .items
            .into_iter()
            .map(|i| pb::DecryptResult {
                result: Some(pb::decrypt_result::Result::Plaintext(i.ciphertext)),
                key_version: "00000000-0000-0000-0000-000000000000".to_owned(),
            })
            .collect(),
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::envelope_server::Envelope for Echo {
    async fn encrypt(
        &self,
        r: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        Ok(Response::new(pb::EncryptResponse {
            ciphertext: r.into_inner().plaintext,
            key_version: String::new(),
        }))
    }
    async fn decrypt(
        &self,
        _: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn encrypt_batch(
        &self,
        r: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        Ok(Response::new(echo_batch(r.into_inner())))
    }
    type EncryptStreamStream = Stream<pb::EncryptBatchResponse>;
    async fn encrypt_stream(
        &self,
        r: Request<Streaming<pb::EncryptBatchRequest>>,
    ) -> Result<Response<Self::EncryptStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r.into_inner().map(|m| m.map(echo_batch));
        Ok(Response::new(Box::pin(s)))
    }
    async fn decrypt_batch(
        &self,
        r: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        Ok(Response::new(echo_decrypt_batch(r.into_inner())))
    }
    type DecryptStreamStream = Stream<pb::DecryptBatchResponse>;
    async fn decrypt_stream(
        &self,
        r: Request<Streaming<pb::DecryptBatchRequest>>,
    ) -> Result<Response<Self::DecryptStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let s = r.into_inner().map(|m| m.map(echo_decrypt_batch));
        Ok(Response::new(Box::pin(s)))
    }
    async fn rewrap(
        &self,
        _: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn rewrap_batch(
        &self,
        _: Request<pb::RewrapBatchRequest>,
    ) -> Result<Response<pb::RewrapBatchResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn generate_data_key(
        &self,
        _: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn unwrap_data_key(
        &self,
        _: Request<pb::UnwrapDataKeyRequest>,
    ) -> Result<Response<pb::UnwrapDataKeyResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// Serves [`Echo`] with the transport settings of the real server.
fn echo_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on {}", l.local_addr().unwrap());
        tonic::transport::Server::builder()
            .add_service(
                pb::envelope_server::EnvelopeServer::new(Echo)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming(async_stream_nodelay(l))
            .await
            .unwrap();
    });
}

/// Accepted connections with Nagle's algorithm off, as the real server has
/// them (otherwise delayed ACKs stall every large response by ~40 ms).
fn async_stream_nodelay(
    l: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

/// Core `core` alone for this process and the threads it starts after.
fn pin_self(core: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// Starts `program args` on core 1 when pinning works, and returns it with
/// the address it printed.
fn start(
    pinned: bool,
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Child, String, Option<String>) {
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("1").arg(program);
        c
    } else {
        Command::new(program)
    };
    let mut child = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() {
        let l = lines
            .next()
            .expect("the server printed its address")
            .unwrap();
        if let Some(a) = l.strip_prefix("metrics on ") {
            metrics = Some(a.to_owned());
        }
        if let Some(a) = l.strip_prefix("listening on ") {
            addr = Some(a.to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.unwrap(), metrics)
}

/// KMS and secret-store calls so far, from the server's /metrics.
fn backend_calls(metrics: &str) -> (f64, f64) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
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

async fn connect(addr: &str) -> Vec<Channel> {
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
    channels
}

fn client(ch: Channel) -> pb::envelope_client::EnvelopeClient<Channel> {
    pb::envelope_client::EnvelopeClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn encrypt_batch_request(size: usize) -> pb::EncryptBatchRequest {
    pb::EncryptBatchRequest {
        key: String::new(),
        items: (0..BATCH)
            .map(|_| pb::EncryptItem {
                plaintext: Bytes::from(vec![0x5au8; size]),
                context: Default::default(),
            })
            .collect(),
    }
}

fn main() {
    if std::env::var_os("ENVELOPE_BENCH_ECHO").is_some() {
        return echo_main();
    }
    let secs: f64 = std::env::var("ENVELOPE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let out_dir = std::env::var_os("ENVELOPE_BENCH_OUT")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2
        && Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        && pin_self(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(secs, pinned, &out_dir));
}

async fn encrypt(ch: Channel, plaintext: Bytes) -> Bytes {
    client(ch)
        .encrypt(pb::EncryptRequest {
            key: String::new(),
            plaintext,
            context: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

async fn decrypt(ch: Channel, ciphertext: Bytes) -> u64 {
    let r = client(ch)
        .decrypt(pb::DecryptRequest {
            key: String::new(),
            ciphertext,
            context: Default::default(),
        })
        .await
        .unwrap();
    std::hint::black_box(r);
    1
}

async fn encrypt_batch(ch: Channel, b: pb::EncryptBatchRequest) -> u64 {
    let r = client(ch).encrypt_batch(b).await.unwrap().into_inner();
    r.results.len() as u64
}

async fn decrypt_batch(ch: Channel, b: pb::DecryptBatchRequest) -> u64 {
    let r = client(ch).decrypt_batch(b).await.unwrap().into_inner();
    assert!(
        r.results
            .iter()
            .all(|r| matches!(r.result, Some(pb::decrypt_result::Result::Plaintext(_)))),
        "a record failed to decrypt"
    );
    r.results.len() as u64
}

/// The records of an EncryptBatch answer, as a DecryptBatch request.
fn decrypt_request(sealed: pb::EncryptBatchResponse) -> pb::DecryptBatchRequest {
    pb::DecryptBatchRequest {
        key: String::new(),
        items: sealed
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(pb::encrypt_result::Result::Ciphertext(c)) => pb::DecryptItem {
                    ciphertext: c,
                    context: Default::default(),
                },
                _ => panic!("batch item failed"),
            })
            .collect(),
    }
}

async fn run(secs: f64, pinned: bool, out_dir: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let config = dir.path().join("envelope.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nlog_level = \"warn\"\n\n[limits]\n# 1,000 records of 4 KiB.\nmax_request_bytes = 8388608\n\n[audit]\noutput = {:?}\n",
            dir.path().join("data"),
            audit
        ),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_envelope"));
    let (mut server, addr, metrics) = start(
        pinned,
        bin,
        &["serve", "--config", config.to_str().unwrap()],
        &[],
    );
    let metrics = metrics.expect("metrics address");
    let me = std::env::current_exe().unwrap();
    let (mut echo, echo_addr, _) = start(pinned, &me, &[], &[("ENVELOPE_BENCH_ECHO", "1")]);
    let channels = connect(&addr).await;
    let echo_channels = connect(&echo_addr).await;

    // Warm up: the first data key (one KMS call) and the connections.
    encrypt(channels[0].clone(), Bytes::from_static(b"warm")).await;
    let before = backend_calls(&metrics);
    let mut report = Report {
        csv: "group,scenario,size,concurrency,calls_per_s,records_per_s,p50_us,p99_us,p999_us,ratio\n".to_owned(),
    };
    // Every call made to the server, to check the audit log against.
    let (mut calls, mut records) = (1u64, 1u64);
    let mut count = |o: &Outcome| {
        calls += o.calls;
        records += o.records;
    };

    println!(
        "Envelope load benchmark: {CONNECTIONS} connections, {secs} s per scenario, server and load generator on this machine, {}",
        if pinned {
            "server (and echo server) pinned to core 1, load generator to core 0"
        } else {
            "NOT pinned (needs 2 cores and taskset)"
        }
    );
    let only = std::env::var("ENVELOPE_BENCH_ONLY").unwrap_or_default();
    let header = |title: &str, c: &str| {
        println!("\n## {title}\n");
        println!("| scenario | record | {c} | calls/s | records/s | p50 | p99 | p99.9 | ratio |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    };
    header("Unary calls", "concurrency");
    let mut peak_64 = 0.0f64;
    for concurrency in CONCURRENCY
        .into_iter()
        .filter(|_| only.is_empty() || only == "unary")
    {
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
        report.row("unary", "empty RPC (health)", 0, concurrency, &empty, &[]);
        let ceiling = [("empty RPC", empty.rps())];
        for size in SIZES {
            let pt = Bytes::from(vec![0x5au8; size]);
            let record = encrypt(channels[0].clone(), pt.clone()).await;
            count(&Outcome {
                calls: 1,
                records: 1,
                secs: 0.0,
                hist: new_hist(),
            });
            let o = drive(&channels, concurrency, secs, move |ch| {
                let pt = pt.clone();
                async move {
                    std::hint::black_box(encrypt(ch, pt).await);
                    1
                }
            })
            .await;
            report.row("unary", "Encrypt", size, concurrency, &o, &ceiling);
            if size == 64 {
                peak_64 = peak_64.max(o.rps());
            }
            count(&o);
            let o = drive(&channels, concurrency, secs, move |ch| {
                decrypt(ch, record.clone())
            })
            .await;
            report.row("unary", "Decrypt", size, concurrency, &o, &ceiling);
            count(&o);
        }
    }

    header(
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
    let (o, late) = paced(&channels, half, secs.max(2.0), move |ch| {
        let pt = pt.clone();
        async move {
            std::hint::black_box(encrypt(ch, pt).await);
            1
        }
    })
    .await;
    report.row(
        "paced",
        "Encrypt at half peak, from send",
        64,
        half as usize,
        &o,
        &[],
    );
    count(&o);
    let o = Outcome { hist: late, ..o };
    report.row(
        "paced",
        "Encrypt at half peak, from schedule",
        64,
        half as usize,
        &o,
        &[],
    );

    header(
        &format!(
            "Batches of {BATCH} records ({BATCH_CALLERS} callers) and streams ({BATCH_CALLERS} streams × {STREAM_WINDOW} batches in flight)"
        ),
        "callers",
    );
    for size in SIZES
        .into_iter()
        .filter(|_| only.is_empty() || only == "batch")
    {
        let crypto = crypto_ceiling(size, secs.min(1.0));
        println!(
            "| raw AES-256-GCM seal, in-process, one core | {size} B | 1 | | {crypto:.0} | | | | |"
        );
        let _ = writeln!(
            report.csv,
            "ceiling,raw AES-256-GCM seal,{size},1,,{crypto:.1},,,,"
        );
        let batch = encrypt_batch_request(size);
        let mut pair = async |group: &str, name: &str, echo_o: Outcome, o: Outcome| {
            report.row(
                group,
                &format!("echo {name}"),
                size,
                BATCH_CALLERS,
                &echo_o,
                &[],
            );
            report.row(
                group,
                name,
                size,
                BATCH_CALLERS,
                &o,
                &[("echo", echo_o.rps()), ("raw AES", crypto)],
            );
            o
        };
        let b = batch.clone();
        let echo_o = drive(&echo_channels, BATCH_CALLERS, secs, move |ch| {
            encrypt_batch(ch, b.clone())
        })
        .await;
        let b = batch.clone();
        let o = drive(&channels, BATCH_CALLERS, secs, move |ch| {
            encrypt_batch(ch, b.clone())
        })
        .await;
        count(&pair("batch", "EncryptBatch", echo_o, o).await);

        let echo_o = drive_streams(&echo_channels, secs, batch.clone()).await;
        let o = drive_streams(&channels, secs, batch.clone()).await;
        count(&pair("stream", "EncryptStream", echo_o, o).await);

        // Decrypt the records of one batch, over and over.
        let sealed = client(channels[0].clone())
            .encrypt_batch(batch)
            .await
            .unwrap()
            .into_inner();
        count(&Outcome {
            calls: 1,
            records: BATCH as u64,
            secs: 0.0,
            hist: new_hist(),
        });
        let d = decrypt_request(sealed);
        let dd = d.clone();
        let echo_o = drive(&echo_channels, BATCH_CALLERS, secs, move |ch| {
            decrypt_batch(ch, dd.clone())
        })
        .await;
        let dd = d.clone();
        let o = drive(&channels, BATCH_CALLERS, secs, move |ch| {
            decrypt_batch(ch, dd.clone())
        })
        .await;
        count(&pair("batch", "DecryptBatch", echo_o, o).await);

        let echo_o = drive_streams(&echo_channels, secs, d.clone()).await;
        let o = drive_streams(&channels, secs, d).await;
        count(&pair("stream", "DecryptStream", echo_o, o).await);
    }

    let after = backend_calls(&metrics);
    let (kms, store) = (after.0 - before.0, after.1 - before.1);
    println!(
        "\nBackend calls during the run: KMS {kms:.0}, secret store {store:.0}, for {records} records in {calls} calls ({:.2e} KMS calls per record)",
        kms / records.max(1) as f64
    );
    let _ = writeln!(report.csv, "backend,kms_calls,0,0,,{kms},,,,");
    let _ = writeln!(report.csv, "backend,store_calls,0,0,,{store},,,,");
    let _ = writeln!(report.csv, "backend,records,0,0,,{records},,,,");

    // SIGTERM: the server drains and writes every queued audit line.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
    let _ = echo.kill();
    let _ = echo.wait();
    let audited = std::fs::read_to_string(&audit).map_or(0, |s| s.lines().count());
    println!("Audit lines written: {audited} for {calls} calls");
    std::fs::create_dir_all(out_dir).unwrap();
    let csv = out_dir.join("load.csv");
    std::fs::write(&csv, report.csv).unwrap();
    println!("Results: {}", csv.display());

    // The peers, in the same run on the same record sizes (in-process on
    // core 0; the script installs them into a virtualenv on first use).
    // ENVELOPE_BENCH_PEERS=0 skips them.
    if std::env::var("ENVELOPE_BENCH_PEERS").as_deref() != Ok("0") {
        println!("\n## Peers, in-process on one core\n");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/run.sh");
        match Command::new(script)
            .arg(format!("{}", secs.min(2.0)))
            .status()
        {
            Ok(s) if s.success() => {}
            other => println!("peers did not run ({other:?}); run benches/peers/run.sh"),
        }
    }
}
