//! The audit trail: one JSON line per request (batches: one line with item
//! counts). Never plaintext, ciphertext, key bytes or context values; the
//! context's keys are logged (sorted), its values are left out. Requests
//! append their line to a bounded in-memory block that one writer thread
//! writes every few milliseconds, so a request costs no syscall and wakes
//! no thread of its own; when the block is full, requests wait rather than
//! lose audit lines. The schema is in docs/AUDIT.md.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

mod timestamp;

pub use timestamp::Timestamp;

/// What happens to calls while audit lines cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Data-plane calls get `UNAVAILABLE`; the unwritten block is kept and
    /// retried, so no line of a served call is lost.
    Refuse,
    /// Calls go on; a block that cannot be written is dropped (and logged).
    Continue,
}

/// A block that could not be written is retried this often (refuse mode).
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// Appended to a file (created 0600).
    File(PathBuf),
}

/// One audit line.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// When the request finished (RFC 3339, UTC).
    pub time: Timestamp,
    /// Request id, also returned to the caller as `x-request-id`.
    pub request_id: &'a str,
    /// Verified caller identity, or `null` (plaintext or no client certificate).
    pub caller: Option<&'a str>,
    /// The RPC, e.g. `Encrypt`.
    pub rpc: &'a str,
    /// The policy operation.
    pub operation: &'a str,
    /// The key name.
    pub key: &'a str,
    /// The master-key version used (empty when none).
    pub key_version: &'a str,
    /// The blind index a ComputeIndex call names (never values or tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<&'a str>,
    /// `ok`, `partial` (a batch with failed items), `error` or `denied`.
    pub outcome: &'a str,
    /// The gRPC status code name, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: &'a str,
    /// Batch items, if a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// Failed batch items, if a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_items: Option<usize>,
    /// The context's keys (unary calls), sorted; values are never logged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context_keys: Vec<&'a str>,
    /// Microseconds from request to response.
    pub latency_us: u64,
    /// `KeyRefresh` lines only: why the master-key version was refused.
    /// `MarkCompromised` lines: the operator's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Records the call opened under compromised versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compromised_records: Option<u64>,
    /// What became of them: re-encrypted, or decrypted in a migration window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compromised: Option<&'a str>,
}

/// The audit log handle; cheap to clone. The last clone dropped flushes
/// every queued line and stops the writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

/// Lines wait at most this long before the writer picks them up, so a busy
/// server writes a few large blocks a second rather than a line a request
/// (and wakes no thread per request).
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Past this many queued bytes the writer is woken at once.
const HIGH_WATER: usize = 1 << 20;
/// Past this many queued bytes requests wait for the writer: lines are
/// never dropped, and memory stays bounded.
const MAX_QUEUED: usize = 8 << 20;

#[derive(Debug, Default)]
struct Queue {
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    /// [`FLUSH_EVERY`], or another period in tests.
    flush_every: Duration,
    queue: Mutex<Queue>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes requests waiting for room.
    room: tokio::sync::Notify,
    /// The last write failed.
    failing: std::sync::atomic::AtomicBool,
    on_failure: OnFailure,
    /// The queue of requests waiting for room, first come first served
    /// (tokio's semaphore is fair and hands a released permit straight to
    /// the next waiter): one at a time waits for room, and while its permit
    /// is taken new lines queue behind instead of taking the room first.
    turnstile: tokio::sync::Semaphore,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = t.join();
        }
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl AuditLog {
    /// Starts the writer thread for `output`.
    pub fn start(output: Output, on_failure: OnFailure) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match &output {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(p) => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                Box::new(o.open(p)?)
            }
        };
        Self::with_sink(sink, on_failure)
    }

    /// Whether data-plane calls must be refused now: the last write failed
    /// and the log is in refuse mode.
    pub fn refuses(&self) -> bool {
        let shared = &self.handle.shared;
        shared.on_failure == OnFailure::Refuse
            && shared.failing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queues a line only if there is room now (for the refusals made while
    /// the log cannot be written, which must not wait for it); says whether.
    pub fn try_record(&self, event: &Event<'_>) -> bool {
        LINE.with_borrow_mut(|line| {
            line.clear();
            if serde_json::to_writer(&mut *line, event).is_err() {
                return false;
            }
            line.push(b'\n');
            self.handle.shared.try_push(line)
        })
    }

    /// Starts the writer thread for any sink.
    fn with_sink(sink: Box<dyn Write + Send>, on_failure: OnFailure) -> std::io::Result<Self> {
        Self::gathering(sink, on_failure, FLUSH_EVERY)
    }

    /// As [`Self::with_sink`], gathering lines for `flush_every`.
    fn gathering(
        sink: Box<dyn Write + Send>,
        on_failure: OnFailure,
        flush_every: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            flush_every,
            failing: std::sync::atomic::AtomicBool::new(false),
            on_failure,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: tokio::sync::Notify::new(),
            turnstile: tokio::sync::Semaphore::new(1),
        });
        let writer = std::thread::Builder::new()
            .name("envelope-audit".into())
            .spawn({
                let shared = shared.clone();
                move || write_loop(&shared, sink)
            })?;
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Records that a refresh refused master-key `version` of `key` (a line
    /// with `rpc` `KeyRefresh`, no caller, outcome `refused`), so a planted or
    /// rolled-back version is in the audit trail, not only the server log.
    pub async fn version_refused(&self, key: &str, version: &str, reason: &str) {
        let id = uuid::Uuid::new_v4().to_string();
        self.record(&Event {
            time: Timestamp::now(),
            request_id: &id,
            caller: None,
            rpc: "KeyRefresh",
            operation: "refresh",
            key,
            key_version: version,
            index: None,
            outcome: "refused",
            code: "FAILED_PRECONDITION",
            items: None,
            failed_items: None,
            context_keys: Vec::new(),
            latency_us: 0,
            reason: Some(reason),
            compromised_records: None,
            compromised: None,
        })
        .await;
    }

    /// Queues one event's line. Waits only while the queue is full.
    pub async fn record(&self, event: &Event<'_>) {
        let shared = &self.handle.shared;
        // The usual case: encode into this thread's buffer and append it
        // under the lock, with no allocation.
        let queued = LINE.with_borrow_mut(|line| {
            line.clear();
            if let Err(e) = serde_json::to_writer(&mut *line, event) {
                tracing::error!(error = %e, "cannot encode an audit event");
                return Ok(());
            }
            line.push(b'\n');
            if shared.turnstile.available_permits() > 0 && shared.try_push(line) {
                Ok(())
            } else {
                Err(line.clone())
            }
        });
        let Err(line) = queued else {
            return;
        };
        // The queue is full: wait for the writer to make room.
        // The semaphore is never closed; were it, waiting unordered is still safe.
        let _turn = shared.turnstile.acquire().await.ok();
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if shared.try_push(&line) {
                return;
            }
            if shared.queue.lock().map_or(true, |q| q.closed) {
                tracing::error!("the audit writer has stopped");
                return;
            }
            room.await;
        }
    }
}

impl Shared {
    /// Appends `line` if there is room (an empty queue always has room).
    fn try_push(&self, line: &[u8]) -> bool {
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        if q.closed {
            return false;
        }
        if !q.buf.is_empty() && q.buf.len() + line.len() > MAX_QUEUED {
            drop(q);
            self.wake.notify_one();
            return false;
        }
        let was_empty = q.buf.is_empty();
        let below = q.buf.len() < HIGH_WATER;
        q.buf.extend_from_slice(line);
        // Wake the writer once when the block crosses the mark, not on
        // every push past it.
        let high = below && q.buf.len() >= HIGH_WATER;
        drop(q);
        if was_empty || high {
            self.wake.notify_one();
        }
        true
    }
}

/// Marks the queue closed and wakes every waiting request when the writer
/// stops, however it stops (even by a panic): requests then stop waiting
/// for room that will never come.
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queue.lock() {
            q.closed = true;
        }
        self.0.room.notify_waiters();
    }
}

/// Waits for lines, lets them gather for up to [`FLUSH_EVERY`], writes them
/// in one call, and repeats; on close it writes what is left and returns.
/// A write that fails marks the log failing: in refuse mode the block is
/// kept and retried every [`RETRY_EVERY`] (new lines wait in the bounded
/// queue), in continue mode it is dropped and logged.
fn write_loop(shared: &Shared, mut sink: Box<dyn Write + Send>) {
    use std::sync::atomic::Ordering;
    let _stopped = Stopped(shared);
    let mut out = Vec::new();
    // How much of `out` a failed write got into the sink: a retry goes on
    // from there, so no line is written twice or torn.
    let mut written = 0;
    // A dropped block (continue mode) left a partial line: the next write
    // ends it first, so the lines after it stay whole.
    let mut torn = false;
    loop {
        let closed = if out.is_empty() {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.buf.is_empty() && !q.closed {
                q = match shared.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if !q.closed && q.buf.len() < HIGH_WATER {
                q = match shared.wake.wait_timeout_while(q, shared.flush_every, |q| {
                    !q.closed && q.buf.len() < HIGH_WATER
                }) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut q.buf, &mut out);
            q.closed
        } else {
            // A block that failed is waiting to be written again.
            std::thread::sleep(RETRY_EVERY);
            shared.queue.lock().map_or(true, |q| q.closed)
        };
        if torn && written == 0 && !out.is_empty() {
            out.insert(0, b'\n');
            torn = false;
        }
        match write_from(sink.as_mut(), &out, &mut written).and_then(|()| sink.flush()) {
            Ok(()) => {
                written = 0;
                if shared.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!("the audit log is writable again");
                    crate::ops::health::set_audit_failing(false);
                }
                out.clear();
                // Keep a block's worth of capacity, not the largest burst's.
                out.shrink_to(HIGH_WATER);
                shared.room.notify_waiters();
            }
            Err(e) => {
                if !shared.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, on_failure = ?shared.on_failure, "cannot write the audit log");
                    crate::ops::health::set_audit_failing(shared.on_failure == OnFailure::Refuse);
                }
                if shared.on_failure == OnFailure::Continue || closed {
                    tracing::error!(
                        bytes = out.len(),
                        "audit lines dropped: the audit log cannot be written"
                    );
                    torn = written > 0;
                    written = 0;
                    out.clear();
                    shared.room.notify_waiters();
                }
            }
        }
        if closed && out.is_empty() {
            return;
        }
    }
}

/// Writes `out` from `*written` on, advancing `*written` past every byte
/// the sink took, even when a later write fails.
fn write_from(sink: &mut dyn Write, out: &[u8], written: &mut usize) -> std::io::Result<()> {
    while let Some(rest) = out.get(*written..).filter(|r| !r.is_empty()) {
        match sink.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
