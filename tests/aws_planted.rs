//! A writer of the secret (PutSecretValue, UpdateSecretVersionStage) who
//! cannot read the KMS key tries to choose the master key new records are
//! sealed under, against moto's Secrets Manager and KMS: a seed-shaped
//! (plaintext) version made AWSCURRENT is refused at the refresh and the key
//! keeps its previous version; the same version as AWSPENDING fails
//! rotation's testSecret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::Server;
use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::moto::{TEST_ENV, create_envelope_secret, envelope_doc, kms_key, moto, unique, uuid};
use common::requests::{CTX, decrypt, round_trip};
use envelope::backends::kms::aws_kms::AwsKms;
use envelope::backends::store::secrets_manager::AwsStore;
use envelope::keys::rotation::Rotator;
use envelope::pb;

/// A seed 001 document: a plaintext key anyone who can write could plant.
fn planted() -> String {
    let mut raw = [0u8; 32];
    envelope::primitives::crypto::fill_random(&mut raw).unwrap();
    serde_json::json!({
        "masterKey": base64::engine::general_purpose::STANDARD.encode(raw),
        "algorithm": "AES-256-GCM",
        "keyDerivation": "PBKDF2",
        "salt": "planted",
        "iterations": 100000,
    })
    .to_string()
}

/// A server on a fresh Envelope-shaped key "pii" in moto, with its parts
/// (`top`: more top-level settings).
struct Served {
    dir: tempfile::TempDir,
    key: String,
    secret: String,
    v1: String,
    cfg: String,
    server: Server,
}

async fn served(top: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/pii");
    let v1 = uuid();
    create_envelope_secret(&secret, &key, "pii", &v1).await;
    let cfg = aws_config(
        &moto().url(),
        &key,
        FAIL_FAST,
        &format!("metrics_listen = \"127.0.0.1:0\"\n{top}"),
        &secret_key("pii", &secret),
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    Served {
        dir,
        key,
        secret,
        v1,
        cfg,
        server,
    }
}

/// The writer puts `value` as a new version with `stage`; returns its id.
async fn plant(secret: &str, value: String, stage: &str) -> String {
    let version = uuid();
    plant_as(secret, &version, value, stage).await;
    version
}

/// [`plant`] under a chosen version id.
async fn plant_as(secret: &str, version: &str, value: String, stage: &str) {
    common::moto::put_version(secret, version, value, stage).await;
}

/// The `KeyRefresh` audit line that refused `version` of "pii".
async fn refusal_audited(server: &Server, version: &str) -> serde_json::Value {
    let audit = server.audit_with(&["\"KeyRefresh\"", version]).await;
    let line = audit
        .lines()
        .find(|l| l.contains("\"KeyRefresh\"") && l.contains(version))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["key"], "pii", "{line}");
    assert_eq!(line["key_version"], version, "{line}");
    assert_eq!(line["outcome"], "refused", "{line}");
    assert_eq!(line["caller"], serde_json::Value::Null, "{line}");
    assert_eq!(line["rpc"], "KeyRefresh", "{line}");
    assert_eq!(line["operation"], "refresh", "{line}");
    assert_eq!(line["code"], "FAILED_PRECONDITION", "{line}");
    assert_eq!(line["latency_us"], 0, "{line}");
    line
}

/// RefreshKeys on "pii", which must be refused (UNAVAILABLE).
async fn refresh_is_refused(server: &Server) {
    let refused = server
        .admin()
        .await
        .refresh_keys(pb::RefreshKeysRequest { key: "pii".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_planted_seed_shaped_version_is_never_used_to_encrypt() {
    // The temporary directory (data, logs) must live as long as the server.
    let Served {
        dir: _dir,
        key,
        secret,
        v1,
        server,
        ..
    } = served("").await;
    let before = round_trip(&server, "pii", "123.456.789-09").await;
    assert_eq!(before.key_version, v1);

    // The writer makes a seed-shaped version AWSCURRENT.
    let planted_version = plant(&secret, planted(), "AWSCURRENT").await;
    refresh_is_refused(&server).await;
    assert!(
        server.logs().contains("seed-shaped (unwrapped) master key"),
        "the refusal names its reason in the log"
    );
    let (_, ready) = common::process::http_get(server.metrics.as_deref().unwrap(), "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let why = ready["checks"]["keys"]["pii"]["last_refresh_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("seed-shaped") && why.contains(&planted_version),
        "{ready}"
    );
    let line = refusal_audited(&server, &planted_version).await;
    assert!(
        line["reason"].as_str().unwrap().contains("seed-shaped"),
        "{line}"
    );
    // Counted as a failed refresh.
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("envelope_key_refresh_failures_total{key=\"pii\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(failures, Some(1), "{metrics}");
    // The key keeps encrypting under its last good version.
    let after = round_trip(&server, "pii", "987.654.321-00").await;
    assert_eq!(
        after.key_version, v1,
        "a planted version was used to encrypt"
    );
    assert_eq!(
        decrypt(&server, "pii", &before.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"123.456.789-09"
    );

    // As AWSPENDING, rotation's testSecret refuses it, so finishSecret never runs.
    let pending = plant(&secret, planted(), "AWSPENDING").await;
    let settings = envelope::backends::aws_sdk::AwsSettings::new(key.clone());
    let store = Arc::new(AwsStore::new(&settings, &moto().sdk_config()).await);
    let kms = Arc::new(AwsKms::new(&moto().sdk_config(), key.clone()));
    let rotator = Rotator {
        store: store.as_ref(),
        kms: kms.as_ref(),
        key_name: "pii",
        secret_id: &secret,
    };
    let e = rotator
        .step("testSecret".parse().unwrap(), &pending)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("seed-shaped"), "{e}");
}

/// An Envelope-shaped document wrapped under a KMS key of the writer's own
/// (which the server's role may use) is refused after a refresh: KMS says
/// which key decrypted it, and that key is not on `aws.allowed_kms_keys`.
#[tokio::test]
async fn a_document_wrapped_under_a_foreign_kms_key_is_refused() {
    let Served {
        dir,
        key,
        secret,
        v1,
        cfg,
        server,
    } = served("").await;
    let foreign = kms_key().await;
    assert_eq!(round_trip(&server, "pii", "x").await.key_version, v1);
    // The document binds its version id, so the id is chosen first.
    let planted = uuid();
    let value = envelope_doc(&foreign, "pii", &planted).await;
    plant_as(&secret, &planted, value, "AWSCURRENT").await;
    refresh_is_refused(&server).await;
    assert!(server.logs().contains("not in aws.allowed_kms_keys"));
    let line = refusal_audited(&server, &planted).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("not in aws.allowed_kms_keys"),
        "{line}"
    );
    assert_eq!(round_trip(&server, "pii", "y").await.key_version, v1);

    // Listed in allowed_kms_keys, the same document is used.
    let allowed = cfg.replace(
        &format!("kms_key_id = \"{key}\"\n"),
        &format!("kms_key_id = \"{key}\"\nallowed_kms_keys = [\"{key}\", \"{foreign}\"]\n"),
    );
    assert_ne!(allowed, cfg);
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&allowed), TEST_ENV);
    assert_eq!(round_trip(&server, "pii", "z").await.key_version, planted);
}

/// AUDIT.md, "Key refresh lines": the background refresh writes the same
/// line as RefreshKeys when it refuses a version; no call is made here.
#[tokio::test]
async fn the_background_refresh_audits_a_refused_version() {
    let Served {
        dir: _dir,
        secret,
        server,
        ..
    } = served("refresh_interval_secs = 1").await;
    let version = plant(&secret, planted(), "AWSCURRENT").await;
    let line = refusal_audited(&server, &version).await;
    assert_eq!(line["outcome"], "refused", "{line}");
    assert!(!server.stdout().contains("\"rpc\":\"RefreshKeys\""));
    // Written at every refused refresh: the retry (1 s later) writes another.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while server
        .stdout()
        .lines()
        .filter(|l| l.contains("\"KeyRefresh\"") && l.contains(&version))
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.stdout());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
