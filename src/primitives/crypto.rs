//! The primitives Envelope builds on: AES-256-GCM with pre-expanded keys,
//! HKDF-SHA256, HMAC-SHA256, SHA-256 and the system CSPRNG from *ring*, and
//! PBKDF2-HMAC-SHA256 from RustCrypto's `pbkdf2`. With the `fips` feature the
//! same code runs on aws-lc-rs's FIPS module instead (its API mirrors
//! *ring*'s; PBKDF2 too comes from it then): `provider` below is the only
//! difference.
//!
//! Key material lives only in [`KeyBytes`] (wiped on drop) and [`AeadKey`]
//! (an expanded key); neither derives `Debug`, `Clone` or `PartialEq`, and
//! both print as redacted.

use std::fmt;

#[cfg(feature = "fips")]
use aws_lc_rs as provider;
#[cfg(not(feature = "fips"))]
use ring as provider;

use provider::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use provider::rand::{SecureRandom, SystemRandom};
use provider::{digest, hkdf, hmac};
use zeroize::Zeroizing;

/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// Errors of the primitives. Deliberately carries no detail: an
/// authentication failure must be one opaque answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The tag did not verify: wrong key, wrong associated data or tampered bytes.
    #[error("authentication failed")]
    Unauthentic,
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
    /// A primitive refused its input (wrong length or parameters).
    #[error("cryptographic primitive failed")]
    Primitive,
}

/// 32 bytes of key material, wiped on drop, printed as redacted.
pub struct KeyBytes(Zeroizing<[u8; KEY_LEN]>);

impl KeyBytes {
    /// Fresh random key bytes from the system CSPRNG.
    pub fn random() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(k.as_mut())?;
        Ok(Self(k))
    }

    /// Copies key bytes out of a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Primitive);
        }
        k.copy_from_slice(bytes);
        Ok(Self(k))
    }

    /// The raw bytes. Named so that every place exposing key material is greppable.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes([REDACTED])")
    }
}

/// An expanded AES-256-GCM key. Expansion costs more than sealing a small
/// record, so these are built once per key and cached. The provider's key
/// schedule is not ours to wipe; the bytes it came from are ([`KeyBytes`]).
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    /// Expands key bytes into a ready AES-256-GCM key.
    pub fn new(key: &KeyBytes) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::Primitive)?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::Primitive)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `ciphertext` into `out` (same length) if `tag` verifies. On
    /// failure `out` is wiped, so no partial plaintext ever escapes.
    pub fn open(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if ciphertext.len() != out.len() {
            return Err(CryptoError::Primitive);
        }
        out.copy_from_slice(ciphertext);
        self.open_in_place(nonce, aad, tag, out)
    }

    /// Decrypts `in_out` in place if `tag` verifies. On failure `in_out` is
    /// wiped, so no partial plaintext ever escapes.
    pub fn open_in_place(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        tag: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Primitive)?;
        let nonce = Nonce::assume_unique_for_key(nonce);
        // The one call whose signature differs between the two providers.
        #[cfg(not(feature = "fips"))]
        let r = self.0.open_in_place_separate_tag(
            nonce,
            Aad::from(aad),
            provider::aead::Tag::from(tag),
            in_out,
            0..,
        );
        #[cfg(feature = "fips")]
        let r = self
            .0
            .open_in_place_separate_tag(nonce, Aad::from(aad), &tag, in_out);
        if r.is_err() {
            zeroize::Zeroize::zeroize(in_out);
            return Err(CryptoError::Unauthentic);
        }
        Ok(())
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(AES-256-GCM, [REDACTED])")
    }
}

/// Fills `out` from the system CSPRNG.
pub fn fill_random(out: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| CryptoError::Random)
}

/// A random AES-GCM nonce, for keys that seal few messages (key wrapping).
pub fn random_nonce() -> Result<[u8; NONCE_BYTES], CryptoError> {
    let mut n = [0u8; NONCE_BYTES];
    fill_random(&mut n)?;
    Ok(n)
}

/// A random (version 4) UUID from the system CSPRNG, for ids that must not
/// be predictable, such as new master-key versions. (Request ids, which
/// need only be unique, come from `uuid`'s own generator, which makes no
/// syscall per id.)
pub fn random_uuid() -> Result<uuid::Uuid, CryptoError> {
    let mut b = [0u8; 16];
    fill_random(&mut b)?;
    Ok(uuid::Builder::from_random_bytes(b).into_uuid())
}

struct OutLen(usize);

impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` into `out`.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, OutLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Primitive)
}

/// An HMAC-SHA256 key with its pads precomputed (blind-index tokens): one
/// SHA-256 of the message and one of the inner hash per [`MacKey::sign`].
pub struct MacKey(hmac::Key);

impl MacKey {
    /// The key for `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, message).as_ref());
        out
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(HMAC-SHA256, [REDACTED])")
    }
}

/// HMAC-SHA256 (RFC 2104) under `key` of the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The PBKDF2 iteration floor for passphrase-style secrets: OWASP's Password
/// Storage Cheat Sheet recommends 600,000 for PBKDF2-HMAC-SHA256; we refuse
/// anything below 100,000 (the floor the seeds' applications used) to stay
/// compatible with existing secrets while rejecting clearly weak settings.
pub const PBKDF2_MIN_ITERATIONS: u32 = 100_000;
/// The PBKDF2 iteration ceiling: about five seconds of one core here, so a
/// hostile `iterations` field cannot pin a thread for hours.
pub const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;

/// PBKDF2-HMAC-SHA256 (RFC 8018) of `secret` with `salt` into `out`.
pub fn pbkdf2_sha256(
    secret: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if iterations == 0 {
        return Err(CryptoError::Primitive);
    }
    // Fuzzing tests the parsers that reach the KDF, not the KDF: a few
    // rounds keep their executions per second in the thousands.
    #[cfg(fuzzing)]
    let iterations = iterations.min(2);
    #[cfg(not(feature = "fips"))]
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret, salt, iterations, out);
    #[cfg(feature = "fips")]
    {
        let n = std::num::NonZeroU32::new(iterations).ok_or(CryptoError::Primitive)?;
        provider::pbkdf2::derive(provider::pbkdf2::PBKDF2_HMAC_SHA256, n, salt, secret, out);
    }
    Ok(())
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only
/// (*ring* deprecated its own comparison; `subtle` is the one RustCrypto uses).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 5869, appendix A.1 (test case 1) and A.3 (test case 3, empty salt and info).
    #[test]
    fn hkdf_rfc5869_vectors() {
        let mut okm = [0u8; 42];
        hkdf_sha256(
            &hex("000102030405060708090a0b0c"),
            &[0x0b; 22],
            &[&hex("f0f1f2f3f4f5f6f7f8f9")],
            &mut okm,
        )
        .unwrap();
        assert_eq!(
            okm.to_vec(),
            hex(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
        let mut okm = [0u8; 42];
        hkdf_sha256(&[], &[0x0b; 22], &[], &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            hex(
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
            )
        );
    }

    // RFC 7914, section 11: PBKDF2-HMAC-SHA256 test vectors.
    #[test]
    fn pbkdf2_rfc7914_vectors() {
        let mut dk = [0u8; 64];
        pbkdf2_sha256(b"passwd", b"salt", 1, &mut dk).unwrap();
        assert_eq!(
            dk.to_vec(),
            hex(
                "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
            )
        );
        pbkdf2_sha256(b"Password", b"NaCl", 80000, &mut dk).unwrap();
        assert_eq!(
            dk.to_vec(),
            hex(
                "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
            )
        );
    }

    // NIST GCM test vector (gcmEncryptExtIV256, Count 0 with 16-byte PT), as in
    // McGrew & Viega's GCM spec test case 14: zero key, zero IV, zero block.
    #[test]
    fn aes256gcm_known_answer() {
        let key = AeadKey::new(&KeyBytes::from_slice(&[0u8; 32]).unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let tag = key.seal([0u8; 12], &[], &mut buf).unwrap();
        assert_eq!(buf.to_vec(), hex("cea7403d4d606b6e074ec5d3baf39d18"));
        assert_eq!(tag.to_vec(), hex("d0d1c8a799996bf0265b98b5d48ab919"));
        let mut out = [0u8; 16];
        key.open([0u8; 12], &[], &buf, &tag, &mut out).unwrap();
        assert_eq!(out, [0u8; 16]);
    }

    #[test]
    fn open_failure_wipes_output_and_is_opaque() {
        let key = AeadKey::new(&KeyBytes::random().unwrap()).unwrap();
        let mut buf = *b"sixteen byte msg";
        let tag = key.seal([1u8; 12], b"aad", &mut buf).unwrap();
        let mut out = [0xAAu8; 16];
        let err = key
            .open([1u8; 12], b"other", &buf, &tag, &mut out)
            .unwrap_err();
        assert_eq!(err, CryptoError::Unauthentic);
        assert_eq!(out, [0u8; 16]);
    }

    #[test]
    fn key_types_print_redacted() {
        let k = KeyBytes::from_slice(&[0x42; 32]).unwrap();
        let s = format!("{k:?} {:?}", AeadKey::new(&k).unwrap());
        assert!(s.contains("REDACTED"));
        assert!(!s.contains("42") && !s.contains("66"));
        // The bytes wipe themselves on drop (a plain array here would not
        // build): SECURITY.md, "Key types".
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        wiped_on_drop(&k.0);
    }
}
