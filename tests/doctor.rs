//! `envelope doctor` against moto on loopback (docs/OPERATIONS.md, "First
//! deployment"): a healthy setup passes every check and exits 0; each
//! deliberately broken setup fails exactly the check it breaks, with a fix,
//! and exits 1; `--json` gives the same checks to a machine.
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
use common::moto::{
    Proxy, TEST_ENV, create_envelope_secret, envelope_doc, kms_key, moto, unique, uuid,
};
use common::pki::Ca;
use common::run;

/// A setup: a KMS key, the key "pii" on a secret made under it (also in
/// us-west-2, the replica region), TLS files and a policy, in `dir`.
struct Setup {
    kms: String,
    secret: String,
    tls: String,
}

async fn setup(dir: &Path) -> Setup {
    let kms = kms_key().await;
    let secret = unique("envelope/doctor");
    let version = uuid();
    create_envelope_secret(&secret, &kms, "pii", &version).await;
    // The replica: the same version id, as Secrets Manager replication keeps it.
    west()
        .create_secret()
        .name(&secret)
        .client_request_token(&version)
        .secret_string(envelope_doc(&kms, "pii", &version).await)
        .send()
        .await
        .unwrap();
    let ca = Ca::new("doctor");
    let server = ca.server(&["localhost"]);
    std::fs::write(dir.join("server.crt"), &server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &server.key).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(
        dir.join("bad-ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let expired = ca.expired_server();
    std::fs::write(dir.join("expired.crt"), &expired.cert).unwrap();
    std::fs::write(dir.join("expired.key"), &expired.key).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[[allow]]\ncallers = [\"spiffe://example.org/app\"]\nkeys = [\"pii\"]\noperations = [\"encrypt\", \"decrypt\"]\n",
    )
    .unwrap();
    let tls = format!(
        "[tls]\ncert = \"{0}/server.crt\"\nkey = \"{0}/server.key\"\nclient_ca = \"{0}/ca.pem\"\n",
        dir.display()
    );
    Setup { kms, secret, tls }
}

/// Secrets Manager in us-west-2, the replica region, on moto.
fn west() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&moto().sdk_config())
            .region(aws_config::Region::new("us-west-2"))
            .build(),
    )
}

/// The steps of key pii's checks, in order.
const PII: [&str; 7] = [
    "pii secret",
    "pii stages",
    "pii value",
    "pii shape",
    "pii decrypt",
    "pii versions",
    "pii generate",
];

/// The outcome of check `name`.
fn outcome<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a str {
    field(checks, name, "outcome")
}

/// The config: AWS mode on moto (or `endpoint`), the policy, the TLS
/// table, and one key on `secret`.
fn config(dir: &Path, endpoint: &str, kms: &str, secret: &str, tls: &str) -> String {
    let policy = format!("policy_file = \"{}/policy.toml\"\n", dir.display());
    let cfg = aws_config(endpoint, kms, FAIL_FAST, "", &secret_key("pii", secret))
        .replace("insecure_plaintext = true\n", "");
    // The test helper's open policy is replaced by this setup's.
    let cfg = cfg
        .lines()
        .filter(|l| !l.starts_with("policy_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = cfg.replacen("[aws]\n", "[aws]\nreplica_regions = [\"us-west-2\"]\n", 1);
    format!("{policy}{cfg}\n{tls}")
}

/// Runs doctor on `cfg`: (exit status success, the checks from --json,
/// the table).
fn doctor(dir: &Path, cfg: &str) -> (bool, Vec<serde_json::Value>, String) {
    let path = dir.join(format!("doctor-{}.toml", uuid()));
    std::fs::write(&path, cfg).unwrap();
    let path = path.to_str().unwrap();
    let (ok, table, err) = run(&["doctor", "--config", path], TEST_ENV);
    let (json_ok, json, _) = run(&["doctor", "--config", path, "--json"], TEST_ENV);
    assert_eq!(ok, json_ok, "{table}\n{err}");
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}\n{err}"));
    (ok, checks, table)
}

fn fix_of<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a str {
    field(checks, name, "fix")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_and_marks_each_broken_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = setup(d).await;
    let url = moto().url();

    // Healthy: every check passes.
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &s.secret, &s.tls));
    assert!(ok, "{table}");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    let mut want = vec![
        "config",
        "tls certificate",
        "tls key",
        "tls client CA",
        "policy",
        "audit",
        "region",
        "aws identity",
        "clock",
    ];
    want.extend(PII);
    want.push("replica us-west-2");
    assert_eq!(names, want, "{table}");
    assert!(
        table.contains("Envelope's document, wrapped by KMS key")
            && table.contains("allow_unwrapped_master_keys not needed"),
        "{table}"
    );
    assert!(
        failed(&checks).is_empty() && table.contains("every check passed"),
        "{table}"
    );
    assert!(
        table.contains("spiffe://example.org/app may encrypt/decrypt on pii"),
        "{table}"
    );
    assert!(table.lines().all(|l| !l.starts_with('!')), "{table}");

    // Doctor changes nothing: the secret's versions and stages are as they were.
    // (In the primary region and the replica's.)
    let versions = || async {
        let mut v = Vec::new();
        for client in [moto().secrets(), west()] {
            let listed = client
                .list_secret_version_ids()
                .secret_id(&s.secret)
                .send()
                .await
                .unwrap();
            v.extend(
                listed
                    .versions()
                    .iter()
                    .map(|v| format!("{:?} {:?}", v.version_id(), v.version_stages())),
            );
        }
        v.sort();
        v
    };
    let before = versions().await;
    let (ok, _, _) = doctor(d, &config(d, &url, &s.kms, &s.secret, &s.tls));
    assert!(ok);
    assert_eq!(versions().await, before);

    // --role-arn checks a role's rights, assumed from this identity.
    let path = d.join("healthy.toml");
    std::fs::write(&path, config(d, &url, &s.kms, &s.secret, &s.tls)).unwrap();
    let role = "arn:aws:iam::123456789012:role/envelope-prod";
    let (ok, table, err) = run(
        &[
            "doctor",
            "--config",
            path.to_str().unwrap(),
            "--role-arn",
            role,
        ],
        TEST_ENV,
    );
    assert!(ok, "{table}\n{err}");
    assert!(
        table.contains("assumed-role/envelope-prod/envelope-doctor"),
        "{table}"
    );

    // Each broken setup fails exactly its own checks, each with a fix.
    let wrong_shape = unique("envelope/wrong-shape");
    moto()
        .secrets()
        .create_secret()
        .name(&wrong_shape)
        .secret_string("hello")
        .send()
        .await
        .unwrap();
    let bad_tls = |cert: &str, key: &str| {
        format!(
            "[tls]\ncert = \"{0}/{cert}\"\nkey = \"{0}/{key}\"\nclient_ca = \"{0}/ca.pem\"\n",
            d.display()
        )
    };
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "no policy_file in AWS mode",
            config(d, &url, &s.kms, &s.secret, &s.tls)
                .lines()
                .filter(|l| !l.starts_with("policy_file"))
                .collect::<Vec<_>>()
                .join("\n"),
            vec!["policy"],
            "set policy_file to a policy that grants the callers",
        ),
        (
            "missing secret",
            config(d, &url, &s.kms, &unique("envelope/missing"), &s.tls),
            vec!["pii secret", "replica us-west-2"],
            "envelope init-keys",
        ),
        (
            "secret of the wrong shape",
            config(d, &url, &s.kms, &wrong_shape, &s.tls),
            vec!["pii shape", "replica us-west-2"],
            "a shape Envelope reads",
        ),
        (
            "KMS key that does not exist",
            config(d, &url, &uuid(), &s.secret, &s.tls),
            // KMS Decrypt names the configured key, so unwrapping fails first.
            vec!["pii decrypt"],
            "correct aws.kms_key_id",
        ),
        (
            "new data keys under a KMS key that does not exist (old ones readable)",
            config(d, &url, &uuid(), &s.secret, &s.tls).replacen(
                "[aws]\n",
                &format!("[aws]\nallowed_kms_keys = [\"{}\"]\n", s.kms),
                1,
            ),
            vec!["pii generate"],
            "correct aws.kms_key_id",
        ),
        (
            "the primary Secrets Manager unreachable, the replica answering",
            config(d, &url, &s.kms, &s.secret, &s.tls).replacen(
                "[aws]\n",
                "[aws]\nsecretsmanager_endpoint_url = \"http://127.0.0.1:1\"\n",
                1,
            ),
            // The key steps ask the primary alone: a replica must not hide it.
            vec!["pii secret"],
            "reaches the Secrets Manager endpoint",
        ),
        (
            "an allowed KMS key that does not exist",
            config(d, &url, &s.kms, &s.secret, &s.tls).replacen(
                "[aws]\n",
                &format!(
                    "[aws]\nallowed_kms_keys = [\"{}\", \"alias/retired\"]\n",
                    s.kms
                ),
                1,
            ),
            vec!["pii decrypt"],
            "kms:DescribeKey on every key of aws.allowed_kms_keys",
        ),
        (
            "an audit file in a directory that does not exist",
            format!(
                "{}\n[audit]\noutput = \"{}/nowhere/audit.log\"\n",
                config(d, &url, &s.kms, &s.secret, &s.tls),
                d.display()
            ),
            vec!["audit"],
            "[audit] output",
        ),
        (
            "a client CA bundle with a certificate that does not parse",
            config(
                d,
                &url,
                &s.kms,
                &s.secret,
                &s.tls.replace("/ca.pem", "/bad-ca.pem"),
            ),
            vec!["tls client CA"],
            "PEM bundle of the CAs",
        ),
        (
            "a client CA bundle with no certificate",
            config(
                d,
                &url,
                &s.kms,
                &s.secret,
                &s.tls.replace("/ca.pem", "/server.key"),
            ),
            vec!["tls client CA"],
            "PEM bundle of the CAs",
        ),
        (
            "a KMS key ARN of another region",
            config(
                d,
                &url,
                &format!("arn:aws:kms:eu-west-1:123456789012:key/{}", s.kms),
                &s.secret,
                &s.tls,
            ),
            // Real KMS would refuse the key too; moto looks it up by id alone.
            vec!["region"],
            "set aws.region",
        ),
        (
            "expired certificate",
            config(
                d,
                &url,
                &s.kms,
                &s.secret,
                &bad_tls("expired.crt", "expired.key"),
            ),
            vec!["tls certificate"],
            "renew the certificate",
        ),
        (
            "certificate with another certificate's key",
            config(
                d,
                &url,
                &s.kms,
                &s.secret,
                &bad_tls("server.crt", "expired.key"),
            ),
            vec!["tls key"],
            "tls.cert and tls.key",
        ),
    ];
    for (what, cfg, want, fix) in cases {
        let (ok, checks, table) = doctor(d, &cfg);
        assert!(!ok, "{what}: passed\n{table}");
        assert_eq!(failed(&checks), want, "{what}\n{table}");
        assert!(fix_of(&checks, want[0]).contains(fix), "{what}\n{table}");
        assert!(table.contains(&format!("✗ {}", want[0])), "{what}\n{table}");
        // A key step that failed skips the steps after it, and only those.
        if let Some(at) = PII.iter().position(|p| *p == want[0]) {
            for (i, step) in PII.iter().enumerate() {
                let expected = match i.cmp(&at) {
                    std::cmp::Ordering::Less => "ok",
                    std::cmp::Ordering::Equal => "fail",
                    std::cmp::Ordering::Greater => "skip",
                };
                assert_eq!(outcome(&checks, step), expected, "{what}: {step}\n{table}");
            }
            if let Some(next) = PII.get(at + 1) {
                assert!(table.contains(&format!("- {next}")), "{what}\n{table}");
            }
        }
    }

    // A secret without a value: no AWSCURRENT to load.
    let empty = unique("envelope/empty");
    moto()
        .secrets()
        .create_secret()
        .name(&empty)
        .send()
        .await
        .unwrap();
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &empty, &s.tls));
    assert!(!ok);
    assert_eq!(
        failed(&checks),
        ["pii stages", "replica us-west-2"],
        "{table}"
    );
    assert!(
        fix_of(&checks, "pii stages").contains("envelope init-keys"),
        "{table}"
    );

    // A seed-shaped secret (seed 001's masterKey document): refused unless
    // the key allows unwrapped master keys, and then a warning.
    let seed = unique("envelope/seed");
    let seed_version = uuid();
    let seed_doc = r#"{"masterKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","algorithm":"AES-256-GCM","keyDerivation":"PBKDF2","salt":"c2FsdHNhbHRzYWx0c2FsdA==","iterations":600000}"#;
    for client in [moto().secrets(), west()] {
        client
            .create_secret()
            .name(&seed)
            .client_request_token(&seed_version)
            .secret_string(seed_doc)
            .send()
            .await
            .unwrap();
    }
    let refused = config(d, &url, &s.kms, &seed, &s.tls);
    let (ok, checks, table) = doctor(d, &refused);
    assert!(!ok);
    assert_eq!(failed(&checks), ["pii shape"], "{table}");
    assert!(
        fix_of(&checks, "pii shape").contains("allow_unwrapped_master_keys"),
        "{table}"
    );
    let allowed = refused.replacen(
        &format!("secret_id = \"{seed}\"\n"),
        &format!("secret_id = \"{seed}\"\nallow_unwrapped_master_keys = true\n"),
        1,
    );
    let (ok, checks, table) = doctor(d, &allowed);
    assert!(ok, "{table}");
    assert_eq!(outcome(&checks, "pii shape"), "warn", "{table}");
    assert!(
        table.contains("seed 001") && table.contains("no KMS call"),
        "{table}"
    );

    // A rotation half done (AWSPENDING staged) is a warning, not a failure.
    let pending = uuid();
    moto()
        .secrets()
        .put_secret_value()
        .secret_id(&s.secret)
        .client_request_token(&pending)
        .secret_string(envelope_doc(&s.kms, "pii", &pending).await)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &s.secret, &s.tls));
    assert!(ok, "{table}");
    assert_eq!(outcome(&checks, "pii stages"), "warn", "{table}");
    assert!(table.contains(&format!("AWSPENDING {pending}")), "{table}");

    // A replica whose AWSCURRENT is not the primary's: a warning.
    let lagging = unique("envelope/lagging");
    create_envelope_secret(&lagging, &s.kms, "pii", &uuid()).await;
    let old = uuid();
    west()
        .create_secret()
        .name(&lagging)
        .client_request_token(&old)
        .secret_string(envelope_doc(&s.kms, "pii", &old).await)
        .send()
        .await
        .unwrap();
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &lagging, &s.tls));
    assert!(ok, "{table}");
    assert_eq!(outcome(&checks, "replica us-west-2"), "warn", "{table}");
    assert!(
        table.contains(&format!("AWSCURRENT is {old} here")),
        "{table}"
    );

    // No TLS (a test bench's insecure_plaintext): a warning.
    let plaintext = format!(
        "insecure_plaintext = true\n{}",
        config(d, &url, &s.kms, &s.secret, "")
    );
    let (ok, checks, table) = doctor(d, &plaintext);
    assert!(ok, "{table}");
    assert_eq!(outcome(&checks, "tls"), "warn", "{table}");

    // Through a proxy: the replica region unreachable alone, then an AWS
    // whose clock is ten minutes behind this host's, then 90 s behind.
    let proxy = Proxy::start(moto().addr);
    let via_proxy = config(d, &proxy.url(), &s.kms, &s.secret, &s.tls);
    proxy.set_region_down(Some("us-west-2"));
    let (ok, checks, table) = doctor(d, &via_proxy);
    assert!(!ok);
    assert_eq!(failed(&checks), ["replica us-west-2"], "{table}");
    assert!(
        fix_of(&checks, "replica us-west-2").contains("reaches the AWS endpoints"),
        "{table}"
    );
    proxy.set_region_down(None);
    proxy.set_clock_offset(-600);
    let (ok, checks, table) = doctor(d, &via_proxy);
    assert!(!ok);
    assert_eq!(failed(&checks), ["clock"], "{table}");
    assert!(
        field(&checks, "clock", "detail").contains("+600 s from AWS's")
            && fix_of(&checks, "clock").contains("synchronise the clock"),
        "{table}"
    );
    proxy.set_clock_offset(-90);
    let (ok, checks, table) = doctor(d, &via_proxy);
    assert!(ok, "{table}");
    assert_eq!(outcome(&checks, "clock"), "warn", "{table}");

    // A malformed policy.
    std::fs::write(d.join("policy.toml"), "[[allow]\n").unwrap();
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &s.secret, &s.tls));
    assert!(!ok);
    assert_eq!(failed(&checks), ["policy"], "{table}");
    assert!(
        fix_of(&checks, "policy").contains("correct the policy file"),
        "{table}"
    );
    // A policy file that is not there: its path, not its format.
    std::fs::remove_file(d.join("policy.toml")).unwrap();
    let (ok, checks, table) = doctor(d, &config(d, &url, &s.kms, &s.secret, &s.tls));
    assert!(!ok);
    assert_eq!(failed(&checks), ["policy"], "{table}");
    assert!(
        fix_of(&checks, "policy").starts_with("check policy_file"),
        "{table}"
    );
    std::fs::write(
        d.join("policy.toml"),
        "[[allow]]\ncallers = [\"app\"]\nkeys = [\"pii\"]\noperations = [\"encrypt\"]\n",
    )
    .unwrap();

    // Nothing answers at the endpoint: every AWS check fails, no file check.
    let (ok, checks, table) = doctor(
        d,
        &config(d, "http://127.0.0.1:1", &s.kms, &s.secret, &s.tls),
    );
    assert!(!ok);
    assert_eq!(
        failed(&checks),
        ["aws identity", "pii secret", "replica us-west-2"],
        "{table}"
    );
    assert!(
        fix_of(&checks, "pii secret").contains("reaches the Secrets Manager endpoint"),
        "{table}"
    );
}

/// Local mode: a data directory `serve` has not made yet is a warning, a
/// made one passes, and one others may read fails with its fix. Doctor
/// creates nothing.
#[test]
fn doctor_checks_local_mode_and_creates_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = format!("data_dir = \"{}\"\n", data.display());
    let (ok, checks, table) = doctor(dir.path(), &cfg);
    assert!(ok, "{table}");
    assert!(table.contains("! data directory"), "{table}");
    assert!(!data.exists(), "doctor created the data directory");
    drop(common::Server::start(&data, None));
    let (ok, _, table) = doctor(dir.path(), &cfg);
    assert!(ok && table.contains("✓ key default"), "{table}");
    assert!(
        table.contains("! tls") && table.contains("plaintext gRPC"),
        "{table}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, checks2, table) = doctor(dir.path(), &cfg);
    assert!(!ok);
    assert_eq!(failed(&checks2), ["data directory"], "{table}");
    // Nothing of the root key in any report.
    use base64::Engine as _;
    let root = std::fs::read(data.join("root.key")).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, _, table) = doctor(dir.path(), &cfg);
    for needle in [
        hex::encode(&root),
        base64::engine::general_purpose::STANDARD.encode(&root),
    ] {
        assert!(!table.contains(&needle));
    }
    assert!(
        fix_of(&checks2, "data directory").starts_with("chmod 700"),
        "{table}"
    );
    // config, tls (none: a warning), policy, audit, data directory.
    assert_eq!(checks.len(), 5, "{checks:?}");
}

/// OPERATIONS.md, doctor's `tls certificate`: a certificate with under 30
/// days left is a warning that says how many, with its fix; 40 days is fine.
#[test]
fn a_certificate_near_its_end_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("doctor");
    for (days, want) in [(10, "warn"), (40, "ok")] {
        let cert = ca.server_for_days(days);
        std::fs::write(d.join("s.crt"), &cert.cert).unwrap();
        std::fs::write(d.join("s.key"), &cert.key).unwrap();
        let cfg = format!(
            "data_dir = \"{0}/data\"\n[tls]\ncert = \"{0}/s.crt\"\nkey = \"{0}/s.key\"\n",
            d.display()
        );
        let (ok, checks, table) = doctor(d, &cfg);
        assert!(ok, "{table}");
        assert_eq!(outcome(&checks, "tls certificate"), want, "{table}");
        let left = format!("{} days left", days - 1);
        assert!(
            field(&checks, "tls certificate", "detail").contains(&left)
                || field(&checks, "tls certificate", "detail")
                    .contains(&format!("{days} days left")),
            "{table}"
        );
        if want == "warn" {
            assert!(
                fix_of(&checks, "tls certificate").starts_with("renew it soon"),
                "{table}"
            );
        }
    }
}

/// OPERATIONS.md, doctor's `audit` check: a read-only audit file fails it,
/// with its fix; a missing one in an existing directory passes.
#[test]
fn a_read_only_audit_file_fails_the_audit_check() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let audit = d.join("audit.jsonl");
    let cfg = format!(
        "data_dir = \"{0}/data\"\n[audit]\noutput = \"{1}\"\n",
        d.display(),
        audit.display()
    );
    let (ok, checks, table) = doctor(d, &cfg);
    assert!(ok && outcome(&checks, "audit") == "ok", "{table}");
    std::fs::write(&audit, "").unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o400)).unwrap();
    let (ok, checks, table) = doctor(d, &cfg);
    assert!(!ok, "{table}");
    assert_eq!(failed(&checks), ["audit"], "{table}");
    assert!(
        field(&checks, "audit", "detail").ends_with("is read-only"),
        "{table}"
    );
    assert!(
        fix_of(&checks, "audit").starts_with("set [audit] output to a file"),
        "{table}"
    );
}
