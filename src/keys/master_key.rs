//! Master-key versions: reading a version's secret string into a ready
//! key-encryption key (KEK), and writing new versions.
//!
//! Envelope's own secret shape stores the master key KMS-wrapped, so reading
//! the secret alone does not reveal it:
//! `{"format":"envelope.master-key.v1","algorithm":"AES-256-GCM","kmsKeyId":"…","wrappedKey":"<base64 KMS blob>"}`.
//! The KMS context names the key and version (`envelope:key`, `envelope:version`).
//! The KEK is derived once per version at load, never per request.
//!
//! Where things are:
//!
//! - This file: the public surface. [`load`] turns a version's secret string
//!   into a [`MasterKey`]: it asks `shapes` what the string holds, unwraps a
//!   wrapped key with KMS or stretches a passphrase with PBKDF2 (off the
//!   runtime), then [`derive_kek`]. [`new_secret_value`] writes a version in
//!   Envelope's shape. Every failure on the way is a
//!   `Refusal`, named with the secret and version once, in [`load`], as a
//!   [`MasterKeyError`].
//! - `derive`: from the secret input to the KEK, the key check value and the
//!   blind-index root (each HKDF under its own label); the PBKDF2 bounds
//!   (floor, ceiling, empty salt) are checked in one place, `pbkdf2_bounds`.
//! - `shapes`: the three secret shapes (Envelope's document, seed 001's
//!   passphrase document, seed 004's plain key), the typed probe that tells
//!   them apart, and their checks; secret members are held in wiped buffers.
//! - `pins` (tests): today's shape precedence and exact refusal reasons,
//!   as docs/FORMAT.md states them.

mod derive;
mod shapes;

pub use derive::{Derivation, derive_kek};
use derive::{Derived, derive};

use time::OffsetDateTime;

use crate::backends::kms::{Kms, KmsContext, KmsError};
use crate::backends::store::VersionInfo;
use crate::primitives::crypto::{AeadKey, CryptoError, KeyBytes};
use crate::primitives::record::VersionId;
use shapes::{EnvelopeDocument, KeyMaterial, Passphrase};

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

/// Why a version's secret gave no KEK, before the secret and version are
/// named: the one error type of everything [`load`] calls.
enum Refusal {
    /// The value is not a shape we read, or its PBKDF2 inputs are out of
    /// bounds; the text says what is wrong, never what the value is.
    Malformed(String),
    /// A primitive failed while deriving the KEK.
    Crypto(CryptoError),
    /// KMS refused to unwrap the master key.
    Kms(KmsError),
}

impl Refusal {
    fn naming(self, secret: &str, version: &str) -> MasterKeyError {
        let (secret, version) = (secret.to_owned(), version.to_owned());
        match self {
            Self::Malformed(reason) => MasterKeyError::Malformed {
                secret,
                version,
                reason,
            },
            Self::Crypto(e) => MasterKeyError::Malformed {
                secret,
                version,
                reason: e.to_string(),
            },
            Self::Kms(source) => MasterKeyError::Kms {
                secret,
                version,
                source,
            },
        }
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
    /// Which seed-shaped versions the key accepts at all.
    pub unwrapped: Unwrapped,
}

/// Which seed-shaped (plaintext, not KMS-wrapped) versions a key accepts.
/// Anyone who can write the secret could plant one, and choose the key new
/// records are sealed under, so none is accepted unless the key says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Unwrapped {
    /// Only Envelope's own KMS-wrapped shape (the default).
    #[default]
    Refuse,
    /// Any seed-shaped version of the key's secret (legacy mode).
    Any,
    /// Only these versions.
    Only(Vec<String>),
}

impl Unwrapped {
    /// Whether the seed-shaped version `id` may be used.
    pub fn allows(&self, id: &str) -> bool {
        match self {
            Unwrapped::Refuse => false,
            Unwrapped::Any => true,
            Unwrapped::Only(ids) => ids.iter().any(|v| v == id),
        }
    }
}

/// Why a seed-shaped version the key does not accept is refused.
pub const UNWRAPPED_REFUSED: &str = "a seed-shaped (unwrapped) master key, which this key does not accept: set allow_unwrapped_master_keys = true, or list the version in unwrapped_versions, on its [[keys]] entry";

impl std::fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfParams")
            .field("salt", &self.salt.as_ref().map(|_| "[REDACTED]"))
            .field("iterations", &self.iterations)
            .field("unwrapped", &self.unwrapped)
            .finish()
    }
}

/// One loaded master-key version: its id and KEK.
pub struct MasterKey {
    /// The version id, with its record encoding.
    pub version: VersionId,
    /// When the version was created, if the store says.
    pub created: Option<OffsetDateTime>,
    /// The key-encryption key that wraps data keys.
    pub kek: AeadKey,
    /// The version's key check value: 8 bytes from HKDF under a label of its
    /// own (never the KEK), equal on every replica that derived the same key.
    pub check_value: [u8; 8],
    /// The root of the version's blind-index keys: HKDF of the same input
    /// under a label of its own (never the KEK), never stored.
    pub index_root: KeyBytes,
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

/// Whether a secret string is in Envelope's own shape (as opposed to a seed shape).
pub fn is_envelope_shape(value: &str) -> bool {
    matches!(shapes::kind(value.trim()), Ok(shapes::Kind::Envelope))
}

/// What a version's secret string holds, as `envelope doctor` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Envelope's own document: a master key the named KMS key wrapped.
    Wrapped {
        /// The KMS key the document names.
        kms_key_id: String,
    },
    /// A seed shape (seed 001's masterKey document, seed 004's plain key),
    /// read only with `allow_unwrapped_master_keys` or `unwrapped_versions`.
    Unwrapped(&'static str),
}

/// The shape of a secret string, checked as [`load`] checks it, without
/// KMS or PBKDF2; the error says what is wrong, never what the value is.
pub fn shape(value: &str, kdf: &KdfParams) -> Result<Shape, String> {
    let described = match shapes::read(value.trim(), kdf) {
        Ok(KeyMaterial::Wrapped(w)) => Shape::Wrapped {
            kms_key_id: w.kms_key_id,
        },
        Ok(KeyMaterial::Passphrase(_)) => Shape::Unwrapped(match shapes::kind(value.trim()) {
            Ok(shapes::Kind::Passphrase) => "a masterKey document (seed 001)",
            _ => "a plain key (seed 004)",
        }),
        Err(Refusal::Malformed(reason)) => return Err(reason),
        Err(Refusal::Crypto(e)) => return Err(e.to_string()),
        Err(Refusal::Kms(e)) => return Err(e.to_string()),
    };
    Ok(described)
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
    let (
        version,
        Derived {
            kek,
            check_value,
            index_root,
        },
    ) = version_and_kek(key_name, &info.id, value, kms, kdf)
        .await
        .map_err(|e| e.naming(secret_id, &info.id))?;
    tracing::info!(key = %key_name, version = %info.id, check_value = %hex::encode(check_value), "master-key version loaded");
    Ok(MasterKey {
        version,
        created: info.created,
        kek,
        check_value,
        index_root,
    })
}

async fn version_and_kek(
    key_name: &str,
    id: &str,
    value: &str,
    kms: &dyn Kms,
    kdf: &KdfParams,
) -> Result<(VersionId, Derived), Refusal> {
    let version = VersionId::new(id).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let kek = match shapes::read(value.trim(), kdf)? {
        KeyMaterial::Wrapped(wrapped) => {
            let key = kms
                .decrypt(
                    &wrapped.blob,
                    &kms_context(key_name, id),
                    Some(&wrapped.kms_key_id),
                )
                .await
                .map_err(Refusal::Kms)?;
            derive(key.expose(), Derivation::Hkdf, key_name, &version)?
        }
        KeyMaterial::Passphrase(passphrase) => {
            if !kdf.unwrapped.allows(id) {
                return Err(Refusal::Malformed(UNWRAPPED_REFUSED.into()));
            }
            stretch_off_runtime(passphrase, key_name, &version).await?
        }
    };
    Ok((version, kek))
}

/// PBKDF2 at 600,000 iterations takes a few hundred milliseconds: run it on
/// the blocking pool, not on a runtime worker that serves requests.
async fn stretch_off_runtime(
    passphrase: Passphrase,
    key_name: &str,
    version: &VersionId,
) -> Result<Derived, Refusal> {
    let (key_name, version) = (key_name.to_owned(), version.clone());
    tokio::task::spawn_blocking(move || {
        let derivation = Derivation::Pbkdf2 {
            salt: &passphrase.salt,
            iterations: passphrase.iterations,
        };
        derive(
            passphrase.password.expose().as_bytes(),
            derivation,
            &key_name,
            &version,
        )
    })
    .await
    .map_err(|_| Refusal::Malformed("the PBKDF2 task failed".into()))?
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
    let doc = EnvelopeDocument::new(kms.key_id(), &generated.blob);
    serde_json::to_string(&doc).map_err(|e| KmsError::RootKey(e.to_string()))
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

    /// FORMAT.md: a seed-shaped secret yields a KEK bound to the key name
    /// and version too: the same value under another name or version gives
    /// an unrelated key (another check value).
    #[tokio::test]
    async fn a_seed_shaped_value_is_bound_to_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
        let seed = r#"{"masterKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","algorithm":"AES-256-GCM","keyDerivation":"PBKDF2","salt":"c2FsdHNhbHRzYWx0c2FsdA==","iterations":600000}"#;
        let kdf = KdfParams {
            unwrapped: Unwrapped::Any,
            ..KdfParams::default()
        };
        let check = |name: &'static str, version: &'static str| {
            let (kms, kdf) = (&kms, &kdf);
            async move {
                load(name, name, info(version), seed, kms, kdf)
                    .await
                    .unwrap()
                    .check_value
            }
        };
        let base = check("pii", "ver-1").await;
        assert_eq!(check("pii", "ver-1").await, base);
        assert_ne!(check("other", "ver-1").await, base);
        assert_ne!(check("pii", "ver-2").await, base);
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
