//! Master-key versions: reading a version's secret string into a ready
//! key-encryption key (KEK), and writing new versions.
//!
//! Envelope's own secret shape stores the master key KMS-wrapped, so reading
//! the secret alone does not reveal it:
//! `{"format":"envelope.master-key.v1","algorithm":"AES-256-GCM","kmsKeyId":"…","wrappedKey":"<base64 KMS blob>"}`.
//! The KMS context names the key and version (`envelope:key`, `envelope:version`).
//! The KEK is derived once per version at load, never per request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::{AeadKey, KeyBytes, hkdf_sha256, pbkdf2_sha256};
use crate::envelope::VersionId;
use crate::kms::{Kms, KmsContext, KmsError};
use crate::store::VersionInfo;

/// The `format` value of Envelope's own secret shape.
pub const FORMAT: &str = "envelope.master-key.v1";
const ALGORITHM: &str = "AES-256-GCM";

/// Why a version could not be loaded. Names the secret and version, never the value.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The secret string is not a shape we read.
    #[error("secret {secret} version {version}: {reason}")]
    Malformed {
        /// Secret id.
        secret: String,
        /// Version id.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// KMS refused to unwrap the master key.
    #[error("secret {secret} version {version}: {source}")]
    Kms {
        /// Secret id.
        secret: String,
        /// Version id.
        version: String,
        /// The KMS failure.
        #[source]
        source: KmsError,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvelopeShape {
    format: String,
    algorithm: String,
    kms_key_id: String,
    wrapped_key: String,
}

/// How a version's KEK is derived from its secret.
pub enum Derivation<'a> {
    /// HKDF-SHA256 for full-entropy 32-byte keys.
    Hkdf,
    /// PBKDF2-HMAC-SHA256 for passphrase-style secrets (seeds 001 and 004).
    Pbkdf2 {
        /// The salt.
        salt: &'a [u8],
        /// The iteration count.
        iterations: u32,
    },
}

/// One loaded master-key version: its id, stages and KEK.
pub struct MasterKey {
    /// The version id, with its record encoding.
    pub version: VersionId,
    /// Staging labels when loaded.
    pub stages: Vec<String>,
    /// When the version was created.
    pub created: OffsetDateTime,
    /// The key-encryption key that wraps data keys.
    pub kek: AeadKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("stages", &self.stages)
            .field("kek", &"[REDACTED]")
            .finish()
    }
}

/// The KMS context that binds a master key to its key name and version.
pub fn kms_context(key_name: &str, version: &str) -> KmsContext {
    let mut ctx = KmsContext::new();
    ctx.insert("envelope:key".into(), key_name.into());
    ctx.insert("envelope:version".into(), version.into());
    ctx
}

/// Derives a version's KEK. HKDF binds the key name and version id, so the
/// same secret bytes under another name or version give an unrelated KEK.
pub fn derive_kek(
    secret: &[u8],
    derivation: Derivation<'_>,
    key_name: &str,
    version: &VersionId,
) -> Result<AeadKey, crate::crypto::CryptoError> {
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    match derivation {
        Derivation::Hkdf => hkdf_sha256(
            b"envelope.v1/kek",
            secret,
            &[&[key_name.len() as u8], key_name.as_bytes(), version.raw()],
            out.as_mut(),
        )?,
        Derivation::Pbkdf2 { salt, iterations } => {
            if iterations < crate::crypto::PBKDF2_MIN_ITERATIONS {
                return Err(crate::crypto::CryptoError::Primitive);
            }
            pbkdf2_sha256(secret, salt, iterations, out.as_mut())?
        }
    }
    AeadKey::new(&KeyBytes::from_slice(out.as_ref())?)
}

/// Reads a version's secret string into a [`MasterKey`].
pub async fn load(
    key_name: &str,
    secret_id: &str,
    info: VersionInfo,
    value: &str,
    kms: &dyn Kms,
) -> Result<MasterKey, MasterKeyError> {
    let malformed = |reason: String| MasterKeyError::Malformed {
        secret: secret_id.to_owned(),
        version: info.id.clone(),
        reason,
    };
    let version = VersionId::new(&info.id).map_err(|e| malformed(e.to_string()))?;
    // serde_json errors name positions and expected types, not the input.
    let shape: EnvelopeShape = serde_json::from_str(value).map_err(|e| {
        malformed(format!(
            "not an Envelope master-key document ({})",
            e.classify_name()
        ))
    })?;
    if shape.format != FORMAT {
        return Err(malformed(format!("unknown format, expected {FORMAT}")));
    }
    if shape.algorithm != ALGORITHM {
        return Err(malformed(format!(
            "unsupported algorithm, expected {ALGORITHM}"
        )));
    }
    let blob = zeroize::Zeroizing::new(
        B64.decode(shape.wrapped_key.as_bytes())
            .map_err(|_| malformed("wrappedKey is not base64".into()))?,
    );
    let key = kms
        .decrypt(&blob, &kms_context(key_name, &info.id))
        .await
        .map_err(|source| MasterKeyError::Kms {
            secret: secret_id.to_owned(),
            version: info.id.clone(),
            source,
        })?;
    let kek = derive_kek(key.expose(), Derivation::Hkdf, key_name, &version)
        .map_err(|e| malformed(e.to_string()))?;
    Ok(MasterKey {
        version,
        stages: info.stages,
        created: info.created,
        kek,
    })
}

/// A new master key for `version`, from KMS, as a secret string in
/// Envelope's shape. The plaintext key is dropped (and wiped) here.
pub async fn new_secret_value(
    key_name: &str,
    version: &str,
    kms: &dyn Kms,
) -> Result<String, KmsError> {
    let generated = kms
        .generate_data_key(&kms_context(key_name, version))
        .await?;
    let doc = EnvelopeShape {
        format: FORMAT.into(),
        algorithm: ALGORITHM.into(),
        kms_key_id: kms.key_id().to_owned(),
        wrapped_key: B64.encode(&generated.blob),
    };
    serde_json::to_string(&doc).map_err(|e| KmsError::RootKey(e.to_string()))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "missing, unknown or mistyped fields",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kms::local::LocalKms;

    fn info(id: &str) -> VersionInfo {
        VersionInfo {
            id: id.into(),
            stages: vec!["AWSCURRENT".into()],
            created: OffsetDateTime::now_utc(),
        }
    }

    #[tokio::test]
    async fn new_value_loads_and_is_bound_to_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
        let v = new_secret_value("pii", "ver-1-aaaaaaaa", &kms)
            .await
            .unwrap();
        load("pii", "pii", info("ver-1-aaaaaaaa"), &v, &kms)
            .await
            .unwrap();
        // The same value presented as another key or version does not unwrap.
        assert!(matches!(
            load("other", "other", info("ver-1-aaaaaaaa"), &v, &kms).await,
            Err(MasterKeyError::Kms { .. })
        ));
        assert!(
            load("pii", "pii", info("ver-2-aaaaaaaa"), &v, &kms)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn malformed_values_name_the_problem_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
        for bad in [
            "CANARY-not-json",
            r#"{"masterKey":"CANARY"}"#,
            r#"{"format":"x","algorithm":"AES-256-GCM","kmsKeyId":"k","wrappedKey":"CANARY"}"#,
        ] {
            let e = load("pii", "pii", info("v1"), bad, &kms)
                .await
                .unwrap_err()
                .to_string();
            assert!(!e.contains("CANARY"), "{e}");
            assert!(e.contains("secret pii version v1"), "{e}");
        }
    }
}
