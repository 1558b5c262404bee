//! Pins of how a master-key version's secret string is read today: which
//! shape a string is taken for, and the exact reason a version is refused
//! (docs/FORMAT.md, "Master-key secret shapes" and "Load failures"; the
//! `malformed_shapes_…` test in tests/aws.rs checks three of them end to end).
//! These tests use only the module's public items, so the parsing behind them
//! can change while they stay as they are.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::backends::kms::KmsError;
use crate::backends::kms::local::LocalKms;
use crate::backends::store::VersionInfo;
use crate::primitives::crypto::CryptoError;
use crate::primitives::record::VersionId;

mod reasons;

const SECRET: &str = "sec";
const VERSION: &str = "v1";
/// Base64 of 16 bytes, the shortest key accepted.
const KEY16: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// Base64 of 20 bytes.
const KEY20: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";
/// The floor: the cheapest iteration count a seed shape accepts.
const FLOOR: u32 = 100_000;
const NEITHER: &str = "JSON document is neither an Envelope master-key document (\"format\") nor a masterKey document";

fn kdf(salt: Option<&str>, iterations: Option<u32>) -> KdfParams {
    KdfParams {
        salt: salt.map(|s| zeroize::Zeroizing::new(s.as_bytes().to_vec())),
        iterations,
        // These pins are about reading the shapes; accepting them is pinned below.
        unwrapped: super::Unwrapped::Any,
    }
}

/// A passphrase (seed 001) document with the given extra members.
fn passphrase(extra: &str) -> String {
    format!(
        r#"{{"masterKey":"{KEY16}","algorithm":"AES-256-GCM","keyDerivation":"PBKDF2"{extra}}}"#
    )
}

struct Bench {
    _dir: tempfile::TempDir,
    kms: LocalKms,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open_or_create(&dir.path().join("root")).unwrap();
        Self { _dir: dir, kms }
    }

    async fn load_as(
        &self,
        id: &str,
        value: &str,
        kdf: &KdfParams,
    ) -> Result<MasterKey, MasterKeyError> {
        let info = VersionInfo {
            id: id.into(),
            stages: vec!["AWSCURRENT".into()],
            created: None,
        };
        load("pii", SECRET, info, value, &self.kms, kdf).await
    }

    async fn load(&self, value: &str, kdf: &KdfParams) -> MasterKey {
        match self.load_as(VERSION, value, kdf).await {
            Ok(key) => key,
            Err(e) => panic!("{value:?} did not load: {e}"),
        }
    }

    /// The reason `value` is refused; checks the variant, the names and the Display.
    async fn reason(&self, value: &str, kdf: &KdfParams) -> String {
        match self.load_as(VERSION, value, kdf).await {
            Err(e) => {
                let shown = e.to_string();
                let MasterKeyError::Malformed {
                    secret,
                    version,
                    reason,
                } = e
                else {
                    panic!("{value:?}: expected Malformed, got {shown}")
                };
                assert_eq!((secret.as_str(), version.as_str()), (SECRET, VERSION));
                assert_eq!(
                    shown,
                    format!("secret {SECRET} version {VERSION}: {reason}")
                );
                reason
            }
            Ok(_) => panic!("{value:?}: expected Malformed, but it loaded"),
        }
    }

    /// Envelope's document for version [`VERSION`] of key `pii`, as a JSON map.
    async fn envelope_doc(&self) -> serde_json::Map<String, serde_json::Value> {
        let text = new_secret_value("pii", VERSION, &self.kms).await.unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// Whether two loaded versions have the same KEK: one seals, the other opens.
fn same_kek(a: &MasterKey, b: &MasterKey) -> bool {
    let mut data = *b"pinned";
    let tag = a.kek.seal([7; 12], b"aad", &mut data).unwrap();
    let mut out = [0u8; 6];
    b.kek.open([7; 12], b"aad", &data, &tag, &mut out).is_ok() && &out == b"pinned"
}

fn json(map: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(map).unwrap()
}

#[tokio::test]
async fn a_format_member_makes_envelopes_shape_even_beside_master_key() {
    let b = Bench::new();
    let mut doc = b.envelope_doc().await;
    doc.insert("masterKey".into(), KEY16.into());
    let both = json(&doc);
    assert!(is_envelope_shape(&both));
    // Read as Envelope's document, whose unknown members are refused.
    let refused = "Envelope master-key document: missing, unknown or mistyped fields";
    assert_eq!(b.reason(&both, &kdf(Some("s"), Some(FLOOR))).await, refused);
    // A complete passphrase document with a format member is Envelope's too,
    let p = passphrase(r#","salt":"s","format":"envelope.master-key.v1""#);
    assert_eq!(b.reason(&p, &KdfParams::default()).await, refused);
    // even when format is null or not a string.
    for format in ["null", "1", "{}"] {
        let p = passphrase(&format!(r#","salt":"s","format":{format}"#));
        assert!(is_envelope_shape(&p), "{p}");
        assert_eq!(b.reason(&p, &KdfParams::default()).await, refused, "{p}");
    }
}

#[tokio::test]
async fn master_key_without_format_is_the_passphrase_document() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    let doc = b
        .load(
            &passphrase(r#","salt":"s","iterations":100000"#),
            &kdf(None, None),
        )
        .await;
    // The password is the base64 text, as for a plain key with the same salt and count.
    assert!(same_kek(&doc, &b.load(KEY16, &salted).await));
    // The salt secret and kdf_iterations stand in for missing members.
    assert!(same_kek(&doc, &b.load(&passphrase(""), &salted).await));
    // Other members are ignored, and keyDerivation is matched in any case.
    let loose = passphrase(r#","salt":"s","iterations":100000,"kmsKeyId":"x","extra":{"a":[1]}"#);
    assert!(same_kek(&doc, &b.load(&loose, &kdf(None, None)).await));
    let lower = r#"{"masterKey":"AAECAwQFBgcICQoLDA0ODw==","algorithm":"AES-256-GCM","keyDerivation":"pbkdf2"}"#;
    assert!(same_kek(&doc, &b.load(lower, &salted).await));
    assert!(!is_envelope_shape(&passphrase("")));
}

#[tokio::test]
async fn any_other_json_object_is_refused() {
    let b = Bench::new();
    for value in [
        "{}",
        r#"{"user":"x"}"#,
        r#"{"Format":"envelope.master-key.v1"}"#,
        r#"{"master_key":"AAECAwQFBgcICQoLDA0ODw=="}"#,
        r#"{"inner":{"format":"envelope.master-key.v1","masterKey":"x"}}"#,
        r#"{"user":1,"user":2}"#,
    ] {
        assert_eq!(
            b.reason(value, &kdf(Some("s"), Some(FLOOR))).await,
            NEITHER,
            "{value}"
        );
        assert!(!is_envelope_shape(value), "{value}");
    }
}

#[tokio::test]
async fn text_not_opening_with_a_brace_is_a_plain_key() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    for value in [
        r#"[{"format":"envelope.master-key.v1"}]"#,
        r#"x{"masterKey":"x"}"#,
        "\"text\"",
    ] {
        assert_eq!(
            b.reason(value, &salted).await,
            "plain key secret is not base64",
            "{value}"
        );
        assert!(!is_envelope_shape(value), "{value}");
    }
    // JSON `null` is base64 for three bytes.
    assert_eq!(
        b.reason("null", &salted).await,
        "plain key secret decodes to 3 bytes; at least 16 are required"
    );
    b.load(KEY16, &salted).await;
}

#[tokio::test]
async fn surrounding_whitespace_is_trimmed() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    let plain = b.load(KEY16, &salted).await;
    assert!(same_kek(
        &plain,
        &b.load(&format!(" \n\t{KEY16}\r\n "), &salted).await
    ));
    let doc = b.load(&passphrase(""), &salted).await;
    assert!(same_kek(
        &doc,
        &b.load(&format!("\n  {}\t\n", passphrase("")), &salted)
            .await
    ));
    let envelope = json(&b.envelope_doc().await);
    let padded = format!("\r\n {envelope} \n");
    assert!(is_envelope_shape(&padded));
    let a = b.load(&envelope, &KdfParams::default()).await;
    assert!(same_kek(&a, &b.load(&padded, &KdfParams::default()).await));
    // Trimming comes before the brace test.
    assert_eq!(b.reason(" \n{}", &salted).await, NEITHER);
}

#[tokio::test]
async fn json_that_does_not_parse_is_refused_before_any_shape() {
    let b = Bench::new();
    let salted = kdf(Some("s"), Some(FLOOR));
    let deep = format!(r#"{{"user":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    for (value, reason) in [
        (
            r#"{not json}"#.to_owned(),
            "not valid JSON (not valid JSON)",
        ),
        (
            r#"{"user":"x"} trailing"#.to_owned(),
            "not valid JSON (not valid JSON)",
        ),
        (
            r#"{"format":"envelope.master-key.v1","#.to_owned(),
            "not valid JSON (truncated JSON)",
        ),
        (
            r#"{"masterKey":"AAEC"#.to_owned(),
            "not valid JSON (truncated JSON)",
        ),
        ("{".to_owned(), "not valid JSON (truncated JSON)"),
        // Every member is checked, also those no shape reads.
        (
            passphrase(r#","salt":"s","extra":1e400"#),
            "not valid JSON (not valid JSON)",
        ),
        (
            passphrase(r#","salt":"s","extra":"\ud800""#),
            "not valid JSON (not valid JSON)",
        ),
        (deep, "not valid JSON (not valid JSON)"),
    ] {
        assert_eq!(b.reason(&value, &salted).await, reason, "{value}");
        assert!(!is_envelope_shape(&value), "{value}");
    }
}

/// The key check value is HKDF under its own label over the same input as
/// the KEK: the same for the same secret, name and version, different for
/// another version, and not the KEK (which comes from another label).
#[tokio::test]
async fn the_key_check_value_is_derived_under_its_own_label() {
    let dir = tempfile::tempdir().unwrap();
    let kms = crate::backends::kms::local::LocalKms::open_or_create(&dir.path().join("root.key"))
        .unwrap();
    let v1 = "0e1b2f1c-7b5e-4a55-9d8c-1c2d3e4f5a6b";
    let doc = super::new_secret_value("pii", v1, &kms).await.unwrap();
    let info = |id: &str| crate::backends::store::VersionInfo {
        id: id.into(),
        stages: vec![],
        created: None,
    };
    let kdf = super::KdfParams::default();
    let a = super::load("pii", "s", info(v1), &doc, &kms, &kdf)
        .await
        .unwrap();
    let b = super::load("pii", "s", info(v1), &doc, &kms, &kdf)
        .await
        .unwrap();
    assert_eq!(a.check_value, b.check_value);
    // The same material under another label is the check value, recomputed.
    let blob: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        blob["wrappedKey"].as_str().unwrap(),
    )
    .unwrap();
    let master =
        crate::backends::kms::Kms::decrypt(&kms, &blob, &super::kms_context("pii", v1), None)
            .await
            .unwrap();
    let version = crate::primitives::record::VersionId::new(v1).unwrap();
    let info_parts: [&[u8]; 3] = [&[3], b"pii", version.raw()];
    let mut expected = [0u8; 8];
    crate::primitives::crypto::hkdf_sha256(
        b"envelope.v1/key-check-value",
        master.expose(),
        &info_parts,
        &mut expected,
    )
    .unwrap();
    assert_eq!(a.check_value, expected);
    let mut kek_prefix = [0u8; 8];
    crate::primitives::crypto::hkdf_sha256(
        b"envelope.v1/kek",
        master.expose(),
        &info_parts,
        &mut kek_prefix,
    )
    .unwrap();
    assert_ne!(a.check_value, kek_prefix, "not the KEK's first bytes");
    // The blind-index root: the same input under its own label, not the KEK.
    let mut root = [0u8; 32];
    crate::primitives::crypto::hkdf_sha256(
        crate::primitives::blind_index::ROOT_LABEL,
        master.expose(),
        &info_parts,
        &mut root,
    )
    .unwrap();
    assert_eq!(a.index_root.expose(), &root);
    assert_eq!(a.index_root.expose(), b.index_root.expose());
    assert_ne!(root[..8], kek_prefix, "not the KEK");
}

/// Seed-shaped versions are refused unless the key accepts them: any of
/// them, or the listed versions only. Envelope's own shape is unaffected.
#[tokio::test]
async fn seed_shapes_only_where_the_key_accepts_them() {
    let b = Bench::new();
    let doc = passphrase(r#","salt":"s","iterations":100000"#);
    assert_eq!(
        b.reason(&doc, &KdfParams::default()).await,
        super::UNWRAPPED_REFUSED
    );
    let listed = |ids: &[&str]| KdfParams {
        unwrapped: super::Unwrapped::Only(ids.iter().map(|s| (*s).to_owned()).collect()),
        ..KdfParams::default()
    };
    assert_eq!(
        b.reason(&doc, &listed(&["other"])).await,
        super::UNWRAPPED_REFUSED
    );
    b.load(&doc, &listed(&["v1"])).await;
    b.load(&doc, &kdf(None, None)).await;
}
