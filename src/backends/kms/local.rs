//! A local KMS over a root key file, standing in for AWS KMS in local mode.
//!
//! Blob: `0x01 || nonce(12) || AES-256-GCM(root, key)(32) || tag(16)` with the
//! canonical encoding of the KMS context as associated data.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{GeneratedKey, Kms, KmsContext, KmsError};
use crate::primitives::crypto::{AeadKey, KEY_LEN, KeyBytes};
use crate::primitives::wrap::{self, WRAPPED_LEN};

const BLOB_V1: u8 = 0x01;
const BLOB_LEN: usize = 1 + WRAPPED_LEN;

/// A KMS whose root key is a 32-byte file with owner-only permissions.
pub struct LocalKms {
    root: AeadKey,
    path: String,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalKms {
    /// Opens the root key at `path`, creating it (mode 0600) if absent.
    pub fn open_or_create(path: &Path) -> Result<Self, KmsError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => {
                check_private(path)?;
                zeroize::Zeroizing::new(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyBytes::random()?;
                let created = crate::backends::private_files::create_private(path, key.expose())
                    .map_err(|e| {
                        KmsError::RootKey(format!("cannot create {}: {e}", path.display()))
                    })?;
                if created {
                    zeroize::Zeroizing::new(key.expose().to_vec())
                } else {
                    // Another process created it first: use theirs.
                    zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
                        KmsError::RootKey(format!("cannot read {}: {e}", path.display()))
                    })?)
                }
            }
            Err(e) => {
                return Err(KmsError::RootKey(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let key = KeyBytes::from_slice(&bytes).map_err(|_| {
            KmsError::RootKey(format!(
                "{} must hold exactly {KEY_LEN} bytes",
                path.display()
            ))
        })?;
        Ok(Self {
            root: AeadKey::new(&key)?,
            path: PathBuf::from(path).display().to_string(),
        })
    }

    fn aad(context: &KmsContext) -> Vec<u8> {
        let mut aad = b"envelope.local-kms.v1\0".to_vec();
        crate::primitives::context::encode_into(context, &mut aad);
        aad
    }
}

/// Refuses a root key file that is not the running user's or that group
/// or others may read, as ssh does.
fn check_private(path: &Path) -> Result<(), KmsError> {
    crate::backends::private_files::check_private(path).map_err(KmsError::RootKey)
}

#[async_trait]
impl Kms for LocalKms {
    async fn generate_data_key(&self, context: &KmsContext) -> Result<GeneratedKey, KmsError> {
        let plaintext = KeyBytes::random()?;
        let wrapped = wrap::wrap(&self.root, &plaintext, &Self::aad(context))?;
        let mut blob = Vec::with_capacity(BLOB_LEN);
        blob.push(BLOB_V1);
        blob.extend_from_slice(&wrapped);
        Ok(GeneratedKey { plaintext, blob })
    }

    async fn decrypt(
        &self,
        blob: &[u8],
        context: &KmsContext,
        _key_id: Option<&str>,
    ) -> Result<KeyBytes, KmsError> {
        if blob.len() != BLOB_LEN || blob.first() != Some(&BLOB_V1) {
            return Err(KmsError::DecryptFailed);
        }
        let wrapped = blob.get(1..).unwrap_or_default();
        wrap::unwrap(&self.root, wrapped, &Self::aad(context)).map_err(|_| KmsError::DecryptFailed)
    }

    fn key_id(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root.key")).unwrap();
        let mut ctx = KmsContext::new();
        ctx.insert("k".into(), "v".into());
        let g = kms.generate_data_key(&ctx).await.unwrap();
        let back = kms.decrypt(&g.blob, &ctx, None).await.unwrap();
        assert_eq!(back.expose(), g.plaintext.expose());
        ctx.insert("k".into(), "w".into());
        // FORMAT.md's load-failure reason, word for word.
        let e = kms.decrypt(&g.blob, &ctx, None).await.unwrap_err();
        assert!(matches!(e, KmsError::DecryptFailed), "{e:?}");
        assert_eq!(
            e.to_string(),
            "KMS could not decrypt the key blob (wrong KMS key, wrong encryption context, or damaged blob)"
        );
        // Reopening reads the same root key.
        let again = LocalKms::open_or_create(&dir.path().join("root.key")).unwrap();
        ctx.insert("k".into(), "v".into());
        assert!(again.decrypt(&g.blob, &ctx, None).await.is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join("root.key");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = LocalKms::open_or_create(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
    }
}
