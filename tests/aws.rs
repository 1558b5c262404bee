//! AWS mode against a real AWS-API server (moto) on loopback: the three
//! secret shapes end to end through gRPC, stage loading, on-demand fetch,
//! refresh, outage and recovery, KMS context binding, and bounded API calls
//! under a flood of bogus versions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::moto::{Proxy, TEST_ENV, moto, sdk_config_for};
use common::{Server, ctx, run};
use envelope::backends::kms::Kms as _;
use envelope::backends::kms::aws_kms::AwsKms;
use envelope::pb;
use tonic::Code;

const CTX: &[(&str, &str)] = &[("table", "users"), ("column", "cpf")];
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    envelope::primitives::crypto::fill_random(&mut b).unwrap();
    format!("{prefix}-{}", hex::encode(b))
}

async fn kms_key() -> String {
    moto()
        .kms()
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned()
}

/// A TOML config for AWS mode pointing at `endpoint`.
fn config(endpoint: &str, kms_key: &str, keys: &str, extra: &str) -> String {
    format!(
        "mode = \"aws\"\ninsecure_plaintext = true\npolicy_file = \"{}\"\n{extra}\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nkms_key_id = \"{kms_key}\"\n\
         connect_timeout_secs = 1\nattempt_timeout_secs = 1\noperation_timeout_secs = 2\nmax_attempts = 2\n{keys}",
        common::open_policy()
    )
}

/// An Envelope-shape secret value for (name, version), made with moto's KMS.
async fn envelope_doc(kms_key: &str, name: &str, version: &str) -> String {
    let kms = AwsKms::new(&moto().sdk_config(), kms_key.to_owned());
    envelope::keys::master_key::new_secret_value(name, version, &kms)
        .await
        .unwrap()
}

/// Runs `envelope serve` with `cfg`, which must fail; returns its stderr.
fn serve_fails(dir: &std::path::Path, cfg: &str) -> String {
    let path = dir.join("failing.toml");
    std::fs::write(&path, cfg).unwrap();
    let (ok, _, err) = run(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        TEST_ENV,
    );
    assert!(!ok, "served with {cfg}");
    err
}

/// Creates `secret` with one Envelope-shape version `version` (AWSCURRENT).
async fn create_envelope_secret(secret: &str, kms_key: &str, name: &str, version: &str) {
    moto()
        .secrets()
        .create_secret()
        .name(secret)
        .client_request_token(version)
        .secret_string(envelope_doc(kms_key, name, version).await)
        .send()
        .await
        .unwrap();
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn round_trip(server: &Server, key: &str, pt: &str) -> pb::EncryptResponse {
    let mut c = server.client().await;
    let e = c
        .encrypt(pb::EncryptRequest {
            key: key.into(),
            plaintext: Bytes::from(pt.to_owned()),
            context: ctx(CTX),
        })
        .await
        .unwrap_or_else(|s| panic!("encrypt: {s:?}\n{}", server.logs()))
        .into_inner();
    let d = c
        .decrypt(pb::DecryptRequest {
            key: key.into(),
            ciphertext: e.ciphertext.clone(),
            context: ctx(CTX),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext.as_ref(), pt.as_bytes());
    e
}

async fn decrypt(
    server: &Server,
    key: &str,
    ct: &Bytes,
) -> Result<pb::DecryptResponse, tonic::Status> {
    server
        .client()
        .await
        .decrypt(pb::DecryptRequest {
            key: key.into(),
            ciphertext: ct.clone(),
            context: ctx(CTX),
        })
        .await
        .map(|r| r.into_inner())
}

async fn status(server: &Server) -> pb::KeyInfo {
    server
        .admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys
        .remove(0)
}

fn startup_ms(logs: &str) -> Option<u64> {
    let i = logs.find("startup_ms=")?;
    logs[i + 11..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn envelope_shape_init_serve_rotate_and_kms_context() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/pii");
    let cfg = config(
        &moto().url(),
        &key,
        &format!("[[keys]]\nname = \"pii\"\nsecret_id = \"{secret}\"\n"),
        "",
    );
    let path = dir.path().join("aws.toml");
    std::fs::write(&path, &cfg).unwrap();

    // AWS mode never serves without its keys: the secret does not exist yet.
    let err = serve_fails(dir.path(), &cfg);
    assert!(
        err.contains("cannot load key \"pii\"")
            && err.contains(&secret)
            && err.contains("not found"),
        "{err}"
    );

    // init-keys creates the first version through KMS GenerateDataKey and CreateSecret.
    let (ok, out, err) = run(&["init-keys", "--config", path.to_str().unwrap()], TEST_ENV);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pii: created");
    let (ok, out, _) = run(&["init-keys", "--config", path.to_str().unwrap()], TEST_ENV);
    assert!(ok && out.trim() == "pii: exists");

    // The secret holds only the KMS-wrapped key, bound to key name and version.
    let sm = moto().secrets();
    let v = sm
        .get_secret_value()
        .secret_id(&secret)
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
    assert_eq!(doc["format"], "envelope.master-key.v1");
    let blob = B64.decode(doc["wrappedKey"].as_str().unwrap()).unwrap();
    let version = v.version_id().unwrap().to_owned();
    let kms = AwsKms::new(&moto().sdk_config(), key.clone());
    kms.decrypt(
        &blob,
        &envelope::keys::master_key::kms_context("pii", &version),
        None,
    )
    .await
    .unwrap();
    for wrong in [
        envelope::keys::master_key::kms_context("other", &version),
        envelope::keys::master_key::kms_context("pii", "v2"),
    ] {
        let e = kms.decrypt(&blob, &wrong, None).await.unwrap_err();
        assert!(
            matches!(e, envelope::backends::kms::KmsError::DecryptFailed),
            "{e}"
        );
    }

    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    eprintln!(
        "AWS mode start-up to serving: {:?} ms",
        startup_ms(&server.logs())
    );
    let first = round_trip(&server, "pii", "123.456.789-09").await;
    assert_eq!(first.key_version, version);
    let rotated = server
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest { key: "pii".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.previous_version, version);
    let stages = sm
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await
        .unwrap();
    let map = stages.version_ids_to_stages().unwrap();
    // Each version is pinned by its own label, so Secrets Manager never deletes
    // a version that records may still name.
    let pin = |v: &str| format!("envelope-pin-{v}");
    let mut want_new = vec![pin(&rotated.current_version), "AWSCURRENT".to_string()];
    let mut want_old = vec![pin(&version), "AWSPREVIOUS".to_string()];
    let (mut got_new, mut got_old) = (map[&rotated.current_version].clone(), map[&version].clone());
    for v in [&mut want_new, &mut want_old, &mut got_new, &mut got_old] {
        v.sort();
    }
    assert_eq!((got_new, got_old), (want_new, want_old));
    let pinned = status(&server).await.pinned_versions;
    assert!(
        pinned.contains(&version) && pinned.contains(&rotated.current_version),
        "{pinned:?}"
    );
    let second = round_trip(&server, "pii", "987.654.321-00").await;
    assert_eq!(second.key_version, rotated.current_version);
    assert_eq!(
        decrypt(&server, "pii", &first.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"123.456.789-09"
    );
}

#[tokio::test]
async fn seed_001_master_key_document() {
    let dir = tempfile::tempdir().unwrap();
    let secret = unique("mistersmith/app/encryption");
    let mut raw = [0u8; 32];
    envelope::primitives::crypto::fill_random(&mut raw).unwrap();
    let value = serde_json::json!({
        "masterKey": B64.encode(raw),
        "algorithm": "AES-256-GCM",
        "keyDerivation": "PBKDF2",
        "salt": "seed-001-salt-9f2c",
        "iterations": 100000,
    });
    moto()
        .secrets()
        .create_secret()
        .name(&secret)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
    let cfg = config(
        &moto().url(),
        &kms_key().await,
        &format!("[[keys]]\nname = \"default\"\nsecret_id = \"{secret}\"\n"),
        "",
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let e = round_trip(&server, "", "alice@example.com").await;
    // The derivation is deterministic: a new server over the same secret opens the record.
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&cfg), TEST_ENV);
    assert_eq!(
        decrypt(&server, "", &e.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"alice@example.com"
    );
}

#[tokio::test]
async fn seed_004_key_and_salt_secret_pair() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("email-gateway");
    let (key_secret, salt_secret) = (
        format!("{prefix}/encryption-key"),
        format!("{prefix}/encryption-salt"),
    );
    let mut raw = [0u8; 32];
    envelope::primitives::crypto::fill_random(&mut raw).unwrap();
    let sm = moto().secrets();
    sm.create_secret()
        .name(&key_secret)
        .secret_string(B64.encode(raw))
        .send()
        .await
        .unwrap();
    envelope::primitives::crypto::fill_random(&mut raw).unwrap();
    sm.create_secret()
        .name(&salt_secret)
        .secret_string(B64.encode(raw))
        .send()
        .await
        .unwrap();
    let keys = format!(
        "[[keys]]\nname = \"email\"\nsecret_id = \"{key_secret}\"\nsalt_secret_id = \"{salt_secret}\"\nkdf_iterations = 100000\n"
    );
    let cfg = config(&moto().url(), &kms_key().await, &keys, "");
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let e = round_trip(&server, "email", "bob@example.com").await;
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&cfg), TEST_ENV);
    assert_eq!(
        decrypt(&server, "email", &e.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"bob@example.com"
    );

    // Without the salt secret the plain key cannot be used, and start-up says why.
    let bad = config(
        &moto().url(),
        "k",
        &format!("[[keys]]\nname = \"email\"\nsecret_id = \"{key_secret}\"\n"),
        "",
    );
    let err = serve_fails(dir.path(), &bad);
    assert!(
        err.contains(&key_secret) && err.contains("salt_secret_id"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_shapes_and_foreign_kms_blobs_fail_fast_naming_the_secret_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let sm = moto().secrets();
    let copied = unique("copied");
    // A document made for another key name: KMS refuses the encryption context.
    let version = uuid();
    let doc = envelope_doc(&key, "someone-else", &version).await;
    sm.create_secret()
        .name(&copied)
        .client_request_token(&version)
        .secret_string(doc)
        .send()
        .await
        .unwrap();
    let cases = [
        (unique("garbage"), "CANARY-4c1d-not-a-key".to_string(), "not base64"),
        (unique("json"), r#"{"user":"CANARY-4c1d"}"#.to_string(), "neither an Envelope master-key document"),
        (
            unique("weak"),
            r#"{"masterKey":"Q0FOQVJZLTRjMWQtQ0FOQVJZLTRjMWQ=","algorithm":"AES-128-CBC","keyDerivation":"PBKDF2","salt":"s"}"#
                .to_string(),
            "algorithm must be AES-256-GCM",
        ),
    ];
    for (secret, value, _) in &cases {
        sm.create_secret()
            .name(secret)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
    let mut all = cases
        .iter()
        .map(|(s, _, why)| (s.clone(), *why))
        .collect::<Vec<_>>();
    all.push((copied, "KMS could not decrypt"));
    for (secret, why) in all {
        let cfg = config(
            &moto().url(),
            &key,
            &format!("[[keys]]\nname = \"k\"\nsecret_id = \"{secret}\"\n"),
            "",
        );
        let err = serve_fails(dir.path(), &cfg);
        assert!(
            err.contains(&secret) && err.contains(why),
            "{secret}: expected {why:?} in {err}"
        );
        assert!(
            !err.contains("CANARY") && !err.contains("Q0FOQVJZ"),
            "{err}"
        );
    }
}

/// The last part of finishSecret: take AWSPENDING off the new version.
async fn finish(sm: &aws_sdk_secretsmanager::Client, secret: &str, version: &str) {
    sm.update_secret_version_stage()
        .secret_id(secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(version)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn stages_on_demand_fetch_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/stages");
    let sm = moto().secrets();
    let (v1, v2, v3) = (uuid(), uuid(), uuid());
    create_envelope_secret(&secret, &key, "default", &v1).await;
    sm.put_secret_value()
        .secret_id(&secret)
        .client_request_token(&v2)
        .secret_string(envelope_doc(&key, "default", &v2).await)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let keys = format!("[[keys]]\nname = \"default\"\nsecret_id = \"{secret}\"\n");
    let cfg = config(
        &moto().url(),
        &key,
        &keys,
        "refresh_interval_secs = 1\nmax_staleness_secs = 60\n",
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);

    // AWSCURRENT and AWSPENDING are both loaded; AWSCURRENT encrypts.
    let s = status(&server).await;
    assert_eq!(s.current_version, v1);
    let staged: Vec<_> = s
        .versions
        .iter()
        .map(|v| (v.version.clone(), v.stages.clone()))
        .collect();
    assert!(
        staged.contains(&(v2.clone(), vec!["AWSPENDING".into()])),
        "{staged:?}"
    );
    let old = round_trip(&server, "", "under v1").await;
    assert_eq!(old.key_version, v1);

    // Another replica finishes a rotation: RefreshKeys picks up the new AWSCURRENT.
    sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v2)
        .remove_from_version_id(&v1)
        .send()
        .await
        .unwrap();
    finish(&sm, &secret, &v2).await;
    server
        .admin()
        .await
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(round_trip(&server, "", "under v2").await.key_version, v2);

    // And the periodic refresh (1 s here) picks up the next one by itself.
    sm.put_secret_value()
        .secret_id(&secret)
        .client_request_token(&v3)
        .secret_string(envelope_doc(&key, "default", &v3).await)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v3)
        .remove_from_version_id(&v2)
        .send()
        .await
        .unwrap();
    finish(&sm, &secret, &v3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if round_trip(&server, "", "probe").await.key_version == v3 {
            break;
        }
        assert!(Instant::now() < deadline, "refresh never picked up {v3}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // v1 has no stage left (v2 is AWSPREVIOUS now): a fresh server fetches it by id on demand.
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&cfg), TEST_ENV);
    let staged = status(&server).await.versions;
    assert!(!staged.iter().any(|v| v.version == v1), "{staged:?}");
    assert_eq!(
        decrypt(&server, "", &old.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"under v1"
    );
    assert!(
        status(&server)
            .await
            .versions
            .iter()
            .any(|v| v.version == v1 && v.stages.is_empty())
    );
}

#[tokio::test]
async fn outage_keeps_serving_flips_readiness_after_the_bound_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/outage");
    let v1 = uuid();
    create_envelope_secret(&secret, &key, "default", &v1).await;
    let proxy = Proxy::start(moto().addr);
    let keys = format!("[[keys]]\nname = \"default\"\nsecret_id = \"{secret}\"\n");
    let cfg = config(
        &proxy.url(),
        &key,
        &keys,
        "refresh_interval_secs = 1\nmax_staleness_secs = 3\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let metrics = server.metrics.clone().expect("metrics address");
    assert_eq!(common::http_get(&metrics, "/readyz").0, 200);
    let before = round_trip(&server, "", "before the outage").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let serving = |r: tonic_health::pb::HealthCheckResponse| {
        r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    };
    let check =
        |h: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>| {
            let mut h = h.clone();
            async move {
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: "envelope.v1.Envelope".into(),
                })
                .await
                .unwrap()
                .into_inner()
            }
        };
    assert!(serving(check(&mut health).await));

    proxy.set_down(true);
    let down_at = Instant::now();
    // Cached keys keep serving through the outage.
    let during = round_trip(&server, "", "during the outage").await;
    assert_eq!(
        decrypt(&server, "", &before.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"before the outage"
    );
    // Readiness flips only past the staleness bound.
    loop {
        if !serving(check(&mut health).await) {
            break;
        }
        assert!(
            down_at.elapsed() < Duration::from_secs(30),
            "readiness never changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flipped = down_at.elapsed();
    assert!(
        flipped >= Duration::from_secs(2),
        "not ready too early: {flipped:?}"
    );
    eprintln!("readiness NOT_SERVING {flipped:?} after the AWS-API server went away (bound 3 s)");
    assert!(status(&server).await.refresh_failures > 0);
    // /readyz says why: the key is stale; /healthz still answers; the
    // metrics count the failed store calls.
    let (code, body) = common::http_get(&metrics, "/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["keys"]["default"]["status"], "stale");
    assert_eq!(common::http_get(&metrics, "/healthz").0, 200);
    let scraped = common::http_get(&metrics, "/metrics").1;
    assert!(
        scraped.contains("envelope_backend_calls_total{service=\"secretsmanager\",op=\"DescribeSecret\",outcome=\"error\"}"),
        "{scraped}"
    );
    assert_eq!(
        decrypt(&server, "", &during.ciphertext)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"during the outage"
    );
    assert!(
        server
            .logs()
            .contains("refresh failed; keeping cached keys")
    );

    proxy.set_down(false);
    let up_at = Instant::now();
    loop {
        if serving(check(&mut health).await) {
            break;
        }
        assert!(up_at.elapsed() < Duration::from_secs(30), "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "ready again {:?} after the AWS-API server came back",
        up_at.elapsed()
    );
    assert_eq!(common::http_get(&metrics, "/readyz").0, 200);
    round_trip(&server, "", "after the outage").await;
}

#[tokio::test]
async fn a_flood_of_bogus_versions_costs_one_call_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/flood");
    let v1 = uuid();
    create_envelope_secret(&secret, &key, "default", &v1).await;
    let proxy = Proxy::start(moto().addr);
    let keys = format!("[[keys]]\nname = \"default\"\nsecret_id = \"{secret}\"\n");
    let cfg = config(&proxy.url(), &key, &keys, "");
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let good = round_trip(&server, "", "x").await.ciphertext;
    let before = proxy.count("secretsmanager.GetSecretValue");

    // 10 bogus versions, each named by 30 concurrent requests.
    let bogus: Vec<Bytes> = (0..10)
        .map(|_| {
            let mut r = good.to_vec();
            r[7..23].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            Bytes::from(r)
        })
        .collect();
    let mut tasks = Vec::new();
    for round in 0..30 {
        for ct in &bogus {
            let ct = ct.clone();
            let mut c = server.client().await;
            tasks.push(tokio::spawn(async move {
                let _ = round;
                c.decrypt(pb::DecryptRequest {
                    key: String::new(),
                    ciphertext: ct,
                    context: ctx(CTX),
                })
                .await
                .unwrap_err()
                .code()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Code::FailedPrecondition);
    }
    let calls = proxy.count("secretsmanager.GetSecretValue") - before;
    eprintln!("300 decrypts naming 10 bogus versions made {calls} GetSecretValue calls");
    assert!((1..=10).contains(&calls), "{calls} calls");
    // Asked again within the negative-cache TTL: no further calls.
    for ct in &bogus {
        assert_eq!(
            decrypt(&server, "", ct).await.unwrap_err().code(),
            Code::FailedPrecondition
        );
    }
    assert_eq!(proxy.count("secretsmanager.GetSecretValue") - before, calls);
    let _ = sdk_config_for;
}

#[tokio::test]
async fn replica_region_serves_when_the_primary_fails_and_kms_key_by_alias() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let alias = format!("alias/{}", unique("envelope"));
    moto()
        .kms()
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let secret = unique("envelope/replicated");
    let v1 = uuid();
    let doc = envelope_doc(&alias, "default", &v1).await;
    // The same secret, version and value in the primary and the replica region.
    let west = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&moto().sdk_config())
            .region(aws_sdk_secretsmanager::config::Region::new("us-west-2"))
            .build(),
    );
    for client in [moto().secrets(), west] {
        client
            .create_secret()
            .name(&secret)
            .client_request_token(&v1)
            .secret_string(&doc)
            .send()
            .await
            .unwrap();
    }
    // Secrets Manager in the primary region goes through a proxy that is down.
    let proxy = Proxy::start(moto().addr);
    proxy.set_down(true);
    let keys = format!("[[keys]]\nname = \"default\"\nsecret_id = \"{secret}\"\n");
    let cfg = config(&moto().url(), &alias, &keys, "").replace(
        "[aws]\n",
        &format!(
            "[aws]\nsecretsmanager_endpoint_url = \"{}\"\nreplica_regions = [\"us-west-2\"]\n",
            proxy.url()
        ),
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let e = round_trip(&server, "", "served from the replica").await;
    assert_eq!(e.key_version, v1);
    let logs = server.logs();
    assert!(
        logs.contains("served by a replica region") && logs.contains("us-west-2"),
        "{logs}"
    );
    assert_eq!(
        proxy.count("secretsmanager.DescribeSecret"),
        0,
        "the primary never answered"
    );
}
