//! The root of the key hierarchy: a KMS that generates data keys and
//! decrypts what it wrapped. Local mode uses [`local::LocalKms`]; AWS mode
//! adds an AWS KMS implementation behind the same trait.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::primitives::crypto::KeyBytes;

pub mod aws_kms;
pub mod local;

/// A KMS encryption context: bound to what the KMS wraps, required to unwrap.
pub type KmsContext = BTreeMap<String, String>;

/// A data key from the KMS: the plaintext key and the KMS's own wrapping of it.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The key bytes.
    pub plaintext: KeyBytes,
    /// The KMS ciphertext blob that [`Kms::decrypt`] turns back into the key.
    pub blob: Vec<u8>,
}

/// KMS failures. Messages never carry key bytes or blobs.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The blob did not decrypt: wrong root key, wrong context or damaged blob.
    #[error(
        "KMS could not decrypt the key blob (wrong KMS key, wrong encryption context, or damaged blob)"
    )]
    DecryptFailed,
    /// No credentials, or credentials AWS does not accept (expired, unknown).
    #[error("no usable AWS credentials for KMS: {0}")]
    Credentials(String),
    /// The KMS key is disabled, pending deletion or pending import.
    #[error("KMS key cannot be used: {0}")]
    KeyUnusable(String),
    /// The caller may not use the KMS key.
    #[error("KMS access denied: {0}")]
    AccessDenied(String),
    /// The KMS key does not exist.
    #[error("KMS key not found: {0}")]
    NotFound(String),
    /// KMS throttled the request.
    #[error("KMS throttled the request: {0}")]
    Throttled(String),
    /// KMS did not answer or failed.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// The master key was wrapped by a KMS key not on `aws.allowed_kms_keys`.
    #[error(
        "the master key was wrapped by KMS key {0}, which is not in aws.allowed_kms_keys; it is not used"
    )]
    NotAllowed(String),
    /// A key of `aws.allowed_kms_keys` could not be described (DescribeKey
    /// resolves each to its ARN once).
    /// (The key and KMS's answer, as text: not a source, so the answer's
    /// own fix does not win.)
    #[error("aws.allowed_kms_keys: cannot describe KMS key {0}")]
    AllowedKey(String),
    /// The root key could not be read or created.
    #[error("KMS root key unavailable: {0}")]
    RootKey(String),
    /// A cryptographic primitive failed.
    #[error("KMS primitive failed: {0}")]
    Crypto(#[from] crate::primitives::crypto::CryptoError),
}

/// The KMS seam.
#[async_trait]
pub trait Kms: Send + Sync + std::fmt::Debug {
    /// A fresh AES-256 data key bound to `context`.
    async fn generate_data_key(&self, context: &KmsContext) -> Result<GeneratedKey, KmsError>;
    /// Decrypts a blob from [`Kms::generate_data_key`] given the same context.
    /// `key_id` names the KMS key that made the blob, when known (it may differ
    /// from [`Kms::key_id`] after the configured key changes); `None` means ours.
    async fn decrypt(
        &self,
        blob: &[u8],
        context: &KmsContext,
        key_id: Option<&str>,
    ) -> Result<KeyBytes, KmsError>;
    /// The KMS key this instance uses (id, ARN, alias, or a local file path).
    fn key_id(&self) -> &str;
}
