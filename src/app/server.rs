//! The server's life cycle: [`run`] loads the keys, opens the security
//! layer and the operator endpoints, serves Envelope, Admin, health and
//! reflection on a listener, runs the background tasks (refresh,
//! readiness, TLS and policy reload), and on shutdown closes the listener and
//! waits for the requests in flight, at most the drain bound.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::config::Settings;
use super::startup::{self, Security, ServeError};
use crate::edge::admin_service::AdminService;
use crate::edge::audit::AuditLog;
use crate::edge::budget::{BudgetLayer, RequestBudget};
use crate::edge::early::EarlyAuthLayer;
use crate::edge::envelope_service::EnvelopeService;
use crate::edge::gate::{self, Gate};
use crate::edge::listener;
use crate::edge::stream_pool::StreamPool;
use crate::keys::Keyring;
use crate::ops::health;
use crate::pb::admin_server::AdminServer;
use crate::pb::envelope_server::EnvelopeServer;

/// After the last call in flight has finished, how long the drain waits for
/// the server to write the answers out and close its connections.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Serves on `listener` until `shutdown` resolves, then drains: new
/// connections are refused and the requests already running may finish,
/// up to `drain_timeout`; an idle keep-alive connection holds it up for
/// `FLUSH_GRACE` at most.
/// Prints `metrics on ADDR` and then `listening on ADDR` on stdout once
/// serving, for scripts and tests that start it on port 0.
pub async fn run(
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    // Start-up can wait minutes on a slow AWS API; a SIGTERM meanwhile ends
    // it at once (the handler installed in main would otherwise hold it).
    let keyring = tokio::select! {
        keyring = startup::start(settings) => Arc::new(keyring?),
        () = &mut shutdown => {
            tracing::info!("stopped before serving");
            return Ok(());
        }
    };
    let security = startup::prepare_security(settings)?;
    let operator = match settings.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::MetricsListen { addr, source })?;
            println!("metrics on {}", l.local_addr().unwrap_or(addr));
            let endpoints = health::serve(
                l,
                keyring.clone(),
                settings.max_staleness,
                std::future::pending(),
            );
            Some(tokio::spawn(endpoints))
        }
        None => None,
    };
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, keys = settings.keys.len(), startup_ms = started.elapsed().as_millis() as u64, "serving");
    if let Some(addr) = addr {
        println!("listening on {addr}");
    }
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.notify_one();
        }
    };
    let drain = settings.drain_timeout;
    let serving = serve(listener, keyring, security, settings, signal);
    tokio::pin!(serving);
    let stopped = tokio::select! {
        r = &mut serving => Some(r),
        () = stopping.notified() => None,
    };
    let served = match stopped {
        Some(r) => r,
        None => drain_within(&mut serving, tokio::time::Instant::now() + drain, drain).await,
    };
    if let Some(task) = operator {
        task.abort();
    }
    tracing::info!("stopped");
    served
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives right after
/// start-up is never lost to the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    }
}

/// Waits, until `deadline`, for the calls in flight to finish and then for
/// `serving` (the server's own graceful shutdown) to write their answers
/// and close the connections. A call that enters meanwhile (a stream's next
/// message, a body still being read) is waited for too. Exiting with calls
/// still running is logged.
async fn drain_within(
    serving: &mut std::pin::Pin<&mut impl Future<Output = Result<(), ServeError>>>,
    deadline: tokio::time::Instant,
    drain: Duration,
) -> Result<(), ServeError> {
    loop {
        if tokio::time::timeout_at(deadline, gate::idle())
            .await
            .is_err()
        {
            tracing::warn!(
                ?drain,
                in_flight = gate::in_flight(),
                "drain bound reached; exiting with requests still in flight"
            );
            return Ok(());
        }
        // The handlers are done, but their answers may still sit in the
        // connections' buffers: exiting now would cut them. A peer that
        // keeps an idle connection open holds the exit FLUSH_GRACE at most.
        let until = deadline.min(tokio::time::Instant::now() + FLUSH_GRACE);
        match tokio::time::timeout_at(until, serving.as_mut()).await {
            Ok(r) => return r,
            Err(_) if gate::in_flight() > 0 && tokio::time::Instant::now() < deadline => continue,
            Err(_) if gate::in_flight() > 0 => {
                tracing::warn!(
                    ?drain,
                    in_flight = gate::in_flight(),
                    "drain bound reached; exiting with requests still in flight"
                );
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

/// Serves `keyring` on `listener` until `shutdown` resolves.
async fn serve(
    listener: TcpListener,
    keyring: Arc<Keyring>,
    security: Security,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // The listener closes as the drain begins (see `listener::incoming`).
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<EnvelopeServer<EnvelopeService>>()
        .await;
    health.set_serving::<AdminServer<AdminService>>().await;

    let reflection_v1 = reflection()?.build_v1()?;
    let reflection_v1alpha = reflection()?.build_v1alpha()?;

    // A response can exceed its request by a record's overhead (and a
    // little framing) per batch item.
    let max_out = settings.max_request_bytes.saturating_add(
        settings
            .max_batch_items
            .saturating_mul(crate::primitives::record::RECORD_OVERHEAD_UUID + 128),
    );
    let Security { tls, authz, audit } = security;
    let audit_log = audit.clone();
    let gate = Gate {
        keyring: keyring.clone(),
        authz: authz.clone(),
        audit,
        index_meter: Default::default(),
    };
    let limits = settings.transport;
    let streams = StreamPool::new(limits.max_streams, limits.max_streams_per_caller);
    let service = EnvelopeService::new(
        gate.clone(),
        settings.max_batch_items,
        streams,
        limits.stream_idle_timeout,
    );
    let envelope = EnvelopeServer::new(service)
        .max_decoding_message_size(settings.max_request_bytes)
        .max_encoding_message_size(max_out);
    let budget = RequestBudget::new(
        limits.request_bytes_budget,
        limits.message_read_timeout,
        settings.max_request_bytes,
    );
    let early = EarlyAuthLayer(gate.clone());
    let admin = AdminServer::new(AdminService::new(gate))
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(max_out);

    let refresher = tokio::spawn(refresh_loop(
        keyring.clone(),
        audit_log,
        settings.refresh_interval,
    ));
    let readiness = tokio::spawn(readiness_loop(keyring, health, settings.max_staleness));
    let reload_every = settings
        .tls
        .as_ref()
        .map_or(Duration::from_secs(5), |t| t.reload_interval);
    let reloader = tokio::spawn({
        let tls = tls.clone();
        async move {
            loop {
                tokio::time::sleep(reload_every).await;
                if let Some(t) = &tls {
                    t.reload_if_changed();
                }
                authz.reload_if_changed();
            }
        }
    });
    // Outermost first: every request body is under the byte budget; a
    // caller with no grant for the method is refused from its headers; then
    // at most max_concurrent_requests run, and saturation is refused at once
    // (load shedding) rather than queued.
    let result = tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .load_shed(true)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        // GOAWAY at the age; the grace is enforced by the listener's
        // connections (`Conn`), since tonic's would skip the GOAWAY.
        .max_connection_age(limits.max_connection_age)
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_resets))
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_resets))
        .layer(BudgetLayer(budget))
        .layer(early)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_requests,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(envelope)
        .add_service(admin)
        .serve_with_incoming_shutdown(listener::incoming(listener, tls, limits, stop), shutdown)
        .await;
    reloader.abort();
    refresher.abort();
    readiness.abort();
    result.map_err(ServeError::from)
}

/// A reflection builder that advertises every service we serve, both
/// reflection protocols included, whichever protocol the client speaks.
fn reflection() -> Result<tonic_reflection::server::Builder<'static>, ServeError> {
    Ok(tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET))
}

/// Re-reads every key every `interval` ±10%, so replicas do not refresh in
/// lockstep. After a failure it retries sooner (see [`Backoff`]); the cached
/// keys keep serving meanwhile. A refused master-key version is audited at
/// each refusal.
async fn refresh_loop(keyring: Arc<Keyring>, audit: Option<AuditLog>, interval: Duration) {
    let mut backoff = Backoff::new(interval);
    let mut delay = jittered(interval);
    loop {
        tokio::time::sleep(delay).await;
        let mut failed = Vec::new();
        for key in keyring.all() {
            if let Err(e) = key.refresh().await {
                if let (Some(audit), Some((version, reason))) = (&audit, e.refused_version()) {
                    audit.version_refused(key.name(), version, &reason).await;
                }
                failed.push((key.name().to_owned(), e));
            }
        }
        delay = jittered(backoff.next(!failed.is_empty()));
        for (key, e) in failed {
            // retry_in_ms is the pause actually taken, jitter included.
            tracing::warn!(%key, error = %e, retry_in_ms = delay.as_millis(), "refresh failed; keeping cached keys");
        }
    }
}

/// The pause before the next refresh pass, before jitter: `interval` after
/// a pass where every key refreshed; after a failed pass 1 s, then 2 s,
/// 4 s, … doubling up to `interval`, starting again at 1 s after a success.
struct Backoff {
    interval: Duration,
    after_failure: Duration,
}

impl Backoff {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            after_failure: Duration::from_secs(1).min(interval),
        }
    }

    fn next(&mut self, failed: bool) -> Duration {
        if !failed {
            self.after_failure = Duration::from_secs(1).min(self.interval);
            return self.interval;
        }
        let pause = self.after_failure;
        self.after_failure = (pause * 2).min(self.interval);
        pause
    }
}

/// Reports NOT_SERVING for the Envelope service (and the server as a whole)
/// while [`health::readiness`] says not ready, and SERVING again when it
/// recovers. Checked every second.
async fn readiness_loop(keyring: Arc<Keyring>, health: HealthReporter, max_staleness: Duration) {
    let (mut ready, mut stale, mut audit) = (true, false, false);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = health::readiness(&keyring, max_staleness);
        // The status first, then the lines: a reader who sees a line finds
        // the status it names.
        if now.ready != ready {
            ready = now.ready;
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(
                    <EnvelopeServer<EnvelopeService> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
        }
        // Each cause as it starts and ends, so that a second cause, or one
        // that clears while the other stays, is named too.
        let state = if ready { "ready" } else { "not ready" };
        match (stale, !now.stale.is_empty()) {
            (false, true) => {
                tracing::error!(keys = ?now.stale, ?max_staleness, "keys stale past the bound; {state}");
            }
            (true, false) => tracing::info!("keys fresh again; {state}"),
            _ => {}
        }
        match (audit, now.audit_refusing) {
            (false, true) => {
                tracing::error!("the audit log cannot be written and calls are refused; {state}");
            }
            (true, false) => tracing::info!("the audit log is written again; {state}"),
            _ => {}
        }
        (stale, audit) = (!now.stale.is_empty(), now.audit_refusing);
    }
}

fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::primitives::crypto::fill_random(&mut b)
        .map_or(0.5, |()| f64::from(u16::from_be_bytes(b)) / 65535.0);
    interval.mul_f64(0.9 + 0.2 * r)
}

#[cfg(test)]
mod tests;
