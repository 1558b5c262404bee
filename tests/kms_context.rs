//! The KMS encryption context of every KMS call Envelope makes, read from
//! the requests on their way to moto. A master key's context is
//! `envelope:key` and `envelope:version` alone, and a data key's adds
//! `envelope:purpose`: the Terraform key policy (`OnlyCreatorsMakeMasterKeys`,
//! docs/SECURITY.md) tells master-key creation apart by that member alone,
//! so a data key without it would be refused, and a master key with it
//! could be made by any principal allowed data keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use common::Server;
use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::moto::{Proxy, TEST_ENV, kms_key, moto, unique};
use common::requests::{CTX, ctx, enc};
use envelope::pb;

/// The encryption contexts of the requests for `target`.
fn contexts(proxy: &Proxy, target: &str) -> Vec<BTreeMap<String, String>> {
    proxy
        .bodies(target)
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            serde_json::from_value(v["EncryptionContext"].clone()).unwrap_or_default()
        })
        .collect()
}

fn purpose(ctx: &BTreeMap<String, String>) -> Option<&str> {
    ctx.get("envelope:purpose").map(String::as_str)
}

#[tokio::test]
async fn master_keys_carry_no_purpose_and_data_keys_name_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/context");
    let proxy = Proxy::start(moto().addr);
    let cfg = aws_config(
        &proxy.url(),
        &key,
        FAIL_FAST,
        "refresh_interval_secs = 3600\n",
        &secret_key("default", &secret),
    );
    let path = dir.path().join("aws.toml");
    std::fs::write(&path, &cfg).unwrap();

    // init-keys makes the first master key.
    let (ok, _, err) = common::run(&["init-keys", "--config", path.to_str().unwrap()], TEST_ENV);
    assert!(ok, "{err}");
    let made = contexts(&proxy, "TrentService.GenerateDataKey");
    assert_eq!(made.len(), 1, "{made:?}");
    let first = made[0]["envelope:version"].clone();
    assert_eq!(
        made[0],
        BTreeMap::from([
            ("envelope:key".to_owned(), "default".to_owned()),
            ("envelope:version".to_owned(), first.clone()),
        ])
    );

    // serve loads it (Decrypt, the same context), seals a record (a record
    // data key), hands out a data key, and rotates (a second master key).
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let mut c = server.client().await;
    c.encrypt(enc("", b"x", CTX)).await.unwrap();
    c.generate_data_key(pb::GenerateDataKeyRequest {
        key: String::new(),
        context: ctx(CTX),
    })
    .await
    .unwrap();
    server
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest::default())
        .await
        .unwrap();

    // (And, while a proxy is here: KeyStatus answers from memory, with no
    // store or KMS call, API.md "Admin".)
    let calls = || {
        [
            "secretsmanager.DescribeSecret",
            "secretsmanager.GetSecretValue",
            "TrentService.Decrypt",
            "TrentService.GenerateDataKey",
        ]
        .map(|t| proxy.count(t))
    };
    let before = calls();
    server
        .admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap();
    assert_eq!(calls(), before, "KeyStatus called AWS");

    let decrypts = contexts(&proxy, "TrentService.Decrypt");
    assert!(!decrypts.is_empty());
    assert!(
        decrypts
            .iter()
            .all(|d| d.len() == 2 && purpose(d).is_none()),
        "{decrypts:?}"
    );
    let generated = contexts(&proxy, "TrentService.GenerateDataKey");
    let purposes: Vec<Option<&str>> = generated.iter().skip(1).map(purpose).collect();
    assert_eq!(
        purposes,
        [Some("record-data-key"), Some("client-data-key"), None],
        "{generated:?}"
    );
    for data_key in &generated[1..3] {
        assert_eq!(data_key["envelope:key"], "default");
        assert_eq!(
            data_key["envelope:version"], first,
            "sealed under the current version"
        );
        assert_eq!(data_key.len(), 3);
    }
    let rotated = &generated[3];
    assert_eq!(rotated.len(), 2);
    assert_ne!(rotated["envelope:version"], first);
}
