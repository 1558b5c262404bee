//! Access denied, for real: a moto server that enforces IAM, and service
//! identities each missing one permission Envelope needs. `envelope doctor`
//! fails exactly the step that needs it, naming the action, with a fix;
//! `serve` fails with at most three lines naming the same; and without
//! credentials, or with a role it may not assume, doctor says so
//! (docs/OPERATIONS.md, "First deployment" and "Start-up errors").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::doctor::{failed, field};
use common::moto::{iam_moto, kms_key_on, unique, uuid};
use common::run;
use envelope::backends::kms::aws_kms::AwsKms;

/// Every permission `serve` and `doctor` use (deploy/terraform's policy;
/// STS GetCallerIdentity needs none, in AWS as in moto).
const ALL: [&str; 5] = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:DescribeKey",
];

/// The environment of a process running as an IAM user.
fn env_of(user: &(String, String)) -> Vec<(&str, &str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", user.0.as_str()),
        ("AWS_SECRET_ACCESS_KEY", user.1.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
}

/// The checks doctor reports for `cfg` with `env`, and its table.
fn doctor(
    dir: &Path,
    cfg: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (bool, Vec<serde_json::Value>, String) {
    let path = dir.join(format!("doctor-{}.toml", uuid()));
    std::fs::write(&path, cfg).unwrap();
    let path = path.to_str().unwrap();
    let mut args = vec!["doctor", "--config", path];
    args.extend(extra);
    let (ok, table, err) = run(&args, env);
    args.push("--json");
    let (_, json, _) = run(&args, env);
    let checks = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}\n{err}"));
    (ok, checks, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_missing_permission_fails_its_own_step_with_its_fix() {
    let iam = iam_moto();
    let sdk = iam.sdk_config();
    let kms = kms_key_on(&sdk).await;
    let secret = unique("envelope/denied");
    let version = uuid();
    let doc = envelope::keys::master_key::new_secret_value(
        "pii",
        &version,
        &AwsKms::new(&sdk, kms.clone()),
    )
    .await
    .unwrap();
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&secret)
        .client_request_token(&version)
        .secret_string(doc)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = aws_config(&iam.url(), &kms, FAIL_FAST, "", &secret_key("pii", &secret));
    let without = |missing: &str| {
        let actions: Vec<&str> = ALL.iter().copied().filter(|a| *a != missing).collect();
        iam.user(&actions)
    };

    // Every permission: every check passes (the positive control).
    let all = iam.user(&ALL);
    let (ok, checks, table) = doctor(d, &cfg, &env_of(&all), &[]);
    assert!(ok, "{table}");
    assert!(failed(&checks).is_empty(), "{table}");

    // One missing: exactly its step fails, AWS's message names the action,
    // and the fix names it too.
    for (missing, step) in [
        ("secretsmanager:DescribeSecret", "pii secret"),
        ("secretsmanager:GetSecretValue", "pii value"),
        ("kms:Decrypt", "pii decrypt"),
        ("kms:GenerateDataKey", "pii generate"),
        // Envelope resolves the KMS key's ARN once, at the first Decrypt.
        ("kms:DescribeKey", "pii decrypt"),
    ] {
        let user = without(missing);
        let (ok, checks, table) = doctor(d, &cfg, &env_of(&user), &[]);
        assert!(!ok, "{missing}: passed\n{table}");
        assert_eq!(failed(&checks), [step], "{missing}\n{table}");
        let detail = field(&checks, step, "detail");
        assert!(
            detail.contains(&format!("not authorized to perform: {missing}")),
            "{missing}: {detail}"
        );
        let fix = field(&checks, step, "fix");
        assert!(
            fix.contains(missing) && fix.contains("IAM"),
            "{missing}: {fix}"
        );
    }

    // serve, without kms:Decrypt: at most three lines, naming the action and its fix.
    let user = without("kms:Decrypt");
    let path = d.join("serve.toml");
    std::fs::write(&path, &cfg).unwrap();
    let (ok, _, err) = run(
        &["serve", "--config", path.to_str().unwrap()],
        &[&env_of(&user)[..], &[("RUST_LOG", "off")]].concat(),
    );
    assert!(!ok);
    let shown: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect();
    assert!(shown.len() <= 3, "{err}");
    assert!(
        shown[0].contains("KMS access denied: KMS key ") && shown[0].contains("kms:Decrypt"),
        "{err}"
    );
    assert!(
        shown[1].starts_with("fix: allow kms:Decrypt, kms:GenerateDataKey and kms:DescribeKey"),
        "{err}"
    );

    // serve, without secretsmanager:GetSecretValue: the secret's own denial.
    let user = without("secretsmanager:GetSecretValue");
    let (ok, _, err) = run(
        &["serve", "--config", path.to_str().unwrap()],
        &[&env_of(&user)[..], &[("RUST_LOG", "off")]].concat(),
    );
    assert!(!ok);
    let first = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        first.contains("access denied to secret")
            && first.contains("secretsmanager:GetSecretValue"),
        "{err}"
    );

    // --role-arn with an identity that may not assume roles.
    let (ok, checks, table) = doctor(
        d,
        &cfg,
        &env_of(&all),
        &["--role-arn", "arn:aws:iam::123456789012:role/envelope-prod"],
    );
    assert!(!ok, "{table}");
    assert_eq!(failed(&checks)[0], "aws identity", "{table}");
    let fix = field(&checks, "aws identity", "fix");
    assert!(fix.contains("sts:AssumeRole"), "{table}");

    // No credentials at all: the identity and the first key step say so.
    let none = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    let (ok, checks, table) = doctor(d, &cfg, &none, &[]);
    assert!(!ok);
    assert_eq!(failed(&checks), ["aws identity", "pii secret"], "{table}");
    for step in ["aws identity", "pii secret"] {
        assert!(
            field(&checks, step, "fix").starts_with("give the service an identity"),
            "{table}"
        );
    }
}
