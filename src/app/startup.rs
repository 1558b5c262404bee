//! Start-up, shared by every binary: the process set-up (logging,
//! hardening, the TLS crypto provider), then the backends, the keyring and
//! the security layer (TLS, policy, audit) built from [`Settings`].

use std::sync::Arc;

use super::config::{LogFormat, Mode, Settings};
use crate::backends::kms::Kms;
use crate::backends::kms::aws_kms::AwsKms;
use crate::backends::kms::local::LocalKms;
use crate::backends::private_files::{check_private, create_private_dir};
use crate::backends::store::SecretStore;
use crate::backends::store::local::LocalStore;
use crate::backends::store::secrets_manager::AwsStore;
use crate::edge::audit::AuditLog;
use crate::edge::authz::{Authorizer, Default};
use crate::edge::tls::ReloadingConfig;
use crate::keys::master_key::{KdfParams, Unwrapped};
use crate::keys::{Error, KeySource, Keyring, NamedKey};
use crate::ops::hardening::{self, Hardened};
use crate::primitives::self_test;

mod error;
pub use error::ServeError;

/// Sets the process up before anything else runs: logging at `log_level`
/// in `log_format`, the power-on self-test of every primitive (a wrong
/// answer stops here), hardening (no core dumps, not dumpable, and all
/// memory locked with `lock_memory`), and aws-lc-rs as the TLS crypto provider.
pub fn init_process(
    log_level: &str,
    log_format: LogFormat,
    lock_memory: bool,
) -> Result<Hardened, ServeError> {
    init_logging(log_level, log_format);
    self_test(&self_test::VECTORS)?;
    let hardened = hardening::harden(lock_memory).map_err(ServeError::Hardening)?;
    // A file-size limit (RLIMIT_FSIZE) reached by the audit log is a failed
    // write, handled by `audit.on_failure`, not SIGXFSZ's default action of
    // ending the process. A tokio listener replaces that action for good.
    #[cfg(unix)]
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
            rustix::process::Signal::XFSZ.as_raw(),
        ));
    }
    if !hardened.core_dumps_off || !hardened.not_dumpable {
        tracing::warn!(
            ?hardened,
            "core dumps or dumpability could not be turned off on this system"
        );
    } else {
        tracing::info!(?hardened, "process hardened");
    }
    // One TLS crypto provider for the whole process, installed before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(hardened)
}

/// [`init_process`] with the settings' logging and memory locking.
pub fn init(settings: &Settings) -> Result<Hardened, ServeError> {
    init_process(
        &settings.log_level,
        settings.log_format,
        settings.lock_memory,
    )
}

/// The power-on self-test against `vectors`, logged either way.
fn self_test(vectors: &self_test::Vectors) -> Result<(), ServeError> {
    match self_test::run(vectors) {
        Ok(()) => {
            tracing::debug!("cryptographic self-test passed");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "cryptographic self-test failed");
            Err(ServeError::SelfTest(e))
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = super::config::log_filter(level)
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (a test, or a library user with its own subscriber) keeps the first.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
        (Mode::Aws, Some(aws)) => open_aws(aws, &settings.secret_ids()).await,
        _ => {
            let dir = &settings.data_dir;
            create_private_dir(dir).map_err(|source| ServeError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            check_private(dir).map_err(ServeError::DataDirUnsafe)?;
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

/// The region the SDK settled on. An empty one (`AWS_REGION=""`) is no
/// region: the SDK would take it and sign for an endpoint that does not exist.
pub fn region_in_use(sdk: &aws_config::SdkConfig) -> Result<String, ServeError> {
    sdk.region()
        .map(ToString::to_string)
        .filter(|r| !r.is_empty())
        .ok_or(ServeError::NoRegion)
}

/// Secrets Manager and KMS clients from one SDK configuration. Refuses a
/// missing region, and an ARN (the KMS keys, `secrets`) of another region
/// than the one in use, which AWS would answer only with "not found".
pub async fn open_aws(
    aws: &crate::backends::aws_sdk::AwsSettings,
    secrets: &[String],
) -> Result<Backends, ServeError> {
    let sdk = crate::backends::aws_sdk::sdk_config(aws, None).await;
    let region = region_in_use(&sdk)?;
    same_region(aws, secrets, &region)?;
    let kms_key = aws.kms_key_id.clone().unwrap_or_default();
    tracing::info!(%region, endpoint = ?aws.endpoint_url, kms_key = %kms_key, replicas = ?aws.replica_regions, "AWS mode");
    Ok(Backends {
        store: Arc::new(AwsStore::new(aws, &sdk).await),
        kms: Arc::new(
            AwsKms::with_endpoint(&sdk, kms_key, aws.kms_endpoint_url.as_deref())
                .allowing(&aws.allowed_kms_keys),
        ),
    })
}

/// Refuses an ARN of another region than `region` among the KMS keys and
/// `secrets`.
pub fn same_region(
    aws: &crate::backends::aws_sdk::AwsSettings,
    secrets: &[String],
    region: &str,
) -> Result<(), ServeError> {
    let ids = aws
        .kms_key_id
        .iter()
        .chain(&aws.allowed_kms_keys)
        .chain(secrets)
        .map(String::as_str);
    match crate::backends::aws_sdk::arn_elsewhere(region, ids) {
        Some((id, theirs)) => Err(ServeError::WrongRegion {
            id,
            theirs,
            region: region.to_owned(),
        }),
        None => Ok(()),
    }
}

fn key_err(key: &str, source: Error) -> ServeError {
    ServeError::Key {
        key: key.to_owned(),
        source,
    }
}

/// Creates the first master-key version of every key whose secret has no
/// AWSCURRENT. Returns the names of the keys it created.
pub async fn init_keys(
    settings: &Settings,
    backends: &Backends,
    mut done: impl FnMut(&str, bool),
) -> Result<Vec<String>, ServeError> {
    let mut created = Vec::new();
    for k in &settings.keys {
        let made = crate::keys::rotation::ensure_initial_version(
            backends.store.as_ref(),
            backends.kms.as_ref(),
            &k.name,
            &k.secret_id(),
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
        done(&k.name, made);
    }
    Ok(created)
}

/// What a key's seed-shaped versions are stretched with: its salt secret's
/// AWSCURRENT value, its iteration count, and which it accepts at all.
pub async fn kdf_params(
    k: &super::config::KeyConfig,
    backends: &Backends,
) -> Result<KdfParams, ServeError> {
    let salt = match &k.salt_secret_id {
        Some(id) => {
            let v = backends
                .store
                .get_stage(id, crate::backends::store::AWSCURRENT)
                .await
                .map_err(|source| ServeError::Salt {
                    key: k.name.clone(),
                    source,
                })?;
            // Trimmed like the key secret: a trailing newline is an accident, not salt.
            Some(zeroize::Zeroizing::new(v.value.trim().as_bytes().to_vec()))
        }
        None => None,
    };
    Ok(KdfParams {
        salt,
        iterations: k.kdf_iterations,
        unwrapped: k.unwrapped(),
    })
}

/// Loads every configured key. Fails if any key lacks a usable AWSCURRENT:
/// Envelope never serves without its keys.
pub async fn load_keyring(settings: &Settings, backends: &Backends) -> Result<Keyring, ServeError> {
    let mut keys = Vec::with_capacity(settings.keys.len());
    for k in &settings.keys {
        let source = KeySource {
            name: k.name.clone(),
            secret_id: k.secret_id(),
            store: backends.store.clone(),
            kms: backends.kms.clone(),
            kdf: kdf_params(k, backends).await?,
            min_version: k.min_decryption_version.clone(),
            compromised: k.compromised_versions.clone(),
            allow_compromised_decrypts: k.allow_compromised_decrypts,
            indexes: k
                .indexes
                .iter()
                .map(super::config::IndexConfig::spec)
                .collect(),
        };
        keys.push(
            NamedKey::load(source, settings.limits)
                .await
                .map_err(|e| key_err(&k.name, e))?,
        );
        crate::ops::metrics::get().init_key(&k.name);
        let unwrapped = k.unwrapped();
        if unwrapped != Unwrapped::Refuse {
            tracing::warn!(
                key = %k.name,
                accepts = ?unwrapped,
                "this key accepts seed-shaped (unwrapped) master keys: anyone who can write its secret can choose the key new records are sealed under; rotate to Envelope's shape and remove allow_unwrapped_master_keys / unwrapped_versions"
            );
            crate::ops::metrics::get()
                .accepts_unwrapped(&k.name, matches!(unwrapped, Unwrapped::Any));
        }
    }
    Ok(Keyring::new(keys))
}

/// Opens the backends and loads the keyring; local mode first creates any
/// missing first versions, AWS mode never does.
pub async fn start(settings: &Settings) -> Result<Keyring, ServeError> {
    let backends = open_backends(settings).await?;
    if settings.mode == Mode::Local {
        init_keys(settings, &backends, |_, _| {}).await?;
    }
    load_keyring(settings, &backends).await
}

/// The transport and access layer: TLS, the policy and the audit log,
/// opened before the listener so that a bad file stops start-up early.
#[derive(Debug)]
pub struct Security {
    pub(super) tls: Option<Arc<ReloadingConfig>>,
    pub(super) authz: Arc<Authorizer>,
    pub(super) audit: Option<AuditLog>,
}

/// Loads the TLS files and the policy and starts the audit writer.
pub fn prepare_security(settings: &Settings) -> Result<Security, ServeError> {
    if settings.tls.is_none() && settings.reachable_from_network() {
        tracing::error!(
            listen = %settings.listen,
            "INSECURE: serving plaintext gRPC (insecure_plaintext = true); keys and plaintexts cross the network unencrypted"
        );
    }
    // Open by default only for local mode on loopback: anything reachable
    // from the network needs a policy.
    let default = if settings.reachable_from_network() {
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
    // The policy decides whether a TLS client may come without a certificate.
    let tls = match &settings.tls {
        Some(t) => Some(Arc::new(ReloadingConfig::new(
            t.clone(),
            authz.requires_identity(),
        )?)),
        None => None,
    };
    let audit = match &settings.audit {
        Some(out) => Some(
            AuditLog::start(out.clone(), settings.audit_on_failure).map_err(|e| {
                ServeError::Audit(match out {
                    crate::edge::audit::Output::File(p) => {
                        format!("cannot open {}: {e}", p.display())
                    }
                    crate::edge::audit::Output::Stdout => format!("stdout: {e}"),
                })
            })?,
        ),
        None => None,
    };
    Ok(Security { tls, authz, audit })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start-up stops, naming the primitive, when a stored vector is wrong.
    #[test]
    fn a_corrupted_vector_stops_start_up() {
        let mut vectors = self_test::VECTORS;
        vectors.hmac.expected = "00";
        assert!(self_test(&self_test::VECTORS).is_ok());
        let e = self_test(&vectors);
        assert!(matches!(e, Err(ServeError::SelfTest(_))), "{e:?}");
        assert_eq!(
            e.map_err(|e| e.to_string()).err().as_deref(),
            Some(
                "cryptographic self-test failed: HMAC-SHA256 gave a wrong answer; refusing to start"
            )
        );
    }
}
