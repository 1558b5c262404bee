//! Configuration, one direction only: TOML file and command-line flags →
//! validated [`Settings`]. Every setting and its default is listed in
//! docs/CONFIG.md. The file's shape as written is in [`file`]; the checks
//! across settings in `validate.rs`.

mod file;
mod validate;
pub(crate) use validate::log_filter;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::edge::limits::TransportLimits;
use crate::keys::{DEFAULT_KEY, DataKeyLimits, Limits};
use crate::primitives::context::ContextLimits;

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The default local-mode data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "envelope-data";

/// Why configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for our settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

pub use file::{FileConfig, IndexConfig, KeyConfig, LogFormat, Mode};
/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Local or AWS.
    pub mode: Mode,
    /// TLS (and mTLS when a client CA is set); `None` serves plaintext.
    pub tls: Option<crate::edge::tls::TlsSettings>,
    /// Plaintext allowed off loopback or in AWS mode (loudly logged).
    pub insecure_plaintext: bool,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP);
    /// `None` ("off") serves none of them.
    pub metrics_listen: Option<SocketAddr>,
    /// Lock all memory (mlockall) so keys never reach swap; start-up fails
    /// if the system refuses.
    pub lock_memory: bool,
    /// The authorization policy file; without one, local mode allows every
    /// call and AWS mode denies every call.
    pub policy_file: Option<PathBuf>,
    /// Where audit lines go; `None` turns the audit log off.
    pub audit: Option<crate::edge::audit::Output>,
    /// What calls do while audit lines cannot be written.
    pub audit_on_failure: crate::edge::audit::OnFailure,
    /// Requests served at once (more wait).
    pub max_concurrent_requests: usize,
    /// Longest a request may run; clients may ask for less with grpc-timeout.
    pub request_timeout: Duration,
    /// What a peer can make the server hold before it is authorized.
    pub transport: TransportLimits,
    /// After SIGTERM, how long in-flight requests may take before exit.
    pub drain_timeout: Duration,
    /// AWS settings (AWS mode only).
    pub aws: Option<crate::backends::aws_sdk::AwsSettings>,
    /// How long a key may go without a successful refresh before readiness
    /// (grpc health) reports NOT_SERVING; cached keys keep serving meanwhile.
    pub max_staleness: Duration,
    /// Address to serve gRPC on.
    pub listen: SocketAddr,
    /// Local mode's data directory (root key and master-key secrets).
    pub data_dir: PathBuf,
    /// Key names and their secret ids.
    pub keys: Vec<KeyConfig>,
    /// Per-key limits.
    pub limits: Limits,
    /// Largest gRPC message accepted.
    pub max_request_bytes: usize,
    /// Most items in one batch.
    pub max_batch_items: usize,
    /// How often master keys are re-read from the store (jittered by ±10%).
    pub refresh_interval: Duration,
    /// `tracing` filter, e.g. `info` or `envelope=debug`.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
}

/// The fix for a policy file that cannot be read (start-up and doctor).
pub const POLICY_PATH: &str = "check policy_file: it must name a file this user can read (the \
     path is taken from the working directory when relative)";

/// The fix for a policy file that does not parse (start-up and doctor).
pub const POLICY_FORMAT: &str =
    "correct the policy file; its format is in docs/CONFIG.md, \"Policy\"";

/// Overrides from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// `[limits]`' transport settings over the defaults.
fn transport_limits(l: &file::LimitsConfig) -> TransportLimits {
    let d = TransportLimits::default();
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    TransportLimits {
        max_connections: l.max_connections.unwrap_or(d.max_connections),
        max_streams_per_connection: l
            .max_streams_per_connection
            .unwrap_or(d.max_streams_per_connection),
        max_header_list_bytes: l.max_header_list_bytes.unwrap_or(d.max_header_list_bytes),
        keepalive_interval: secs(l.keepalive_interval_secs, d.keepalive_interval),
        keepalive_timeout: secs(l.keepalive_timeout_secs, d.keepalive_timeout),
        max_connection_age: secs(l.max_connection_age_secs, d.max_connection_age),
        max_connection_age_grace: secs(l.max_connection_age_grace_secs, d.max_connection_age_grace),
        handshake_timeout: secs(l.tls_handshake_timeout_secs, d.handshake_timeout),
        request_bytes_budget: l.request_bytes_budget.unwrap_or(d.request_bytes_budget),
        max_streams: l.max_streams.unwrap_or(d.max_streams),
        max_streams_per_caller: l.max_streams_per_caller.unwrap_or(d.max_streams_per_caller),
        stream_idle_timeout: secs(l.stream_idle_timeout_secs, d.stream_idle_timeout),
        message_read_timeout: secs(l.message_read_timeout_secs, d.message_read_timeout),
        ..d
    }
}

/// Key names are letters, digits, '-', '_' and '.', 1 to 64 bytes.
pub fn valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl Settings {
    /// Whether the service is meant to be reached from the network: AWS
    /// mode, or a `listen` address off loopback. Such a service has no
    /// open default: without a policy every call is denied.
    pub fn reachable_from_network(&self) -> bool {
        self.mode == Mode::Aws || !self.listen.ip().is_loopback()
    }

    /// Every secret the keys read: each key's, and its salt secret.
    pub fn secret_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .flat_map(|k| std::iter::once(k.secret_id()).chain(k.salt_secret_id.clone()))
            .collect()
    }

    /// Reads `path` (if any) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.message().to_owned(),
                })?
            }
        };
        Self::from_file(file, overrides)
    }

    /// Validates a parsed file plus overrides.
    pub fn from_file(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        let dk_defaults = DataKeyLimits::default();
        let l = &file.limits;
        let limits = Limits {
            max_plaintext_bytes: l
                .max_plaintext_bytes
                .unwrap_or(defaults.max_plaintext_bytes),
            context: ContextLimits {
                max_entries: l
                    .max_context_entries
                    .unwrap_or(ContextLimits::default().max_entries),
                max_bytes: l
                    .max_context_bytes
                    .unwrap_or(ContextLimits::default().max_bytes),
            },
            data_key: DataKeyLimits {
                max_age: file
                    .data_keys
                    .max_age_secs
                    .map_or(dk_defaults.max_age, Duration::from_secs),
                max_records: file
                    .data_keys
                    .max_records
                    .unwrap_or(dk_defaults.max_records),
                max_bytes: file.data_keys.max_bytes.unwrap_or(dk_defaults.max_bytes),
            },
            decrypt_cache_entries: l
                .decrypt_cache_entries
                .unwrap_or(defaults.decrypt_cache_entries),
            max_loaded_versions: l
                .max_loaded_versions
                .unwrap_or(defaults.max_loaded_versions),
            negative_cache_ttl: l
                .missing_version_ttl_secs
                .map_or(defaults.negative_cache_ttl, Duration::from_secs),
            compromised_window: l
                .compromised_window_secs
                .map_or(defaults.compromised_window, Duration::from_secs),
        };
        let max_request_bytes = l.max_request_bytes.unwrap_or(4 * 1024 * 1024);
        let keys = if file.keys.is_empty() {
            vec![KeyConfig {
                name: DEFAULT_KEY.to_owned(),
                secret_id: None,
                salt_secret_id: None,
                kdf_iterations: None,
                min_decryption_version: None,
                allow_unwrapped_master_keys: false,
                unwrapped_versions: Vec::new(),
                indexes: Vec::new(),
                compromised_versions: Vec::new(),
                allow_compromised_decrypts: false,
            }]
        } else {
            file.keys
        };
        let mode = file.mode.unwrap_or_default();
        let aws = match (mode, file.aws) {
            (Mode::Aws, a) => {
                let a = a.unwrap_or_default();
                let d = crate::backends::aws_sdk::AwsSettings::new(String::new());
                Some(crate::backends::aws_sdk::AwsSettings {
                    region: a.region,
                    endpoint_url: a.endpoint_url,
                    secretsmanager_endpoint_url: a.secretsmanager_endpoint_url,
                    kms_endpoint_url: a.kms_endpoint_url,
                    kms_key_id: a.kms_key_id,
                    allowed_kms_keys: a.allowed_kms_keys,
                    replica_regions: a.replica_regions,
                    connect_timeout: a
                        .connect_timeout_secs
                        .map_or(d.connect_timeout, Duration::from_secs),
                    attempt_timeout: a
                        .attempt_timeout_secs
                        .map_or(d.attempt_timeout, Duration::from_secs),
                    operation_timeout: a
                        .operation_timeout_secs
                        .map_or(d.operation_timeout, Duration::from_secs),
                    max_attempts: a.max_attempts.unwrap_or(d.max_attempts),
                })
            }
            (Mode::Local, Some(_)) => {
                return Err(invalid("aws", "an [aws] section needs mode = \"aws\""));
            }
            (Mode::Local, None) => None,
        };
        let tls = file.tls.map(|t| crate::edge::tls::TlsSettings {
            cert: t.cert,
            key: t.key,
            client_ca: t.client_ca,
            allow_tls12: t.allow_tls12,
            reload_interval: Duration::from_secs(t.reload_interval_secs.unwrap_or(10)),
        });
        let audit = match file.audit.output.as_deref() {
            None | Some("stdout") => Some(crate::edge::audit::Output::Stdout),
            Some("off") => None,
            Some(path) => Some(crate::edge::audit::Output::File(PathBuf::from(path))),
        };
        let s = Settings {
            mode,
            tls,
            insecure_plaintext: file.insecure_plaintext.unwrap_or(false),
            lock_memory: file.lock_memory.unwrap_or(false),
            metrics_listen: match file.metrics_listen.as_deref() {
                None | Some("off") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    invalid(
                        "metrics_listen",
                        format!("{a:?} is not host:port or \"off\""),
                    )
                })?),
            },
            policy_file: file.policy_file,
            audit,
            audit_on_failure: match file.audit.on_failure.as_deref() {
                Some("refuse") => crate::edge::audit::OnFailure::Refuse,
                Some("continue") => crate::edge::audit::OnFailure::Continue,
                None if mode == Mode::Aws => crate::edge::audit::OnFailure::Refuse,
                None => crate::edge::audit::OnFailure::Continue,
                Some(other) => {
                    return Err(invalid(
                        "audit.on_failure",
                        format!("{other:?} is not \"refuse\" or \"continue\""),
                    ));
                }
            },
            max_concurrent_requests: l.max_concurrent_requests.unwrap_or(1024),
            request_timeout: Duration::from_secs(l.request_timeout_secs.unwrap_or(30)),
            transport: transport_limits(l),
            drain_timeout: Duration::from_secs(file.drain_timeout_secs.unwrap_or(20)),
            aws,
            max_staleness: Duration::from_secs(file.max_staleness_secs.unwrap_or(3600)),
            listen: overrides
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            keys,
            limits,
            max_request_bytes,
            max_batch_items: l.max_batch_items.unwrap_or(10_000),
            refresh_interval: Duration::from_secs(file.refresh_interval_secs.unwrap_or(300)),
            log_level: file.log_level.unwrap_or_else(|| "info".to_owned()),
            log_format: file.log_format.unwrap_or_default(),
        };
        s.validate()?;
        Ok(s)
    }
}

/// The rotation Lambda's settings, from its environment (a Lambda function
/// has no configuration file): `ENVELOPE_KMS_KEY_ID` (required), and
/// optionally `ENVELOPE_REPLICA_REGIONS` (comma-separated). Region and
/// credentials come from the SDK's default chain, as everywhere.
pub fn lambda_aws_settings() -> Result<crate::backends::aws_sdk::AwsSettings, ConfigError> {
    let kms_key_id = std::env::var("ENVELOPE_KMS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            invalid(
                "ENVELOPE_KMS_KEY_ID",
                "the rotation Lambda needs the KMS key that wraps master keys",
            )
        })?;
    let replica_regions = std::env::var("ENVELOPE_REPLICA_REGIONS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(crate::backends::aws_sdk::AwsSettings {
        replica_regions,
        ..crate::backends::aws_sdk::AwsSettings::new(kms_key_id)
    })
}

#[cfg(test)]
mod tests;
