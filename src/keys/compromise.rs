//! A master-key version known to be compromised: marked in the secret store
//! (and by configuration), never encrypted under again, and its records
//! refused by Decrypt — whoever holds the version can forge them — except
//! by re-encryption, which seals each one again under a fresh data key of
//! the current version. docs/ROTATION.md, "A compromised version", is the
//! runbook.

use time::OffsetDateTime;

use super::error::Error;
use super::named_key::NamedKey;
use crate::backends::store::{AWSCURRENT, AWSPENDING, compromised_label};
use crate::primitives::record::VersionId;

/// What a record's master-key version is about to be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// Decrypt, DecryptBatch, a column, UnwrapDataKey.
    Open,
    /// Opened to be sealed again under a fresh data key.
    Reencrypt,
    /// The data key wrapped again, the payload kept.
    Rewrap,
    /// A new data key wrapped under it, to encrypt.
    Seal,
}

const OPEN_REFUSED: &str = "its records can be forged by whoever holds it, so Decrypt refuses them; \
     re-encrypt them (envelope migrate, or ReencryptBatch) or, for a migration window, set \
     allow_compromised_decrypts on the key";
const REWRAP_REFUSED: &str = "rewrapping keeps a data key that whoever holds the version can \
     unwrap; re-encrypt instead (ReencryptBatch, or envelope migrate)";
const SEAL_REFUSED: &str = "nothing is encrypted under it; rotate so that another version is \
     AWSCURRENT";

impl NamedKey {
    /// Checks that the version named `version` (created at `created`) may
    /// be used for `usage`: not retired, and not compromised unless the
    /// use is re-encryption (or a decrypt the key allows). Returns whether
    /// the version is compromised, for the caller to count each record it
    /// then opens; a refused record is counted here.
    pub(super) fn check_use(
        &self,
        version: &str,
        created: Option<OffsetDateTime>,
        usage: Use,
    ) -> Result<bool, Error> {
        self.check_retired(version, created)?;
        if !self.versions.is_compromised(version) {
            return Ok(false);
        }
        let refused = match usage {
            Use::Reencrypt => return Ok(true),
            Use::Open if self.source.allow_compromised_decrypts => return Ok(true),
            Use::Open => OPEN_REFUSED,
            Use::Rewrap => REWRAP_REFUSED,
            Use::Seal => SEAL_REFUSED,
        };
        if usage != Use::Seal {
            self.usage
                .of(version)
                .compromised(super::usage::Outcome::Refused, 1);
        }
        Err(Error::Compromised {
            key: self.source.name.clone(),
            version: version.to_owned(),
            refused,
        })
    }

    /// Refuses when AWSCURRENT may not seal (compromised or retired).
    pub(super) fn check_sealable(&self) -> Result<(), Error> {
        let current = self.versions.current();
        self.check_use(current.version.as_str(), current.created, Use::Seal)
            .map(|_| ())
    }

    /// Versions marked compromised (labels, configuration, and marks this
    /// process has seen), sorted.
    pub fn compromised_versions(&self) -> Vec<String> {
        self.snapshot().compromised.clone()
    }

    /// Whether `version` is marked compromised.
    pub fn is_compromised(&self, version: &str) -> bool {
        self.versions.is_compromised(version)
    }

    /// Whether Decrypt may open records under compromised versions.
    pub fn allows_compromised_decrypts(&self) -> bool {
        self.source.allow_compromised_decrypts
    }

    /// Marks `version` compromised: labels it in the secret store (which
    /// every replica reads at its next refresh), takes AWSPENDING from it,
    /// and rotates at once if it is AWSCURRENT. Idempotent. Returns the
    /// AWSCURRENT version afterwards.
    pub async fn mark_compromised(&self, version: &str) -> Result<String, Error> {
        VersionId::new(version).map_err(|_| Error::VersionNotFound {
            key: self.source.name.clone(),
            version: version.chars().take(64).collect(),
        })?;
        let (store, secret) = (self.source.store.as_ref(), self.source.secret_id.as_str());
        let infos = store.describe(secret).await?;
        let info =
            infos
                .iter()
                .find(|i| i.id == version)
                .ok_or_else(|| Error::VersionNotFound {
                    key: self.source.name.clone(),
                    version: version.to_owned(),
                })?;
        // The label first: if the rotation below fails, replicas still stop
        // encrypting under the version at their next refresh.
        let label = compromised_label(version);
        if !info.has(&label) {
            store
                .update_stage(secret, &label, Some(version), None)
                .await?;
        }
        if info.has(AWSPENDING) {
            // A rotation in flight must not finish onto it (finishSecret
            // also refuses a marked version).
            store
                .update_stage(secret, AWSPENDING, None, Some(version))
                .await?;
        }
        tracing::warn!(key = %self.source.name, version, "master-key version marked compromised");
        // This replica stops sealing under it now, not at its next refresh.
        let refreshed = self.refresh().await;
        // Read again: a rotation that finished meanwhile may have moved AWSCURRENT.
        let now_current = store
            .describe(secret)
            .await?
            .iter()
            .any(|i| i.id == version && i.has(AWSCURRENT));
        if now_current {
            self.rotate().await?;
        } else {
            refreshed?;
        }
        Ok(self.versions.current().version.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests;
