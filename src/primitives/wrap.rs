//! The one wrapped-key layout: a 32-byte key sealed under another key with
//! AES-256-GCM and a random nonce, laid out `nonce(12) ‖ sealed key(32) ‖
//! tag(16)` (docs/FORMAT.md, "Wrapped data key"). Data keys under a master
//! key, the local KMS's blobs and rotation's probe all use it.

use zeroize::Zeroizing;

use super::crypto::{AeadKey, CryptoError, KEY_LEN, KeyBytes, NONCE_BYTES, TAG_LEN, random_nonce};

/// Length of a wrapped key.
pub const WRAPPED_LEN: usize = NONCE_BYTES + KEY_LEN + TAG_LEN;

/// Seals `key` under `kek` with a fresh random nonce, binding `aad`.
///
/// Random nonces are safe here because a key-encryption key wraps few keys
/// (one per data key), far below the 2^32 limit of NIST SP 800-38D §8.3.
pub fn wrap(kek: &AeadKey, key: &KeyBytes, aad: &[u8]) -> Result<[u8; WRAPPED_LEN], CryptoError> {
    let nonce = random_nonce()?;
    let mut wrapped = [0u8; WRAPPED_LEN];
    let (n, rest) = wrapped.split_at_mut(NONCE_BYTES);
    let (body, tag_out) = rest.split_at_mut(KEY_LEN);
    n.copy_from_slice(&nonce);
    body.copy_from_slice(key.expose());
    let tag = kek.seal(nonce, aad, body)?;
    tag_out.copy_from_slice(&tag);
    Ok(wrapped)
}

/// Opens a key sealed by [`wrap`]. Any wrong length, key, `aad` or changed
/// byte is the one [`CryptoError::Unauthentic`].
pub fn unwrap(kek: &AeadKey, wrapped: &[u8], aad: &[u8]) -> Result<KeyBytes, CryptoError> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(CryptoError::Unauthentic);
    }
    let (nonce, rest) = wrapped.split_at(NONCE_BYTES);
    let (body, tag) = rest.split_at(KEY_LEN);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Unauthentic)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    kek.open(nonce, aad, body, tag, out.as_mut())?;
    KeyBytes::from_slice(out.as_ref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// FORMAT.md: each wrap draws a fresh random nonce, so the same key
    /// wrapped twice under one KEK gives two different blobs.
    #[test]
    fn each_wrap_has_a_fresh_nonce() {
        let kek = AeadKey::new(&KeyBytes::random().unwrap()).unwrap();
        let key = KeyBytes::random().unwrap();
        let nonces: std::collections::HashSet<[u8; NONCE_BYTES]> = (0..64)
            .map(|_| {
                wrap(&kek, &key, b"aad").unwrap()[..NONCE_BYTES]
                    .try_into()
                    .unwrap()
            })
            .collect();
        assert_eq!(nonces.len(), 64);
    }

    #[test]
    fn round_trip_and_every_change_is_refused() {
        let kek = AeadKey::new(&KeyBytes::random().unwrap()).unwrap();
        let key = KeyBytes::random().unwrap();
        let w = wrap(&kek, &key, b"aad").unwrap();
        assert_eq!(unwrap(&kek, &w, b"aad").unwrap().expose(), key.expose());
        assert_eq!(
            unwrap(&kek, &w, b"other").unwrap_err(),
            CryptoError::Unauthentic
        );
        assert_eq!(
            unwrap(&kek, &w[1..], b"aad").unwrap_err(),
            CryptoError::Unauthentic
        );
        for i in 0..WRAPPED_LEN {
            let mut bad = w;
            bad[i] ^= 1;
            assert_eq!(
                unwrap(&kek, &bad, b"aad").unwrap_err(),
                CryptoError::Unauthentic
            );
        }
        assert_ne!(wrap(&kek, &key, b"aad").unwrap(), w, "fresh nonce per wrap");
    }
}
