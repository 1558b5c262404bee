//! From a version's secret input to its keys: the KEK that wraps data
//! keys, the key check value and the blind-index root, each HKDF under a
//! label of its own; passphrase-style inputs are stretched with PBKDF2
//! first, within bounds.

use super::Refusal;
use crate::primitives::crypto::{
    AeadKey, CryptoError, KeyBytes, PBKDF2_MAX_ITERATIONS, PBKDF2_MIN_ITERATIONS, hkdf_sha256,
    pbkdf2_sha256,
};
use crate::primitives::record::VersionId;

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
        .map(|d| d.kek)
        .map_err(|e| match e {
            Refusal::Crypto(e) => e,
            Refusal::Malformed(_) | Refusal::Kms(_) => CryptoError::Primitive,
        })
}

/// [`derive_kek`], saying why the PBKDF2 inputs are refused, with the
/// version's key check value.
pub(super) fn derive(
    secret: &[u8],
    derivation: Derivation<'_>,
    key_name: &str,
    version: &VersionId,
) -> Result<Derived, Refusal> {
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
    hkdf_sha256(
        crate::primitives::blind_index::ROOT_LABEL,
        ikm,
        &info,
        out.as_mut(),
    )
    .map_err(Refusal::Crypto)?;
    let index_root = KeyBytes::from_slice(out.as_ref()).map_err(Refusal::Crypto)?;
    Ok(Derived {
        kek,
        check_value: check,
        index_root,
    })
}

/// What a version's secret input yields.
pub(super) struct Derived {
    pub(super) kek: AeadKey,
    pub(super) check_value: [u8; 8],
    pub(super) index_root: KeyBytes,
}

/// The one check of PBKDF2's inputs: the ceiling keeps a hostile
/// `iterations` member from tying up a thread for hours, the floor and a
/// non-empty salt keep the stretch meaningful. Checked in this order.
pub(super) fn pbkdf2_bounds(salt: &[u8], iterations: u32) -> Result<(), Refusal> {
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
