//! The audit writer under a sink slower than its callers.
#![allow(clippy::unwrap_used)]

use super::*;
use std::time::Duration;

/// A sink slower than the callers: the queue fills, callers wait for
/// room, and every line still arrives whole once the log is dropped.
struct Slow(Arc<Mutex<Vec<u8>>>);

impl Write for Slow {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(200));
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_makes_callers_wait_and_loses_nothing() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = AuditLog::with_sink(Box::new(Slow(got.clone())), OnFailure::Refuse).unwrap();
    // 64 context keys of 64 characters: lines of about 4.5 KB, so 3,000
    // of them (13 MB) overflow the 8 MiB queue.
    let keys: Vec<String> = (0..64).map(|i| format!("{i:0>64}")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    for i in 0..375 {
                        let id = format!("{t}-{i}");
                        log.record(&Event {
                            context_keys: keys.iter().map(String::as_str).collect(),
                            ..event(&id)
                        })
                        .await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(log);
    let got = got.lock().unwrap();
    let text = std::str::from_utf8(&got).unwrap();
    let mut ids = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(ids.insert(v["request_id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(ids.len(), 3000);
}

/// A sink that takes `accept` bytes, then fails `failures` times (a full
/// disk), then takes everything.
struct Failing {
    got: Arc<Mutex<Vec<u8>>>,
    accept: usize,
    failures: usize,
    /// When each failed write was tried.
    failed_at: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl Write for Failing {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut got = self.got.lock().unwrap();
        if self.failures > 0 && got.len() >= self.accept {
            self.failures -= 1;
            self.failed_at
                .lock()
                .unwrap()
                .push(std::time::Instant::now());
            return Err(std::io::Error::other("no space left on device"));
        }
        let n = if self.failures > 0 {
            b.len().min(self.accept - got.len())
        } else {
            b.len()
        };
        got.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn event(id: &str) -> Event<'_> {
    Event {
        time: Timestamp::now(),
        request_id: id,
        caller: None,
        rpc: "Encrypt",
        operation: "encrypt",
        key: "k",
        key_version: "",
        index: None,
        outcome: "ok",
        code: "OK",
        items: None,
        failed_items: None,
        context_keys: Vec::new(),
        latency_us: 1,
        reason: None,
        compromised_records: None,
        compromised: None,
    }
}

/// Writes `ids` as one block into a sink that tears it after 100 bytes and
/// then fails `failures` times; returns what the sink got once the log is
/// dropped, whether the log refused calls meanwhile, and when the failed
/// writes were tried.
fn through_a_failing_sink(
    on_failure: OnFailure,
    failures: usize,
    ids: &[String],
) -> (String, bool, Vec<std::time::Instant>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let failed_at = Arc::new(Mutex::new(Vec::new()));
    let sink = Failing {
        got: got.clone(),
        accept: 100,
        failures,
        failed_at: failed_at.clone(),
    };
    let log = AuditLog::with_sink(Box::new(sink), on_failure).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut refused = false;
    rt.block_on(async {
        for id in ids {
            log.record(&event(id)).await;
        }
        // Bounded: three retries 200 ms apart, then a write that goes through.
        for _ in 0..100 {
            refused |= log.refuses();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log.record(&event("after")).await;
    });
    drop(log);
    let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
    let failed_at = failed_at.lock().unwrap().clone();
    (text, refused, failed_at)
}

/// Refuse mode keeps a failed block and writes it again from where the
/// sink stopped: every line once and whole, while calls are refused.
#[test]
fn a_failed_write_is_retried_from_where_it_stopped() {
    let ids: Vec<String> = (0..10).map(|i| format!("line-{i}")).collect();
    let (text, refused, failed_at) = through_a_failing_sink(OnFailure::Refuse, 3, &ids);
    assert!(refused, "calls went on while the log could not be written");
    // AUDIT.md: tried again every 200 ms, not in a loop that spins on a
    // full disk (a lower bound only; a loaded machine may be later).
    assert_eq!(failed_at.len(), 3);
    for pair in failed_at.windows(2) {
        assert!(pair[1] - pair[0] >= RETRY_EVERY, "{:?}", pair[1] - pair[0]);
    }
    let got: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut want = ids.clone();
    want.push("after".into());
    assert_eq!(got, want);
}

/// Continue mode drops the failed block; its torn first line is ended, so
/// the lines after it are whole.
#[test]
fn a_dropped_block_leaves_the_next_lines_whole() {
    let ids: Vec<String> = (0..10).map(|i| format!("line-{i}")).collect();
    let (text, refused, _) = through_a_failing_sink(OnFailure::Continue, 1, &ids);
    assert!(!refused);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(lines[0]).is_err());
    let after: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(after["request_id"], "after");
}

/// A sink that takes nothing until released: a writer stuck on a slow disk.
struct Held {
    got: Arc<Mutex<Vec<u8>>>,
    release: std::sync::mpsc::Receiver<()>,
    released: bool,
}

impl Write for Held {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if !self.released {
            let _ = self.release.recv();
            self.released = true;
        }
        self.got.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// AUDIT.md, "Back-pressure": past 8 MiB of waiting lines a served call's
/// line waits for room, while a refusal's line (refuse mode, `try_record`)
/// is dropped, for the gate to count as `audit_line_not_queued`; every
/// queued line arrives, in order.
#[test]
fn a_full_queue_holds_8_mib_and_drops_only_refusals() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Held {
        got: got.clone(),
        release: rx,
        released: false,
    };
    let log = AuditLog::with_sink(Box::new(sink), OnFailure::Refuse).unwrap();
    // Declared after the log, so dropped first: a failed assertion releases
    // the writer before the log's drop waits for it.
    let release = tx;
    let keys: Vec<String> = (0..64).map(|i| format!("{i:0>64}")).collect();
    let mut queued = Vec::new();
    let mut dropped = 0;
    for i in 0..3000 {
        let id = format!("line-{i}");
        let e = Event {
            context_keys: keys.iter().map(String::as_str).collect(),
            ..event(&id)
        };
        if log.try_record(&e) {
            queued.push(id);
        } else {
            dropped += 1;
        }
        if i == 0 {
            // Let the writer take the first line and block on the sink.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // About 4.5 KB a line: 8 MiB holds some 1,860 of them.
    assert!((1500..2100).contains(&queued.len()), "{}", queued.len());
    assert_eq!(queued.len() + dropped, 3000);
    // A served call's line waits for room instead (SECURITY.md: "calls
    // wait"), and is written once the writer moves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // As long as any line above, so it cannot fit in what they left.
        let waiter = Event {
            context_keys: keys.iter().map(String::as_str).collect(),
            ..event("waiter-0000")
        };
        let mut record = std::pin::pin!(log.record(&waiter));
        let early = tokio::time::timeout(Duration::from_millis(200), record.as_mut()).await;
        assert!(early.is_err(), "record() did not wait for room");
        release.send(()).unwrap();
        record.await;
    });
    queued.push("waiter-0000".to_owned());
    drop(log);
    let got = got.lock().unwrap();
    let ids: Vec<String> = std::str::from_utf8(&got)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, queued);
}

/// When each write came, and what it carried.
type Writes = Arc<Mutex<Vec<(std::time::Instant, Vec<u8>)>>>;

/// A sink that keeps [`Writes`].
struct Timed(Writes);

impl Write for Timed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push((std::time::Instant::now(), b.to_vec()));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits up to 10 s for `n` writes.
fn wait_writes(writes: &Writes, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while writes.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "no write");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// AUDIT.md, "Back-pressure": the writer takes the block 10 ms after its
/// first line arrived, not at once, and writes the lines that came
/// meanwhile with it, in one write.
#[test]
fn lines_gather_for_10_ms_and_go_in_one_write() {
    let writes = Arc::new(Mutex::new(Vec::new()));
    let log = AuditLog::with_sink(Box::new(Timed(writes.clone())), OnFailure::Refuse).unwrap();
    let first = std::time::Instant::now();
    assert!(log.try_record(&event("a")));
    assert!(log.try_record(&event("b")));
    wait_writes(&writes, 1);
    let (at, bytes) = writes.lock().unwrap()[0].clone();
    assert!(
        at.duration_since(first) >= Duration::from_millis(9),
        "written after {:?}",
        at.duration_since(first)
    );
    let ids: Vec<String> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .collect();
    assert_eq!(ids, ["\"a\"", "\"b\""], "both lines in one write");
}

/// AUDIT.md, "Back-pressure": past 1 MiB the block is written at once. With
/// a gathering period of a minute, a line alone stays queued; lines past
/// 1 MiB are written, as one block, long before the minute.
#[test]
fn past_1_mib_the_block_is_written_at_once() {
    let writes = Arc::new(Mutex::new(Vec::new()));
    let log = AuditLog::gathering(
        Box::new(Timed(writes.clone())),
        OnFailure::Refuse,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(log.try_record(&event("alone")));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        writes.lock().unwrap().is_empty(),
        "written before the period"
    );
    let keys: Vec<String> = (0..64).map(|i| format!("{i:0>64}")).collect();
    let mut queued = 0;
    while queued < HIGH_WATER {
        let line = Event {
            context_keys: keys.iter().map(String::as_str).collect(),
            ..event("big")
        };
        assert!(log.try_record(&line));
        let mut one = Vec::new();
        serde_json::to_writer(&mut one, &line).unwrap();
        queued += one.len() + 1;
    }
    wait_writes(&writes, 1);
    let bytes = writes.lock().unwrap()[0].1.len();
    assert!(bytes >= HIGH_WATER, "{bytes}");
}
