//! Decorators that time and count every secret-store and KMS call for the
//! metrics, whichever backend sits behind the seam.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backends::kms::{GeneratedKey, Kms, KmsContext, KmsError};
use crate::backends::store::{SecretStore, SecretValue, StoreError, VersionInfo};
use crate::ops::metrics::{timed, timed_with};
use crate::primitives::crypto::KeyBytes;

/// A KMS whose calls are metered.
#[derive(Debug)]
pub struct MeteredKms(pub Arc<dyn Kms>);

#[async_trait]
impl Kms for MeteredKms {
    async fn generate_data_key(&self, context: &KmsContext) -> Result<GeneratedKey, KmsError> {
        timed("kms", "GenerateDataKey", self.0.generate_data_key(context)).await
    }
    async fn decrypt(
        &self,
        blob: &[u8],
        context: &KmsContext,
        key_id: Option<&str>,
    ) -> Result<KeyBytes, KmsError> {
        timed("kms", "Decrypt", self.0.decrypt(blob, context, key_id)).await
    }
    fn key_id(&self) -> &str {
        self.0.key_id()
    }
}

/// A secret store whose calls are metered.
#[derive(Debug)]
pub struct MeteredStore(pub Arc<dyn SecretStore>);

#[async_trait]
impl SecretStore for MeteredStore {
    async fn describe(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        timed(
            "secretsmanager",
            "DescribeSecret",
            self.0.describe(secret_id),
        )
        .await
    }
    async fn get(&self, secret_id: &str, version_id: &str) -> Result<SecretValue, StoreError> {
        timed_with(
            "secretsmanager",
            "GetSecretValue",
            self.0.get(secret_id, version_id),
            |e| matches!(e, StoreError::VersionNotFound { .. }),
        )
        .await
    }
    async fn get_stage(&self, secret_id: &str, stage: &str) -> Result<SecretValue, StoreError> {
        timed(
            "secretsmanager",
            "GetSecretValue",
            self.0.get_stage(secret_id, stage),
        )
        .await
    }
    async fn key_name(&self, secret_id: &str) -> Result<String, StoreError> {
        timed(
            "secretsmanager",
            "DescribeSecret",
            self.0.key_name(secret_id),
        )
        .await
    }
    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), StoreError> {
        timed(
            "secretsmanager",
            "PutSecretValue",
            self.0.put(secret_id, version_id, value, stages),
        )
        .await
    }
    async fn put_first(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<bool, StoreError> {
        timed(
            "secretsmanager",
            "PutSecretValue",
            self.0.put_first(secret_id, version_id, value, stages),
        )
        .await
    }
    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), StoreError> {
        timed(
            "secretsmanager",
            "UpdateSecretVersionStage",
            self.0.update_stage(secret_id, stage, move_to, remove_from),
        )
        .await
    }
}
