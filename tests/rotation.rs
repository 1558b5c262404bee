//! The proof of lossless rotation: three replicas with different refresh
//! TTLs on one AWS-API server; a client encrypts through one replica and
//! decrypts through another, round-robin, without pause, while five full
//! rotations run (CLI and Lambda handler alternately), a failed rotation
//! and replayed steps are thrown in; then everything is rewrapped and the
//! oldest version retired.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::aws_config::{UNDER_LOAD, aws_config, secret_key};
use common::moto::{TEST_ENV, kms_key, moto, uuid};
use common::requests::{dec, enc};
use common::{Server, run};
use envelope::app::lambda::{RotationEvent, handle};
use envelope::app::startup::Backends;
use envelope::backends::kms::aws_kms::AwsKms;
use envelope::backends::store::secrets_manager::AwsStore;
use envelope::pb;
use tonic::Code;

const CTX: &[(&str, &str)] = &[("table", "customers"), ("column", "tax_id")];
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Record {
    ciphertext: Bytes,
    plaintext: String,
    version: String,
}

/// What the load has seen so far, for the rotations to wait on instead of
/// sleeping.
#[derive(Default)]
struct Seen {
    /// Versions in the order records were first sealed under them.
    order: Vec<String>,
    /// The version each replica sealed its latest record under.
    current_on: [String; 3],
    /// Decrypts of a record sealed under a version newer than the one the
    /// decrypting replica last sealed under: the dual-key window at work.
    newer_than_own: u64,
}

impl Seen {
    fn rank(&self, v: &str) -> Option<usize> {
        self.order.iter().position(|o| o == v)
    }
}

/// Waits (at most 60 s, else fails with `what`) until `done` holds of the
/// load's view.
async fn wait_for(seen: &std::sync::Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(&seen.lock().unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every version's stages, and the value of `token`'s version if it exists:
/// what a replayed rotation step must leave as it found it.
async fn snapshot(secret: &str, token: &str) -> (Vec<(String, Vec<String>)>, Option<String>) {
    let d = moto()
        .secrets()
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .unwrap();
    let mut stages: Vec<(String, Vec<String>)> = d
        .version_ids_to_stages()
        .unwrap()
        .iter()
        .map(|(v, s)| {
            let mut s = s.clone();
            s.sort();
            (v.clone(), s)
        })
        .collect();
    stages.sort();
    let value = moto()
        .secrets()
        .get_secret_value()
        .secret_id(secret)
        .version_id(token)
        .send()
        .await
        .ok()
        .and_then(|v| v.secret_string().map(str::to_owned));
    (stages, value)
}

/// This test's config: key "pii" on `secret`, refreshed every `refresh` seconds.
fn config(kms_key: &str, secret: &str, refresh: u64, extra_key: &str) -> String {
    aws_config(
        &moto().url(),
        kms_key,
        UNDER_LOAD,
        &format!("refresh_interval_secs = {refresh}\nmax_staleness_secs = 600\n"),
        &(secret_key("pii", secret) + extra_key),
    )
}

async fn current(secret: &str) -> String {
    let d = moto()
        .secrets()
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .unwrap();
    d.version_ids_to_stages()
        .unwrap()
        .iter()
        .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
        .map(|(v, _)| v.clone())
        .unwrap()
}

/// The Lambda's backends on moto: Secrets Manager and KMS under `kms_key`.
async fn lambda_backends(kms_key: &str) -> Backends {
    Backends {
        store: Arc::new(
            AwsStore::new(
                &envelope::backends::aws_sdk::AwsSettings::new(kms_key.to_owned()),
                &moto().sdk_config(),
            )
            .await,
        ),
        kms: Arc::new(AwsKms::new(&moto().sdk_config(), kms_key.to_owned())),
    }
}

async fn lambda_rotation(backends: &Backends, secret: &str, replay: bool) -> String {
    let token = uuid();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event = RotationEvent {
            secret_id: secret.to_owned(),
            client_request_token: token.clone(),
            step: step.to_owned(),
        };
        handle(&event, backends)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        if replay {
            // Secrets Manager retries steps; a replay changes nothing.
            let before = snapshot(secret, &token).await;
            handle(&event, backends)
                .await
                .unwrap_or_else(|e| panic!("replayed {step}: {e}"));
            assert_eq!(
                snapshot(secret, &token).await,
                before,
                "replaying {step} changed the secret"
            );
        }
    }
    token
}

fn cli_rotation(cfg_path: &str, stepwise: bool) -> String {
    if !stepwise {
        let (ok, out, err) = run(&["rotate", "--config", cfg_path, "--key", "pii"], TEST_ENV);
        assert!(ok, "{err}");
        return out
            .lines()
            .find_map(|l| l.strip_prefix("current_version: "))
            .unwrap()
            .to_owned();
    }
    let token = uuid();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let (ok, _, err) = run(
            &[
                "rotate", "--config", cfg_path, "--key", "pii", "--step", step, "--token", &token,
            ],
            TEST_ENV,
        );
        assert!(ok, "{step}: {err}");
    }
    token
}

#[tokio::test]
async fn five_rotations_under_load_across_three_replicas_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kms_key = kms_key().await;
    let secret = format!("envelope/proof-{}", uuid::Uuid::new_v4().simple());
    let cfg0 = config(&kms_key, &secret, 1, "");
    let cfg_path = dir.path().join("rotate.toml");
    std::fs::write(&cfg_path, &cfg0).unwrap();
    let cfg_path = cfg_path.to_str().unwrap().to_owned();
    let (ok, _, err) = run(&["init-keys", "--config", &cfg_path], TEST_ENV);
    assert!(ok, "{err}");
    // The Lambda finds the key name through the secret's tag.
    moto()
        .secrets()
        .tag_resource()
        .secret_id(&secret)
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("envelope:key")
                .value("pii")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let v0 = current(&secret).await;
    let v0_made = std::time::Instant::now();

    // Three replicas that see a rotation 1, 2 and 4 seconds (±10%) after it happens.
    let replicas: Vec<Server> = [1u64, 2, 4]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Server::start_with(
                &dir.path().join(format!("r{i}")),
                Some(&config(&kms_key, &secret, *r, "")),
                TEST_ENV,
            )
        })
        .collect();
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }

    // The client: encrypt on replica i, decrypt on replica i+1, continuously.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let load = {
        let stop = stop.clone();
        let seen = seen.clone();
        let mut clients = clients.clone();
        tokio::spawn(async move {
            let mut records = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                let plaintext = format!(
                    "{:03}.{:03}.{:03}-{:02}",
                    i % 1000,
                    (i / 7) % 1000,
                    (i / 13) % 1000,
                    i % 97
                );
                let enc = clients[i % 3].encrypt(enc("pii", &plaintext, CTX)).await;
                match enc {
                    Ok(e) => {
                        let e = e.into_inner();
                        let newer = {
                            let mut s = seen.lock().unwrap();
                            if s.rank(&e.key_version).is_none() {
                                s.order.push(e.key_version.clone());
                            }
                            s.current_on[i % 3] = e.key_version.clone();
                            // Only once the decrypting replica has sealed
                            // something: before that its version is unknown.
                            matches!(
                                (s.rank(&e.key_version), s.rank(&s.current_on[(i + 1) % 3])),
                                (Some(sealed), Some(own)) if sealed > own
                            )
                        };
                        let dec = clients[(i + 1) % 3]
                            .decrypt(dec("pii", &e.ciphertext, CTX))
                            .await;
                        match dec {
                            Ok(d) if d.get_ref().plaintext.as_ref() == plaintext.as_bytes() => {
                                if newer {
                                    seen.lock().unwrap().newer_than_own += 1;
                                }
                            }
                            Ok(_) => failures.push(format!("record {i}: wrong plaintext")),
                            Err(s) => failures.push(format!(
                                "decrypt {i} ({}) on replica {}: {s:?}",
                                e.key_version,
                                (i + 1) % 3
                            )),
                        }
                        records.push(Record {
                            ciphertext: e.ciphertext,
                            plaintext,
                            version: e.key_version,
                        });
                    }
                    Err(s) => failures.push(format!("encrypt {i} on replica {}: {s:?}", i % 3)),
                }
                i += 1;
            }
            (records, failures)
        })
    };

    let backends = lambda_backends(&kms_key).await;
    let mut versions = vec![v0.clone()];
    for n in 0..5 {
        // The next rotation once records are being sealed under this one.
        let now = versions.last().unwrap().clone();
        wait_for(&seen, &format!("records under {now}"), |s| {
            s.rank(&now).is_some()
        })
        .await;
        if n == 0 {
            // Retirement (below) compares creation dates, which the store
            // keeps to the second: the first rotated version must be born
            // in a later second than v0 to be told apart from it.
            tokio::time::sleep_until((v0_made + Duration::from_millis(1100)).into()).await;
        }
        let v = match n {
            0 => cli_rotation(&cfg_path, false),
            1 => lambda_rotation(&backends, &secret, true).await,
            2 => cli_rotation(&cfg_path, true),
            3 => lambda_rotation(&backends, &secret, false).await,
            _ => cli_rotation(&cfg_path, false),
        };
        assert_eq!(current(&secret).await, v, "rotation {n} did not finish");
        versions.push(v);
        if n == 2 {
            // A rotation whose new version fails testSecret leaves AWSCURRENT alone.
            let bad = uuid();
            moto()
                .secrets()
                .put_secret_value()
                .secret_id(&secret)
                .client_request_token(&bad)
                .secret_string("{\"format\":\"envelope.master-key.v1\",\"algorithm\":\"AES-256-GCM\",\"kmsKeyId\":\"k\",\"wrappedKey\":\"AAAA\"}")
                .version_stages("AWSPENDING")
                .send()
                .await
                .unwrap();
            let event = RotationEvent {
                secret_id: secret.clone(),
                client_request_token: bad.clone(),
                step: "testSecret".into(),
            };
            assert!(handle(&event, &backends).await.is_err());
            assert_eq!(current(&secret).await, versions[versions.len() - 1]);
        }
    }
    // Let the slowest replica catch up, with the load still running.
    let latest = versions.last().unwrap().clone();
    wait_for(&seen, "every replica to seal under the last version", |s| {
        s.current_on.iter().all(|v| *v == latest)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (records, failures) = load.await.unwrap();
    let mut by_version = std::collections::BTreeMap::new();
    for r in &records {
        *by_version.entry(r.version.clone()).or_insert(0u64) += 1;
    }
    eprintln!(
        "rotation proof: {} records, {} rotations (+1 failed at testSecret), {} failures; records per version: {:?}",
        records.len(),
        versions.len() - 1,
        failures.len(),
        by_version.values().collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        records.len() >= 100,
        "the load generator made only {} records",
        records.len()
    );
    // Every version, the first and the five rotations' (the failed one
    // never became current), sealed records.
    assert_eq!(
        by_version.keys().collect::<std::collections::BTreeSet<_>>(),
        versions.iter().collect(),
        "records per version: {by_version:?}"
    );
    let newer = seen.lock().unwrap().newer_than_own;
    eprintln!("{newer} decrypts of a record newer than the decrypting replica's own version");
    assert!(newer > 0, "no replica decrypted a record from ahead of it");

    // Every record made during the test decrypts at the end, on every replica.
    for c in &mut clients {
        for chunk in records.chunks(1000) {
            let items = chunk
                .iter()
                .map(|r| pb::DecryptItem {
                    ciphertext: r.ciphertext.clone(),
                    context: common::ctx(CTX),
                })
                .collect();
            let got = c
                .decrypt_batch(pb::DecryptBatchRequest {
                    key: "pii".into(),
                    items,
                })
                .await
                .unwrap()
                .into_inner()
                .results;
            assert_eq!(got.len(), chunk.len());
            for (r, d) in chunk.iter().zip(got) {
                assert_eq!(
                    d.result,
                    Some(pb::decrypt_result::Result::Plaintext(Bytes::from(
                        r.plaintext.clone()
                    )))
                );
                assert_eq!(d.key_version, r.version);
            }
        }
    }

    // Migrate: rewrap every record to the current version with the CLI.
    let input = dir.path().join("records.txt");
    let output = dir.path().join("rewrapped.txt");
    let lines: Vec<String> = records.iter().map(|r| B64.encode(&r.ciphertext)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let (ok, out, err) = run(
        &[
            "rewrap",
            "--addr",
            &replicas[0].addr,
            "--key",
            "pii",
            "--context",
            "table=customers",
            "--context",
            "column=tax_id",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    eprintln!("{}", out.trim());
    let already = records.iter().filter(|r| r.version == latest).count();
    assert_eq!(
        out.trim(),
        format!(
            "rewrap: {} records, {} rewrapped, {already} already current, 0 failed",
            records.len(),
            records.len() - already
        )
    );
    let rewrapped: Vec<Bytes> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| Bytes::from(B64.decode(l).unwrap()))
        .collect();
    assert_eq!(rewrapped.len(), records.len());

    // Retire the oldest version on a replica restarted with min_decryption_version.
    drop(replicas);
    let retiring = config(
        &kms_key,
        &secret,
        1,
        &format!("min_decryption_version = \"{}\"\n", versions[1]),
    );
    let server = Server::start_with(&dir.path().join("retired"), Some(&retiring), TEST_ENV);
    let mut c = server.client().await;
    let mut refused = 0;
    for (r, new) in records.iter().zip(&rewrapped) {
        let d = c.decrypt(dec("pii", new, CTX)).await.unwrap();
        assert_eq!(d.get_ref().plaintext.as_ref(), r.plaintext.as_bytes());
        assert_eq!(d.get_ref().key_version, latest);
        let old = c.decrypt(dec("pii", &r.ciphertext, CTX)).await;
        if r.version == v0 {
            let s = old.unwrap_err();
            assert_eq!(s.code(), Code::FailedPrecondition);
            assert!(s.message().contains("retired"), "{}", s.message());
            refused += 1;
        } else {
            let old = old.unwrap().into_inner();
            assert_eq!(old.plaintext.as_ref(), r.plaintext.as_bytes());
            assert_eq!(old.key_version, r.version);
        }
    }
    eprintln!(
        "retired {v0}: {refused} old records refused, all {} rewrapped records decrypt",
        rewrapped.len()
    );
    assert!(refused > 0, "no record was made under the oldest version");
}

/// ROTATION.md, "Key name" and "Environment": the Lambda refuses a secret
/// without the `envelope:key` tag and a tag that is no key name, writing
/// nothing; a valid but wrong name is caught by testSecret and finishSecret,
/// and AWSCURRENT stays; and without ENVELOPE_KMS_KEY_ID it does not start.
#[tokio::test]
async fn the_lambda_refuses_untagged_badly_tagged_and_misnamed_secrets() {
    let kms_key = kms_key().await;
    let secret = format!("envelope/tags-{}", uuid::Uuid::new_v4().simple());
    common::moto::create_envelope_secret(&secret, &kms_key, "pii", &uuid()).await;
    let v0 = current(&secret).await;
    let backends = lambda_backends(&kms_key).await;
    let tag = |value: &'static str| {
        let secret = secret.clone();
        async move {
            moto()
                .secrets()
                .tag_resource()
                .secret_id(&secret)
                .tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key("envelope:key")
                        .value(value)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
    };
    let step = |name: &str, token: &str| RotationEvent {
        secret_id: secret.clone(),
        client_request_token: token.to_owned(),
        step: name.to_owned(),
    };

    // No tag, then a tag that is no key name: refused, nothing written.
    let token = uuid();
    let before = snapshot(&secret, &token).await;
    let err = handle(&step("createSecret", &token), &backends)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "secret store: secret {secret} is malformed: no envelope:key tag naming the Envelope key it holds; tag the secret first"
        )
    );
    tag(".hidden").await;
    let err = handle(&step("createSecret", &token), &backends)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key name \".hidden\""), "{err}");
    assert_eq!(snapshot(&secret, &token).await, before);

    // A valid name that is not the key's: createSecret makes the version
    // (bound to the wrong name), testSecret and finishSecret refuse it.
    tag("other").await;
    handle(&step("createSecret", &token), &backends)
        .await
        .unwrap();
    handle(&step("setSecret", &token), &backends).await.unwrap();
    for refused in ["testSecret", "finishSecret"] {
        assert!(
            handle(&step(refused, &token), &backends).await.is_err(),
            "{refused} accepted a version of the wrong key name"
        );
    }
    assert_eq!(current(&secret).await, v0, "AWSCURRENT moved");
    let (stages, _) = snapshot(&secret, &token).await;
    let pending: Vec<&String> = stages
        .iter()
        .filter(|(_, s)| s.iter().any(|s| s == "AWSPENDING"))
        .map(|(v, _)| v)
        .collect();
    assert_eq!(pending, [&token]);

    // The Lambda binary without its KMS key, or with an empty one, does not start.
    for empty in [None, Some("")] {
        let mut lambda = std::process::Command::new(env!("CARGO_BIN_EXE_envelope-rotation-lambda"));
        lambda
            .env_remove("ENVELOPE_KMS_KEY_ID")
            .envs(TEST_ENV.iter().copied());
        if let Some(v) = empty {
            lambda.env("ENVELOPE_KMS_KEY_ID", v);
        }
        let out = common::process::output_within(&mut lambda, None, Duration::from_secs(30));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "invalid setting ENVELOPE_KMS_KEY_ID: the rotation Lambda needs the KMS key"
            ),
            "{empty:?}: {err}"
        );
    }
}
