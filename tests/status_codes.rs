//! Every error a caller can reach over gRPC, with its status code and its
//! exact message (src/edge/status.rs maps them; docs/API.md lists them):
//! local mode here, the secret store and KMS failing in AWS mode below,
//! where the message must carry none of the detail the server log gets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bytes::Bytes;
use common::Server;
use common::requests::{CTX, ctx, dec, enc};
use envelope::pb;
use tonic::Code;

const POLICY: &str = r#"
[[allow]]
anonymous = true
keys = ["default", "nope", "noindex"]
operations = ["encrypt", "decrypt", "rewrap", "generate_data_key", "unwrap_data_key", "admin"]

[[allow]]
anonymous = true
keys = ["default"]
operations = ["index"]
index_tokens_per_second = 1000
index_tokens_per_day = 3

[[allow]]
anonymous = true
keys = ["scoped"]
operations = ["encrypt"]
context = { tenant = "a" }
"#;

const KEYS: &str = r#"
[limits]
max_plaintext_bytes = 1024
max_batch_items = 10

[[keys]]
name = "default"
[[keys.indexes]]
name = "email"
normalize = "email"
bits = 64
[[keys.indexes]]
name = "tenant_email"
normalize = "email"
bits = 64
scope = ["tenant"]

[[keys]]
name = "noindex"
[[keys.indexes]]
name = "email"
normalize = "email"
bits = 64

[[keys]]
name = "scoped"

[[keys]]
name = "pii"
"#;

/// A call's outcome as the caller sees it: code and message.
fn outcome<T>(r: Result<T, tonic::Status>) -> (Code, String) {
    match r {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

#[tokio::test]
async fn each_reachable_error_has_its_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let cfg = format!("policy_file = \"{}\"\n{KEYS}", policy.display());
    let server = Server::start(&dir.path().join("data"), Some(&cfg));
    let mut c = server.client().await;
    let mut admin = server.admin().await;
    let good = c.encrypt(enc("", b"x", CTX)).await.unwrap().into_inner();
    let ct = good.ciphertext.to_vec();
    let other_key = c
        .encrypt(enc("noindex", b"x", CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let v = &good.key_version;
    let unknown_version = {
        let mut r = ct.clone();
        r[7..23].copy_from_slice(&[0x42; 16]);
        r
    };
    let index =
        |key: &str, index: &str, value: &str, context: &[(&str, &str)]| pb::ComputeIndexRequest {
            key: key.into(),
            index: index.into(),
            values: vec![Bytes::from(value.to_owned())],
            context: ctx(context),
        };

    let mut got = Vec::new();
    let mut case = |name: &'static str, r: (Code, String)| got.push((name, r));
    case(
        "unknown key",
        outcome(c.encrypt(enc("nope", b"x", CTX)).await),
    );
    case(
        "key not granted",
        outcome(c.encrypt(enc("pii", b"x", CTX)).await),
    );
    // An ungranted caller learns nothing of which key names exist: an
    // unconfigured name gets the same answer as a configured one.
    case(
        "unknown key, not granted",
        outcome(c.encrypt(enc("ghost", b"x", CTX)).await),
    );
    case(
        "context outside the grant",
        outcome(c.encrypt(enc("scoped", b"x", &[("tenant", "b")])).await),
    );
    case(
        "unknown index",
        outcome(c.compute_index(index("", "phone", "a@b.c", CTX)).await),
    );
    case(
        "index without an index grant",
        outcome(
            c.encrypt(pb::EncryptRequest {
                indexes: vec!["email".into()],
                ..enc("noindex", b"a@b.c", CTX)
            })
            .await,
        ),
    );
    case(
        "index scope missing",
        outcome(
            c.compute_index(index("", "tenant_email", "a@b.c", CTX))
                .await,
        ),
    );
    case(
        "malformed record",
        outcome(c.decrypt(dec("", b"garbage", CTX)).await),
    );
    case(
        "bad context",
        outcome(c.encrypt(enc("", b"x", &[("", "v")])).await),
    );
    case(
        "another key's record",
        outcome(c.decrypt(dec("", &other_key, CTX)).await),
    );
    case(
        "wrong context",
        outcome(c.decrypt(dec("", &ct, &[("table", "x")])).await),
    );
    case(
        "plaintext over the limit",
        outcome(c.encrypt(enc("", vec![0u8; 1025], CTX)).await),
    );
    case(
        "batch over the limit",
        outcome(c.encrypt_batch(common::requests::batch("", 0, 11)).await),
    );
    case(
        "column with mismatched row ids",
        outcome(
            c.encrypt_column(pb::EncryptColumnRequest {
                indexes: Vec::new(),
                key: String::new(),
                context: ctx(CTX),
                plaintexts: vec![Bytes::from_static(b"a")],
                row_field: "row".into(),
                row_values: vec!["1".into(), "2".into()],
            })
            .await,
        ),
    );
    case(
        "unknown master-key version",
        outcome(c.decrypt(dec("", &unknown_version, CTX)).await),
    );
    case(
        "compromise without a reason",
        outcome(
            admin
                .mark_compromised(pb::MarkCompromisedRequest {
                    key: String::new(),
                    version: v.clone(),
                    reason: String::new(),
                })
                .await,
        ),
    );
    // Quota: 3 tokens a day; each call makes one token (one value, one
    // version). The per-day count does not refill within the test.
    for _ in 0..3 {
        let ok = outcome(c.compute_index(index("", "email", "a@b.c", CTX)).await);
        assert_eq!(ok.0, Code::Ok, "{}", ok.1);
    }
    case(
        "index quota used up",
        outcome(c.compute_index(index("", "email", "a@b.c", CTX)).await),
    );

    for (name, (code, message)) in &got {
        eprintln!("| {name} | {code:?} | {message} |");
    }
    let want: Vec<(&str, Code, String)> = vec![
        ("unknown key", Code::NotFound, "unknown key name \"nope\"".into()),
        (
            "key not granted",
            Code::PermissionDenied,
            "caller \"anonymous\" may not encrypt with key \"pii\"".into(),
        ),
        (
            "unknown key, not granted",
            Code::PermissionDenied,
            "caller \"anonymous\" may not encrypt with key \"ghost\"".into(),
        ),
        (
            "context outside the grant",
            Code::PermissionDenied,
            "caller \"anonymous\" may encrypt with key \"scoped\" only in the contexts its grants name; this request (or one of its items) carries another".into(),
        ),
        ("unknown index", Code::NotFound, "key \"default\" has no index \"phone\"".into()),
        (
            "index without an index grant",
            Code::PermissionDenied,
            "index tokens need an `index` grant on this key; this caller has none".into(),
        ),
        (
            "index scope missing",
            Code::InvalidArgument,
            "index \"tenant_email\" needs the context entry \"tenant\" (its scope)".into(),
        ),
        (
            "malformed record",
            Code::InvalidArgument,
            "malformed ciphertext: unsupported format version 103".into(),
        ),
        (
            "bad context",
            Code::InvalidArgument,
            "invalid encryption context: encryption context has an entry with an empty key".into(),
        ),
        (
            "another key's record",
            Code::InvalidArgument,
            "the ciphertext was not produced under key \"default\"".into(),
        ),
        (
            "wrong context",
            Code::InvalidArgument,
            "decryption failed: the ciphertext was modified or the encryption context does not match".into(),
        ),
        (
            "plaintext over the limit",
            Code::InvalidArgument,
            "plaintext of 1025 bytes is over the limit of 1024 bytes".into(),
        ),
        (
            "batch over the limit",
            Code::InvalidArgument,
            "batch of 11 items is over the limit of 10 items".into(),
        ),
        (
            "column with mismatched row ids",
            Code::InvalidArgument,
            "invalid column request: row_values must have exactly one entry per item when row_field is set".into(),
        ),
        (
            "unknown master-key version",
            Code::FailedPrecondition,
            "master-key version 42424242-4242-4242-4242-424242424242 of key \"default\" is not available in the secret store".into(),
        ),
        (
            "compromise without a reason",
            Code::InvalidArgument,
            "the reason must be 1 to 512 printable characters (it goes to the audit log)".into(),
        ),
        (
            "index quota used up",
            Code::ResourceExhausted,
            "the index-token quota of this caller is used up (per second or per day); retry later".into(),
        ),
    ];
    assert_eq!(got.len(), want.len());
    for ((name, (code, message)), (wname, wcode, wmessage)) in got.iter().zip(&want) {
        assert_eq!(name, wname);
        assert_eq!((code, message), (wcode, wmessage), "{name}");
    }
}

/// An AWS-mode server on moto behind a proxy, with key "default" on a
/// secret of its own and `extra` settings: (its directory, the server, the
/// proxy, the KMS key, the secret).
async fn behind_a_proxy(
    extra: &str,
) -> (
    tempfile::TempDir,
    Server,
    common::moto::Proxy,
    String,
    String,
) {
    use common::aws_config::{FAIL_FAST, aws_config, secret_key};
    use common::moto::{Proxy, TEST_ENV, create_envelope_secret, kms_key, moto, unique, uuid};
    let dir = tempfile::tempdir().unwrap();
    let key = kms_key().await;
    let secret = unique("envelope/status");
    create_envelope_secret(&secret, &key, "default", &uuid()).await;
    let proxy = Proxy::start(moto().addr);
    let cfg = aws_config(
        &proxy.url(),
        &key,
        FAIL_FAST,
        &format!("refresh_interval_secs = 3600\n{extra}"),
        &secret_key("default", &secret),
    );
    let server = Server::start_with(&dir.path().join("d"), Some(&cfg), TEST_ENV);
    (dir, server, proxy, key, secret)
}

/// The secret store and KMS failing under a call: UNAVAILABLE, with a
/// fixed message that names neither the secret, the KMS key nor the
/// endpoint (the server log has those).
#[tokio::test]
async fn store_and_kms_failures_reach_the_caller_without_their_detail() {
    let (_dir, server, proxy, key, secret) = behind_a_proxy("").await;
    let mut c = server.client().await;
    let record = c.encrypt(enc("", b"x", CTX)).await.unwrap().into_inner();
    let mut unknown = record.ciphertext.to_vec();
    unknown[7..23].copy_from_slice(&[0x42; 16]);
    let port = proxy.addr.port().to_string();
    let secret_detail = [
        secret.as_str(),
        key.as_str(),
        port.as_str(),
        "127.0.0.1",
        "arn:",
    ];

    // The AWS APIs unreachable: a version fetched on demand (the store), a
    // data key for the caller (KMS GenerateDataKey), a rotation.
    proxy.set_down(true);
    let store = outcome(c.decrypt(dec("", &unknown, CTX)).await);
    let kms = outcome(
        c.generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(CTX),
        })
        .await,
    );
    let rotation = outcome(
        server
            .admin()
            .await
            .rotate_master_key(pb::RotateMasterKeyRequest::default())
            .await,
    );
    for (name, got, want) in [
        (
            "store",
            &store,
            "the secret store is unavailable for this key; details are in the server log",
        ),
        (
            "kms",
            &kms,
            "KMS is unavailable for this key; details are in the server log",
        ),
        (
            "rotation",
            &rotation,
            "rotation failed on the secret store or KMS; details are in the server log",
        ),
    ] {
        assert_eq!(got, &(Code::Unavailable, want.to_owned()), "{name}");
        for d in secret_detail {
            assert!(!got.1.contains(d), "{name}: {d} in {}", got.1);
        }
    }
    // The operator gets the detail, on a line naming the call's request
    // id: the caller's x-request-id, and its audit line's.
    let failed = c.decrypt(dec("", &unknown, CTX)).await.unwrap_err();
    let id = common::requests::request_id(failed.metadata());
    let logs = server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("dependency failure") && l.contains(&format!("request_id={id}"))),
        "{id}: {logs}"
    );
    let audit = server.audit_with(&[&id]).await;
    assert!(
        audit.contains(&format!("\"request_id\":\"{id}\"")),
        "{audit}"
    );
    assert!(
        logs.contains(&secret) && logs.contains(&port),
        "the secret and the endpoint in the log: {logs}"
    );
    assert!(
        logs.contains(&format!("KMS unavailable: KMS key {key}: ")),
        "API.md's logged KMS message: {logs}"
    );
}

/// ROTATION.md, "Entry points": RotateMasterKey returns an error when only
/// the refresh after its four steps fails; the rotation is complete in the
/// store, is not counted as failed, and this server switches at its next
/// good refresh. A failed step is counted, in `KeyInfo` and the metrics.
#[tokio::test]
async fn rotate_master_key_errs_when_only_its_refresh_fails() {
    let (_dir, server, proxy, _key, secret) =
        behind_a_proxy("metrics_listen = \"127.0.0.1:0\"\n").await;
    let mut admin = server.admin().await;
    let status = || common::requests::key_status(&server);
    let before = status().await.current_version;
    // AWSCURRENT as DescribeSecret gives it.
    let in_store = || async {
        let d = common::moto::moto()
            .secrets()
            .describe_secret()
            .secret_id(&secret)
            .send()
            .await
            .unwrap();
        let stages = d.version_ids_to_stages().unwrap();
        let current = stages
            .iter()
            .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"));
        current.unwrap().0.clone()
    };
    let rotations = |outcome: &str| {
        let m = common::http_get(server.metrics.as_ref().unwrap(), "/metrics").1;
        let series = format!("envelope_rotations_total{{key=\"default\",outcome=\"{outcome}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in {m}"))
    };

    // testSecret decrypts the pending version and AWSCURRENT, and
    // finishSecret runs testSecret again: four KMS Decrypts. The fifth is
    // the refresh loading the new version.
    proxy.fail_after(Some(("TrentService.Decrypt", 4)));
    let (code, message) = outcome(
        admin
            .rotate_master_key(pb::RotateMasterKeyRequest::default())
            .await,
    );
    assert_eq!(code, Code::Unavailable, "{message}");
    let rotated = in_store().await;
    assert_ne!(rotated, before, "the four steps ran: AWSCURRENT moved");
    let after = status().await;
    assert_eq!(
        after.current_version, before,
        "this server has not switched"
    );
    assert_eq!(after.rotation_failures, 0);
    assert!(after.refresh_failures >= 1);
    assert_eq!((rotations("ok"), rotations("failed")), (1, 0));
    // OPERATIONS.md, `/readyz` `checks.kms`: the last KMS call failed.
    let kms_check = || {
        let body = common::http_get(server.metrics.as_ref().unwrap(), "/readyz").1;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["checks"]["kms"].clone()
    };
    assert_eq!(kms_check(), "failing");

    proxy.fail_after(None);
    admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(status().await.current_version, rotated);
    assert_eq!(kms_check(), "ok");

    // A step failing (createSecret cannot write AWSPENDING) is counted.
    proxy.fail_after(Some(("secretsmanager.PutSecretValue", 0)));
    let (code, _) = outcome(
        admin
            .rotate_master_key(pb::RotateMasterKeyRequest::default())
            .await,
    );
    assert_eq!(code, Code::Unavailable);
    proxy.fail_after(None);
    assert_eq!(in_store().await, rotated);
    assert_eq!(status().await.rotation_failures, 1);
    assert_eq!((rotations("ok"), rotations("failed")), (1, 1));
}

/// SECURITY.md and API.md: Admin requests are capped at 64 KiB, refused by
/// tonic with OUT_OF_RANGE before they are decoded; one just under the cap
/// is read and answered for what it asks, with a bounded message.
#[tokio::test]
async fn admin_requests_over_64_kib_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut admin = server.admin().await;
    let status = |n: usize| pb::KeyStatusRequest { key: "k".repeat(n) };
    let (code, message) = outcome(admin.key_status(status(64 << 10)).await);
    assert_eq!(code, Code::OutOfRange);
    // tonic's text (API.md, "Codes produced by tonic").
    assert!(
        message.contains("decoded message length too large"),
        "{message}"
    );
    let (code, message) = outcome(admin.key_status(status(60 << 10)).await);
    assert_eq!(code, Code::NotFound, "{message}");
    // A message quoting what the caller sent is bounded (it was an HTTP/2
    // protocol error: a grpc-message header larger than the client takes).
    assert!(
        message.ends_with('…') && message.chars().count() == 513,
        "{}",
        message.len()
    );
    let mut c = server.client().await;
    let (code, message) = outcome(c.encrypt(enc(&"k".repeat(60 << 10), b"x", CTX)).await);
    assert_eq!(code, Code::NotFound, "{message}");
    assert!(message.starts_with("unknown key name \"kkk"), "{message}");
    // An item's error is bounded the same way (API.md, "Bounded").
    let mut batch = common::requests::batch("", 0, 1);
    batch.items[0].indexes = vec!["i".repeat(10_000)];
    let results = c.encrypt_batch(batch).await.unwrap().into_inner().results;
    let Some(pb::encrypt_result::Result::Error(e)) = &results[0].result else {
        panic!("{results:?}")
    };
    assert_eq!(e.code, Code::NotFound as i32);
    assert!(
        e.message.ends_with('…') && e.message.chars().count() == 513,
        "{}",
        e.message.len()
    );
}

/// A call past `limits.request_timeout_secs` (docs/API.md, "Status codes";
/// AUDIT.md): tonic answers CANCELLED "Timeout expired", the handler is
/// dropped, and no audit line is written for it, then or later. The call
/// is held by a KMS GenerateDataKey that a proxy delays past the deadline.
#[tokio::test]
async fn a_call_past_its_deadline_is_cancelled_and_leaves_no_audit_line() {
    use std::time::{Duration, Instant};
    let (_dir, server, proxy, _, _) =
        behind_a_proxy("metrics_listen = \"127.0.0.1:0\"\n[limits]\nrequest_timeout_secs = 1\n")
            .await;
    let mut c = server.client().await;
    let data_key = || pb::GenerateDataKeyRequest {
        key: String::new(),
        context: ctx(CTX),
    };
    proxy.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    let late = c.generate_data_key(data_key()).await.unwrap_err();
    // Refused by tonic, not the gate: no x-request-id.
    assert!(late.metadata().get("x-request-id").is_none(), "{late:?}");
    let late = outcome::<()>(Err(late));
    assert_eq!(late, (Code::Cancelled, "Timeout expired".to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not cut at the deadline"
    );
    // A batch and a column are cut the same way (docs/CLIENTS.md): each
    // needs a data key, which the delayed KMS holds past the deadline.
    let batch_started = Instant::now();
    let batch = c.encrypt_batch(common::requests::batch("", 0, 100)).await;
    let column_started = Instant::now();
    let column = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: String::new(),
            context: ctx(CTX),
            plaintexts: vec![Bytes::from_static(b"a"); 100],
            row_field: String::new(),
            row_values: Vec::new(),
            indexes: Vec::new(),
        })
        .await;
    for (rpc, got) in [("batch", outcome(batch)), ("column", outcome(column))] {
        assert_eq!(
            got,
            (Code::Cancelled, "Timeout expired".to_owned()),
            "{rpc}"
        );
    }
    assert!(
        batch_started.elapsed() < Duration::from_secs(5),
        "batch and column not cut at the deadline"
    );
    proxy.set_delay(Duration::ZERO);
    // Past the delayed KMS answers, calls that complete: their lines are
    // there, and still none for the cancelled ones.
    tokio::time::sleep_until((column_started + Duration::from_millis(3500)).into()).await;
    c.generate_data_key(data_key()).await.unwrap();
    c.encrypt_batch(common::requests::batch("", 0, 2))
        .await
        .unwrap();
    let audit = server
        .audit_with(&["\"rpc\":\"GenerateDataKey\"", "\"rpc\":\"EncryptBatch\""])
        .await;
    for rpc in ["GenerateDataKey", "EncryptBatch", "EncryptColumn"] {
        let lines: Vec<&str> = audit
            .lines()
            .filter(|l| l.contains(&format!("\"rpc\":\"{rpc}\"")))
            .collect();
        let expected = usize::from(rpc != "EncryptColumn");
        assert_eq!(lines.len(), expected, "{rpc}: {audit}");
        assert!(
            lines.iter().all(|l| l.contains("\"outcome\":\"ok\"")),
            "{audit}"
        );
    }
    // Nor are they counted (OPERATIONS.md, `envelope_requests_total`): only
    // the calls that completed have series.
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let mut counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("envelope_requests_total{"))
        .collect();
    counted.sort_unstable();
    assert_eq!(
        counted,
        [
            "envelope_requests_total{rpc=\"EncryptBatch\",key=\"default\",code=\"OK\"} 1",
            "envelope_requests_total{rpc=\"GenerateDataKey\",key=\"default\",code=\"OK\"} 1",
        ],
        "{metrics}"
    );
}

/// FORMAT.md, "Data keys": only one task creates a data key at a time.
/// Sixteen Encrypts on a cold key, while KMS answers 300 ms late, make one
/// GenerateDataKey call and one data key, and all sixteen succeed.
#[tokio::test]
async fn concurrent_encrypts_on_a_cold_key_make_one_data_key() {
    use std::time::Duration;
    let (_dir, server, proxy, _, _) = behind_a_proxy("").await;
    let before = proxy.count("TrentService.GenerateDataKey");
    proxy.set_delay(Duration::from_millis(300));
    let c = server.client().await;
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { c.encrypt(enc("", format!("r{i}"), CTX)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    proxy.set_delay(Duration::ZERO);
    assert_eq!(proxy.count("TrentService.GenerateDataKey") - before, 1);
    let info = common::requests::key_status(&server).await;
    assert_eq!(info.cache.unwrap().data_keys_generated, 1);
}

/// API.md, "Message size limits": the largest EncryptBatch request
/// (`max_request_bytes` in `max_batch_items` items) is answered, though its
/// response is larger than any request may be (each record adds its
/// overhead): responses have a limit of their own. A request over the
/// limit is refused with OUT_OF_RANGE.
#[tokio::test]
async fn the_largest_batch_request_gets_its_response() {
    use prost::Message;
    const LIMIT: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some(&format!(
            "[limits]\nmax_request_bytes = {LIMIT}\nmax_plaintext_bytes = 4096\nmax_batch_items = 256\n"
        )),
    );
    let mut c = server.client().await;
    let request = |size: usize| pb::EncryptBatchRequest {
        key: String::new(),
        items: (0..256)
            .map(|_| pb::EncryptItem {
                plaintext: Bytes::from(vec![b'x'; size]),
                context: ctx(CTX),
                indexes: Vec::new(),
            })
            .collect(),
    };
    let size = (1..LIMIT / 256)
        .rev()
        .find(|s| request(*s).encoded_len() <= LIMIT)
        .unwrap();
    let full = request(size);
    assert!(full.encoded_len() > LIMIT - 512, "{}", full.encoded_len());
    let answer = c.encrypt_batch(full).await.unwrap().into_inner();
    assert!(answer.encoded_len() > LIMIT, "{}", answer.encoded_len());
    assert!(
        answer
            .results
            .iter()
            .all(|r| matches!(r.result, Some(pb::encrypt_result::Result::Ciphertext(_)))),
        "{answer:?}"
    );
    let (code, message) = outcome(c.encrypt_batch(request(size + 1)).await);
    assert_eq!(code, Code::OutOfRange, "{message}");
}

/// API.md's NOT_FOUND row: an empty key means `default` for
/// RotateMasterKey and MarkCompromised, so on a server without a `default`
/// key both are NOT_FOUND.
#[tokio::test]
async fn admin_calls_with_an_empty_key_mean_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some("[[keys]]\nname = \"pii\"\n"));
    let mut admin = server.admin().await;
    let (code, message) = outcome(
        admin
            .rotate_master_key(pb::RotateMasterKeyRequest { key: String::new() })
            .await,
    );
    assert_eq!(code, Code::NotFound, "{message}");
    let (code, message) = outcome(
        admin
            .mark_compromised(pb::MarkCompromisedRequest {
                key: String::new(),
                version: uuid::Uuid::new_v4().to_string(),
                reason: "test".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "{message}");
    assert!(message.contains("\"default\""), "{message}");
}

/// API.md, Encrypt step 1: the plaintext's size is checked before the
/// context, so a call wrong in both is told about the plaintext.
#[tokio::test]
async fn the_plaintext_size_is_checked_before_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("[limits]\nmax_plaintext_bytes = 16\n"),
    );
    let mut c = server.client().await;
    let empty_key = [("", "v")];
    let (code, message) = outcome(c.encrypt(enc("", &[b'x'; 17][..], &empty_key)).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("plaintext"), "{message}");
    let (_, message) = outcome(c.encrypt(enc("", &[b'x'; 16][..], &empty_key)).await);
    assert!(
        message.contains("empty"),
        "the context's own refusal: {message}"
    );
}

/// API.md, "Message size limits": health keeps tonic's 4 MiB decoding
/// limit: a larger Check is OUT_OF_RANGE.
#[tokio::test]
async fn health_requests_over_4_mib_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await)
        .max_encoding_message_size(8 << 20);
    let check = |n: usize| tonic_health::pb::HealthCheckRequest {
        service: "s".repeat(n),
    };
    let (code, message) = outcome(health.check(check((4 << 20) + 1)).await);
    assert_eq!(code, Code::OutOfRange, "{message}");
    let (code, message) = outcome(health.check(check(64)).await);
    assert_eq!(code, Code::NotFound, "{message}");
}
