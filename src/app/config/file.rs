//! The TOML configuration file as written, before validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::keys::master_key::Unwrapped;

/// The TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub(super) mode: Option<Mode>,
    pub(super) insecure_plaintext: Option<bool>,
    pub(super) lock_memory: Option<bool>,
    pub(super) metrics_listen: Option<String>,
    pub(super) drain_timeout_secs: Option<u64>,
    pub(super) policy_file: Option<PathBuf>,
    pub(super) tls: Option<TlsConfig>,
    #[serde(default)]
    pub(super) audit: AuditConfig,
    pub(super) aws: Option<AwsConfig>,
    pub(super) max_staleness_secs: Option<u64>,
    pub(super) listen: Option<SocketAddr>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) refresh_interval_secs: Option<u64>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<LogFormat>,
    #[serde(default)]
    pub(super) keys: Vec<KeyConfig>,
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    #[serde(default)]
    pub(super) data_keys: DataKeyConfig,
}

/// Where master keys live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A root key file and secrets in the data directory (development).
    #[default]
    Local,
    /// AWS Secrets Manager and KMS through the AWS SDK.
    Aws,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsConfig {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_tls12: bool,
    pub(super) reload_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditConfig {
    pub(super) output: Option<String>,
    pub(super) on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AwsConfig {
    pub(super) region: Option<String>,
    pub(super) endpoint_url: Option<String>,
    pub(super) secretsmanager_endpoint_url: Option<String>,
    pub(super) kms_endpoint_url: Option<String>,
    pub(super) kms_key_id: Option<String>,
    #[serde(default)]
    pub(super) allowed_kms_keys: Vec<String>,
    #[serde(default)]
    pub(super) replica_regions: Vec<String>,
    pub(super) connect_timeout_secs: Option<u64>,
    pub(super) attempt_timeout_secs: Option<u64>,
    pub(super) operation_timeout_secs: Option<u64>,
    pub(super) max_attempts: Option<u32>,
}

/// One key name and the secret that holds its master keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key name callers use.
    pub name: String,
    /// The secret id (name or ARN); defaults to the key name.
    pub secret_id: Option<String>,
    /// For passphrase-style secrets (seeds 001 and 004): the secret whose
    /// AWSCURRENT value is the PBKDF2 salt.
    pub salt_secret_id: Option<String>,
    /// PBKDF2 iterations for passphrase-style secrets (default 600,000).
    pub kdf_iterations: Option<u32>,
    /// Refuse records under versions created before this version (like
    /// Vault's minimum decryption version), for after a migration.
    pub min_decryption_version: Option<String>,
    /// Accept any seed-shaped (plaintext) version of this key's secret
    /// (legacy mode; warned about at start and exported as a gauge).
    #[serde(default)]
    pub allow_unwrapped_master_keys: bool,
    /// Accept only these seed-shaped versions.
    #[serde(default)]
    pub unwrapped_versions: Vec<String>,
    /// Blind indexes of this key (docs/SEARCH.md).
    #[serde(default)]
    pub indexes: Vec<IndexConfig>,
    /// Versions known to be compromised (beside the secret's
    /// `envelope-compromised-<id>` labels, which a writer could remove).
    #[serde(default)]
    pub compromised_versions: Vec<String>,
    /// Let Decrypt open records under compromised versions for a migration
    /// window (each such call audited and counted).
    #[serde(default)]
    pub allow_compromised_decrypts: bool,
}

/// One `[[keys.indexes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// The index name, unique per key.
    pub name: String,
    /// How values are normalized.
    pub normalize: crate::primitives::blind_index::Normalize,
    /// Token length in bits (8 to 256).
    pub bits: u16,
    /// Context entries mixed into the index key.
    #[serde(default)]
    pub scope: Vec<String>,
}

impl IndexConfig {
    /// The index as the keys layer takes it.
    pub fn spec(&self) -> crate::primitives::blind_index::IndexSpec {
        crate::primitives::blind_index::IndexSpec {
            name: self.name.clone(),
            normalize: self.normalize,
            bits: self.bits,
            scope: self.scope.clone(),
        }
    }
}

impl KeyConfig {
    /// The secret holding this key's versions: `secret_id`, or the key name.
    pub fn secret_id(&self) -> String {
        self.secret_id.clone().unwrap_or_else(|| self.name.clone())
    }

    /// Which seed-shaped versions the key accepts.
    pub fn unwrapped(&self) -> Unwrapped {
        if self.allow_unwrapped_master_keys {
            Unwrapped::Any
        } else if self.unwrapped_versions.is_empty() {
            Unwrapped::Refuse
        } else {
            Unwrapped::Only(self.unwrapped_versions.clone())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsConfig {
    pub(super) max_request_bytes: Option<usize>,
    pub(super) max_plaintext_bytes: Option<usize>,
    pub(super) max_batch_items: Option<usize>,
    pub(super) max_context_entries: Option<usize>,
    pub(super) max_context_bytes: Option<usize>,
    pub(super) decrypt_cache_entries: Option<usize>,
    pub(super) max_loaded_versions: Option<usize>,
    pub(super) missing_version_ttl_secs: Option<u64>,
    pub(super) compromised_window_secs: Option<u64>,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) request_timeout_secs: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_streams_per_connection: Option<u32>,
    pub(super) max_header_list_bytes: Option<u32>,
    pub(super) keepalive_interval_secs: Option<u64>,
    pub(super) keepalive_timeout_secs: Option<u64>,
    pub(super) max_connection_age_secs: Option<u64>,
    pub(super) max_connection_age_grace_secs: Option<u64>,
    pub(super) tls_handshake_timeout_secs: Option<u64>,
    pub(super) request_bytes_budget: Option<usize>,
    pub(super) max_streams: Option<usize>,
    pub(super) max_streams_per_caller: Option<usize>,
    pub(super) stream_idle_timeout_secs: Option<u64>,
    pub(super) message_read_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DataKeyConfig {
    pub(super) max_age_secs: Option<u64>,
    pub(super) max_records: Option<u64>,
    pub(super) max_bytes: Option<u64>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
