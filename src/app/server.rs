//! Start-up and serving: builds the backends and the keyring from
//! [`Settings`], then serves Envelope, Admin, health and reflection on a
//! listener until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::config::{KeyConfig, Mode, Settings};
use crate::backends::kms::Kms;
use crate::backends::kms::aws_kms::AwsKms;
use crate::backends::kms::local::LocalKms;
use crate::backends::store::SecretStore;
use crate::backends::store::local::{LocalStore, create_private_dir};
use crate::backends::store::secrets_manager::AwsStore;
use crate::edge::admin_service::AdminService;
use crate::edge::audit::AuditLog;
use crate::edge::authz::{Authorizer, Default};
use crate::edge::envelope_service::EnvelopeService;
use crate::edge::gate::Gate;
use crate::edge::tls::ReloadingConfig;
use crate::keys::error::Error;
use crate::keys::master_key::KdfParams;
use crate::keys::{KeySource, Keyring, NamedKey};
use crate::pb::admin_server::AdminServer;
use crate::pb::envelope_server::EnvelopeServer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key could not be loaded: Envelope never serves without its keys.
    #[error("cannot load key {key:?}: {source}")]
    Key {
        /// The key name.
        key: String,
        /// Why.
        #[source]
        source: Error,
    },
    /// A key's first version could not be created.
    #[error("cannot create the first master-key version of key {key:?}: {source}")]
    InitKey {
        /// The key name.
        key: String,
        /// Why.
        #[source]
        source: Error,
    },
    /// The TLS files are not usable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::edge::tls::TlsError),
    /// The policy file is not usable.
    #[error("{0}")]
    Policy(String),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(String),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The secret store and KMS a server uses.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Where master-key versions live.
    pub store: Arc<dyn SecretStore>,
    /// The root of the hierarchy.
    pub kms: Arc<dyn Kms>,
}

/// Opens the backends for `settings.mode`: local files in the data
/// directory (created 0700), or Secrets Manager and KMS through the AWS SDK
/// with credentials from the SDK's default provider chain.
pub async fn open_backends(settings: &Settings) -> Result<Backends, ServeError> {
    let b = open_raw_backends(settings).await?;
    Ok(Backends {
        store: Arc::new(crate::ops::metered::MeteredStore(b.store)),
        kms: Arc::new(crate::ops::metered::MeteredKms(b.kms)),
    })
}

async fn open_raw_backends(settings: &Settings) -> Result<Backends, ServeError> {
    match (&settings.mode, &settings.aws) {
        (Mode::Aws, Some(aws)) => Ok(open_aws(aws).await),
        _ => {
            let dir = &settings.data_dir;
            create_private_dir(dir).map_err(|source| ServeError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            tracing::warn!(
                data_dir = %dir.display(),
                "LOCAL MODE: the root key and master keys are plain files in the data directory; for development and trials only"
            );
            let kms = LocalKms::open_or_create(&dir.join("root.key"))
                .map_err(|e| key_err("*", e.into()))?;
            let store =
                LocalStore::open(&dir.join("secrets")).map_err(|e| key_err("*", e.into()))?;
            Ok(Backends {
                store: Arc::new(store),
                kms: Arc::new(kms),
            })
        }
    }
}

/// Secrets Manager and KMS clients from one SDK configuration.
pub async fn open_aws(aws: &crate::backends::aws_sdk::AwsSettings) -> Backends {
    let sdk = crate::backends::aws_sdk::sdk_config(aws, None).await;
    let kms_key = aws.kms_key_id.clone().unwrap_or_default();
    tracing::info!(region = ?sdk.region().map(|r| r.to_string()), endpoint = ?aws.endpoint_url, kms_key = %kms_key, replicas = ?aws.replica_regions, "AWS mode");
    Backends {
        store: Arc::new(AwsStore::new(aws, &sdk).await),
        kms: Arc::new(AwsKms::with_endpoint(
            &sdk,
            kms_key,
            aws.kms_endpoint_url.as_deref(),
        )),
    }
}

fn key_err(key: &str, source: Error) -> ServeError {
    ServeError::Key {
        key: key.to_owned(),
        source,
    }
}

fn secret_id(k: &KeyConfig) -> String {
    k.secret_id.clone().unwrap_or_else(|| k.name.clone())
}

/// Creates the first master-key version of every key whose secret has no
/// AWSCURRENT. Returns the names of the keys it created.
pub async fn init_keys(
    settings: &Settings,
    backends: &Backends,
) -> Result<Vec<String>, ServeError> {
    let mut created = Vec::new();
    for k in &settings.keys {
        let made = crate::keys::rotation::ensure_initial_version(
            backends.store.as_ref(),
            backends.kms.as_ref(),
            &k.name,
            &secret_id(k),
        )
        .await
        .map_err(|e| ServeError::InitKey {
            key: k.name.clone(),
            source: e.into(),
        })?;
        if made {
            tracing::info!(key = %k.name, "created the first master-key version");
            created.push(k.name.clone());
        }
    }
    Ok(created)
}

/// Loads every configured key. Fails if any key lacks a usable AWSCURRENT:
/// Envelope never serves without its keys.
pub async fn load_keyring(settings: &Settings, backends: &Backends) -> Result<Keyring, ServeError> {
    let mut keys = Vec::with_capacity(settings.keys.len());
    for k in &settings.keys {
        let salt = match &k.salt_secret_id {
            Some(id) => {
                let v = backends
                    .store
                    .get_stage(id, crate::backends::store::AWSCURRENT)
                    .await
                    .map_err(|e| key_err(&k.name, e.into()))?;
                // Trimmed like the key secret: a trailing newline is an accident, not salt.
                Some(zeroize::Zeroizing::new(v.value.trim().as_bytes().to_vec()))
            }
            None => None,
        };
        let source = KeySource {
            name: k.name.clone(),
            secret_id: secret_id(k),
            store: backends.store.clone(),
            kms: backends.kms.clone(),
            kdf: KdfParams {
                salt,
                iterations: k.kdf_iterations,
            },
            min_version: k.min_decryption_version.clone(),
        };
        keys.push(
            NamedKey::load(source, settings.limits)
                .await
                .map_err(|e| key_err(&k.name, e))?,
        );
        crate::ops::metrics::get().init_key(&k.name);
    }
    Ok(Keyring::new(keys))
}

/// Opens the backends and loads the keyring; local mode first creates any
/// missing first versions, AWS mode never does.
pub async fn start(settings: &Settings) -> Result<Keyring, ServeError> {
    let backends = open_backends(settings).await?;
    if settings.mode == Mode::Local {
        init_keys(settings, &backends).await?;
    }
    load_keyring(settings, &backends).await
}

/// The transport and access layer: TLS, the policy and the audit log,
/// opened before the listener so that a bad file stops start-up early.
#[derive(Debug)]
pub struct Security {
    tls: Option<Arc<ReloadingConfig>>,
    authz: Arc<Authorizer>,
    audit: Option<AuditLog>,
}

/// Loads the TLS files and the policy and starts the audit writer.
pub fn prepare_security(settings: &Settings) -> Result<Security, ServeError> {
    let tls = match &settings.tls {
        Some(t) => Some(Arc::new(ReloadingConfig::new(t.clone())?)),
        None => None,
    };
    if tls.is_none() && (settings.mode == Mode::Aws || !settings.listen.ip().is_loopback()) {
        tracing::error!(
            listen = %settings.listen,
            "INSECURE: serving plaintext gRPC (insecure_plaintext = true); keys and plaintexts cross the network unencrypted"
        );
    }
    // Open by default only for local mode on loopback: anything reachable
    // from the network needs a policy.
    let default = if settings.mode == Mode::Aws || !settings.listen.ip().is_loopback() {
        Default::Deny
    } else {
        Default::Allow
    };
    if settings.policy_file.is_none() && default == Default::Deny {
        tracing::warn!("no policy_file: every Envelope and Admin call will be denied");
    }
    let authz = Arc::new(
        Authorizer::new(settings.policy_file.clone(), default).map_err(ServeError::Policy)?,
    );
    let audit = match &settings.audit {
        Some(out) => {
            Some(AuditLog::start(out.clone()).map_err(|e| ServeError::Audit(e.to_string()))?)
        }
        None => None,
    };
    Ok(Security { tls, authz, audit })
}

/// Serves `keyring` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    keyring: Arc<Keyring>,
    security: Security,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
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
    let gate = Gate {
        keyring: keyring.clone(),
        authz: authz.clone(),
        audit,
    };
    let envelope =
        EnvelopeServer::new(EnvelopeService::new(gate.clone(), settings.max_batch_items))
            .max_decoding_message_size(settings.max_request_bytes)
            .max_encoding_message_size(max_out);
    let admin = AdminServer::new(AdminService::new(gate))
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(max_out);

    let refresher = tokio::spawn(refresh_loop(keyring.clone(), settings.refresh_interval));
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
    let result = tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_requests,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(envelope)
        .add_service(admin)
        .serve_with_incoming_shutdown(crate::edge::tls::incoming(listener, tls), shutdown)
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
/// lockstep. After a failure it retries sooner, backing off from 1 s up to
/// `interval`; the cached keys keep serving meanwhile.
async fn refresh_loop(keyring: Arc<Keyring>, interval: Duration) {
    let mut backoff = Duration::from_secs(1).min(interval);
    let mut delay = jittered(interval);
    loop {
        tokio::time::sleep(delay).await;
        let mut failed = false;
        for key in keyring.all() {
            if let Err(e) = key.refresh().await {
                failed = true;
                tracing::warn!(key = %key.name(), error = %e, retry_in = ?backoff, "refresh failed; keeping cached keys");
            }
        }
        if failed {
            delay = jittered(backoff);
            backoff = (backoff * 2).min(interval);
        } else {
            backoff = Duration::from_secs(1).min(interval);
            delay = jittered(interval);
        }
    }
}

/// Reports NOT_SERVING for the Envelope service (and the server as a whole)
/// once any key has gone `max_staleness` without a successful refresh, and
/// SERVING again when it recovers. Checked every second.
async fn readiness_loop(keyring: Arc<Keyring>, health: HealthReporter, max_staleness: Duration) {
    let mut ready = true;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stale: Vec<&str> = keyring
            .all()
            .filter(|k| k.staleness() > max_staleness)
            .map(|k| k.name())
            .collect();
        let now_ready = stale.is_empty();
        if now_ready != ready {
            ready = now_ready;
            let status = if ready {
                tracing::info!("keys fresh again; ready");
                ServingStatus::Serving
            } else {
                tracing::error!(keys = ?stale, ?max_staleness, "keys stale past the bound; not ready");
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
    }
}

fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::primitives::crypto::fill_random(&mut b)
        .map_or(0.5, |()| f64::from(u16::from_be_bytes(b)) / 65535.0);
    interval.mul_f64(0.9 + 0.2 * r)
}
