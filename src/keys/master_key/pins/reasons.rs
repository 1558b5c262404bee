//! Pins of the exact reason each refused shape gives (docs/FORMAT.md, "Load
//! failures"), and of the order the checks run in where one value has several
//! faults.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
#[tokio::test]
async fn envelope_document_reasons() {
    let b = Bench::new();
    let none = KdfParams::default();
    let doc = b.envelope_doc().await;
    let with = |key: &str, value: serde_json::Value| {
        let mut d = doc.clone();
        d.insert(key.into(), value);
        json(&d)
    };
    let without = |key: &str| {
        let mut d = doc.clone();
        d.remove(key);
        json(&d)
    };
    let fields = "Envelope master-key document: missing, unknown or mistyped fields";
    for (value, reason) in [
        (with("extra", "x".into()), fields),
        (with("kmsKeyId", 5.into()), fields),
        (without("wrappedKey"), fields),
        (without("kmsKeyId"), fields),
        (r#"{"format":"a","format":"b"}"#.to_owned(), fields),
        (
            with("format", "envelope.master-key.v2".into()),
            "unknown format, expected envelope.master-key.v1",
        ),
        (
            with("algorithm", "AES-128-GCM".into()),
            "unsupported algorithm, expected AES-256-GCM",
        ),
        (
            with("wrappedKey", "not base64!".into()),
            "wrappedKey is not base64",
        ),
        // The format is checked before the algorithm, and both before the key.
        (
            json(&{
                let mut d = doc.clone();
                d.insert("format".into(), "x".into());
                d.insert("algorithm".into(), "x".into());
                d.insert("wrappedKey".into(), "!".into());
                d
            }),
            "unknown format, expected envelope.master-key.v1",
        ),
    ] {
        assert_eq!(b.reason(&value, &none).await, reason, "{value}");
    }
    // A blob KMS cannot decrypt is a KMS failure, named like the others.
    let e = b
        .load_as(VERSION, &with("wrappedKey", KEY20.into()), &none)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "secret {SECRET} version {VERSION}: {}",
            KmsError::DecryptFailed
        )
    );
    assert!(
        matches!(e, MasterKeyError::Kms { ref secret, ref version, source: KmsError::DecryptFailed }
        if secret == SECRET && version == VERSION)
    );
}

#[tokio::test]
async fn passphrase_document_reasons() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    let fields = "masterKey document: missing, unknown or mistyped fields";
    let doc = |key: &str, algorithm: &str, derivation: &str| {
        format!(
            r#"{{"masterKey":"{key}","algorithm":"{algorithm}","keyDerivation":"{derivation}"}}"#
        )
    };
    for (value, reason) in [
        (
            doc(KEY16, "AES-128-CBC", "PBKDF2"),
            "algorithm must be AES-256-GCM".to_owned(),
        ),
        (
            doc(KEY16, "aes-256-gcm", "PBKDF2"),
            "algorithm must be AES-256-GCM".to_owned(),
        ),
        (
            doc(KEY16, "AES-256-GCM", "scrypt"),
            "keyDerivation must be PBKDF2".to_owned(),
        ),
        (
            doc("not base64!", "AES-256-GCM", "PBKDF2"),
            "masterKey is not base64".to_owned(),
        ),
        (
            doc("AAECAwQFBgcICQoLDA0ODw", "AES-256-GCM", "PBKDF2"),
            "masterKey is not base64".to_owned(),
        ),
        (
            doc("AAECAwQFBgc=", "AES-256-GCM", "PBKDF2"),
            "masterKey decodes to 8 bytes; at least 16 are required".to_owned(),
        ),
        // The algorithm is checked first, then keyDerivation, then the key.
        (
            doc("!", "x", "x"),
            "algorithm must be AES-256-GCM".to_owned(),
        ),
        (
            doc("!", "AES-256-GCM", "x"),
            "keyDerivation must be PBKDF2".to_owned(),
        ),
        (
            r#"{"masterKey":"AAECAwQFBgcICQoLDA0ODw=="}"#.to_owned(),
            fields.to_owned(),
        ),
        (r#"{"masterKey":5}"#.to_owned(), fields.to_owned()),
        (passphrase(r#","iterations":"100000""#), fields.to_owned()),
        (passphrase(r#","iterations":-1"#), fields.to_owned()),
        (passphrase(r#","salt":5"#), fields.to_owned()),
        (
            passphrase(r#","masterKey":"AAECAwQFBgcICQoLDA0ODw==""#),
            fields.to_owned(),
        ),
    ] {
        assert_eq!(b.reason(&value, &salted).await, reason, "{value}");
    }
    // No salt member and no salt secret; the key is checked first.
    let no_salt = "a masterKey document needs a salt: a \"salt\" field, or salt_secret_id in the key's configuration";
    let unsalted = kdf(None, Some(FLOOR));
    assert_eq!(b.reason(&passphrase(""), &unsalted).await, no_salt);
    assert_eq!(
        b.reason(&passphrase(r#","iterations":1"#), &unsalted).await,
        no_salt
    );
    assert_eq!(
        b.reason(&doc("!", "AES-256-GCM", "PBKDF2"), &unsalted)
            .await,
        "masterKey is not base64"
    );
}

#[tokio::test]
async fn plain_key_reasons() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    let no_salt = "a plain base64 key secret needs salt_secret_id in the key's configuration";
    for (value, kdf, reason) in [
        ("not base64!", &salted, "plain key secret is not base64"),
        (
            "AAECAwQFBgcICQoLDA0ODw",
            &salted,
            "plain key secret is not base64",
        ),
        ("AAEC AwQF", &salted, "plain key secret is not base64"),
        (
            "AAECAwQFBgcICQ==",
            &salted,
            "plain key secret decodes to 10 bytes; at least 16 are required",
        ),
        (KEY16, &KdfParams::default(), no_salt),
        // The key is checked before the salt (tests/aws.rs relies on it).
        (
            "CANARY-not-a-key",
            &KdfParams::default(),
            "plain key secret is not base64",
        ),
        (
            "AAECAwQFBgc=",
            &KdfParams::default(),
            "plain key secret decodes to 8 bytes; at least 16 are required",
        ),
    ] {
        assert_eq!(b.reason(value, kdf).await, reason, "{value}");
    }
}

#[tokio::test]
async fn pbkdf2_bounds_reasons() {
    let b = Bench::new();
    let below = |n: u32| format!("PBKDF2 iterations {n} are below the floor of 100000");
    let above = |n: u32| format!("PBKDF2 iterations {n} are above the ceiling of 10000000");
    let empty = "the PBKDF2 salt is empty".to_owned();
    let cases = [
        // Plain key: kdf_iterations and the salt secret.
        (
            KEY16.to_owned(),
            kdf(Some("s"), Some(99_999)),
            below(99_999),
        ),
        (KEY16.to_owned(), kdf(Some("s"), Some(0)), below(0)),
        (
            KEY16.to_owned(),
            kdf(Some("s"), Some(10_000_001)),
            above(10_000_001),
        ),
        (KEY16.to_owned(), kdf(Some(""), Some(FLOOR)), empty.clone()),
        // The iteration count is checked before the salt.
        (KEY16.to_owned(), kdf(Some(""), Some(1)), below(1)),
        (
            KEY16.to_owned(),
            kdf(Some(""), Some(u32::MAX)),
            above(u32::MAX),
        ),
        // Passphrase document: its members win over the key's settings.
        (
            passphrase(r#","iterations":99999"#),
            kdf(Some("s"), Some(FLOOR)),
            below(99_999),
        ),
        (
            passphrase(r#","iterations":10000001"#),
            kdf(Some("s"), None),
            above(10_000_001),
        ),
        (passphrase(""), kdf(Some("s"), Some(5)), below(5)),
        (
            passphrase(r#","salt":"""#),
            kdf(Some("s"), Some(FLOOR)),
            empty.clone(),
        ),
        (
            passphrase(r#","salt":"","iterations":7"#),
            kdf(None, None),
            below(7),
        ),
        (passphrase(""), kdf(Some(""), Some(FLOOR)), empty.clone()),
    ];
    for (value, kdf, reason) in &cases {
        assert_eq!(&b.reason(value, kdf).await, reason, "{value} {kdf:?}");
    }
    // The floor itself is accepted.
    b.load(KEY16, &kdf(Some("s"), Some(FLOOR))).await;
}

#[tokio::test]
async fn the_default_iteration_count_is_600000() {
    let b = Bench::new();
    assert_eq!(DEFAULT_PBKDF2_ITERATIONS, 600_000);
    let default = b.load(KEY16, &kdf(Some("s"), None)).await;
    assert!(same_kek(
        &default,
        &b.load(KEY16, &kdf(Some("s"), Some(600_000))).await
    ));
    assert!(!same_kek(
        &default,
        &b.load(KEY16, &kdf(Some("s"), Some(FLOOR))).await
    ));
}

#[tokio::test]
async fn the_version_id_is_checked_before_the_value() {
    let b = Bench::new();
    let long = "x".repeat(65);
    for id in ["", "has space", long.as_str(), "versión", "v\u{7f}"] {
        match b.load_as(id, "{", &KdfParams::default()).await {
            Err(MasterKeyError::Malformed { reason, .. }) => {
                assert_eq!(reason, "malformed master-key version id field", "{id:?}")
            }
            other => panic!("{id:?}: {other:?}"),
        }
    }
}

#[test]
fn derive_kek_refuses_a_weak_stretch() {
    let v = VersionId::new(VERSION).unwrap();
    let pbkdf2 = |salt: &'static [u8], iterations| Derivation::Pbkdf2 { salt, iterations };
    assert!(derive_kek(b"pw", pbkdf2(b"s", FLOOR), "pii", &v).is_ok());
    for d in [pbkdf2(b"s", FLOOR - 1), pbkdf2(b"", FLOOR)] {
        assert!(matches!(
            derive_kek(b"pw", d, "pii", &v),
            Err(CryptoError::Primitive)
        ));
    }
    assert!(derive_kek(&[1; 32], Derivation::Hkdf, "pii", &v).is_ok());
}
