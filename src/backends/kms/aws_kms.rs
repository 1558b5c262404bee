//! AWS KMS behind the [`Kms`] seam.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use super::{GeneratedKey, Kms, KmsContext, KmsError};
use crate::backends::aws_sdk::{Failure, NO_CREDENTIALS, classify};
use crate::primitives::crypto::KeyBytes;

/// KMS through the AWS SDK, with one KMS key (id, ARN or alias) for new
/// master keys, and the keys a master key may be wrapped by.
#[derive(Debug)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_id: String,
    /// The allowed keys as configured (`key_id` alone when empty).
    allowed: Vec<String>,
    /// … as ARNs, resolved with DescribeKey at the first Decrypt.
    allowed_arns: tokio::sync::OnceCell<Vec<String>>,
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
            allowed: vec![key_id.clone()],
            key_id,
            allowed_arns: tokio::sync::OnceCell::new(),
        }
    }

    /// Accepts master keys wrapped by these KMS keys (ids, ARNs or aliases)
    /// instead of `key_id` alone.
    pub fn allowing(mut self, keys: &[String]) -> Self {
        if !keys.is_empty() {
            self.allowed = keys.to_vec();
        }
        self
    }

    /// The allowed keys' ARNs (DescribeKey once, then remembered).
    async fn allowed_arns(&self) -> Result<&[String], KmsError> {
        let arns = self
            .allowed_arns
            .get_or_try_init(|| async {
                let mut arns = Vec::with_capacity(self.allowed.len());
                for id in &self.allowed {
                    let out = self
                        .client
                        .describe_key()
                        .key_id(id)
                        .send()
                        .await
                        .map_err(|e| {
                            let failed = error(id, classify(&e));
                            if self.allowed == [self.key_id.clone()] {
                                failed
                            } else {
                                KmsError::AllowedKey(format!("{id}: {failed}"))
                            }
                        })?;
                    let arn = out
                        .key_metadata()
                        .and_then(|m| m.arn())
                        .ok_or_else(|| KmsError::NotFound(format!("KMS key {id}: no ARN")))?;
                    arns.push(arn.to_owned());
                }
                Ok::<_, KmsError>(arns)
            })
            .await?;
        Ok(arns)
    }
}

fn context(ctx: &KmsContext) -> Option<HashMap<String, String>> {
    Some(ctx.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn error(key_id: &str, f: Failure) -> KmsError {
    match f {
        Failure::NoCredentials => KmsError::Credentials(NO_CREDENTIALS.into()),
        Failure::BadCredentials(m) => KmsError::Credentials(m),
        Failure::AccessDenied(m) => KmsError::AccessDenied(format!("KMS key {key_id}: {m}")),
        Failure::KeyState(m) => KmsError::KeyUnusable(format!("KMS key {key_id}: {m}")),
        Failure::Unreachable(m) => {
            KmsError::Unavailable(format!("KMS key {key_id}: no connection to KMS: {m}"))
        }
        Failure::NotFound(m) => KmsError::NotFound(format!("KMS key {key_id}: {m}")),
        Failure::Throttled(m) => KmsError::Throttled(format!("KMS key {key_id}: {m}")),
        Failure::InvalidCiphertext(_) => KmsError::DecryptFailed,
        Failure::Invalid(m)
        | Failure::Deleted(m)
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
        // The document names the key to decrypt with, and a writer of the
        // secret could name one of their own: only the allowed keys count.
        let used = out.key_id().unwrap_or_default();
        if !self.allowed_arns().await?.iter().any(|a| a == used) {
            return Err(KmsError::NotAllowed(used.to_owned()));
        }
        let plaintext = out
            .plaintext()
            .ok_or_else(|| KmsError::Unavailable("KMS Decrypt returned no plaintext".into()))?;
        Ok(KeyBytes::from_slice(plaintext.as_ref())?)
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }
}
