//! The operator endpoints on their own HTTP port: `/metrics`
//! (OpenMetrics text), `/healthz` (the process answers) and `/readyz` (JSON
//! with each check, 503 when not ready), and the one readiness rule that
//! `/readyz` and the gRPC health service both follow.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use super::metrics::{self, outcome_name};

/// The audit log is failing and refuses calls (set by its writer).
static AUDIT_REFUSING: AtomicBool = AtomicBool::new(false);

/// Marks whether the audit log refuses calls because it cannot write.
pub fn set_audit_failing(refusing: bool) {
    AUDIT_REFUSING.store(refusing, Ordering::Release);
}
use crate::keys::Keyring;

/// Whether the server is ready, which keys are stale, and the `/readyz`
/// body with each check.
#[derive(Debug)]
pub struct Readiness {
    /// Every key was refreshed within the bound.
    pub ready: bool,
    /// The keys past the bound.
    pub stale: Vec<String>,
    /// The audit log cannot be written, and calls are refused.
    pub audit_refusing: bool,
    /// The `/readyz` JSON.
    pub body: serde_json::Value,
}

/// The one readiness rule: ready while every key has been read from the
/// store within `max_staleness`. A brief store or KMS error does not take
/// replicas out; serving from cached keys past the bound does.
pub fn readiness(keyring: &Keyring, max_staleness: Duration) -> Readiness {
    let mut ready = true;
    let mut stale_keys = Vec::new();
    let mut keys = serde_json::Map::new();
    for key in keyring.all() {
        let stale = key.staleness();
        let ok = stale <= max_staleness;
        ready &= ok;
        if !ok {
            stale_keys.push(key.name().to_owned());
        }
        keys.insert(
            key.name().to_owned(),
            serde_json::json!({
                "loaded": true,
                "current_version": key.snapshot().current.version.as_str(),
                "staleness_seconds": stale.as_secs(),
                "refresh_failures": key.figures().refresh_failures,
                // A refused version (planted, rolled back, retired) is named here.
                "last_refresh_error": key.last_refresh_error(),
                "status": if ok { "ok" } else { "stale" },
            }),
        );
    }
    let audit_refusing = AUDIT_REFUSING.load(Ordering::Acquire);
    ready &= !audit_refusing;
    let verdict = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "keys_loaded": "ok",
            // The last call's outcome; readiness itself turns on staleness,
            // so a brief store or KMS error does not take replicas out.
            "secret_store": outcome_name("secretsmanager"),
            "kms": outcome_name("kms"),
            "max_staleness_seconds": max_staleness.as_secs(),
            // on_failure = "refuse" and the audit log cannot be written.
            "audit": if audit_refusing { "failing: calls are refused until it can be written" } else { "ok" },
            "keys": keys,
        },
    });
    Readiness {
        ready,
        stale: stale_keys,
        audit_refusing,
        body: verdict,
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    keyring: Arc<Keyring>,
    max_staleness: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get as route;
    let k1 = keyring.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            route(move || {
                let k = k1.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics::get().render(&k),
                    )
                }
            }),
        )
        .route("/healthz", route(|| async { "ok\n" }))
        .route(
            "/readyz",
            route(move || {
                let k = keyring.clone();
                async move {
                    let Readiness { ready, body, .. } = readiness(&k, max_staleness);
                    let code = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        code,
                        [(header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
