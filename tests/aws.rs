//! AWS mode against a real AWS-API server (moto) on loopback: the three
//! secret shapes end to end through gRPC, init-keys, rotation and KMS
//! context binding, and start-up errors that name the secret, not the
//! value. Refresh, outages and bounded API calls: tests/aws_availability.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine as _;
use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::moto::{TEST_ENV, envelope_doc, kms_key, moto, unique, uuid};
use common::requests::{CTX, decrypt, key_status, rotate, round_trip};
use common::{Server, run};
use envelope::backends::kms::Kms as _;
use envelope::backends::kms::aws_kms::AwsKms;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
    let cfg = aws_config(
        &moto().url(),
        &key,
        FAIL_FAST,
        "",
        &secret_key("pii", &secret),
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
    // CONFIG.md, init-keys in AWS mode: a UUIDv4 version, staged AWSCURRENT
    // and pinned; the secret made with no tags, no replication and
    // Secrets Manager's own encryption key.
    assert_eq!(
        uuid::Uuid::parse_str(&version).unwrap().get_version_num(),
        4
    );
    let described = sm
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await
        .unwrap();
    let mut stages = described.version_ids_to_stages().unwrap()[&version].clone();
    stages.sort();
    assert_eq!(
        stages,
        ["AWSCURRENT", format!("envelope-pin-{version}").as_str()]
    );
    assert!(described.tags().is_empty(), "{described:?}");
    assert!(described.replication_status().is_empty(), "{described:?}");
    assert!(described.kms_key_id().is_none(), "{described:?}");
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
    // CONFIG.md: the start-up lines, with what they say.
    let logs = server.logs();
    let line = |m: &str| {
        logs.lines()
            .find(|l| l.contains(m))
            .unwrap_or_default()
            .to_owned()
    };
    let aws = line("AWS mode");
    for field in [
        "region=us-east-1".to_owned(),
        format!("endpoint=Some(\"{}\")", moto().url()),
        format!("kms_key={key}"),
        "replicas=[]".to_owned(),
    ] {
        assert!(aws.contains(&field), "{field} in {aws:?}");
    }
    assert!(
        line("master-key version loaded").contains("check_value="),
        "{logs}"
    );
    let serving = line("server: serving ");
    assert!(
        serving.contains(&format!("addr=Some({})", server.addr))
            && serving.contains("keys=1")
            && startup_ms(&serving).is_some(),
        "{serving:?}"
    );
    let first = round_trip(&server, "pii", "123.456.789-09").await;
    assert_eq!(first.key_version, version);
    let rotated = rotate(&server, "pii").await;
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
    let pinned = key_status(&server).await.pinned_versions;
    assert!(
        pinned.contains(&version) && pinned.contains(&rotated.current_version),
        "{pinned:?}"
    );
    let second = round_trip(&server, "pii", "987.654.321-00").await;
    assert_eq!(second.key_version, rotated.current_version);
    assert_eq!(
        decrypt(&server, "pii", &first.ciphertext, CTX)
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
    let kms = kms_key().await;
    // The key on the seed secret, with how it accepts seed shapes.
    let accepting = |how: &str| {
        let keys = format!("{}{how}\n", secret_key("default", &secret));
        aws_config(
            &moto().url(),
            &kms,
            FAIL_FAST,
            "metrics_listen = \"127.0.0.1:0\"\n",
            &keys,
        )
    };
    let cfg = accepting("allow_unwrapped_master_keys = true");
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    // OPERATIONS.md, `/readyz` `checks.kms`: a seed-shaped key loads with
    // no KMS call, so KMS has had none until the first Encrypt makes a data key.
    let kms_check = || {
        let body = common::http_get(server.metrics.as_deref().unwrap(), "/readyz").1;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            ready["checks"]["secret_store"].clone(),
            ready["checks"]["kms"].clone(),
        )
    };
    assert_eq!(kms_check(), ("ok".into(), "no calls yet".into()));
    let e = round_trip(&server, "", "alice@example.com").await;
    assert_eq!(kms_check(), ("ok".into(), "ok".into()));
    // CONFIG.md: the key's acceptance is warned at start and exported.
    assert!(
        server.logs().lines().any(|l| l.contains(" WARN ")
            && l.contains("this key accepts seed-shaped (unwrapped) master keys")),
        "{}",
        server.logs()
    );
    let metrics = common::http_get(server.metrics.as_deref().unwrap(), "/metrics").1;
    assert!(
        metrics.contains(
            "envelope_key_accepts_unwrapped_master_keys{key=\"default\",scope=\"any\"} 1"
        ),
        "{metrics}"
    );
    // The derivation is deterministic: a new server over the same secret
    // opens the record, here accepting only that version (exported as
    // scope="listed").
    drop(server);
    let listed = accepting(&format!("unwrapped_versions = [\"{}\"]", e.key_version));
    let server = Server::start_with(&dir.path().join("d2"), Some(&listed), TEST_ENV);
    let metrics = common::http_get(server.metrics.as_deref().unwrap(), "/metrics").1;
    assert!(
        metrics.contains(
            "envelope_key_accepts_unwrapped_master_keys{key=\"default\",scope=\"listed\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(
        decrypt(&server, "", &e.ciphertext, CTX)
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
        "[[keys]]\nname = \"email\"\nsecret_id = \"{key_secret}\"\nsalt_secret_id = \"{salt_secret}\"\nkdf_iterations = 100000\nallow_unwrapped_master_keys = true\n"
    );
    let cfg = aws_config(&moto().url(), &kms_key().await, FAIL_FAST, "", &keys);
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    let e = round_trip(&server, "email", "bob@example.com").await;
    drop(server);
    let server = Server::start_with(&dir.path().join("d2"), Some(&cfg), TEST_ENV);
    assert_eq!(
        decrypt(&server, "email", &e.ciphertext, CTX)
            .await
            .unwrap()
            .plaintext
            .as_ref(),
        b"bob@example.com"
    );
    // init-keys leaves the seed secret and its salt secret alone (CONFIG.md).
    let versions = |id: String| async move {
        let listed = moto()
            .secrets()
            .list_secret_version_ids()
            .secret_id(id)
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        let mut v: Vec<(String, Vec<String>)> = listed
            .versions()
            .iter()
            .map(|v| {
                (
                    v.version_id().unwrap().to_owned(),
                    v.version_stages().to_vec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (keys_before, salts_before) = (
        versions(key_secret.clone()).await,
        versions(salt_secret.clone()).await,
    );
    let (ok, out, err) = common::cli::init_keys(&dir.path().join("seed-004.toml"), &cfg, TEST_ENV);
    assert!(ok, "{err}");
    assert_eq!(out, "email: exists\n");
    assert_eq!(versions(key_secret.clone()).await, keys_before);
    assert_eq!(versions(salt_secret.clone()).await, salts_before);

    // Without the salt secret the plain key cannot be used, and start-up says why.
    let bad = aws_config(
        &moto().url(),
        "k",
        FAIL_FAST,
        "",
        &secret_key("email", &key_secret),
    );
    let err = serve_fails(dir.path(), &bad);
    assert!(
        err.contains(&key_secret) && err.contains("salt_secret_id"),
        "{err}"
    );

    // CONFIG.md: the salt secret is read once, at start-up, never at a
    // refresh (here through a proxy that records each GetSecretValue).
    let proxy = common::moto::Proxy::start(moto().addr);
    let proxied = cfg.replace(&moto().url(), &proxy.url()).replacen(
        "\n[aws]",
        "\nrefresh_interval_secs = 1\n[aws]",
        1,
    );
    assert_ne!(proxied, cfg);
    let server = Server::start_with(&dir.path().join("d3"), Some(&proxied), TEST_ENV);
    let salt_reads = || {
        proxy
            .bodies("secretsmanager.GetSecretValue")
            .iter()
            .filter(|b| b.contains(&salt_secret))
            .count()
    };
    assert_eq!(salt_reads(), 1);
    let describes = proxy.count("secretsmanager.DescribeSecret");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while proxy.count("secretsmanager.DescribeSecret") < describes + 3 {
        assert!(std::time::Instant::now() < deadline, "no refreshes");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(salt_reads(), 1, "the salt secret was read again");
    drop(server);
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
        let cfg = aws_config(
            &moto().url(),
            &key,
            FAIL_FAST,
            "",
            &secret_key("k", &secret),
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

/// SECURITY.md, "Decision", and CONFIG.md: AWS mode without a policy file
/// denies every call and says so at start; plaintext is logged at ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_mode_without_a_policy_denies_every_call_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/no-policy");
    common::moto::create_envelope_secret(&secret, &key, "pii", &uuid()).await;
    let cfg = aws_config(
        &moto().url(),
        &key,
        FAIL_FAST,
        "",
        &secret_key("pii", &secret),
    );
    let open = format!("policy_file = \"{}\"\n", common::open_policy());
    assert!(cfg.contains(&open));
    let cfg = cfg.replace(&open, "");
    let server = Server::start_with(&dir.path().join("data"), Some(&cfg), TEST_ENV);
    let logs = server.logs();
    let line = |needle: &str| {
        logs.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("no policy_file: every Envelope and Admin call will be denied").contains(" WARN "),
        "{logs}"
    );
    assert!(
        line("INSECURE: serving plaintext gRPC").contains(" ERROR "),
        "{logs}"
    );
    let denied = decrypt(&server, "pii", b"x", CTX).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let admin = server
        .admin()
        .await
        .key_status(envelope::pb::KeyStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(admin.code(), tonic::Code::PermissionDenied, "{admin:?}");
}

/// SECURITY.md, "Process hardening": `init-keys` and `rotate --config`,
/// which hold master keys too, cannot dump core either. Read from /proc
/// while each waits on its first AWS call, held by a delaying proxy.
#[tokio::test]
async fn init_keys_and_rotate_cannot_dump_core() {
    use common::aws_config::Timeouts;
    use common::moto::Proxy;
    use std::time::{Duration, Instant};
    let key = kms_key().await;
    let secret = unique("envelope/hardened");
    let proxy = Proxy::start(moto().addr);
    let patient = Timeouts {
        connect_secs: 2,
        attempt_secs: 15,
        operation_secs: 30,
        max_attempts: Some(1),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aws.toml");
    std::fs::write(
        &path,
        aws_config(&proxy.url(), &key, patient, "", &secret_key("pii", &secret)),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    for args in [
        vec!["init-keys", "--config", path],
        vec!["rotate", "--config", path, "--key", "pii"],
    ] {
        let before = proxy.count("secretsmanager.DescribeSecret");
        proxy.set_delay(Duration::from_secs(2));
        let mut child = std::process::Command::new(common::BIN)
            .args(&args)
            .envs(TEST_ENV.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.count("secretsmanager.DescribeSecret") == before {
            assert!(Instant::now() < deadline, "{args:?} made no AWS call");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
        proxy.set_delay(Duration::ZERO);
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(
            core.split_whitespace().filter(|w| *w == "0").count() >= 2,
            "{args:?}: {core}"
        );
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{args:?} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(child.wait().unwrap().success(), "{args:?} failed");
    }
}

/// CONFIG.md, `envelope init-keys` in AWS mode: a secret that already has
/// AWSCURRENT (seed-shaped or not) is left alone; a missing secret named by
/// ARN is an error, and the first failure stops the command (the keys after
/// it are not created).
#[tokio::test]
async fn init_keys_leaves_existing_secrets_alone_and_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let existing = unique("envelope/existing");
    let seed = serde_json::json!({ "master_key": B64.encode([7u8; 32]) }).to_string();
    moto()
        .secrets()
        .create_secret()
        .name(&existing)
        .secret_string(&seed)
        .send()
        .await
        .unwrap();
    let missing_arn = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf",
        unique("envelope/missing")
    );
    let after = unique("envelope/after");
    let keys = format!(
        "{}allow_unwrapped_master_keys = true\n{}{}",
        secret_key("a", &existing),
        secret_key("b", &missing_arn),
        secret_key("c", &after)
    );
    let cfg = aws_config(&moto().url(), &key, FAIL_FAST, "", &keys);
    let path = dir.path().join("init.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (ok, out, err) = run(&["init-keys", "--config", path.to_str().unwrap()], TEST_ENV);
    assert!(!ok, "{out}{err}");
    // A line for each key done before the failure, none after it.
    assert_eq!(out, "a: exists\n", "{err}");
    assert!(
        err.contains(&format!("secret {missing_arn} not found")),
        "{err}"
    );
    let value = moto()
        .secrets()
        .get_secret_value()
        .secret_id(&existing)
        .send()
        .await
        .unwrap();
    assert_eq!(
        value.secret_string(),
        Some(seed.as_str()),
        "the seed was left alone"
    );
    let c = moto()
        .secrets()
        .describe_secret()
        .secret_id(&after)
        .send()
        .await;
    assert!(c.is_err(), "a key after the failure was created");
}

/// CONFIG.md, `init-keys` in AWS mode, the call order: DescribeSecret, KMS
/// GenerateDataKey, DescribeSecret again (no version took AWSCURRENT
/// meanwhile), PutSecretValue; the secret does not exist, so CreateSecret
/// makes it with the version, then UpdateSecretVersionStage adds the pin
/// label.
#[tokio::test]
async fn init_keys_creates_the_secret_then_pins_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/order");
    let proxy = common::moto::Proxy::start(moto().addr);
    let cfg = aws_config(
        &proxy.url(),
        &key,
        FAIL_FAST,
        "",
        &secret_key("pii", &secret),
    );
    let path = dir.path().join("aws.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (ok, out, err) = run(&["init-keys", "--config", path.to_str().unwrap()], TEST_ENV);
    assert!(ok && out.trim() == "pii: created", "{out} {err}");
    let calls: Vec<String> = proxy
        .targets()
        .into_iter()
        .filter(|t| t.starts_with("secretsmanager.") || t == "TrentService.GenerateDataKey")
        .collect();
    assert_eq!(
        calls,
        [
            "secretsmanager.DescribeSecret",
            "TrentService.GenerateDataKey",
            "secretsmanager.DescribeSecret",
            "secretsmanager.PutSecretValue",
            "secretsmanager.CreateSecret",
            "secretsmanager.UpdateSecretVersionStage",
        ]
    );
}
