//! The secret store holding master-key versions, modelled on AWS Secrets
//! Manager: a secret has versions, each with an id and staging labels
//! (AWSCURRENT, AWSPREVIOUS, AWSPENDING, or our own). Local mode uses
//! [`local::LocalStore`]; AWS mode adds Secrets Manager behind the same trait.

use async_trait::async_trait;
use time::OffsetDateTime;
use zeroize::Zeroizing;

pub mod local;
pub mod secrets_manager;

/// The stage of the version that encrypts.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The stage Secrets Manager gives the version that was current before.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The stage of a version being rotated in.
pub const AWSPENDING: &str = "AWSPENDING";

/// The prefix of the staging label that pins a version: Secrets Manager may
/// delete a version with no label once a secret has more than 100 versions,
/// and records may name any version until it is retired, so every version
/// Envelope creates carries `envelope-pin-<version id>` until retirement.
/// Secrets Manager allows 20 labels per secret, which bounds how many
/// versions can stay pinned (retire old ones after rewrapping).
pub const PIN_PREFIX: &str = "envelope-pin-";

/// The pin label of `version`.
pub fn pin_label(version: &str) -> String {
    format!("{PIN_PREFIX}{version}")
}

/// The prefix of the staging label that marks a version compromised
/// (`envelope-compromised-<version id>`, written by `Admin/MarkCompromised`):
/// every replica reads it at its next refresh and never encrypts under the
/// version again, nor decrypts its records except to re-encrypt them. A
/// writer of the secret could remove the label, so the key's
/// `compromised_versions` setting says the same where the secret's writers
/// cannot reach (docs/ROTATION.md, "A compromised version").
pub const COMPROMISED_PREFIX: &str = "envelope-compromised-";

/// The compromise label of `version`.
pub fn compromised_label(version: &str) -> String {
    format!("{COMPROMISED_PREFIX}{version}")
}

/// One version of a secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version id.
    pub id: String,
    /// Its staging labels.
    pub stages: Vec<String>,
    /// When it was created, if the store reports it (DescribeSecret does not).
    pub created: Option<OffsetDateTime>,
}

impl VersionInfo {
    /// Whether the version carries `stage`.
    pub fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// One version with its value. The value is wiped on drop and never printed.
pub struct SecretValue {
    /// The version.
    pub info: VersionInfo,
    /// The secret string.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("info", &self.info)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

/// Secret-store failures; messages name the secret and version, never a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such secret.
    #[error("secret {secret} not found")]
    SecretNotFound {
        /// Secret id.
        secret: String,
    },
    /// No such version of the secret.
    #[error("version {version} of secret {secret} not found")]
    VersionNotFound {
        /// Secret id.
        secret: String,
        /// Version id.
        version: String,
    },
    /// The request conflicts with the secret's state (a version id reused
    /// with another value, or a stage moved from the wrong version).
    #[error("secret {secret}: {reason}")]
    Conflict {
        /// Secret id.
        secret: String,
        /// What conflicts.
        reason: String,
    },
    /// No credentials, or credentials AWS does not accept (expired, unknown).
    #[error("no usable AWS credentials to reach secret {secret}: {reason}")]
    Credentials {
        /// Secret id.
        secret: String,
        /// Why: none found, or the service's answer.
        reason: String,
    },
    /// The secret is scheduled for deletion.
    #[error("secret {secret} is scheduled for deletion")]
    ScheduledForDeletion {
        /// Secret id.
        secret: String,
    },
    /// The caller may not read or write the secret.
    #[error("access denied to secret {secret}: {message}")]
    AccessDenied {
        /// Secret id.
        secret: String,
        /// The service's message.
        message: String,
    },
    /// The service throttled the request.
    #[error("secret {secret}: request throttled: {message}")]
    Throttled {
        /// Secret id.
        secret: String,
        /// The service's message.
        message: String,
    },
    /// The secret could not be read or written.
    #[error("secret {secret} unavailable: {reason}")]
    Unavailable {
        /// Secret id.
        secret: String,
        /// Why (an I/O or service error, never a value).
        reason: String,
    },
    /// Secrets Manager refused a parameter of the request (a badly formed
    /// secret id) or a quota was reached.
    #[error("Secrets Manager refused the request for secret {secret}: {reason}")]
    Refused {
        /// Secret id.
        secret: String,
        /// The service's answer.
        reason: String,
    },
    /// The stored secret is not in a shape we can read.
    #[error("secret {secret} is malformed: {reason}")]
    Malformed {
        /// Secret id.
        secret: String,
        /// What is wrong (never the value).
        reason: String,
    },
}

/// The secret-store seam.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// Every version of the secret with its stages (DescribeSecret).
    async fn describe(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError>;
    /// One version's value by id (GetSecretValue with VersionId).
    async fn get(&self, secret_id: &str, version_id: &str) -> Result<SecretValue, StoreError>;
    /// The value of the version carrying `stage` (GetSecretValue with VersionStage).
    async fn get_stage(&self, secret_id: &str, stage: &str) -> Result<SecretValue, StoreError>;
    /// The Envelope key name a secret belongs to, for callers that know only
    /// the secret (the rotation Lambda): the secret's `envelope:key` tag in
    /// Secrets Manager (required there), the secret id in the local store.
    async fn key_name(&self, secret_id: &str) -> Result<String, StoreError> {
        Ok(secret_id.to_owned())
    }
    /// Adds a version (PutSecretValue with ClientRequestToken). Idempotent:
    /// the same id with the same value changes nothing; with another value
    /// it is a conflict. Creates the secret if needed. `stages` move to the
    /// new version.
    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), StoreError>;
    /// Adds the secret's first version (as [`SecretStore::put`], with
    /// AWSCURRENT among `stages`) unless a version already carries
    /// AWSCURRENT; says whether it did. Two processes making the first
    /// version at once must not both succeed: the local store checks and
    /// writes under its lock; Secrets Manager's CreateSecret refuses the
    /// second creator of a new secret (a conflict).
    async fn put_first(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<bool, StoreError> {
        match self.describe(secret_id).await {
            Ok(v) if v.iter().any(|v| v.has(AWSCURRENT)) => return Ok(false),
            Ok(_) | Err(StoreError::SecretNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.put(secret_id, version_id, value, stages).await?;
        Ok(true)
    }
    /// Moves `stage` to `move_to` and/or removes it from `remove_from`
    /// (UpdateSecretVersionStage). Moving AWSCURRENT labels the version that
    /// held it AWSPREVIOUS, as Secrets Manager does.
    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), StoreError>;
}
