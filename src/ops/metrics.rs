//! Prometheus metrics: one process-wide registry that every layer above
//! records into, rendered as OpenMetrics text for `/metrics`
//! ([`super::health`] serves it); per-key gauges and counters are computed
//! from the keyring at scrape time.
//! Label values are bounded: key names come from the configuration only.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::keys::Keyring;

type Labels = Vec<(&'static str, String)>;

mod key_counters;
mod refusal;
use key_counters::KeyCounters;
pub use refusal::Refusal;

/// A label value that costs no allocation on the request path: a static
/// string, or a key name shared with the keyring. Equal text is one series
/// whichever form it came in.
#[derive(Clone, Debug)]
pub enum Label {
    /// A fixed value (an RPC or code name, `unknown`, `*`).
    Static(&'static str),
    /// A configured key name.
    Shared(Arc<str>),
}

impl Label {
    fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Label {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        prometheus_client::encoding::EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

type RequestLabels = [(&'static str, Label); 3];

#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

fn latency_buckets() -> Histogram {
    // 50 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every series Envelope exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<[(&'static str, &'static str); 1], Histogram, Buckets>,
    batch_items: Histogram,
    backend_calls: Family<Labels, Counter>,
    backend_seconds: Family<Labels, Histogram, Buckets>,
    rotations: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    // Computed at scrape time.
    key_age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    key_staleness: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    key_check: Family<Labels, Gauge>,
    accepts_unwrapped: Family<Labels, Gauge>,
    cache_entries: Family<Labels, Gauge>,
    keyring: Arc<arc_swap::ArcSwapOption<Keyring>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("envelope");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(Buckets(latency_buckets)),
            batch_items: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            backend_calls: Family::default(),
            backend_seconds: Family::new_with_constructor(Buckets(latency_buckets)),
            rotations: Family::default(),
            refusals: Family::default(),
            key_age: Family::default(),
            key_staleness: Family::default(),
            key_check: Family::default(),
            accepts_unwrapped: Family::default(),
            cache_entries: Family::default(),
            keyring: Arc::new(arc_swap::ArcSwapOption::empty()),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "gRPC requests by RPC, key name and status code",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "gRPC request latency by RPC",
            m.request_seconds.clone(),
        );
        registry.register(
            "batch_items",
            "Items per batch request",
            m.batch_items.clone(),
        );
        registry.register(
            "backend_calls",
            "Secret store and KMS calls by service, operation and outcome",
            m.backend_calls.clone(),
        );
        registry.register(
            "backend_call_duration_seconds",
            "Secret store and KMS call latency by service and operation",
            m.backend_seconds.clone(),
        );
        registry.register(
            "rotations",
            "Master-key rotations started by this process, by key and outcome",
            m.rotations.clone(),
        );
        registry.register(
            "refused_calls",
            "Calls refused by authentication or the policy, and calls, streams and connections refused by the bounds before authorization, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "master_key_age_seconds",
            "Age of each loaded master-key version",
            m.key_age.clone(),
        );
        registry.register(
            "key_accepts_unwrapped_master_keys",
            "1 for each key that accepts seed-shaped (unwrapped) master keys: any version (scope any) or listed versions (scope listed)",
            m.accepts_unwrapped.clone(),
        );
        registry.register(
            "master_key_check",
            "1 for each loaded master-key version, labelled with its key check value: replicas that derived different keys from one version show different values",
            m.key_check.clone(),
        );
        registry.register(
            "key_staleness_seconds",
            "Seconds since each key was last read from the store",
            m.key_staleness.clone(),
        );
        registry.register(
            "data_key_cache_entries",
            "Unwrapped data keys held for decryption, per key",
            m.cache_entries.clone(),
        );
        registry.register_collector(Box::new(KeyCounters(m.keyring.clone())));
        Metrics { registry, ..m }
    }

    /// One finished RPC.
    pub fn request(&self, rpc: &'static str, key: Label, code: &'static str, took: Duration) {
        self.requests
            .get_or_create(&[
                ("rpc", Label::Static(rpc)),
                ("key", key),
                ("code", Label::Static(code)),
            ])
            .inc();
        self.request_seconds
            .get_or_create(&[("rpc", rpc)])
            .observe(took.as_secs_f64());
    }

    /// The size of one batch.
    pub fn batch(&self, items: usize) {
        self.batch_items.observe(items as f64);
    }

    /// One secret-store or KMS call.
    pub fn backend(&self, service: &'static str, op: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.backend_calls
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("op", op.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.backend_seconds
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("op", op.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    /// One rotation's outcome.
    pub fn rotation(&self, key: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.rotations
            .get_or_create(&vec![
                ("key", key.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Creates a key's counter series at zero, so alerts on `increase()` see
    /// the first event too.
    pub fn init_key(&self, key: &str) {
        for outcome in ["ok", "failed"] {
            let _ = self.rotations.get_or_create(&vec![
                ("key", key.to_owned()),
                ("outcome", outcome.to_owned()),
            ]);
        }
        for reason in Refusal::ALL {
            let _ = self
                .refusals
                .get_or_create(&vec![("reason", reason.label().to_owned())]);
        }
    }

    /// A key accepts seed-shaped master keys: any version, or listed ones.
    pub fn accepts_unwrapped(&self, key: &str, any: bool) {
        let scope = if any { "any" } else { "listed" };
        self.accepts_unwrapped
            .get_or_create(&vec![("key", key.to_owned()), ("scope", scope.to_owned())])
            .set(1);
    }

    /// One refused call, stream or connection, by reason (docs/OPERATIONS.md).
    pub fn refused(&self, reason: Refusal) {
        self.refusals
            .get_or_create(&vec![("reason", reason.label().to_owned())])
            .inc();
    }

    /// Sets the per-key gauges from the keyring and encodes every series.
    pub fn render(&self, keyring: &Arc<Keyring>) -> String {
        self.keyring.store(Some(keyring.clone()));
        let now = OffsetDateTime::now_utc();
        self.key_age.clear();
        self.key_check.clear();
        for key in keyring.all() {
            let name = key.name().to_owned();
            let set = key.snapshot();
            for l in set.versions.values() {
                self.key_check
                    .get_or_create(&vec![
                        ("key", name.clone()),
                        ("version", l.master.version.as_str().to_owned()),
                        ("check_value", hex::encode(l.master.check_value)),
                    ])
                    .set(1);
                if let Some(created) = l.master.created {
                    // The loaded stage only (pin labels are per version and would split series).
                    let stage = crate::keys::LOADED_STAGES
                        .iter()
                        .find(|s| l.stages.iter().any(|x| x == *s))
                        .map_or_else(|| "none".to_owned(), |s| (*s).to_owned());
                    self.key_age
                        .get_or_create(&vec![
                            ("key", name.clone()),
                            ("version", l.master.version.as_str().to_owned()),
                            ("stage", stage),
                        ])
                        .set((now - created).as_seconds_f64());
                }
            }
            self.key_staleness
                .get_or_create(&vec![("key", name.clone())])
                .set(key.staleness().as_secs_f64());
            self.cache_entries
                .get_or_create(&vec![("key", name)])
                .set(i64::try_from(key.figures().decrypt_entries).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

static LAST_KMS_OK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNKNOWN);
static LAST_STORE_OK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const OK: u8 = 1;
const FAILED: u8 = 2;

fn last_outcome(service: &str) -> &'static std::sync::atomic::AtomicU8 {
    if service == "kms" {
        &LAST_KMS_OK
    } else {
        &LAST_STORE_OK
    }
}

pub(super) fn outcome_name(service: &str) -> &'static str {
    match last_outcome(service).load(std::sync::atomic::Ordering::Relaxed) {
        OK => "ok",
        FAILED => "failing",
        _ => "no calls yet",
    }
}

/// Times a backend call and records it (and its outcome for `/readyz`).
pub async fn timed<T, E>(
    service: &'static str,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    timed_with(service, op, call, |_| false).await
}

/// As [`timed`]; `answered` says which errors are the backend working
/// (e.g. "no such version"), so `/readyz` does not report it failing.
pub async fn timed_with<T, E>(
    service: &'static str,
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
    answered: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let start = Instant::now();
    let r = call.await;
    get().backend(service, op, r.is_ok(), start.elapsed());
    let r_ok = r.as_ref().map_or_else(answered, |_| true);
    last_outcome(service).store(
        if r_ok { OK } else { FAILED },
        std::sync::atomic::Ordering::Relaxed,
    );
    r
}

#[cfg(test)]
mod tests;
