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
//!   Envelope's shape. The PBKDF2 bounds (floor, ceiling, empty salt) are
//!   checked in one place, `pbkdf2_bounds`. Every failure on the way is a
//!   `Refusal`, named with the secret and version once, in [`load`], as a
//!   [`MasterKeyError`].
//! - `shapes`: the three secret shapes (Envelope's document, seed 001's
//!   passphrase document, seed 004's plain key), the typed probe that tells
//!   them apart, and their checks; secret members are held in wiped buffers.
//! - `pins` (tests): today's shape precedence and exact refusal reasons,
//!   as docs/FORMAT.md states them.

mod shapes;

use time::OffsetDateTime;

use crate::backends::kms::{Kms, KmsContext, KmsError};
use crate::backends::store::VersionInfo;
use crate::primitives::crypto::{
    AeadKey, CryptoError, KeyBytes, PBKDF2_MAX_ITERATIONS, PBKDF2_MIN_ITERATIONS, hkdf_sha256,
    pbkdf2_sha256,
};
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
    /// The version's key check value: 8 bytes from HKDF under a label of its
    /// own (never the KEK), equal on every replica that derived the same key.
    pub check_value: [u8; 8],
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
/// unrelated KEK; passphrase-style secrets are stretched with PBKDF2 first,
/// and refused ([`CryptoError::Primitive`]) when its salt is empty or its
/// iteration count is outside the floor and ceiling.
pub fn derive_kek(
    secret: &[u8],
    derivation: Derivation<'_>,
    key_name: &str,
    version: &VersionId,
) -> Result<AeadKey, CryptoError> {
    derive(secret, derivation, key_name, version)
        .map(|(kek, _)| kek)
        .map_err(|e| match e {
            Refusal::Crypto(e) => e,
            Refusal::Malformed(_) | Refusal::Kms(_) => CryptoError::Primitive,
        })
}

/// [`derive_kek`], saying why the PBKDF2 inputs are refused, with the
/// version's key check value.
fn derive(
    secret: &[u8],
    derivation: Derivation<'_>,
    key_name: &str,
    version: &VersionId,
) -> Result<(AeadKey, [u8; 8]), Refusal> {
    let mut stretched = zeroize::Zeroizing::new([0u8; 32]);
    let ikm: &[u8] = match derivation {
        Derivation::Hkdf => secret,
        Derivation::Pbkdf2 { salt, iterations } => {
            pbkdf2_bounds(salt, iterations)?;
            pbkdf2_sha256(secret, salt, iterations, stretched.as_mut()).map_err(Refusal::Crypto)?;
            stretched.as_ref()
        }
    };
    let info: [&[u8]; 3] = [&[key_name.len() as u8], key_name.as_bytes(), version.raw()];
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    hkdf_sha256(b"envelope.v1/kek", ikm, &info, out.as_mut()).map_err(Refusal::Crypto)?;
    // The check value comes from the same input under another label: it
    // tells replicas apart without revealing anything of the KEK.
    let mut check = [0u8; 8];
    hkdf_sha256(b"envelope.v1/key-check-value", ikm, &info, &mut check).map_err(Refusal::Crypto)?;
    let kek = KeyBytes::from_slice(out.as_ref())
        .and_then(|key| AeadKey::new(&key))
        .map_err(Refusal::Crypto)?;
    Ok((kek, check))
}

/// The one check of PBKDF2's inputs: the ceiling keeps a hostile
/// `iterations` member from tying up a thread for hours, the floor and a
/// non-empty salt keep the stretch meaningful. Checked in this order.
fn pbkdf2_bounds(salt: &[u8], iterations: u32) -> Result<(), Refusal> {
    if iterations > PBKDF2_MAX_ITERATIONS {
        return Err(Refusal::Malformed(format!(
            "PBKDF2 iterations {iterations} are above the ceiling of {PBKDF2_MAX_ITERATIONS}"
        )));
    }
    if iterations < PBKDF2_MIN_ITERATIONS {
        return Err(Refusal::Malformed(format!(
            "PBKDF2 iterations {iterations} are below the floor of {PBKDF2_MIN_ITERATIONS}"
        )));
    }
    if salt.is_empty() {
        return Err(Refusal::Malformed("the PBKDF2 salt is empty".into()));
    }
    Ok(())
}

/// Whether a secret string is in Envelope's own shape (as opposed to a seed shape).
pub fn is_envelope_shape(value: &str) -> bool {
    matches!(shapes::kind(value.trim()), Ok(shapes::Kind::Envelope))
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
    let (version, (kek, check_value)) = version_and_kek(key_name, &info.id, value, kms, kdf)
        .await
        .map_err(|e| e.naming(secret_id, &info.id))?;
    tracing::info!(key = %key_name, version = %info.id, check_value = %hex::encode(check_value), "master-key version loaded");
    Ok(MasterKey {
        version,
        created: info.created,
        kek,
        check_value,
    })
}

async fn version_and_kek(
    key_name: &str,
    id: &str,
    value: &str,
    kms: &dyn Kms,
    kdf: &KdfParams,
) -> Result<(VersionId, (AeadKey, [u8; 8])), Refusal> {
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
) -> Result<(AeadKey, [u8; 8]), Refusal> {
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
