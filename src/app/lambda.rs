//! The rotation handler that Secrets Manager's RotateSecret invokes (the
//! `envelope-rotation-lambda` binary wraps it in `lambda_runtime`). It runs
//! the same four-step library as the CLI and the Admin RPC.

use serde::Deserialize;

use crate::app::startup::Backends;
use crate::keys::error::Error;
use crate::keys::rotation::Rotator;

/// The event Secrets Manager sends a rotation function.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    /// The secret's ARN (or name).
    pub secret_id: String,
    /// The new version's id.
    pub client_request_token: String,
    /// createSecret, setSecret, testSecret or finishSecret.
    pub step: String,
}

/// Runs one step. The key name (bound into the KMS encryption context of
/// the new master key) comes from the secret's `envelope:key` tag; a secret
/// without it is refused.
pub async fn handle(event: &RotationEvent, backends: &Backends) -> Result<(), Error> {
    let step = event.step.parse()?;
    let key_name = backends.store.key_name(&event.secret_id).await?;
    if !crate::app::config::valid_key_name(&key_name) {
        return Err(Error::UnknownKey(key_name));
    }
    let rotator = Rotator {
        store: backends.store.as_ref(),
        kms: backends.kms.as_ref(),
        key_name: &key_name,
        secret_id: &event.secret_id,
    };
    rotator.step(step, &event.client_request_token).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_event_secrets_manager_sends() {
        let e: RotationEvent = serde_json::from_str(
            r#"{"Step":"createSecret","SecretId":"arn:aws:secretsmanager:us-east-1:111122223333:secret:envelope/pii-AbCdEf","ClientRequestToken":"0e1b2f1c-7b5e-4a55-9d8c-1c2d3e4f5a6b","RotationToken":"x"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.step, "createSecret");
        assert!(e.secret_id.ends_with("envelope/pii-AbCdEf"));
    }
}
