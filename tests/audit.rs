//! One audit line per call (docs/AUDIT.md): a known mix of calls that
//! succeed, fail, are denied, are batches and stream messages writes
//! exactly one line each, with the right RPC, code and item counts; counted
//! after SIGTERM, which writes every queued line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::Server;
use common::requests::{CTX, batch, dec, enc};
use envelope::pb;

#[tokio::test]
async fn every_call_writes_exactly_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[allow]]\nanonymous = true\nkeys = [\"default\", \"nope\"]\noperations = [\"encrypt\", \"decrypt\"]\n",
    )
    .unwrap();
    let cfg = format!(
        "policy_file = \"{}\"\n[[keys]]\nname = \"default\"\n[[keys]]\nname = \"pii\"\n",
        policy.display()
    );
    let mut server = Server::start(&dir.path().join("data"), Some(&cfg));
    let mut c = server.client().await;
    let mut good = Vec::new();
    for i in 0..5 {
        let e = c.encrypt(enc("", format!("v{i}"), CTX)).await.unwrap();
        good.push(e.into_inner().ciphertext);
    }
    for _ in 0..3 {
        c.decrypt(dec("", b"not a record", CTX)).await.unwrap_err();
    }
    for _ in 0..2 {
        c.encrypt(enc("pii", b"x", CTX)).await.unwrap_err();
    }
    c.encrypt(enc("nope", b"x", CTX)).await.unwrap_err();
    c.encrypt_batch(batch("", 0, 4)).await.unwrap();
    let items = vec![
        (good[0].clone(), common::ctx(CTX)),
        (good[1].clone(), common::ctx(CTX)),
        (Bytes::from_static(b"garbage"), common::ctx(CTX)),
    ];
    c.decrypt_batch(pb::DecryptBatchRequest {
        key: String::new(),
        items: items
            .into_iter()
            .map(|(ciphertext, context)| pb::DecryptItem {
                ciphertext,
                context,
            })
            .collect(),
    })
    .await
    .unwrap();
    let messages: Vec<pb::EncryptStreamRequest> = (0..3)
        .map(|i| {
            let b = batch("", i * 2, 2);
            pb::EncryptStreamRequest {
                key: b.key,
                items: b.items,
            }
        })
        .collect();
    let mut answers = c
        .encrypt_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    while answers.message().await.unwrap().is_some() {
        answered += 1;
    }
    assert_eq!(answered, 3);

    // SIGTERM: the writer flushes every queued line before the exit.
    server.sigterm();
    assert_eq!(
        server.wait_exit(std::time::Duration::from_secs(30)),
        Some(Some(0))
    );
    let want: BTreeMap<(String, String, Option<u64>, Option<u64>), usize> = [
        (("Encrypt", "OK", None, None), 5),
        (("Decrypt", "INVALID_ARGUMENT", None, None), 3),
        (("Encrypt", "PERMISSION_DENIED", None, None), 2),
        (("Encrypt", "NOT_FOUND", None, None), 1),
        (("EncryptBatch", "OK", Some(4), Some(0)), 1),
        (("DecryptBatch", "OK", Some(3), Some(1)), 1),
        (("EncryptStream", "OK", Some(2), Some(0)), 3),
    ]
    .into_iter()
    .map(|((rpc, code, items, failed), n)| ((rpc.to_owned(), code.to_owned(), items, failed), n))
    .collect();
    let expected: usize = want.values().sum();
    // The test's reader copies the closed pipe to a file: let it finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut audit = server.stdout();
    // Until the copy is complete: the same length twice, 300 ms apart.
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let again = server.stdout();
        if (again == audit && again.lines().count() >= expected)
            || std::time::Instant::now() >= deadline
        {
            break;
        }
        audit = again;
    }
    let mut got: BTreeMap<(String, String, Option<u64>, Option<u64>), usize> = BTreeMap::new();
    for line in audit.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let key = (
            v["rpc"].as_str().unwrap().to_owned(),
            v["code"].as_str().unwrap().to_owned(),
            v["items"].as_u64(),
            v["failed_items"].as_u64(),
        );
        *got.entry(key).or_default() += 1;
    }
    assert_eq!(got, want, "{audit}");
    assert_eq!(audit.lines().count(), expected);
}

/// API.md, "Request id": the server makes each call's id, a UUIDv4 equal
/// to its audit line's `request_id`, sent in the headers on success and in
/// the trailers on error; a client's own `x-request-id` is not echoed.
/// AUDIT.md: an audit file is created with mode 0600; an existing one keeps its mode.
#[tokio::test]
async fn request_ids_are_the_servers_and_the_audit_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = format!("[audit]\noutput = \"{}\"\n", audit.display());
    let server = Server::start(&dir.path().join("data"), Some(&cfg));
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "audit file mode {mode:o}");
    // An existing file keeps its mode (a log shipper's group may read it).
    let shared = dir.path().join("shared.jsonl");
    std::fs::write(&shared, "").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg2 = format!("[audit]\noutput = \"{}\"\n", shared.display());
    drop(Server::start(&dir.path().join("data2"), Some(&cfg2)));
    let kept = std::fs::metadata(&shared).unwrap().permissions().mode();
    assert_eq!(kept & 0o777, 0o640, "existing audit file mode {kept:o}");

    let mut c = server.client().await;
    fn with_own_id<T>(req: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(req);
        req.metadata_mut()
            .insert("x-request-id", "client-chosen-id".parse().unwrap());
        req
    }
    let id_of = common::requests::request_id;
    let ok = c.encrypt(with_own_id(enc("", b"x", CTX))).await.unwrap();
    let ok_id = id_of(ok.metadata());
    let failed = c
        .decrypt(with_own_id(dec("", b"not a record", CTX)))
        .await
        .unwrap_err();
    let failed_id = id_of(failed.metadata());
    for id in [&ok_id, &failed_id] {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(parsed.get_version_num(), 4, "{id}");
    }
    assert_ne!(ok_id, failed_id);

    // The audit lines, flushed within 10 ms of their call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&audit).unwrap();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: &str| lines.iter().find(|l| l["request_id"] == id).cloned();
    assert_eq!(by_id(&ok_id).unwrap()["outcome"], "ok", "{lines:?}");
    assert_eq!(
        by_id(&failed_id).unwrap()["code"],
        "INVALID_ARGUMENT",
        "{lines:?}"
    );
    assert!(by_id("client-chosen-id").is_none());
    assert!(
        !std::fs::read_to_string(&audit)
            .unwrap()
            .contains("client-chosen-id")
    );
}

/// AUDIT.md: key names and context keys are logged as sent but bounded (a
/// key name cut to 128 characters, at most 64 context keys of at most 64
/// characters, a cut string ending in `…`), and JSON-escaped, so a newline
/// in a key name cannot start a line of its own.
#[tokio::test]
async fn hostile_names_stay_on_one_bounded_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let key = format!("evil\n{{\"rpc\":\"Forged\"}}\n{}", "k".repeat(300));
    let pairs: Vec<(String, String)> = (0..100)
        .map(|i| (format!("{i:03}\n{}", "c".repeat(100)), "v".to_owned()))
        .collect();
    let context = pairs.iter().cloned().collect();
    let req = pb::EncryptRequest {
        indexes: Vec::new(),
        key: key.clone(),
        plaintext: Bytes::from_static(b"x"),
        context,
    };
    c.encrypt(req).await.unwrap_err();
    let audit = server.audit_with(&["evil"]).await;
    assert!(!audit.contains("\"rpc\":\"Forged\""), "{audit}");
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let line = lines.iter().find(|l| l["rpc"] == "Encrypt").unwrap();
    let logged = line["key"].as_str().unwrap();
    let cut: String = key.chars().take(128).collect();
    assert_eq!(logged, format!("{cut}…"));
    let keys = line["context_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 64);
    for (k, (sent, _)) in keys.iter().zip(&pairs) {
        let want: String = sent.chars().take(64).collect();
        assert_eq!(k.as_str().unwrap(), format!("{want}…"));
    }
}

/// AUDIT.md: files are not reopened. After a rename (log rotation by move),
/// lines keep going to the renamed file, and no new file appears, until a
/// restart: the reason to rotate by copy and truncate.
#[tokio::test]
async fn a_renamed_audit_file_keeps_its_lines_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let cfg = format!("[audit]\noutput = \"{}\"\n", audit.display());
    let server = Server::start(&dir.path().join("data"), Some(&cfg));
    let mut c = server.client().await;
    c.encrypt(enc("", b"before", CTX)).await.unwrap();
    std::fs::rename(&audit, &rotated).unwrap();
    let after = c.encrypt(enc("", b"after", CTX)).await.unwrap();
    let id = common::requests::request_id(after.metadata());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&rotated).unwrap().contains(&id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the line after the rename is not in the renamed file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!audit.exists(), "the audit file was reopened");
}

/// AUDIT.md, "Schema": the line each kind of call writes. `outcome` is
/// `partial` for a batch with a failed item (its code `OK`) and `error` for
/// a failure; `key_version` follows the table by RPC; a column's
/// `context_keys` leave out the row field; `index` is cut to 64
/// characters; Admin calls write a line each, health and reflection none.
#[tokio::test]
async fn each_kind_of_call_writes_the_documented_line() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    // Two keys, so that an empty key's `default` and `*` differ.
    let cfg = "[[keys]]\nname = \"default\"\n[[keys]]\nname = \"pii\"\n";
    let server = Server::start(&dir.path().join("data"), Some(cfg));
    let mut c = server.client().await;
    let mut admin = server.admin().await;
    let sealed = c
        .encrypt(enc("", b"x", &[("b", "2"), ("a", "1")]))
        .await
        .unwrap()
        .into_inner();
    let v1 = sealed.key_version.clone();
    c.decrypt(dec("", &sealed.ciphertext, &[("b", "2"), ("a", "1")]))
        .await
        .unwrap();
    let item = |ct: &[u8]| pb::DecryptItem {
        ciphertext: Bytes::copy_from_slice(ct),
        context: common::ctx(&[("b", "2"), ("a", "1")]),
    };
    c.decrypt_batch(pb::DecryptBatchRequest {
        key: String::new(),
        items: vec![item(&sealed.ciphertext), item(b"not a record")],
    })
    .await
    .unwrap();
    let bad = c.decrypt(dec("", b"not a record", CTX)).await.unwrap_err();
    c.encrypt_column(pb::EncryptColumnRequest {
        key: String::new(),
        context: common::ctx(&[("table", "users"), ("column", "email")]),
        plaintexts: vec![Bytes::from_static(b"a@example.com")],
        row_field: "row".into(),
        row_values: vec!["1".into()],
        indexes: Vec::new(),
    })
    .await
    .unwrap();
    let long_index = "i".repeat(100);
    c.compute_index(pb::ComputeIndexRequest {
        key: String::new(),
        index: long_index.clone(),
        values: vec![Bytes::from_static(b"v")],
        context: common::requests::ctx(&[("tenant", "acme")]),
    })
    .await
    .unwrap_err();
    admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap();
    admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    let rotated = admin
        .rotate_master_key(pb::RotateMasterKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A batch refused as a whole (an unknown key): no `items`.
    let refused = c
        .decrypt_batch(pb::DecryptBatchRequest {
            key: "nope".into(),
            items: vec![item(&sealed.ciphertext)],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    // Rewrap, an Encrypt with no context, GenerateDataKey, UnwrapDataKey.
    let moved = c
        .rewrap(pb::RewrapRequest {
            key: String::new(),
            ciphertext: sealed.ciphertext.clone(),
            context: common::ctx(&[("b", "2"), ("a", "1")]),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    c.encrypt(enc("", b"x", &[])).await.unwrap();
    let blob = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: common::ctx(&[("z", "1")]),
        })
        .await
        .unwrap()
        .into_inner();
    c.unwrap_data_key(pb::UnwrapDataKeyRequest {
        key: String::new(),
        wrapped_key: blob.wrapped_key.clone(),
        context: common::ctx(&[("z", "1")]),
    })
    .await
    .unwrap();
    // Health and reflection: no lines.
    let mut health = HealthClient::new(server.channel().await);
    health.check(HealthCheckRequest::default()).await.unwrap();
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut refl = ServerReflectionClient::new(server.channel().await);
        let mut answers = refl
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        answers.message().await.unwrap().unwrap();
    }

    let audit = server
        .audit_with(&["\"rpc\":\"RotateMasterKey\"", "\"rpc\":\"UnwrapDataKey\""])
        .await;
    // The fields come in AUDIT.md's order (serde_json's Value would sort them).
    const ORDER: [&str; 17] = [
        "time",
        "request_id",
        "caller",
        "rpc",
        "operation",
        "key",
        "key_version",
        "index",
        "outcome",
        "code",
        "items",
        "failed_items",
        "context_keys",
        "latency_us",
        "reason",
        "compromised_records",
        "compromised",
    ];
    for line in audit.lines().filter(|l| l.starts_with('{')) {
        assert!(line.starts_with("{\"time\":"), "{line}");
        let at: Vec<usize> = ORDER
            .iter()
            .filter_map(|f| line.find(&format!("\"{f}\":")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        let fields =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).unwrap();
        assert_eq!(
            fields.len(),
            at.len(),
            "a field outside AUDIT.md's list: {line}"
        );
    }
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rpcs: Vec<&str> = lines.iter().map(|l| l["rpc"].as_str().unwrap()).collect();
    assert_eq!(
        rpcs,
        [
            "Encrypt",
            "Decrypt",
            "DecryptBatch",
            "Decrypt",
            "EncryptColumn",
            "ComputeIndex",
            "KeyStatus",
            "RefreshKeys",
            "RotateMasterKey",
            "DecryptBatch",
            "Rewrap",
            "Encrypt",
            "GenerateDataKey",
            "UnwrapDataKey"
        ],
        "{audit}"
    );
    let field = |i: usize, f: &str| lines[i][f].clone();
    assert_eq!(field(0, "key_version"), v1.as_str());
    assert_eq!(field(0, "context_keys"), serde_json::json!(["a", "b"]));
    assert_eq!(field(1, "key_version"), v1.as_str());
    assert_eq!(
        (
            field(2, "outcome"),
            field(2, "code"),
            field(2, "key_version")
        ),
        ("partial".into(), "OK".into(), "".into())
    );
    assert_eq!(
        (field(2, "items"), field(2, "failed_items")),
        (2.into(), 1.into())
    );
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        (
            field(3, "outcome"),
            field(3, "code"),
            field(3, "key_version")
        ),
        ("error".into(), "INVALID_ARGUMENT".into(), "".into())
    );
    assert_eq!(
        field(4, "context_keys"),
        serde_json::json!(["column", "table"])
    );
    assert_eq!(field(4, "key_version"), v1.as_str());
    assert_eq!(field(5, "index"), format!("{}…", "i".repeat(64)).as_str());
    // ComputeIndex lists its context's keys; refused, it names no version.
    assert_eq!(field(5, "context_keys"), serde_json::json!(["tenant"]));
    assert_eq!(
        (field(5, "outcome"), field(5, "key_version")),
        ("error".into(), "".into())
    );
    for i in [6, 7] {
        assert_eq!(
            (field(i, "key"), field(i, "key_version")),
            ("*".into(), "".into())
        );
    }
    assert_eq!(field(8, "key_version"), rotated.current_version.as_str());
    assert_eq!(field(8, "key"), "default", "an empty key rotates default");
    // Absent fields (AUDIT.md): `items` on unary calls and on a batch
    // refused as a whole; `context_keys` on batches and Admin calls.
    let has = |i: usize, f: &str| lines[i].get(f).is_some();
    assert!(!has(0, "items") && !has(9, "items") && !has(9, "failed_items"));
    assert_eq!(field(9, "code"), "NOT_FOUND");
    for i in [2, 6, 7, 8, 9] {
        assert!(!has(i, "context_keys"), "{}", lines[i]);
    }
    // The unary calls with a context list its keys; an empty one lists none.
    let current = rotated.current_version.as_str();
    assert_eq!(moved.key_version, current);
    for (i, keys, version) in [
        (10, Some(serde_json::json!(["a", "b"])), current),
        (11, None, current),
        (12, Some(serde_json::json!(["z"])), current),
        (
            13,
            Some(serde_json::json!(["z"])),
            blob.key_version.as_str(),
        ),
    ] {
        assert_eq!(lines[i].get("context_keys").cloned(), keys, "{}", lines[i]);
        assert_eq!(field(i, "key_version"), version, "{}", lines[i]);
    }
}

/// AUDIT.md, `[audit] output = "off"`: no audit log at all; stdout carries
/// only `listening on`. MarkCompromised's reason is audited trimmed.
#[tokio::test]
async fn off_writes_nothing_and_a_reason_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let off = Server::start(
        &dir.path().join("off"),
        Some("metrics_listen = \"127.0.0.1:0\"\n[audit]\noutput = \"off\"\n"),
    );
    off.client()
        .await
        .encrypt(enc("", b"x", CTX))
        .await
        .unwrap();
    // The call is still counted (OPERATIONS.md, `envelope_requests_total`).
    let (_, metrics) = common::http_get(off.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        metrics
            .contains("envelope_requests_total{rpc=\"Encrypt\",key=\"default\",code=\"OK\"} 1\n"),
        "{metrics}"
    );
    // Past the writer's 10 ms, had there been a line.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let lines: Vec<String> = off.stdout().lines().map(str::to_owned).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("listening on")),
        "{lines:?}"
    );

    let server = Server::start(&dir.path().join("data"), None);
    let previous = common::requests::rotate(&server, "").await.previous_version;
    server
        .admin()
        .await
        .mark_compromised(pb::MarkCompromisedRequest {
            key: String::new(),
            version: previous,
            reason: "  laptop lost \n".into(),
        })
        .await
        .unwrap();
    let audit = server.audit_with(&["\"rpc\":\"MarkCompromised\""]).await;
    let line: serde_json::Value = audit
        .lines()
        .find(|l| l.contains("\"rpc\":\"MarkCompromised\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    // Trimmed, and an empty key name is audited as `default` (AUDIT.md, `key`).
    assert_eq!(
        (&line["reason"], &line["key"]),
        (&"laptop lost".into(), &"default".into()),
        "{line}"
    );
}

/// AUDIT.md, "Correlating with x-request-id": at `log_level = "debug"` a
/// line written while a call runs sits in a `request` span with its id.
#[tokio::test]
async fn debug_lines_carry_the_calls_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("log_level = \"envelope=debug\"\n"),
    );
    let sealed = server
        .client()
        .await
        .encrypt(enc("", b"x", CTX))
        .await
        .unwrap();
    let id = common::requests::request_id(sealed.metadata());
    // The first Encrypt makes a data key, and logs it at debug.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let logs = server.logs();
        if let Some(line) = logs.lines().find(|l| l.contains("new data key")) {
            assert!(
                line.contains(&format!("request{{request_id={id} rpc=\"Encrypt\"}}")),
                "{line}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// OPERATIONS.md, "gRPC health", and AUDIT.md, "When it cannot be written":
/// in refuse mode, a write that fails (here the file-size limit,
/// RLIMIT_FSIZE, set on the running server with `prlimit`) refuses calls
/// and takes health to NOT_SERVING; once the file can be written again (an
/// operator truncates it), the held lines are written, health is SERVING
/// again and calls are served. The server is not ended by SIGXFSZ.
#[tokio::test]
async fn calls_and_health_come_back_when_the_audit_log_is_writable_again() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    // The limit is this file's size: padding keeps it above the stderr log
    // the test reads, which the limit covers too.
    std::fs::write(&audit, vec![b'\n'; 256 * 1024]).unwrap();
    std::fs::set_permissions(&audit, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = format!(
        "metrics_listen = \"127.0.0.1:0\"\n[audit]\noutput = \"{}\"\non_failure = \"refuse\"\n",
        audit.display()
    );
    let mut server = Server::start(&dir.path().join("data"), Some(&cfg));
    let mut c = server.client().await;
    let first = c.encrypt(enc("", b"before", CTX)).await.unwrap();
    let id = common::requests::request_id(first.metadata());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&audit).unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "the first line was not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limit = std::fs::metadata(&audit).unwrap().len();
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", server.pid()))
        .arg(format!("--fsize={limit}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit failed");

    let mut refused = None;
    for _ in 0..100 {
        match c.encrypt(enc("", b"during", CTX)).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("calls went on past the file-size limit");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    server.wait_health(false).await;
    assert!(!server.exited(), "SIGXFSZ ended the server");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&audit)
        .unwrap()
        .set_len(0)
        .unwrap();
    server.wait_health(true).await;
    let (code, body) = common::http_get(server.metrics.as_deref().unwrap(), "/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&ready["status"], &ready["checks"]["audit"]),
        (&"ready".into(), &"ok".into()),
        "{body}"
    );
    server
        .log_lines(
            "the audit log is written again; ready",
            1,
            Duration::from_secs(5),
        )
        .await;
    assert!(server.logs().contains("the audit log is writable again"));
    let after = c.encrypt(enc("", b"after", CTX)).await.unwrap();
    let after_id = common::requests::request_id(after.metadata());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&audit).unwrap().contains(&after_id) {
        assert!(
            Instant::now() < deadline,
            "the line after recovery was not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// AUDIT.md, `key_version` by RPC, the rows `each_kind_of_call_writes_the_documented_line`
/// leaves out: EncryptBatch and RewrapBatch name the first item that
/// succeeded (`""` if none did), DecryptColumn names none, the column
/// streams as their unary calls, MarkCompromised the version it marked.
#[tokio::test]
async fn key_version_follows_the_table_for_batches_columns_and_marks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let item = |indexes: Vec<String>| pb::EncryptItem {
        plaintext: Bytes::from_static(b"x"),
        context: Default::default(),
        indexes,
    };
    // An unknown index fails its item alone.
    let bad = || item(vec!["nope".into()]);
    let batch = |items| pb::EncryptBatchRequest {
        key: String::new(),
        items,
    };
    let first = c
        .encrypt_batch(batch(vec![bad(), item(Vec::new())]))
        .await
        .unwrap();
    let v1 = first.into_inner().results[1].key_version.clone();
    c.encrypt_batch(batch(vec![bad(), bad()])).await.unwrap();
    let sealed = c
        .encrypt(enc("", b"r", CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let sealing = |value: &'static [u8]| pb::EncryptColumnRequest {
        key: String::new(),
        context: Default::default(),
        plaintexts: vec![Bytes::from_static(value)],
        row_field: String::new(),
        row_values: Vec::new(),
        indexes: Vec::new(),
    };
    let opening = |ciphertexts| pb::DecryptColumnRequest {
        key: String::new(),
        context: Default::default(),
        ciphertexts,
        row_field: String::new(),
        row_values: Vec::new(),
    };
    let column = c.encrypt_column(sealing(b"c")).await.unwrap().into_inner();
    c.decrypt_column(opening(column.ciphertexts)).await.unwrap();
    // The column streams: one line per message, as their unary calls.
    let mut sealed_stream = c
        .encrypt_column_stream(tokio_stream::iter(vec![pb::EncryptColumnStreamRequest {
            column: Some(sealing(b"s")),
        }]))
        .await
        .unwrap()
        .into_inner();
    let streamed = sealed_stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .column
        .unwrap();
    assert!(sealed_stream.message().await.unwrap().is_none());
    let mut opened = c
        .decrypt_column_stream(tokio_stream::iter(vec![pb::DecryptColumnStreamRequest {
            column: Some(opening(streamed.ciphertexts)),
        }]))
        .await
        .unwrap()
        .into_inner();
    opened.message().await.unwrap().unwrap();
    assert!(opened.message().await.unwrap().is_none());
    let v2 = common::requests::rotate(&server, "").await.current_version;
    c.rewrap_batch(pb::RewrapBatchRequest {
        key: String::new(),
        items: vec![pb::RewrapItem {
            ciphertext: sealed,
            context: common::ctx(CTX),
            indexes: Vec::new(),
        }],
    })
    .await
    .unwrap();
    server
        .admin()
        .await
        .mark_compromised(pb::MarkCompromisedRequest {
            key: String::new(),
            version: v1.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let audit = server.audit_with(&["\"rpc\":\"MarkCompromised\""]).await;
    let versions: Vec<(String, String)> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["rpc"] != "Encrypt" && l["rpc"] != "RotateMasterKey")
        .map(|l| {
            (
                l["rpc"].as_str().unwrap().to_owned(),
                l["key_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("EncryptBatch", v1.as_str()),
        ("EncryptBatch", ""),
        ("EncryptColumn", v1.as_str()),
        ("DecryptColumn", ""),
        ("EncryptColumnStream", v1.as_str()),
        ("DecryptColumnStream", ""),
        ("RewrapBatch", v2.as_str()),
        ("MarkCompromised", v1.as_str()),
    ]
    .iter()
    .map(|(r, v)| (r.to_string(), v.to_string()))
    .collect();
    assert_eq!(versions, want, "{audit}");
}

/// ARCHITECTURE.md, "A call's path", and AUDIT.md, "Back-pressure": lines
/// are handed to one writer thread, `envelope-audit`, whatever the load.
#[tokio::test]
async fn one_writer_thread_writes_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let client = server.client().await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                for j in 0..50 {
                    common::requests::encrypt(&client, "", format!("{i}-{j}"), CTX)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let writers = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|comm| comm.trim() == "envelope-audit")
        .count();
    assert_eq!(writers, 1);
}
