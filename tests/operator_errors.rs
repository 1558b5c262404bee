//! Start-up errors a person can act on (docs/OPERATIONS.md, "Start-up
//! errors"): for each broken setup, against moto on loopback, `serve` or
//! `init-keys` fails with at most three lines that name the cause and its
//! fix, and no Debug output of SDK types.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::aws_config::{FAIL_FAST, aws_config, secret_key};
use common::moto::{TEST_ENV, create_envelope_secret, kms_key, moto, unique, uuid};
use common::pki::Ca;
use common::run;

/// The lines the binary printed that are not log lines (which start with
/// their timestamp): the error block.
fn error_block(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !(l.len() > 4 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)))
        .collect()
}

/// Runs `args` with `cfg` as `--config`, which must fail; checks the error
/// block and returns it.
fn fails(args: &[&str], cfg: &str, env: &[(&str, &str)], error: &str, fix: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envelope.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut argv = args.to_vec();
    argv.extend(["--config", path.to_str().unwrap()]);
    if args[0] == "serve" {
        argv.extend(["--listen", "127.0.0.1:0"]);
    }
    let (ok, _, stderr) = run(&argv, env);
    assert!(!ok, "{args:?} succeeded with {cfg}");
    let block = error_block(&stderr);
    assert!(
        (1..=3).contains(&block.len()),
        "{} lines:\n{stderr}",
        block.len()
    );
    assert!(block[0].starts_with("error: "), "{stderr}");
    assert!(block[0].contains(error), "no {error:?} in:\n{stderr}");
    let fix_line = block.iter().find(|l| l.starts_with("fix: "));
    assert!(
        fix_line.is_some_and(|l| l.contains(fix)),
        "no fix {fix:?} in:\n{stderr}"
    );
    for line in &block {
        for debug in [
            "{ ",
            "Some(",
            "source:",
            "DispatchFailure",
            "ConnectorError",
        ] {
            assert!(
                !line.contains(debug),
                "Debug output {debug:?} in:\n{stderr}"
            );
        }
    }
    block.join("\n")
}

/// AWS mode at `endpoint` with one key "pii" on `secret`.
fn cfg(endpoint: &str, kms: &str, secret: &str) -> String {
    aws_config(endpoint, kms, FAIL_FAST, "", &secret_key("pii", secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_aws_setups_fail_with_their_cause_and_fix() {
    let key = kms_key().await;
    let url = moto().url();

    // No credentials anywhere in the SDK's chain.
    let no_credentials: Vec<(&str, &str)> = TEST_ENV
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"))
        .collect();
    fails(
        &["serve"],
        &cfg(&url, &key, &unique("envelope/pii")),
        &no_credentials,
        "no usable AWS credentials to reach secret",
        "give the service an identity",
    );

    // With a replica region: no credentials is no regional outage, so the
    // replica is not tried (its log line would say "trying the next").
    let with_replica = cfg(&url, &key, &unique("envelope/pii")).replacen(
        "[aws]\n",
        "[aws]\nreplica_regions = [\"us-west-2\"]\n",
        1,
    );
    let path = std::env::temp_dir().join(format!("envelope-no-credentials-{}.toml", uuid()));
    std::fs::write(&path, with_replica).unwrap();
    let (ok, _, stderr) = run(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &no_credentials,
    );
    std::fs::remove_file(&path).unwrap();
    assert!(
        !ok && stderr.contains("no usable AWS credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("trying the next"), "{stderr}");

    // Nothing listens at the endpoint.
    fails(
        &["serve"],
        &cfg("http://127.0.0.1:1", &key, "envelope/pii"),
        TEST_ENV,
        "no connection to Secrets Manager",
        "reaches the Secrets Manager endpoint",
    );

    // The secret does not exist.
    let missing = unique("envelope/missing");
    let shown = fails(
        &["serve"],
        &cfg(&url, &key, &missing),
        TEST_ENV,
        &format!("secret {missing} not found"),
        "envelope init-keys",
    );
    assert!(shown.contains("cannot load key \"pii\""), "{shown}");

    // A secret that is not a master key.
    let sm = moto().secrets();
    let wrong = unique("envelope/wrong-shape");
    sm.create_secret()
        .name(&wrong)
        .secret_string("hello")
        .send()
        .await
        .unwrap();
    fails(
        &["serve"],
        &cfg(&url, &key, &wrong),
        TEST_ENV,
        &wrong,
        "a shape Envelope reads",
    );

    // A salt secret that does not exist (seed 004's plain key needs one).
    let salted = cfg(&url, &key, &wrong).replacen(
        &format!("secret_id = \"{wrong}\"\n"),
        &format!(
            "secret_id = \"{wrong}\"\nsalt_secret_id = \"{}\"\nallow_unwrapped_master_keys = true\n",
            unique("envelope/no-salt")
        ),
        1,
    );
    fails(
        &["serve"],
        &salted,
        TEST_ENV,
        "cannot read the salt secret of key \"pii\" (salt_secret_id)",
        "correct the key's salt_secret_id",
    );

    // A secret holding SecretBinary: Envelope reads SecretString only.
    let binary = unique("envelope/binary");
    sm.create_secret()
        .name(&binary)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            b"0123456789abcdef".to_vec(),
        ))
        .send()
        .await
        .unwrap();
    fails(
        &["serve"],
        &cfg(&url, &key, &binary),
        TEST_ENV,
        "the version holds SecretBinary; Envelope reads SecretString only",
        "a shape Envelope reads",
    );

    // A secret scheduled for deletion.
    let deleted = unique("envelope/deleted");
    create_envelope_secret(&deleted, &key, "pii", &uuid()).await;
    sm.delete_secret()
        .secret_id(&deleted)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    fails(
        &["serve"],
        &cfg(&url, &key, &deleted),
        TEST_ENV,
        "is scheduled for deletion",
        "restore-secret",
    );

    // A KMS key id that does not exist: init-keys cannot make a version.
    let unknown_key = uuid();
    fails(
        &["init-keys"],
        &cfg(&url, &unknown_key, &unique("envelope/new")),
        TEST_ENV,
        &format!("KMS key not found: KMS key {unknown_key}"),
        "correct aws.kms_key_id",
    );
    // … and serve, whose existing secret names a real key, fails the same way.
    let existing = unique("envelope/existing");
    create_envelope_secret(&existing, &key, "pii", &uuid()).await;
    fails(
        &["serve"],
        &cfg(&url, &unknown_key, &existing),
        TEST_ENV,
        &format!("KMS key not found: KMS key {unknown_key}"),
        "correct aws.kms_key_id",
    );
    // A KMS key ARN of another region than the one in use: AWS would say
    // only "not found", so serve refuses it before any call.
    let elsewhere = format!("arn:aws:kms:eu-west-1:123456789012:key/{key}");
    fails(
        &["serve"],
        &cfg(&url, &elsewhere, &unique("envelope/any")),
        TEST_ENV,
        &format!("{elsewhere} is in eu-west-1, but Envelope uses us-east-1"),
        "set aws.region = \"eu-west-1\"",
    );
    // OPERATIONS.md's start-up rows for master keys KMS will not open.
    // A seed shape, on a key that does not accept one.
    let seed = unique("envelope/seed");
    let seed_value = serde_json::json!({
        "masterKey": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
        "algorithm": "AES-256-GCM",
        "keyDerivation": "PBKDF2",
        "salt": "s",
        "iterations": 100000,
    })
    .to_string();
    sm.create_secret()
        .name(&seed)
        .secret_string(seed_value)
        .send()
        .await
        .unwrap();
    fails(
        &["serve"],
        &cfg(&url, &key, &seed),
        TEST_ENV,
        &format!("secret {seed} version "),
        "set allow_unwrapped_master_keys on the key only if this seed-shaped secret is meant",
    );
    // A document made for another key name: KMS refuses its context.
    let other_name = unique("envelope/other-name");
    create_envelope_secret(&other_name, &key, "other", &uuid()).await;
    fails(
        &["serve"],
        &cfg(&url, &key, &other_name),
        TEST_ENV,
        "KMS could not decrypt the key blob",
        "check aws.kms_key_id and aws.allowed_kms_keys",
    );
    // A document wrapped by a KMS key that is not on the list.
    let foreign = kms_key().await;
    let foreign_doc = unique("envelope/foreign");
    create_envelope_secret(&foreign_doc, &foreign, "pii", &uuid()).await;
    fails(
        &["serve"],
        &cfg(&url, &key, &foreign_doc),
        TEST_ENV,
        "which is not in aws.allowed_kms_keys",
        "add that KMS key to aws.allowed_kms_keys if it is yours",
    );
    // A listed key KMS cannot describe.
    let listed = cfg(&url, &key, &foreign_doc).replacen(
        "[aws]\n",
        &format!(
            "[aws]\nallowed_kms_keys = [\"{key}\", \"alias/{}\"]\n",
            uuid()
        ),
        1,
    );
    fails(
        &["serve"],
        &listed,
        TEST_ENV,
        "aws.allowed_kms_keys: cannot describe KMS key alias/",
        "allow kms:DescribeKey on every key of aws.allowed_kms_keys",
    );
    // A disabled or deleted KMS key cannot be shown here: moto does not
    // enforce key states. src/backends/aws_sdk.rs classifies AWS's codes
    // for them, and src/app/report.rs gives their fix.
}

/// Client commands: the error's cause, not only its context, and a fix.
#[test]
fn client_command_errors_name_their_cause_and_fix() {
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &[
                "rotate",
                "--addr",
                "127.0.0.1:1",
                "--key",
                "pii",
                "--step",
                "createSecret",
                "--token",
                "t",
            ],
            "--step runs the library directly: give --config (or --data-dir for local mode)",
            "",
        ),
        (
            &[
                "rewrap",
                "--addr",
                "127.0.0.1:1",
                "--input",
                "/nonexistent/records.b64",
                "--output",
                "/tmp/x",
            ],
            "cannot open /nonexistent/records.b64: No such file or directory",
            "check the path",
        ),
        (
            &["status", "--addr", "127.0.0.1:1"],
            "cannot connect to http://127.0.0.1:1: ",
            "check that a server listens at --addr",
        ),
    ];
    for (args, error, fix) in cases {
        let (ok, _, stderr) = run(args, &[]);
        assert!(!ok, "{args:?}");
        let block = error_block(&stderr);
        assert!((1..=3).contains(&block.len()), "{stderr}");
        assert!(
            block[0].starts_with("error: ") && block[0].contains(error),
            "{stderr}"
        );
        // (An empty fix: the error line says what to do itself.)
        assert!(
            fix.is_empty()
                || block
                    .iter()
                    .any(|l| l.starts_with("fix: ") && l.contains(fix)),
            "{stderr}"
        );
        for debug in ["{ ", "Some(", "source:", "MetadataMap"] {
            assert!(
                !stderr.contains(debug),
                "Debug output {debug:?} in:\n{stderr}"
            );
        }
    }
}

#[test]
fn broken_local_files_fail_with_their_cause_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    // An audit file in a directory that does not exist.
    let nowhere = dir.path().join("nowhere/audit.log");
    fails(
        &["serve", "--data-dir", data],
        &format!("[audit]\noutput = \"{}\"\n", nowhere.display()),
        &[],
        &format!("audit log: cannot open {}", nowhere.display()),
        "[audit] output",
    );

    // init-keys validates the whole file, not only what it uses: an AWS
    // mode file without [tls] or insecure_plaintext is refused.
    fails(
        &["init-keys"],
        "mode = \"aws\"\n[aws]\nregion = \"us-east-1\"\nkms_key_id = \"k\"\n[[keys]]\nname = \"pii\"\n",
        &[],
        "AWS mode serves only over TLS",
        "correct the setting",
    );

    // A policy file that does not parse.
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[grants]\n").unwrap();
    fails(
        &["serve", "--data-dir", data],
        &format!("policy_file = \"{}\"\n", policy.display()),
        &[],
        &format!("policy {}: ", policy.display()),
        "correct the policy file",
    );

    // A policy file that is not there.
    let missing = dir.path().join("no-such-policy.toml");
    fails(
        &["serve", "--data-dir", data],
        &format!("policy_file = \"{}\"\n", missing.display()),
        &[],
        &format!("cannot read policy {}: ", missing.display()),
        "check policy_file: it must name a file this user can read",
    );

    // A certificate with another certificate's key.
    let ca = Ca::new("operator-errors");
    let (a, b) = (ca.server(&["localhost"]), ca.server(&["localhost"]));
    let (cert, key) = (dir.path().join("a.pem"), dir.path().join("b.key"));
    std::fs::write(&cert, &a.cert).unwrap();
    std::fs::write(&key, &b.key).unwrap();
    let tls = format!(
        "policy_file = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        common::open_policy(),
        cert.display(),
        key.display()
    );
    fails(
        &["serve", "--data-dir", data],
        &tls,
        &[],
        "TLS: ",
        "tls.cert and tls.key",
    );

    // A file that cannot be read (none at that path).
    let missing = tls.replace(&cert.display().to_string(), "/nonexistent/cert.pem");
    fails(
        &["serve", "--data-dir", data],
        &missing,
        &[],
        "TLS: cannot read /nonexistent/cert.pem",
        "check the path and that the service's user can read it",
    );

    // An expired certificate: every client would refuse it.
    let expired = ca.expired_server();
    std::fs::write(&cert, &expired.cert).unwrap();
    std::fs::write(&key, &expired.key).unwrap();
    fails(
        &["serve", "--data-dir", data],
        &tls,
        &[],
        "the certificate expired on",
        "renew the certificate",
    );

    // A certificate not valid yet.
    let future = ca.future_server();
    std::fs::write(&cert, &future.cert).unwrap();
    std::fs::write(&key, &future.key).unwrap();
    fails(
        &["serve", "--data-dir", data],
        &tls,
        &[],
        "the certificate is not valid before",
        "check this host's clock",
    );

    // A file that is not TOML: the parser's message, after the path.
    let parse = fails(
        &["serve", "--data-dir", data],
        "mode = \n",
        &[],
        "envelope.toml: ",
        "correct the setting",
    );
    assert!(parse.starts_with("error: config file "), "{parse}");

    // A setting out of range.
    fails(
        &["serve", "--data-dir", data],
        "[limits]\nmax_batch_items = 0\n",
        &[],
        "limits.max_batch_items",
        "docs/CONFIG.md",
    );

    // AWS mode with no region anywhere (no aws.region, no AWS_REGION, no profile).
    let no_region: Vec<(&str, &str)> = TEST_ENV
        .iter()
        .copied()
        .filter(|(k, _)| *k != "AWS_REGION")
        .chain([("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "")])
        .collect();
    fails(
        &["serve", "--data-dir", data],
        &cfg("http://127.0.0.1:9", "k", "s").replace("region = \"us-east-1\"\n", ""),
        &no_region,
        "no AWS region",
        "set aws.region",
    );

    // The metrics address taken.
    let metrics_taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics_taken.local_addr().unwrap().to_string();
    fails(
        &["serve", "--data-dir", data],
        &format!("metrics_listen = \"{metrics_addr}\"\n"),
        &[],
        &format!("cannot listen on {metrics_addr} for metrics"),
        "choose a free metrics_listen address",
    );

    // The gRPC address taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, stderr) = run(
        &[
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            &dir.path().join("d2").to_string_lossy(),
        ],
        &[],
    );
    assert!(!ok);
    let block = error_block(&stderr).join("\n");
    assert!(
        block.contains(&format!("cannot listen on {addr}"))
            && block.contains("Address already in use"),
        "{stderr}"
    );
    assert!(
        block.contains("fix: choose a free --listen address"),
        "{stderr}"
    );
    // Before the backends open (OPERATIONS.md, start-up step 3): local mode
    // never made its data directory.
    assert!(!dir.path().join("d2").exists());

    // A data directory that cannot be made (its parent is a file).
    let file_parent = dir.path().join("a-file");
    std::fs::write(&file_parent, "").unwrap();
    fails(
        &[
            "serve",
            "--data-dir",
            &file_parent.join("data").to_string_lossy(),
        ],
        "",
        &[],
        "cannot create data directory",
        "its parent must be a directory",
    );
}

/// `envelope rewrap` off a terminal reports one plain line per batch (a bar
/// with rate and ETA on a terminal), and writes every record.
#[tokio::test]
async fn rewrap_reports_progress_after_the_first_batch_then_periodically() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let records = c
        .encrypt_batch(envelope::pb::EncryptBatchRequest {
            key: String::new(),
            items: (0..25)
                .map(|i| envelope::pb::EncryptItem {
                    indexes: Vec::new(),
                    plaintext: format!("record-{i}").into_bytes().into(),
                    context: common::ctx(&[("table", "users")]),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let lines: Vec<String> = records
        .iter()
        .map(|r| match &r.result {
            Some(envelope::pb::encrypt_result::Result::Ciphertext(ct)) => {
                base64::engine::general_purpose::STANDARD.encode(ct)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let input = dir.path().join("records.b64");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // Rewraps `file` in place through the server, `batch` records a call.
    let rewrap = |batch: &str, file: &std::path::Path| {
        let file = file.to_str().unwrap();
        run(
            &[
                "rewrap",
                "--addr",
                &server.addr,
                "--context",
                "table=users",
                "--batch",
                batch,
                "--input",
                file,
                "--output",
                file,
            ],
            &[],
        )
    };
    let (ok, out, err) = rewrap("10", &input);
    assert!(ok, "{err}");
    // Not a line per batch (three here): the first, then one every
    // PLAIN_EVERY (10 s), which this run does not last.
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("rewrap: ")).collect();
    assert_eq!(progress.len(), 1, "{err}");
    assert!(
        progress[0].starts_with("rewrap: 10 records so far (") && progress[0].ends_with("/s)"),
        "{err}"
    );
    assert!(
        out.contains("rewrap: 25 records, 0 rewrapped, 25 already current, 0 failed"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&input).unwrap().lines().count(), 25);
    // `--batch` is clamped to 1–10,000: the first progress line comes after
    // one record at 0, and after 10,000 of 10,001 at 20,000 (unclamped, one
    // call of 10,001 would be over the server's max_batch_items).
    let many = dir.path().join("many.b64");
    std::fs::write(&many, format!("{}\n", lines[0]).repeat(10_001)).unwrap();
    for (batch, first, file) in [("0", 1, &input), ("20000", 10_000, &many)] {
        let (ok, _, err) = rewrap(batch, file);
        assert!(ok, "{err}");
        assert!(
            err.contains(&format!("rewrap: {first} records so far (")),
            "--batch {batch}: {err}"
        );
    }
}

/// CONFIG.md, `envelope rewrap`: a record that fails is written unchanged
/// and reported as `line <n>: …`, a blank line stays blank, and the
/// command exits non-zero with the count; a whole call that fails leaves
/// `--output` untouched.
#[tokio::test]
async fn rewrap_keeps_failed_records_and_says_which() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(&dir.path().join("data"), None);
    let record = common::requests::encrypt(&server, "", "r", &[("table", "users")])
        .await
        .unwrap();
    let good = b64.encode(&record.ciphertext);
    let other_context = b64.encode(
        &common::requests::encrypt(&server, "", "r", &[("table", "orders")])
            .await
            .unwrap()
            .ciphertext,
    );
    let input = dir.path().join("in.b64");
    let output = dir.path().join("out.b64");
    // CONFIG.md, `--input`: whitespace around a record is trimmed.
    let text = format!("  {good}\t\n\nnot base64!\n{other_context}\n");
    std::fs::write(&input, &text).unwrap();
    let args = |addr: &str| {
        vec![
            "rewrap".to_owned(),
            "--addr".into(),
            addr.into(),
            "--context".into(),
            "table=users".into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            output.to_str().unwrap().into(),
        ]
    };
    let argv = args(&server.addr);
    let (ok, out, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("rewrap: 3 records, 0 rewrapped, 1 already current, 2 failed"),
        "{out}"
    );
    assert!(
        err.contains("line 3: ") && err.contains("line 4: "),
        "{err}"
    );
    assert!(
        err.contains("2 records could not be rewrapped (left unchanged in the output)"),
        "{err}"
    );
    // The trimmed record is written back; failed lines are kept as they were.
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        format!("{good}\n\nnot base64!\n{other_context}\n")
    );
    // Twelve failures: the first ten are reported, all are counted.
    std::fs::write(&input, format!("{other_context}\n").repeat(12)).unwrap();
    let (ok, out, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!ok, "{out}{err}");
    let reported: Vec<&str> = err.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(reported.len(), 10, "{err}");
    assert!(reported[9].starts_with("line 10: "), "{err}");
    assert!(out.contains("12 failed"), "{out}");

    // A whole call refused (no such key): --output is left as it was, and
    // the temporary file is removed.
    std::fs::write(&output, "kept\n").unwrap();
    let mut argv = args(&server.addr);
    argv.extend(["--key".into(), "nope".into()]);
    let (ok, _, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "kept\n");
    assert!(!output.with_extension("rewrap-tmp").exists());

    // The server gone: the call fails, and --output is left as it was.
    let addr = server.addr.clone();
    drop(server);
    let argv = args(&addr);
    let (ok, _, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!ok, "{err}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "kept\n");
}

/// CONFIG.md, `envelope init-keys`: one line per key, in configuration
/// order, `created` and then `exists`.
#[test]
fn init_keys_reports_each_key_in_configuration_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keys.toml");
    std::fs::write(
        &cfg,
        "[[keys]]\nname = \"zeta\"\n[[keys]]\nname = \"alpha\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "init-keys",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (ok, out, err) = run(&args, &[]);
    assert!(ok, "{err}");
    assert_eq!(out, "zeta: created\nalpha: created\n");
    let (ok, out, err) = run(&args, &[]);
    assert!(ok, "{err}");
    assert_eq!(out, "zeta: exists\nalpha: exists\n");
    // `envelope rotate` direct (CONFIG.md): one step prints `<step>: done`,
    // the four print both versions, and a key not configured is named.
    let rotate = |extra: &[&str]| {
        let mut a = vec!["rotate", "--config", cfg.to_str().unwrap(), "--data-dir"];
        a.push(data.to_str().unwrap());
        a.extend_from_slice(extra);
        run(&a, &[])
    };
    let token = uuid::Uuid::new_v4().to_string();
    let (ok, out, err) = rotate(&[
        "--key",
        "alpha",
        "--step",
        "createSecret",
        "--token",
        &token,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "createSecret: done\n");
    let (ok, out, err) = rotate(&["--key", "zeta"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("previous_version: ")
            && lines[1].starts_with("current_version: "),
        "{out}"
    );
    let (ok, _, err) = rotate(&["--key", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("key \"nope\" is not in the configuration"),
        "{err}"
    );
}

/// OPERATIONS.md, start-up errors: KMS unreachable while Secrets Manager
/// answers (a proxy drops KMS Decrypt alone) is `no connection to KMS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_alone_unreachable_says_so() {
    let key = kms_key().await;
    let secret = unique("envelope/kms-down");
    create_envelope_secret(&secret, &key, "pii", &uuid()).await;
    let proxy = common::moto::Proxy::start(moto().addr);
    proxy.fail_after(Some(("TrentService.Decrypt", 0)));
    fails(
        &["serve"],
        &cfg(&proxy.url(), &key, &secret),
        TEST_ENV,
        "no connection to KMS",
        "check aws.region",
    );
}

/// README, "The CLI client": `rotate` and `compromise` require `--key`, so
/// neither acts on `default` by accident; the client commands' `--addr`
/// defaults to 127.0.0.1:50051 (the README's CLI block relies on it:
/// `tests/readme.rs`).
#[test]
fn rotate_and_compromise_require_a_key_and_addr_has_its_default() {
    for args in [
        &["rotate"][..],
        &["compromise", "--version", "v", "--reason", "r"][..],
    ] {
        let (ok, _, err) = common::cli::run(args, &[]);
        assert!(
            !ok && err.contains("--key <KEY>") && err.contains("required"),
            "{args:?}: {err}"
        );
    }
    for command in ["status", "encrypt", "rotate", "compromise"] {
        let (ok, out, err) = common::cli::run(&[command, "--help"], &[]);
        assert!(
            ok && out.contains("[default: 127.0.0.1:50051]"),
            "{command}: {out}{err}"
        );
    }
}
