//! Start-up and serving: builds the backends and the keyring from
//! [`Settings`], then serves Envelope, Admin, health and reflection on a
//! listener until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::AdminService;
use crate::config::Settings;
use crate::error::Error;
use crate::keyring::{Keyring, NamedKey};
use crate::kms::Kms;
use crate::kms::local::LocalKms;
use crate::pb::admin_server::AdminServer;
use crate::pb::envelope_server::EnvelopeServer;
use crate::service::EnvelopeService;
use crate::store::SecretStore;
use crate::store::local::{LocalStore, create_private_dir};

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
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Opens local mode's backends in `settings.data_dir` (created 0700) and
/// loads every key, creating a first master-key version where none exists.
pub async fn open_local(settings: &Settings) -> Result<Keyring, ServeError> {
    let dir = &settings.data_dir;
    create_private_dir(dir).map_err(|source| ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    tracing::warn!(
        data_dir = %dir.display(),
        "LOCAL MODE: the root key and master keys are plain files in the data directory; for development and trials only"
    );
    let key_err = |key: &str, source: Error| ServeError::Key {
        key: key.to_owned(),
        source,
    };
    let kms: Arc<dyn Kms> = Arc::new(
        LocalKms::open_or_create(&dir.join("root.key")).map_err(|e| key_err("*", e.into()))?,
    );
    let store: Arc<dyn SecretStore> =
        Arc::new(LocalStore::open(&dir.join("secrets")).map_err(|e| key_err("*", e.into()))?);
    let mut keys = Vec::with_capacity(settings.keys.len());
    for k in &settings.keys {
        let secret_id = k.secret_id.clone().unwrap_or_else(|| k.name.clone());
        let created = crate::rotation::ensure_initial_version(
            store.as_ref(),
            kms.as_ref(),
            &k.name,
            &secret_id,
        )
        .await
        .map_err(|e| key_err(&k.name, e.into()))?;
        if created {
            tracing::info!(key = %k.name, "created the first master-key version");
        }
        let named = NamedKey::load(
            &k.name,
            &secret_id,
            store.clone(),
            kms.clone(),
            settings.limits,
        )
        .await
        .map_err(|e| key_err(&k.name, e))?;
        keys.push(named);
    }
    Ok(Keyring::new(keys))
}

/// Serves `keyring` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    keyring: Arc<Keyring>,
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
            .saturating_mul(crate::envelope::RECORD_OVERHEAD_UUID + 128),
    );
    let envelope = EnvelopeServer::new(EnvelopeService::new(
        keyring.clone(),
        settings.max_batch_items,
    ))
    .max_decoding_message_size(settings.max_request_bytes)
    .max_encoding_message_size(max_out);
    let admin = AdminServer::new(AdminService::new(keyring.clone()))
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(max_out);

    let refresher = tokio::spawn(refresh_loop(keyring, settings.refresh_interval));
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(envelope)
        .add_service(admin)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    refresher.abort();
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
/// lockstep. A failed refresh keeps the cached keys.
async fn refresh_loop(keyring: Arc<Keyring>, interval: Duration) {
    loop {
        tokio::time::sleep(jittered(interval)).await;
        for key in keyring.all() {
            if let Err(e) = key.refresh().await {
                tracing::warn!(key = %key.name(), error = %e, "refresh failed; keeping cached keys");
            }
        }
    }
}

fn jittered(interval: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = crate::crypto::fill_random(&mut b)
        .map_or(0.5, |()| f64::from(u16::from_be_bytes(b)) / 65535.0);
    interval.mul_f64(0.9 + 0.2 * r)
}
