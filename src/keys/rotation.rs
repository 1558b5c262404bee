//! Master-key rotation in Secrets Manager's four steps. One library behind
//! every entry point (Admin RPC and CLI now; the Lambda handler later), run
//! over the [`SecretStore`] and [`Kms`] seams so local mode rotates exactly
//! as AWS mode does. A failure at any step leaves AWSCURRENT where it was.

use std::str::FromStr;

use crate::backends::kms::{Kms, KmsError};
use crate::backends::store::{
    AWSCURRENT, AWSPENDING, SecretStore, StoreError, VersionInfo, pin_label,
};
use crate::keys::master_key::{self, MasterKeyError};
use crate::primitives::crypto::{AeadKey, KeyBytes, constant_time_eq, random_nonce, random_uuid};
use crate::primitives::wrap;

/// A rotation step, named as Secrets Manager names them in its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create the new version as AWSPENDING.
    CreateSecret,
    /// Update downstream systems (none for a master key).
    SetSecret,
    /// Check the pending version works.
    TestSecret,
    /// Make the pending version AWSCURRENT.
    FinishSecret,
}

impl FromStr for Step {
    type Err = RotationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "createSecret" => Ok(Step::CreateSecret),
            "setSecret" => Ok(Step::SetSecret),
            "testSecret" => Ok(Step::TestSecret),
            "finishSecret" => Ok(Step::FinishSecret),
            other => Err(RotationError::UnknownStep(other.chars().take(32).collect())),
        }
    }
}

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Not one of the four steps.
    #[error(
        "unknown rotation step {0:?}; expected createSecret, setSecret, testSecret or finishSecret"
    )]
    UnknownStep(String),
    /// The secret has no AWSCURRENT version to rotate from.
    #[error("secret {0} has no AWSCURRENT version")]
    NoCurrent(String),
    /// The token names no version of the secret.
    #[error("secret {secret} has no version {token}; run createSecret first")]
    NoSuchToken {
        /// Secret id.
        secret: String,
        /// The rotation token.
        token: String,
    },
    /// The token's version is neither AWSPENDING nor AWSCURRENT.
    #[error("version {token} of secret {secret} is not AWSPENDING")]
    NotPending {
        /// Secret id.
        secret: String,
        /// The rotation token.
        token: String,
    },
    /// The token's version is marked compromised: no step uses it.
    #[error(
        "version {token} of secret {secret} is marked compromised; no rotation step tests or promotes it"
    )]
    Marked {
        /// Secret id.
        secret: String,
        /// The rotation token.
        token: String,
    },
    /// The pending version failed its probe.
    #[error("testSecret failed for version {token} of secret {secret}: {reason}")]
    TestFailed {
        /// Secret id.
        secret: String,
        /// The rotation token.
        token: String,
        /// What failed.
        reason: String,
    },
    /// The secret store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// KMS failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The pending version could not be read.
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
}

/// Runs rotation steps for one key name.
pub struct Rotator<'a> {
    /// The store holding the key's secret.
    pub store: &'a dyn SecretStore,
    /// The KMS wrapping master keys.
    pub kms: &'a dyn Kms,
    /// The key name.
    pub key_name: &'a str,
    /// Its secret id.
    pub secret_id: &'a str,
}

impl Rotator<'_> {
    /// Runs one step for `token`.
    pub async fn step(&self, step: Step, token: &str) -> Result<(), RotationError> {
        let r = match step {
            Step::CreateSecret => self.create_secret(token).await,
            Step::SetSecret => self.set_secret(token).await,
            Step::TestSecret => self.test_secret(token).await,
            Step::FinishSecret => self.finish_secret(token).await,
        };
        match &r {
            Ok(()) => {
                tracing::info!(key = %self.key_name, secret = %self.secret_id, ?step, token, "rotation step done")
            }
            Err(e) => {
                tracing::error!(key = %self.key_name, secret = %self.secret_id, ?step, token, error = %e, "rotation step failed")
            }
        }
        r
    }

    /// All four steps with a fresh token; returns (previous, new) AWSCURRENT ids.
    pub async fn rotate(&self) -> Result<(String, String), RotationError> {
        let previous = self.current().await?.id;
        let token = random_uuid().map_err(KmsError::from)?.to_string();
        for step in [
            Step::CreateSecret,
            Step::SetSecret,
            Step::TestSecret,
            Step::FinishSecret,
        ] {
            self.step(step, &token).await?;
        }
        Ok((previous, token))
    }

    async fn versions(&self) -> Result<Vec<VersionInfo>, RotationError> {
        Ok(self.store.describe(self.secret_id).await?)
    }

    async fn current(&self) -> Result<VersionInfo, RotationError> {
        self.versions()
            .await?
            .into_iter()
            .find(|v| v.has(AWSCURRENT))
            .ok_or_else(|| RotationError::NoCurrent(self.secret_id.to_owned()))
    }

    /// createSecret: a new master key from KMS, stored KMS-wrapped as
    /// AWSPENDING under the token. A retry with the same token changes nothing.
    pub async fn create_secret(&self, token: &str) -> Result<(), RotationError> {
        let versions = self.versions().await?;
        if !versions.iter().any(|v| v.has(AWSCURRENT)) {
            return Err(RotationError::NoCurrent(self.secret_id.to_owned()));
        }
        if versions.iter().any(|v| v.id == token) {
            return Ok(());
        }
        let value = zeroize::Zeroizing::new(
            master_key::new_secret_value(self.key_name, token, self.kms).await?,
        );
        self.store
            .put(
                self.secret_id,
                token,
                &value,
                &[AWSPENDING, &pin_label(token)],
            )
            .await?;
        Ok(())
    }

    /// setSecret: a master key has no downstream system to update (only
    /// Envelope uses it, and reads it from this very secret), so this step
    /// only checks that the token's version exists and is pending.
    pub async fn set_secret(&self, token: &str) -> Result<(), RotationError> {
        self.pending(token).await.map(|_| ())
    }

    async fn pending(&self, token: &str) -> Result<VersionInfo, RotationError> {
        let versions = self.versions().await?;
        // A version marked compromised is never tested good nor promoted.
        let label = crate::backends::store::compromised_label(token);
        if versions.iter().any(|v| v.has(&label)) {
            return Err(RotationError::Marked {
                secret: self.secret_id.to_owned(),
                token: token.to_owned(),
            });
        }
        let v = versions
            .into_iter()
            .find(|v| v.id == token)
            .ok_or_else(|| RotationError::NoSuchToken {
                secret: self.secret_id.to_owned(),
                token: token.to_owned(),
            })?;
        if !v.has(AWSPENDING) && !v.has(AWSCURRENT) {
            return Err(RotationError::NotPending {
                secret: self.secret_id.to_owned(),
                token: token.to_owned(),
            });
        }
        Ok(v)
    }

    /// testSecret: loads the pending version, wraps and unwraps a probe data
    /// key with it, and seals and opens a probe record under that data key.
    pub async fn test_secret(&self, token: &str) -> Result<(), RotationError> {
        self.pending(token).await?;
        self.check_key_name().await?;
        let value = self.store.get(self.secret_id, token).await?;
        let master = master_key::load(
            self.key_name,
            self.secret_id,
            value.info.clone(),
            &value.value,
            self.kms,
            &master_key::KdfParams::default(),
        )
        .await?;
        let failed = |reason: &str| RotationError::TestFailed {
            secret: self.secret_id.to_owned(),
            token: token.to_owned(),
            reason: reason.to_owned(),
        };
        let probe_key = KeyBytes::random().map_err(|_| failed("random generator"))?;
        let aad = b"envelope.v1/rotation-probe";
        let wrapped = wrap::wrap(&master.kek, &probe_key, aad).map_err(|_| failed("wrap"))?;
        let unwrapped = wrap::unwrap(&master.kek, &wrapped, aad)
            .map_err(|_| failed("unwrap of a data key it wrapped"))?;
        if !constant_time_eq(unwrapped.expose(), probe_key.expose()) {
            return Err(failed("unwrapped data key differs"));
        }
        let nonce = random_nonce().map_err(|_| failed("random generator"))?;
        let dk = AeadKey::new(&probe_key).map_err(|_| failed("data key"))?;
        let mut record = *b"envelope rotation probe record..";
        let tag = dk
            .seal(nonce, aad, &mut record)
            .map_err(|_| failed("seal probe record"))?;
        let mut opened = [0u8; 32];
        dk.open(nonce, aad, &record, &tag, &mut opened)
            .map_err(|_| failed("open probe record"))?;
        if &opened != b"envelope rotation probe record.." {
            return Err(failed("probe record differs"));
        }
        Ok(())
    }

    /// Guards against rotating under the wrong key name: if AWSCURRENT is in
    /// Envelope's own shape it is bound to its key name, so it must load
    /// under ours. (Seed shapes bind no name and are not checked.)
    async fn check_key_name(&self) -> Result<(), RotationError> {
        let current = self.current().await?;
        let value = self.store.get(self.secret_id, &current.id).await?;
        if !master_key::is_envelope_shape(&value.value) {
            return Ok(());
        }
        master_key::load(
            self.key_name,
            self.secret_id,
            value.info.clone(),
            &value.value,
            self.kms,
            &master_key::KdfParams::default(),
        )
        .await
        .map_err(|e| RotationError::TestFailed {
            secret: self.secret_id.to_owned(),
            token: current.id.clone(),
            reason: format!(
                "AWSCURRENT does not load as key {:?}; is that the right key name? ({e})",
                self.key_name
            ),
        })?;
        Ok(())
    }

    /// finishSecret: moves AWSCURRENT to the token's version (the old one
    /// becomes AWSPREVIOUS) and removes AWSPENDING. Idempotent.
    pub async fn finish_secret(&self, token: &str) -> Result<(), RotationError> {
        let target = self.pending(token).await?;
        if !target.has(AWSCURRENT) {
            // Steps may be run by hand: never promote a version that fails the probe.
            self.test_secret(token).await?;
            let current = self.current().await?;
            self.store
                .update_stage(self.secret_id, AWSCURRENT, Some(token), Some(&current.id))
                .await?;
        }
        if target.has(AWSPENDING) {
            self.store
                .update_stage(self.secret_id, AWSPENDING, None, Some(token))
                .await?;
        }
        Ok(())
    }
}

/// Creates a key's first version (AWSCURRENT) if its secret has none. Local
/// mode calls this at start; AWS mode never does (it refuses to serve
/// without the secret). Returns whether a version was created.
pub async fn ensure_initial_version(
    store: &dyn SecretStore,
    kms: &dyn Kms,
    key_name: &str,
    secret_id: &str,
) -> Result<bool, RotationError> {
    match store.describe(secret_id).await {
        Ok(v) if v.iter().any(|v| v.has(AWSCURRENT)) => return Ok(false),
        Ok(_) | Err(StoreError::SecretNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let token = random_uuid().map_err(KmsError::from)?.to_string();
    let value = zeroize::Zeroizing::new(master_key::new_secret_value(key_name, &token, kms).await?);
    match store
        .put_first(secret_id, &token, &value, &[AWSCURRENT, &pin_label(&token)])
        .await
    {
        Ok(made) => Ok(made),
        // Another process created the secret first (Secrets Manager's
        // CreateSecret): theirs is the first version if it has AWSCURRENT.
        Err(StoreError::Conflict { .. })
            if store
                .describe(secret_id)
                .await
                .is_ok_and(|v| v.iter().any(|v| v.has(AWSCURRENT))) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
