//! Commands that act on the secret store and KMS directly, with no server:
//! `init-keys`, and `rotate --config` (all four steps, or one).

use super::config::Settings;
use super::startup::{self, ServeError};
use crate::keys::rotation::{RotationError, Rotator};

/// Creates the first master-key version of every configured key that has
/// none, and prints each key's state.
pub async fn init_keys(settings: &Settings) -> Result<(), ServeError> {
    let backends = startup::open_backends(settings).await?;
    // Each key as it is done, so that after a failure the output says which
    // keys went through before it.
    startup::init_keys(settings, &backends, |name, made| {
        println!("{name}: {}", if made { "created" } else { "exists" });
    })
    .await?;
    Ok(())
}

/// Why a direct rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectRotationError {
    /// The key is not configured.
    #[error("key {0:?} is not in the configuration")]
    UnknownKey(String),
    /// The backends could not be opened.
    #[error(transparent)]
    Start(#[from] ServeError),
    /// A step failed; AWSCURRENT is unchanged.
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// Rotates `key` against the configured backends: all four steps, or the
/// one `step` for the version `token`. Prints what it did.
pub async fn rotate(
    settings: &Settings,
    key: &str,
    step: Option<(String, String)>,
) -> Result<(), DirectRotationError> {
    let k = settings
        .keys
        .iter()
        .find(|k| k.name == key)
        .ok_or_else(|| DirectRotationError::UnknownKey(key.to_owned()))?;
    let secret_id = k.secret_id();
    let backends = startup::open_backends(settings).await?;
    let rotator = Rotator {
        store: backends.store.as_ref(),
        kms: backends.kms.as_ref(),
        key_name: key,
        secret_id: &secret_id,
    };
    match step {
        Some((step, token)) => {
            rotator.step(step.parse()?, &token).await?;
            println!("{step}: done");
        }
        None => {
            let (previous, current) = rotator.rotate().await?;
            println!("previous_version: {previous}\ncurrent_version: {current}");
        }
    }
    Ok(())
}
