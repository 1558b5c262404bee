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

use crate::backends::kms::{Kms, KmsContext, KmsError};
use crate::backends::store::VersionInfo;
use crate::primitives::crypto::{AeadKey, KeyBytes, hkdf_sha256, pbkdf2_sha256};
use crate::primitives::record::VersionId;

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

/// Seed 001's shape: `{"masterKey": <base64>, "algorithm": "AES-256-GCM",
/// "keyDerivation": "PBKDF2"}`, optionally with `salt` and `iterations`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seed001Shape {
    master_key: String,
    algorithm: String,
    key_derivation: String,
    salt: Option<String>,
    iterations: Option<u32>,
}

impl Drop for Seed001Shape {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.master_key);
    }
}

/// The default PBKDF2 iteration count for passphrase-style secrets: OWASP's
/// Password Storage Cheat Sheet figure for PBKDF2-HMAC-SHA256.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;

/// What a key name's passphrase-style versions are stretched with (seeds 001
/// and 004): the salt (from a separate salt secret, seed 004) and the
/// iteration count. Envelope's own shape needs neither.
#[derive(Default)]
pub struct KdfParams {
    /// The salt secret's value, if one is configured.
    pub salt: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// PBKDF2 iterations; [`DEFAULT_PBKDF2_ITERATIONS`] when unset.
    pub iterations: Option<u32>,
}

impl std::fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfParams")
            .field("salt", &self.salt.as_ref().map(|_| "[REDACTED]"))
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// How a version's KEK is derived from its secret.
pub enum Derivation<'a> {
    /// HKDF-SHA256 alone, for full-entropy 32-byte keys.
    Hkdf,
    /// PBKDF2-HMAC-SHA256 first, for passphrase-style secrets (seeds 001 and 004).
    Pbkdf2 {
        /// The salt.
        salt: &'a [u8],
        /// The iteration count.
        iterations: u32,
    },
}

/// One loaded master-key version: its id and KEK.
pub struct MasterKey {
    /// The version id, with its record encoding.
    pub version: VersionId,
    /// When the version was created, if the store says.
    pub created: Option<OffsetDateTime>,
    /// The key-encryption key that wraps data keys.
    pub kek: AeadKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
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

/// Derives a version's KEK. The final HKDF step binds the key name and
/// version id, so the same secret under another name or version gives an
/// unrelated KEK; passphrase-style secrets are stretched with PBKDF2 first.
pub fn derive_kek(
    secret: &[u8],
    derivation: Derivation<'_>,
    key_name: &str,
    version: &VersionId,
) -> Result<AeadKey, crate::primitives::crypto::CryptoError> {
    let mut stretched = zeroize::Zeroizing::new([0u8; 32]);
    let ikm: &[u8] = match derivation {
        Derivation::Hkdf => secret,
        Derivation::Pbkdf2 { salt, iterations } => {
            if iterations < crate::primitives::crypto::PBKDF2_MIN_ITERATIONS || salt.is_empty() {
                return Err(crate::primitives::crypto::CryptoError::Primitive);
            }
            pbkdf2_sha256(secret, salt, iterations, stretched.as_mut())?;
            stretched.as_ref()
        }
    };
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    hkdf_sha256(
        b"envelope.v1/kek",
        ikm,
        &[&[key_name.len() as u8], key_name.as_bytes(), version.raw()],
        out.as_mut(),
    )?;
    AeadKey::new(&KeyBytes::from_slice(out.as_ref())?)
}

/// Whether a secret string is in Envelope's own shape (as opposed to a seed shape).
pub fn is_envelope_shape(value: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(value.trim())
        .ok()
        .is_some_and(|v| v.get("format").is_some())
}

/// Reads a version's secret string, in any of the three shapes, into a [`MasterKey`].
pub async fn load(
    key_name: &str,
    secret_id: &str,
    info: VersionInfo,
    value: &str,
    kms: &dyn Kms,
    kdf: &KdfParams,
) -> Result<MasterKey, MasterKeyError> {
    let malformed = |reason: String| MasterKeyError::Malformed {
        secret: secret_id.to_owned(),
        version: info.id.clone(),
        reason,
    };
    let version = VersionId::new(&info.id).map_err(|e| malformed(e.to_string()))?;
    let trimmed = value.trim();
    let kek = if trimmed.starts_with('{') {
        // serde_json errors name positions and expected types, not the input.
        let doc: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| malformed(format!("not valid JSON ({})", e.classify_name())))?;
        let is_envelope = doc.get("format").is_some();
        let is_seed001 = doc.get("masterKey").is_some();
        drop(doc);
        if is_envelope {
            let key = unwrap_envelope_shape(key_name, &info.id, trimmed, kms)
                .await
                .map_err(|e| match e {
                    ShapeFailure::Malformed(r) => malformed(r),
                    ShapeFailure::Kms(source) => MasterKeyError::Kms {
                        secret: secret_id.to_owned(),
                        version: info.id.clone(),
                        source,
                    },
                })?;
            derive_kek(key.expose(), Derivation::Hkdf, key_name, &version)
        } else if is_seed001 {
            let shape: Seed001Shape = serde_json::from_str(trimmed)
                .map_err(|e| malformed(format!("masterKey document: {}", e.classify_name())))?;
            if shape.algorithm != ALGORITHM {
                return Err(malformed(format!("algorithm must be {ALGORITHM}")));
            }
            if !shape.key_derivation.eq_ignore_ascii_case("PBKDF2") {
                return Err(malformed("keyDerivation must be PBKDF2".into()));
            }
            check_base64_key(&shape.master_key).map_err(|r| malformed(format!("masterKey {r}")))?;
            let salt = match (&shape.salt, &kdf.salt) {
                (Some(s), _) => s.as_bytes(),
                (None, Some(s)) => s.as_slice(),
                (None, None) => {
                    return Err(malformed(
                        "a masterKey document needs a salt: a \"salt\" field, or salt_secret_id in the key's configuration"
                            .into(),
                    ));
                }
            };
            let iterations = shape
                .iterations
                .or(kdf.iterations)
                .unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
            pbkdf2_kek_blocking(
                shape.master_key.as_bytes(),
                salt,
                iterations,
                key_name,
                &version,
            )
            .await
            .map_err(malformed)?
        } else {
            return Err(malformed(
                "JSON document is neither an Envelope master-key document (\"format\") nor a masterKey document".into(),
            ));
        }
    } else {
        // Seed 004: the secret is a plain base64 key; the salt is a separate secret.
        check_base64_key(trimmed).map_err(|r| malformed(format!("plain key secret {r}")))?;
        let Some(salt) = &kdf.salt else {
            return Err(malformed(
                "a plain base64 key secret needs salt_secret_id in the key's configuration".into(),
            ));
        };
        let iterations = kdf.iterations.unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
        pbkdf2_kek_blocking(trimmed.as_bytes(), salt, iterations, key_name, &version)
            .await
            .map_err(malformed)?
    };
    let kek = kek.map_err(|e| malformed(e.to_string()))?;
    Ok(MasterKey {
        version,
        created: info.created,
        kek,
    })
}

enum ShapeFailure {
    Malformed(String),
    Kms(KmsError),
}

async fn unwrap_envelope_shape(
    key_name: &str,
    version: &str,
    value: &str,
    kms: &dyn Kms,
) -> Result<KeyBytes, ShapeFailure> {
    let shape: EnvelopeShape = serde_json::from_str(value).map_err(|e| {
        ShapeFailure::Malformed(format!(
            "Envelope master-key document: {}",
            e.classify_name()
        ))
    })?;
    if shape.format != FORMAT {
        return Err(ShapeFailure::Malformed(format!(
            "unknown format, expected {FORMAT}"
        )));
    }
    if shape.algorithm != ALGORITHM {
        return Err(ShapeFailure::Malformed(format!(
            "unsupported algorithm, expected {ALGORITHM}"
        )));
    }
    let blob = zeroize::Zeroizing::new(
        B64.decode(shape.wrapped_key.as_bytes())
            .map_err(|_| ShapeFailure::Malformed("wrappedKey is not base64".into()))?,
    );
    kms.decrypt(
        &blob,
        &kms_context(key_name, version),
        Some(&shape.kms_key_id),
    )
    .await
    .map_err(ShapeFailure::Kms)
}

/// Passphrase-style secrets are used as stored (the base64 text itself is
/// the PBKDF2 password), but must look like a base64 key of at least 16 bytes.
fn check_base64_key(text: &str) -> Result<(), String> {
    let decoded = zeroize::Zeroizing::new(
        B64.decode(text.as_bytes())
            .map_err(|_| "is not base64".to_owned())?,
    );
    if decoded.len() < 16 {
        return Err(format!(
            "decodes to {} bytes; at least 16 are required",
            decoded.len()
        ));
    }
    Ok(())
}

/// PBKDF2 at 600,000 iterations takes a few hundred milliseconds: run it on
/// the blocking pool, not on a runtime worker that serves requests.
async fn pbkdf2_kek_blocking(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    key_name: &str,
    version: &VersionId,
) -> Result<Result<AeadKey, crate::primitives::crypto::CryptoError>, String> {
    let password = zeroize::Zeroizing::new(password.to_vec());
    let salt = zeroize::Zeroizing::new(salt.to_vec());
    let (key_name, version) = (key_name.to_owned(), version.clone());
    tokio::task::spawn_blocking(move || {
        pbkdf2_kek(&password, &salt, iterations, &key_name, &version)
    })
    .await
    .map_err(|_| "the PBKDF2 task failed".to_owned())?
}

fn pbkdf2_kek(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    key_name: &str,
    version: &VersionId,
) -> Result<Result<AeadKey, crate::primitives::crypto::CryptoError>, String> {
    if iterations > crate::primitives::crypto::PBKDF2_MAX_ITERATIONS {
        return Err(format!(
            "PBKDF2 iterations {iterations} are above the ceiling of {}",
            crate::primitives::crypto::PBKDF2_MAX_ITERATIONS
        ));
    }
    if iterations < crate::primitives::crypto::PBKDF2_MIN_ITERATIONS {
        return Err(format!(
            "PBKDF2 iterations {iterations} are below the floor of {}",
            crate::primitives::crypto::PBKDF2_MIN_ITERATIONS
        ));
    }
    if salt.is_empty() {
        return Err("the PBKDF2 salt is empty".into());
    }
    Ok(derive_kek(
        password,
        Derivation::Pbkdf2 { salt, iterations },
        key_name,
        version,
    ))
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
mod pins;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backends::kms::local::LocalKms;

    fn info(id: &str) -> VersionInfo {
        VersionInfo {
            id: id.into(),
            stages: vec!["AWSCURRENT".into()],
            created: Some(OffsetDateTime::now_utc()),
        }
    }

    #[tokio::test]
    async fn new_value_loads_and_is_bound_to_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
        let v = new_secret_value("pii", "ver-1-aaaaaaaa", &kms)
            .await
            .unwrap();
        load(
            "pii",
            "pii",
            info("ver-1-aaaaaaaa"),
            &v,
            &kms,
            &KdfParams::default(),
        )
        .await
        .unwrap();
        // The same value presented as another key or version does not unwrap.
        assert!(matches!(
            load(
                "other",
                "other",
                info("ver-1-aaaaaaaa"),
                &v,
                &kms,
                &KdfParams::default()
            )
            .await,
            Err(MasterKeyError::Kms { .. })
        ));
        assert!(
            load(
                "pii",
                "pii",
                info("ver-2-aaaaaaaa"),
                &v,
                &kms,
                &KdfParams::default()
            )
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
            let e = load("pii", "pii", info("v1"), bad, &kms, &KdfParams::default())
                .await
                .unwrap_err()
                .to_string();
            assert!(!e.contains("CANARY"), "{e}");
            assert!(e.contains("secret pii version v1"), "{e}");
        }
    }
}
