//! The load drivers: closed loops of callers ([`drive`]), an open loop at a
//! fixed rate ([`paced`]), streams with batches in flight
//! ([`drive_streams`]), and the in-process crypto ceiling.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envelope::pb;
use envelope::primitives::crypto::{AeadKey, KeyBytes};
use hdrhistogram::Histogram;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::process::envelope_client;
use crate::{BATCH_CALLERS, CONNECTIONS, STREAM_WINDOW};

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap()
}

pub struct Outcome {
    pub calls: u64,
    pub records: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

pub async fn connect(addr: &str) -> Vec<Channel> {
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

/// Runs `concurrency` tasks spread over the channels, each calling `call`
/// back to back until the time is up. `call` returns how many records it did.
pub async fn drive<F, Fut>(channels: &[Channel], concurrency: usize, secs: f64, call: F) -> Outcome
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
pub async fn paced<F, Fut>(
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
pub trait StreamCall: Clone + Send + 'static {
    type Resp: Send + 'static;
    fn open(
        client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> impl std::future::Future<Output = Streaming<Self::Resp>> + Send;
    fn items(r: &Self::Resp) -> u64;
}

impl StreamCall for pb::EncryptStreamRequest {
    type Resp = pb::EncryptStreamResponse;
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

impl StreamCall for pb::DecryptStreamRequest {
    type Resp = pb::DecryptStreamResponse;
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

impl StreamCall for pb::EncryptColumnStreamRequest {
    type Resp = pb::EncryptColumnStreamResponse;
    async fn open(
        mut client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> Streaming<Self::Resp> {
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        client.encrypt_column_stream(s).await.unwrap().into_inner()
    }
    fn items(r: &Self::Resp) -> u64 {
        r.column.as_ref().map_or(0, |c| c.ciphertexts.len() as u64)
    }
}

impl StreamCall for pb::DecryptColumnStreamRequest {
    type Resp = pb::DecryptColumnStreamResponse;
    async fn open(
        mut client: pb::envelope_client::EnvelopeClient<Channel>,
        rx: tokio::sync::mpsc::Receiver<Self>,
    ) -> Streaming<Self::Resp> {
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        client.decrypt_column_stream(s).await.unwrap().into_inner()
    }
    fn items(r: &Self::Resp) -> u64 {
        r.column.as_ref().map_or(0, |c| c.plaintexts.len() as u64)
    }
}

/// [`BATCH_CALLERS`] streams, one per connection, each keeping
/// [`STREAM_WINDOW`] batches in flight until the time is up. Latency is per
/// batch, from sending it to reading its answer.
pub async fn drive_streams<M: StreamCall>(channels: &[Channel], secs: f64, batch: M) -> Outcome {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for ch in channels.iter().take(BATCH_CALLERS) {
        let client = envelope_client(ch.clone());
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

pub fn crypto_ceiling(size: usize, secs: f64) -> f64 {
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

/// Envelope's own column seal and open, in-process on this core (no RPC):
/// records/s of `EncryptColumn`'s and `DecryptColumn`'s work on one
/// [`crate::BATCH`]-value column of `size`-byte values, each for `secs`.
pub async fn column_in_process(size: usize, secs: f64) -> (f64, f64) {
    use envelope::keys::column::Rows;
    let dir = tempfile::tempdir().unwrap();
    let source = envelope::keys::KeySource::open_local(dir.path(), "default")
        .await
        .unwrap();
    let key = envelope::keys::NamedKey::load(source, envelope::keys::Limits::default())
        .await
        .unwrap();
    let req = crate::calls::encrypt_column_request(size);
    let rows = Rows {
        field: &req.row_field,
        values: &req.row_values,
    };
    let rate = |n: u64, start: Instant| n as f64 / start.elapsed().as_secs_f64();
    let (start, mut n) = (Instant::now(), 0u64);
    let mut last = None;
    while start.elapsed().as_secs_f64() < secs {
        let sealed = key
            .encrypt_column(&req.context, rows, &req.plaintexts)
            .await
            .unwrap();
        n += sealed.results.len() as u64;
        last = Some(sealed);
    }
    let seal = rate(n, start);
    let sealed = last.unwrap();
    let records: Vec<bytes::Bytes> = sealed
        .results
        .iter()
        .map(|r| sealed.records.slice(r.as_ref().unwrap().clone()))
        .collect();
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed().as_secs_f64() < secs {
        let opened = key
            .decrypt_column(&req.context, rows, &records)
            .await
            .unwrap();
        assert!(opened.results.iter().all(Result::is_ok));
        n += opened.results.len() as u64;
    }
    (seal, rate(n, start))
}
