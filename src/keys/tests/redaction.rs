//! SECURITY.md, "Key types": each type that holds key material prints the
//! form the table gives and none of its bytes, and the fields holding raw
//! bytes are types that wipe themselves on drop (checked at compile time:
//! changing one to a plain buffer stops this test building).

use std::sync::Arc;

use zeroize::ZeroizeOnDrop;

use crate::backends::kms::local::LocalKms;
use crate::backends::store::{SecretValue, VersionInfo};
use crate::keys::data_key::DataKey;
use crate::keys::master_key::{KdfParams, MasterKey, Unwrapped};
use crate::primitives::crypto::{AeadKey, KeyBytes};
use crate::primitives::record::{VersionId, WRAPPED_LEN};

/// Bytes 0x42 print as `42` in hex, `66` in decimal and `B` as text.
const CANARY: [u8; 32] = [0x42; 32];

fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}

fn leaks(printed: &str) -> bool {
    printed.contains("42") || printed.contains("66") || printed.contains("BBBB")
}

#[test]
fn every_key_type_prints_its_documented_form_and_no_key_byte() {
    let bytes = KeyBytes::from_slice(&CANARY).unwrap();
    let master = Arc::new(MasterKey {
        version: VersionId::new("v1").unwrap(),
        created: None,
        kek: AeadKey::new(&bytes).unwrap(),
        check_value: [0; 8],
        index_root: KeyBytes::from_slice(&CANARY).unwrap(),
    });
    let data_key = DataKey::new(
        master.clone(),
        [0x42; WRAPPED_LEN],
        Arc::new(AeadKey::new(&bytes).unwrap()),
        [0; 4],
    );
    let secret = SecretValue {
        info: VersionInfo {
            id: "v1".into(),
            stages: vec!["AWSCURRENT".into()],
            created: None,
        },
        value: zeroize::Zeroizing::new("B".repeat(64)),
    };
    let kdf = KdfParams {
        salt: Some(zeroize::Zeroizing::new(CANARY.to_vec())),
        iterations: Some(1),
        unwrapped: Unwrapped::Refuse,
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open_or_create(&dir.path().join("root.key")).unwrap();
    let printed = [
        (format!("{bytes:?}"), "KeyBytes([REDACTED])".to_owned()),
        (
            format!("{:?}", AeadKey::new(&bytes).unwrap()),
            "AeadKey(AES-256-GCM, [REDACTED])".to_owned(),
        ),
        (
            format!("{master:?}"),
            "MasterKey { version: v1, kek: \"[REDACTED]\" }".to_owned(),
        ),
        (
            format!("{secret:?}"),
            "SecretValue { info: VersionInfo { id: \"v1\", stages: [\"AWSCURRENT\"], created: None }, value: \"[REDACTED]\" }".to_owned(),
        ),
        (
            format!("{kdf:?}"),
            "KdfParams { salt: Some(\"[REDACTED]\"), iterations: Some(1), unwrapped: Refuse }".to_owned(),
        ),
        (
            format!("{data_key:?}"),
            "DataKey { version: v1, records: 0, .. }".to_owned(),
        ),
        (
            format!("{kms:?}"),
            format!("LocalKms {{ path: {:?}, .. }}", dir.path().join("root.key").display().to_string()),
        ),
    ];
    let path = dir.path().display().to_string();
    for (got, want) in &printed {
        assert_eq!(got, want);
        // The temporary path is random and may hold "42" itself.
        assert!(!leaks(&got.replace(&path, "")), "{got}");
    }
    // The raw bytes behind them wipe themselves on drop.
    wiped_on_drop(&secret.value);
    wiped_on_drop(kdf.salt.as_ref().unwrap());
    // KeyBytes' own field: `key_types_print_redacted` in src/primitives/crypto.rs.
}
