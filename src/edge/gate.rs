//! What every RPC passes through: the caller's identity, authorization,
//! the key lookup, the audit line and the request id.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use crate::edge::audit::{AuditLog, Event};
use crate::edge::authz::{Authorizer, Operation};
use crate::edge::status::to_status;
use crate::edge::tls::PeerInfo;
use crate::keys::error::Error;
use crate::keys::{DEFAULT_KEY, Keyring};
use crate::ops::metrics::Label;
use crate::pb;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Requests being served right now (what a graceful shutdown waits for).
pub fn in_flight() -> usize {
    IN_FLIGHT.load(std::sync::atomic::Ordering::Acquire)
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
}

/// What a finished call reports for its audit line.
#[derive(Debug, Default)]
pub struct Done {
    /// The master-key version used.
    pub version: String,
    /// (items, failed items) for a batch.
    pub batch: Option<(usize, usize)>,
}

/// What the gate needs to know about a request before it runs.
pub struct Subject<'a> {
    /// The key name asked for ("" means default, "*" means every key).
    pub key: &'a str,
    /// The context of a unary call.
    pub context: Option<&'a BTreeMap<String, String>>,
}

/// Requests that name a key (and maybe carry a context).
pub trait HasSubject {
    /// The key and context of this request.
    fn subject(&self) -> Subject<'_>;
}

macro_rules! subject {
    ($($t:ty => $ctx:ident),* $(,)?) => {$(
        impl HasSubject for $t {
            fn subject(&self) -> Subject<'_> {
                Subject { key: &self.key, context: subject!(@ctx self $ctx) }
            }
        }
    )*};
    (@ctx $self:ident context) => { Some(&$self.context) };
    (@ctx $self:ident none) => { None };
}

subject! {
    pb::EncryptRequest => context,
    pb::DecryptRequest => context,
    pb::RewrapRequest => context,
    pb::GenerateDataKeyRequest => context,
    pb::UnwrapDataKeyRequest => context,
    pb::EncryptBatchRequest => none,
    pb::DecryptBatchRequest => none,
    pb::RewrapBatchRequest => none,
    pb::KeyStatusRequest => none,
    pb::RefreshKeysRequest => none,
}

impl HasSubject for pb::RotateMasterKeyRequest {
    fn subject(&self) -> Subject<'_> {
        // Rotation names one key; empty means the default key, not every key.
        let key = if self.key.is_empty() {
            DEFAULT_KEY
        } else {
            &self.key
        };
        Subject { key, context: None }
    }
}

/// `s` cut to at most `max` characters (with a trailing `…` when cut).
fn bounded(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}…", s.get(..i).unwrap_or_default())),
        None => Cow::Borrowed(s),
    }
}

tokio::task_local! {
    static REQUEST_ID: uuid::Uuid;
}

/// The id of the request this task is serving, for log lines written
/// without the debug-level request span.
pub fn request_id() -> Option<uuid::Uuid> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// The gRPC name of a status code, for audit lines.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Gate {
    /// Runs one RPC: authorizes `op` on the request's key for the caller,
    /// runs `f` with the key name, writes the audit line and stamps the
    /// response (or status) with the request id.
    pub async fn run<Req, Resp, F, Fut>(
        &self,
        req: Request<Req>,
        rpc: &'static str,
        op: Operation,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: HasSubject,
        F: FnOnce(Arc<Keyring>, String, Req) -> Fut,
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
    pub async fn handle<Req, Resp, F, Fut>(
        &self,
        peer: &PeerInfo,
        req: Req,
        rpc: &'static str,
        op: Operation,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: HasSubject,
        F: FnOnce(Arc<Keyring>, String, Req) -> Fut,
        Fut: Future<Output = Result<(Resp, Done), Error>>,
    {
        let _in_flight = InFlight::enter();
        let start = Instant::now();
        let request_id = uuid::Uuid::new_v4();
        let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id_str: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let (key, context_keys) = {
            let s = req.subject();
            let key = if s.key.is_empty() && op != Operation::Admin {
                DEFAULT_KEY.to_owned()
            } else if s.key.is_empty() {
                "*".to_owned()
            } else {
                s.key.to_owned()
            };
            // Audit lines stay small whatever the caller sends: at most 64
            // context keys of at most 64 characters each.
            let ctx: Vec<String> = s
                .context
                .map(|c| {
                    c.keys()
                        .take(64)
                        .map(|k| bounded(k, 64).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            (key, ctx)
        };
        let identity = peer.identity.as_deref();
        // At debug level every log line of the request carries its id through
        // this span. Formatting a span costs about as much as the cipher work
        // of a call, so at info level there is none: the lines a request logs
        // there (failures) take the id from the task-local below instead.
        let span = tracing::debug_span!("request", request_id = %id_str, rpc);
        let result = match self.authz.check(identity, op, &key) {
            Ok(()) => {
                REQUEST_ID
                    .scope(
                        request_id,
                        tracing::Instrument::instrument(
                            f(self.keyring.clone(), key.clone(), req),
                            span.clone(),
                        ),
                    )
                    .await
            }
            Err(denied) => Err(Error::Denied(denied)),
        };
        let (outcome, code, version, batch) = match &result {
            Ok((_, done)) => {
                let partial = done.batch.is_some_and(|(_, failed)| failed > 0);
                (
                    if partial { "partial" } else { "ok" },
                    Code::Ok,
                    done.version.as_str(),
                    done.batch,
                )
            }
            Err(e) => {
                let outcome = if matches!(e, Error::Denied(_)) {
                    "denied"
                } else {
                    "error"
                };
                (outcome, crate::edge::status::code(e), "", None)
            }
        };
        let metric_key = match self.keyring.get(&key) {
            Ok(named) => Label::Shared(named.label()),
            Err(_) if key == "*" => Label::Static("*"),
            Err(_) => Label::Static("unknown"),
        };
        crate::ops::metrics::get().request(rpc, metric_key, code_name(code), start.elapsed());
        if let Some((n, _)) = batch {
            crate::ops::metrics::get().batch(n);
        }
        if let Err(Error::Denied(d)) = &result {
            crate::ops::metrics::get().refused(match d {
                crate::edge::authz::Denied::Unauthenticated => "unauthenticated",
                crate::edge::authz::Denied::PermissionDenied { .. } => "permission_denied",
            });
        }
        if let Some(audit) = &self.audit {
            audit
                .record(&Event {
                    time: crate::edge::audit::Timestamp::now(),
                    request_id: id_str,
                    caller: identity,
                    rpc,
                    operation: op.as_str(),
                    key: &bounded(&key, 128),
                    key_version: version,
                    outcome,
                    code: code_name(code),
                    items: batch.map(|(n, _)| n),
                    failed_items: batch.map(|(_, f)| f),
                    context_keys: context_keys.iter().map(String::as_str).collect(),
                    latency_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                })
                .await;
        }
        let id = tonic::metadata::MetadataValue::try_from(id_str).ok();
        match result {
            Ok((resp, _)) => {
                let mut r = Response::new(resp);
                if let Some(id) = id {
                    r.metadata_mut().insert("x-request-id", id);
                }
                Ok(r)
            }
            Err(e) => {
                let mut s = span.in_scope(|| REQUEST_ID.sync_scope(request_id, || to_status(e)));
                if let Some(id) = id {
                    s.metadata_mut().insert("x-request-id", id);
                }
                Err(s)
            }
        }
    }
}
