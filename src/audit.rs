//! The audit trail: one JSON line per request (batches: one line with item
//! counts). Never plaintext, ciphertext, key bytes or context values; the
//! context's keys are logged (sorted), its values are left out. Lines go
//! through a bounded queue to one writer task, so a request costs no
//! syscall of its own; when the queue is full, requests wait rather than
//! lose audit lines. The schema is in docs/AUDIT.md.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
    pub time: String,
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
}

/// The audit log handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: tokio::sync::mpsc::Sender<String>,
}

const QUEUE: usize = 8192;

impl AuditLog {
    /// Starts the writer task for `output`.
    pub fn start(output: Output) -> std::io::Result<Self> {
        let mut sink: Box<dyn Write + Send> = match &output {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(p) => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                Box::new(o.open(p)?)
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(QUEUE);
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(line) = rx.blocking_recv() {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                // Drain whatever else is queued, then write once.
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    buf.push(b'\n');
                    if buf.len() > 1 << 20 {
                        break;
                    }
                }
                if let Err(e) = sink.write_all(&buf).and_then(|()| sink.flush()) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
                buf.clear();
            }
        });
        Ok(Self { tx })
    }

    /// Records one event.
    pub async fn record(&self, event: &Event<'_>) {
        match serde_json::to_string(event) {
            Ok(line) => {
                if self.tx.send(line).await.is_err() {
                    tracing::error!("the audit writer has stopped");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
        }
    }
}

/// The current time in RFC 3339.
pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}
