//! AWS KMS behind the [`Kms`] seam.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use super::{GeneratedKey, Kms, KmsContext, KmsError};
use crate::backends::aws_sdk::{Failure, classify};
use crate::primitives::crypto::KeyBytes;

/// KMS through the AWS SDK, with one KMS key (id, ARN or alias).
#[derive(Debug)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl AwsKms {
    /// A KMS client for `key_id` from a loaded SDK configuration, optionally
    /// at its own endpoint (an interface VPC endpoint for KMS).
    pub fn new(sdk: &aws_config::SdkConfig, key_id: String) -> Self {
        Self::with_endpoint(sdk, key_id, None)
    }

    /// As [`AwsKms::new`], with a KMS-specific endpoint.
    pub fn with_endpoint(
        sdk: &aws_config::SdkConfig,
        key_id: String,
        endpoint: Option<&str>,
    ) -> Self {
        let mut conf = aws_sdk_kms::config::Builder::from(sdk);
        if let Some(url) = endpoint {
            conf = conf.endpoint_url(url);
        }
        Self {
            client: aws_sdk_kms::Client::from_conf(conf.build()),
            key_id,
        }
    }
}

fn context(ctx: &KmsContext) -> Option<HashMap<String, String>> {
    Some(ctx.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn error(key_id: &str, f: Failure) -> KmsError {
    match f {
        Failure::AccessDenied(m) => KmsError::AccessDenied(format!("KMS key {key_id}: {m}")),
        Failure::NotFound(m) => KmsError::NotFound(format!("KMS key {key_id}: {m}")),
        Failure::Throttled(m) => KmsError::Throttled(format!("KMS key {key_id}: {m}")),
        Failure::InvalidCiphertext(_) => KmsError::DecryptFailed,
        Failure::Invalid(m)
        | Failure::Conflict(m)
        | Failure::Unavailable(m)
        | Failure::Other(m) => KmsError::Unavailable(format!("KMS key {key_id}: {m}")),
    }
}

#[async_trait]
impl Kms for AwsKms {
    async fn generate_data_key(&self, ctx: &KmsContext) -> Result<GeneratedKey, KmsError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context(ctx))
            .send()
            .await
            .map_err(|e| error(&self.key_id, classify(&e)))?;
        let plaintext = out.plaintext().ok_or_else(|| {
            KmsError::Unavailable("KMS GenerateDataKey returned no plaintext".into())
        })?;
        let plaintext = KeyBytes::from_slice(plaintext.as_ref())?;
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| {
                KmsError::Unavailable("KMS GenerateDataKey returned no ciphertext".into())
            })?
            .as_ref()
            .to_vec();
        Ok(GeneratedKey { plaintext, blob })
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        ctx: &KmsContext,
        key_id: Option<&str>,
    ) -> Result<KeyBytes, KmsError> {
        let key_id = key_id.filter(|k| !k.is_empty()).unwrap_or(&self.key_id);
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(context(ctx))
            .send()
            .await
            .map_err(|e| error(key_id, classify(&e)))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| KmsError::Unavailable("KMS Decrypt returned no plaintext".into()))?;
        Ok(KeyBytes::from_slice(plaintext.as_ref())?)
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }
}
