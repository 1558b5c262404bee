//! The power-on self-test, as a FIPS 140-3 module runs one: before any key
//! is loaded, every primitive Envelope uses answers a stored known-answer
//! vector, and AES-256-GCM is checked against an independent second
//! implementation (RustCrypto's `aes-gcm`) both ways on a fresh random key.
//! A wrong answer stops start-up: a miscompiled or broken primitive must
//! never seal a customer's record.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::crypto::{
    AeadKey, KeyBytes, NONCE_BYTES, TAG_LEN, fill_random, hkdf_sha256, hmac_sha256, pbkdf2_sha256,
    sha256,
};

/// Which check failed. Names the primitive, never the bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cryptographic self-test failed: {0} gave a wrong answer; refusing to start")]
pub struct SelfTestError(pub &'static str);

/// A known-answer vector: inputs and the expected output, in hex.
#[derive(Debug, Clone, Copy)]
pub struct Vector {
    /// The key (AEAD, HMAC), input keying material (HKDF) or password (PBKDF2).
    pub key: &'static str,
    /// The nonce (AEAD), salt (HKDF, PBKDF2) or nothing.
    pub nonce: &'static str,
    /// The associated data (AEAD), info (HKDF) or message (HMAC, SHA-256).
    pub data: &'static str,
    /// The plaintext (AEAD) or nothing.
    pub input: &'static str,
    /// The expected output: ciphertext ‖ tag, OKM, MAC, derived key or digest.
    pub expected: &'static str,
}

/// One vector per primitive.
#[derive(Debug, Clone, Copy)]
pub struct Vectors {
    /// AES-256-GCM seal and open.
    pub aes_gcm: Vector,
    /// HKDF-SHA256.
    pub hkdf: Vector,
    /// HMAC-SHA256.
    pub hmac: Vector,
    /// PBKDF2-HMAC-SHA256 (iterations in `input`, decimal).
    pub pbkdf2: Vector,
    /// SHA-256.
    pub sha256: Vector,
}

/// The stored vectors, each from its standard.
pub const VECTORS: Vectors = Vectors {
    // The GCM specification (McGrew & Viega), test case 16: AES-256, 96-bit IV, with AAD.
    aes_gcm: Vector {
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        nonce: "cafebabefacedbaddecaf888",
        data: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        input: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        expected: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b",
    },
    // RFC 5869, appendix A.1.
    hkdf: Vector {
        key: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        nonce: "000102030405060708090a0b0c",
        data: "f0f1f2f3f4f5f6f7f8f9",
        input: "",
        expected: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    },
    // RFC 4231, test case 2.
    hmac: Vector {
        key: "4a656665",
        nonce: "",
        data: "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
        input: "",
        expected: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    },
    // RFC 7914, section 11: "passwd", "salt", 1 iteration.
    pbkdf2: Vector {
        key: "706173737764",
        nonce: "73616c74",
        data: "",
        input: "1",
        expected: "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
    },
    // FIPS 180-2, appendix B.1: "abc".
    sha256: Vector {
        key: "",
        nonce: "",
        data: "616263",
        input: "",
        expected: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    },
};

/// Runs every check against `v`; the first wrong answer is the error.
pub fn run(v: &Vectors) -> Result<(), SelfTestError> {
    check("AES-256-GCM", aes_gcm(&v.aes_gcm))?;
    check("HKDF-SHA256", hkdf(&v.hkdf))?;
    check("HMAC-SHA256", hmac(&v.hmac))?;
    check("PBKDF2-HMAC-SHA256", pbkdf2(&v.pbkdf2))?;
    check("SHA-256", digest(&v.sha256))?;
    check("AES-256-GCM against aes-gcm", cross_check())?;
    // The FIPS build must run in FIPS mode: its known answers above came
    // from the validated module only if it is.
    #[cfg(feature = "fips")]
    check(
        "the FIPS module's mode",
        Some(aws_lc_rs::try_fips_mode().is_ok()),
    )?;
    Ok(())
}

fn check(name: &'static str, passed: Option<bool>) -> Result<(), SelfTestError> {
    match passed {
        Some(true) => Ok(()),
        _ => Err(SelfTestError(name)),
    }
}

fn bytes(hex: &str) -> Option<Vec<u8>> {
    hex::decode(hex).ok()
}

fn aes_gcm(v: &Vector) -> Option<bool> {
    let key = AeadKey::new(&KeyBytes::from_slice(&bytes(v.key)?).ok()?).ok()?;
    let nonce: [u8; NONCE_BYTES] = bytes(v.nonce)?.try_into().ok()?;
    let (aad, plaintext, expected) = (bytes(v.data)?, bytes(v.input)?, bytes(v.expected)?);
    let mut buf = plaintext.clone();
    let tag = key.seal(nonce, &aad, &mut buf).ok()?;
    let sealed_right = [buf.as_slice(), tag.as_slice()].concat() == expected;
    let mut opened = vec![0u8; buf.len()];
    let (ct, tag) = expected.split_at(expected.len().checked_sub(TAG_LEN)?);
    let opened_right = key.open(nonce, &aad, ct, tag, &mut opened).is_ok() && opened == plaintext;
    // A changed tag must be refused.
    let mut bad_tag = tag.to_vec();
    *bad_tag.first_mut()? ^= 1;
    let refused = key.open(nonce, &aad, ct, &bad_tag, &mut opened).is_err();
    Some(sealed_right && opened_right && refused)
}

fn hkdf(v: &Vector) -> Option<bool> {
    let expected = bytes(v.expected)?;
    let mut out = vec![0u8; expected.len()];
    hkdf_sha256(
        &bytes(v.nonce)?,
        &bytes(v.key)?,
        &[&bytes(v.data)?],
        &mut out,
    )
    .ok()?;
    Some(out == expected)
}

fn hmac(v: &Vector) -> Option<bool> {
    Some(hmac_sha256(&bytes(v.key)?, &[&bytes(v.data)?]).as_slice() == bytes(v.expected)?)
}

fn pbkdf2(v: &Vector) -> Option<bool> {
    let expected = bytes(v.expected)?;
    let mut out = vec![0u8; expected.len()];
    let iterations = v.input.parse().ok()?;
    pbkdf2_sha256(&bytes(v.key)?, &bytes(v.nonce)?, iterations, &mut out).ok()?;
    Some(out == expected)
}

fn digest(v: &Vector) -> Option<bool> {
    Some(sha256(&[&bytes(v.data)?]).as_slice() == bytes(v.expected)?)
}

/// Seals with ours and opens with `aes-gcm`, then the reverse, on a random
/// key, nonce, associated data and plaintext.
fn cross_check() -> Option<bool> {
    let mut raw = [0u8; 32 + NONCE_BYTES + 16 + 61];
    fill_random(&mut raw).ok()?;
    let (k, rest) = raw.split_at(32);
    let (n, rest) = rest.split_at(NONCE_BYTES);
    let (aad, plaintext) = rest.split_at(16);
    let nonce: [u8; NONCE_BYTES] = n.try_into().ok()?;
    let ours = AeadKey::new(&KeyBytes::from_slice(k).ok()?).ok()?;
    let theirs = Aes256Gcm::new_from_slice(k).ok()?;
    let mut buf = plaintext.to_vec();
    let tag = ours.seal(nonce, aad, &mut buf).ok()?;
    let sealed = [buf.as_slice(), tag.as_slice()].concat();
    let n = Nonce::from(nonce);
    let they_open = theirs.decrypt(&n, Payload { msg: &sealed, aad }).ok()? == plaintext;
    let theirs_sealed = theirs
        .encrypt(
            &n,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .ok()?;
    let (ct, tag) = theirs_sealed.split_at(theirs_sealed.len().checked_sub(TAG_LEN)?);
    let mut opened = vec![0u8; ct.len()];
    let we_open = ours.open(nonce, aad, ct, tag, &mut opened).is_ok() && opened == plaintext;
    Some(they_open && we_open && theirs_sealed == sealed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_vectors_pass() {
        assert_eq!(run(&VECTORS), Ok(()));
    }

    /// Every expected output, corrupted by one bit, fails its own check.
    #[test]
    fn a_corrupted_vector_fails_its_primitive() {
        let flip = |hex: &'static str| -> &'static str {
            let mut b = hex::decode(hex).unwrap();
            b[0] ^= 1;
            Box::leak(hex::encode(b).into_boxed_str())
        };
        type Field = fn(&mut Vectors) -> &mut Vector;
        let cases: [(&str, Field); 5] = [
            ("AES-256-GCM", |v| &mut v.aes_gcm),
            ("HKDF-SHA256", |v| &mut v.hkdf),
            ("HMAC-SHA256", |v| &mut v.hmac),
            ("PBKDF2-HMAC-SHA256", |v| &mut v.pbkdf2),
            ("SHA-256", |v| &mut v.sha256),
        ];
        for (name, field) in cases {
            let mut v = VECTORS;
            let vector = field(&mut v);
            vector.expected = flip(vector.expected);
            assert_eq!(run(&v), Err(SelfTestError(name)), "{name}");
        }
        // A corrupted input (the AEAD's plaintext) fails too.
        let mut v = VECTORS;
        v.aes_gcm.input = flip(v.aes_gcm.input);
        assert_eq!(run(&v), Err(SelfTestError("AES-256-GCM")));
    }
}
