//! What every RPC passes through: the caller's identity, authorization,
//! the one lookup of the key the request names (after authorization, so a
//! refused caller cannot learn which key names exist), metrics, the audit
//! line and the request id.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

mod done;

pub use done::{DECRYPTED, Done, REENCRYPTED};

use super::audit::{AuditLog, Event, Timestamp};
use super::authz::{Authorizer, Denied, Operation, Scope};
use super::index_quota::IndexMeter;
use super::request_id;
use super::status::{CallError, code_name, to_status};
pub use super::subject::{HasSubject, Subject};
use super::subject::{bounded, subject_of};
use super::tls::PeerInfo;
use crate::keys::{Error, Keyring, NamedKey};
use crate::ops::metrics::{self, Label};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static IDLE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Requests being served right now (what a graceful shutdown waits for).
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// Resolves once no request is in flight.
pub async fn idle() {
    loop {
        let notified = IDLE.notified();
        tokio::pin!(notified);
        // Registered before the check, so a request ending in between wakes us.
        notified.as_mut().enable();
        if in_flight() == 0 {
            return;
        }
        notified.await;
    }
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if IN_FLIGHT.fetch_sub(1, Ordering::AcqRel) == 1 {
            IDLE.notify_waiters();
        }
    }
}

/// The shared state of the gate.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Every key name.
    pub keyring: Arc<Keyring>,
    /// The policy.
    pub authz: Arc<Authorizer>,
    /// The audit trail (`None` when disabled).
    pub audit: Option<AuditLog>,
    /// What each caller has used of its blind-index quota.
    pub index_meter: Arc<IndexMeter>,
}

/// What a handler is given once the caller is authorized: the key (or
/// keys) the request names, looked up once.
pub trait Resolve: Sized {
    /// Looks up `name` ("*" means every key, where that is allowed).
    fn resolve(keyring: &Keyring, name: &str) -> Result<Self, Error>;
    /// The metric label of what was resolved.
    fn label(&self) -> Label;
}

impl Resolve for Arc<NamedKey> {
    fn resolve(keyring: &Keyring, name: &str) -> Result<Self, Error> {
        keyring.get(name).cloned()
    }

    fn label(&self) -> Label {
        Label::Shared(NamedKey::label(self))
    }
}

/// The keys an Admin call acts on: one, or every key for "*" (then
/// labelled `*` in the metrics, however many keys there are).
#[derive(Debug)]
pub struct Selected(pub Vec<Arc<NamedKey>>, pub bool);

impl Resolve for Selected {
    fn resolve(keyring: &Keyring, name: &str) -> Result<Self, Error> {
        if name == "*" {
            Ok(Self(keyring.all().cloned().collect(), true))
        } else {
            Ok(Self(vec![keyring.get(name)?.clone()], false))
        }
    }

    fn label(&self) -> Label {
        match (self.0.as_slice(), self.1) {
            ([one], false) => Resolve::label(one),
            _ => Label::Static("*"),
        }
    }
}

/// One caller's account: charges its tokens against the quota its grants
/// give it on a key, counting refusals.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The policy, for the caller's quota.
    pub authz: Arc<Authorizer>,
    /// Every caller's use.
    pub meter: Arc<IndexMeter>,
    /// The caller.
    pub identity: Option<String>,
}

impl Charge {
    /// Takes `n` tokens on `key`, or refuses with
    /// [`crate::keys::Error::IndexQuota`] (nothing taken). Zero is free.
    pub fn take(&self, key: &str, n: usize) -> Result<(), crate::keys::Error> {
        if n == 0 {
            return Ok(());
        }
        let identity = self.identity.as_deref();
        let Some(quota) = self.authz.index_quota(identity, key) else {
            crate::ops::metrics::get().refused(crate::ops::metrics::Refusal::IndexNotGranted);
            return Err(crate::keys::Error::IndexNotGranted);
        };
        if self.meter.take(identity, quota, n as u64) {
            Ok(())
        } else {
            crate::ops::metrics::get().refused(crate::ops::metrics::Refusal::IndexQuota);
            Err(crate::keys::Error::IndexQuota)
        }
    }
}

/// The `x-request-id` header value. Marked sensitive so HPACK sends it as a
/// literal that is never indexed: each value is used once, and indexing it
/// would only push reusable headers out of both ends' tables.
fn id_header(id: &str) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    let mut v = tonic::metadata::MetadataValue::try_from(id).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Gate {
    /// Runs one RPC: authorizes `op` on the request's key for the caller,
    /// looks the key up, runs `f` with it, writes the audit line and stamps
    /// the response (or status) with the request id.
    pub async fn run<K, Req, Resp, F, Fut>(
        &self,
        req: Request<Req>,
        rpc: &'static str,
        op: Operation,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        K: Resolve,
        Req: HasSubject,
        F: FnOnce(K, Req) -> Fut,
        Fut: Future<Output = Result<(Resp, Done), Error>>,
    {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default();
        self.handle(&peer, req.into_inner(), rpc, op, f).await
    }

    /// [`Gate::run`] for one message whose caller is already known: each
    /// message of a stream passes through here.
    pub async fn handle<K, Req, Resp, F, Fut>(
        &self,
        peer: &PeerInfo,
        req: Req,
        rpc: &'static str,
        op: Operation,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        K: Resolve,
        Req: HasSubject,
        F: FnOnce(K, Req) -> Fut,
        Fut: Future<Output = Result<(Resp, Done), Error>>,
    {
        let _in_flight = InFlight::enter();
        let start = Instant::now();
        let request_id = uuid::Uuid::new_v4();
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id_str: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let (key, context_keys, index) = subject_of(&req, op);
        let identity = peer.identity.as_deref();
        // At debug level every log line of the request carries its id through
        // this span. Formatting a span costs about as much as the cipher work
        // of a call, so at info level there is none: the lines a request logs
        // there (failures) take the id from the task-local instead.
        let span = tracing::debug_span!("request", request_id = %id_str, rpc);
        let authorized =
            self.authz
                .check_scoped(identity, op, &key)
                .and_then(|scope| match scope {
                    Scope::Any => Ok(()),
                    scope if req.all_contexts(&mut |c| scope.admits(c)) => Ok(()),
                    _ => Err(self.authz.context_denied(identity, op, &key)),
                });
        // While the audit log cannot be written (refuse mode), no data-plane
        // call is served: nothing would record it.
        let audit_down = op != Operation::Admin && self.audit.as_ref().is_some_and(|a| a.refuses());
        let (result, label) = match authorized {
            _ if audit_down => (Err(CallError::AuditUnavailable), self.label_of(&key)),
            Err(denied) => (Err(CallError::Denied(denied)), self.label_of(&key)),
            Ok(()) => match K::resolve(&self.keyring, &key) {
                Err(e) => (Err(CallError::Key(e)), unresolved_label(&key)),
                Ok(k) => {
                    let label = k.label();
                    let call = tracing::Instrument::instrument(f(k, req), span.clone());
                    let r = request_id::scope(request_id, call).await;
                    (r.map_err(CallError::Key), label)
                }
            },
        };
        let (outcome, code, version, batch, done) = match &result {
            Ok((_, done)) => {
                let partial = done.batch.is_some_and(|(_, failed)| failed > 0);
                let outcome = if partial { "partial" } else { "ok" };
                (
                    outcome,
                    Code::Ok,
                    done.version.as_str(),
                    done.batch,
                    Some(done),
                )
            }
            Err(e) => {
                // By code, so that a refusal raised by the key layer (index
                // tokens with no `index` grant) reads as the denial it is.
                let code = super::status::code(e);
                let outcome = match code {
                    Code::Unauthenticated | Code::PermissionDenied => "denied",
                    _ => "error",
                };
                (outcome, code, "", None, None)
            }
        };
        let denied = match &result {
            Err(CallError::Denied(d)) => Some(d),
            _ => None,
        };
        self.record(&Record {
            start,
            request_id: id_str,
            identity,
            rpc,
            op,
            key: &key,
            label,
            context_keys: &context_keys,
            index: index.as_deref(),
            outcome,
            code,
            version,
            batch,
            compromised: done.and_then(|d| d.compromised),
            reason: done.and_then(|d| d.reason.as_deref()),
            denied,
        })
        .await;
        let id = id_header(id_str);
        match result {
            Ok((resp, _)) => {
                let mut r = Response::new(resp);
                if let Some(id) = id {
                    r.metadata_mut().insert("x-request-id", id);
                }
                Ok(r)
            }
            Err(e) => {
                let mut s = span.in_scope(|| request_id::sync_scope(request_id, || to_status(e)));
                if let Some(id) = id {
                    s.metadata_mut().insert("x-request-id", id);
                }
                Err(s)
            }
        }
    }

    /// Refuses a call from its headers alone (`edge::early`): the metric,
    /// the audit line (key `*`: no key was read) and the status, with a
    /// request id like every other answer.
    pub async fn refuse(
        &self,
        identity: Option<&str>,
        rpc: &'static str,
        op: Operation,
        denied: Denied,
    ) -> Status {
        let start = Instant::now();
        let request_id = uuid::Uuid::new_v4();
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id_str: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let e = CallError::Denied(denied);
        let code = super::status::code(&e);
        let denied = match &e {
            CallError::Denied(d) => Some(d),
            CallError::Key(_) | CallError::AuditUnavailable => None,
        };
        self.record(&Record {
            start,
            request_id: id_str,
            identity,
            rpc,
            op,
            key: "*",
            label: Label::Static("*"),
            context_keys: &[],
            index: None,
            outcome: "denied",
            code,
            version: "",
            batch: None,
            compromised: None,
            reason: None,
            denied,
        })
        .await;
        let mut s = request_id::sync_scope(request_id, || to_status(e));
        if let Some(id) = id_header(id_str) {
            s.metadata_mut().insert("x-request-id", id);
        }
        s
    }

    /// The metric and the audit line of one finished call.
    async fn record(&self, r: &Record<'_>) {
        let metrics = metrics::get();
        metrics.request(r.rpc, r.label.clone(), code_name(r.code), r.start.elapsed());
        if let Some((n, _)) = r.batch {
            metrics.batch(n);
        }
        if let Some(d) = r.denied {
            metrics.refused(match d {
                Denied::Unauthenticated => metrics::Refusal::Unauthenticated,
                Denied::PermissionDenied { .. } | Denied::ContextNotGranted { .. } => {
                    metrics::Refusal::PermissionDenied
                }
            });
        }
        if let Some(audit) = &self.audit {
            let event = Event {
                time: Timestamp::now(),
                request_id: r.request_id,
                caller: r.identity,
                rpc: r.rpc,
                operation: r.op.as_str(),
                key: &bounded(r.key, 128),
                key_version: r.version,
                index: r.index,
                outcome: r.outcome,
                code: code_name(r.code),
                items: r.batch.map(|(n, _)| n),
                failed_items: r.batch.map(|(_, f)| f),
                context_keys: r.context_keys.iter().map(String::as_str).collect(),
                latency_us: u64::try_from(r.start.elapsed().as_micros()).unwrap_or(u64::MAX),
                reason: r.reason,
                compromised_records: r.compromised.map(|(n, _)| n),
                compromised: r.compromised.map(|(_, what)| what),
            };
            // A refusal made because the log cannot be written must not wait
            // for it: its line is queued if there is room, else counted.
            if audit.refuses() {
                if !audit.try_record(&event) {
                    metrics.refused(crate::ops::metrics::Refusal::AuditLineNotQueued);
                }
            } else {
                audit.record(&event).await;
            }
        }
    }

    /// The metric label of a refused call's key: its name if configured.
    /// Only metrics see it; the caller is told nothing about the key.
    fn label_of(&self, key: &str) -> Label {
        match self.keyring.get(key) {
            Ok(named) => Resolve::label(named),
            Err(_) => unresolved_label(key),
        }
    }
}

/// What [`Gate::record`] writes for one call.
struct Record<'a> {
    start: Instant,
    request_id: &'a str,
    identity: Option<&'a str>,
    rpc: &'static str,
    op: Operation,
    key: &'a str,
    label: Label,
    context_keys: &'a [String],
    index: Option<&'a str>,
    outcome: &'static str,
    code: Code,
    version: &'a str,
    batch: Option<(usize, usize)>,
    compromised: Option<(u64, &'static str)>,
    reason: Option<&'a str>,
    denied: Option<&'a Denied>,
}

fn unresolved_label(key: &str) -> Label {
    if key == "*" {
        Label::Static("*")
    } else {
        Label::Static("unknown")
    }
}
