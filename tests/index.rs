//! Blind indexes against the real binary: tokens are stable across
//! replicas and restarts, unrelated across keys, indexes, scopes, settings
//! and versions; a rotation gives two tokens (current first) and a record
//! written before it is found by the second; `min_decryption_version`
//! brings it back to one; the `index` operation computes tokens without
//! decrypt, under a per-caller quota; audit lines name the index only.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use bytes::Bytes;
use common::Server;
use common::requests::{ctx, encrypt};
use envelope::pb;
use tonic::Code;

const KEYS: &str = r#"
metrics_listen = "127.0.0.1:0"
[[keys]]
name = "pii"
[[keys.indexes]]
name = "email"
normalize = "email"
bits = 64
[[keys.indexes]]
name = "cpf"
normalize = "digits"
bits = 16
[[keys.indexes]]
name = "tenant_email"
normalize = "email"
bits = 64
scope = ["tenant"]
[[keys]]
name = "other"
[[keys.indexes]]
name = "email"
normalize = "email"
bits = 64
"#;

fn request(key: &str, index: &str, values: &[&str], c: &[(&str, &str)]) -> pb::ComputeIndexRequest {
    pb::ComputeIndexRequest {
        key: key.into(),
        index: index.into(),
        values: values.iter().map(|v| Bytes::from(v.to_string())).collect(),
        context: ctx(c),
    }
}

async fn compute(
    server: &Server,
    key: &str,
    index: &str,
    values: &[&str],
    c: &[(&str, &str)],
) -> Result<Vec<pb::IndexTokens>, tonic::Status> {
    let mut client = server.client().await;
    client
        .compute_index(request(key, index, values, c))
        .await
        .map(|r| r.into_inner().results)
}

/// The tokens of one value: (version, token), current first.
async fn tokens(server: &Server, key: &str, index: &str, value: &str) -> Vec<(String, Vec<u8>)> {
    let r = compute(server, key, index, &[value], &[]).await.unwrap();
    assert!(r[0].error.is_none(), "{:?}", r[0].error);
    r[0].tokens
        .iter()
        .map(|t| (t.key_version.clone(), t.token.to_vec()))
        .collect()
}

#[tokio::test]
async fn tokens_are_stable_and_unrelated_across_keys_indexes_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(KEYS));
    let email = tokens(&server, "pii", "email", "ana@example.com").await;
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].1.len(), 8);
    // Normalized alike: the same token.
    assert_eq!(
        tokens(&server, "pii", "email", "  Ana@Example.COM\n").await,
        email
    );
    assert_ne!(
        tokens(&server, "pii", "email", "bob@example.com").await,
        email
    );
    // Another key name, another index: unrelated.
    assert_ne!(
        tokens(&server, "other", "email", "ana@example.com").await[0].1,
        email[0].1
    );
    let cpf = tokens(&server, "pii", "cpf", "123.456.789-09").await;
    assert_eq!(cpf, tokens(&server, "pii", "cpf", "12345678909").await);
    assert_eq!(cpf[0].1.len(), 2);
    // Scopes: each tenant its own tokens; the scope entry is required.
    let scoped = |t: &'static str| {
        let server = &server;
        async move {
            compute(
                server,
                "pii",
                "tenant_email",
                &["ana@example.com"],
                &[("tenant", t)],
            )
            .await
            .unwrap()[0]
                .tokens[0]
                .token
                .clone()
        }
    };
    let acme = scoped("acme").await;
    assert_eq!(acme, scoped("acme").await);
    assert_ne!(acme, scoped("globex").await);
    assert_ne!(acme.to_vec(), email[0].1);
    let missing = compute(&server, "pii", "tenant_email", &["x"], &[])
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("tenant"),
        "{}",
        missing.message()
    );
    // Unknown index; a value that normalizes to nothing fails alone.
    let unknown = compute(&server, "pii", "phone", &["x"], &[])
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let r = compute(&server, "pii", "cpf", &["abc", "1"], &[])
        .await
        .unwrap();
    assert_eq!(
        r[0].error.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    assert!(r[0].tokens.is_empty());
    assert_eq!(r[1].tokens.len(), 1);
    // Its audit line (AUDIT.md, key_version by RPC): the current version,
    // and the values counted as items.
    let audit = server.audit_with(&["\"failed_items\":1"]).await;
    let line = audit
        .lines()
        .find(|l| l.contains("\"index\":\"cpf\"") && l.contains("\"failed_items\":1"))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    let current = r[1].tokens[0].key_version.clone();
    assert_eq!(line["key_version"], current.as_str(), "{line}");
    assert_eq!(
        (&line["items"], &line["outcome"]),
        (&2.into(), &"partial".into()),
        "{line}"
    );

    // A second replica on the same store and root key, and a restart, agree.
    let replica = Server::start(&data, Some(KEYS));
    assert_eq!(
        tokens(&replica, "pii", "email", "ana@example.com").await,
        email
    );
    drop(replica);
    drop(server);
    let restarted = Server::start(&data, Some(KEYS));
    assert_eq!(
        tokens(&restarted, "pii", "email", "ana@example.com").await,
        email
    );
    drop(restarted);

    // Changing bits or normalize changes every token.
    let bits = KEYS.replacen("bits = 64", "bits = 63", 1);
    let server = Server::start(&data, Some(&bits));
    let t = tokens(&server, "pii", "email", "ana@example.com").await;
    assert_ne!(t[0].1[..7], email[0].1[..7]);
    drop(server);
    let norm = KEYS.replacen("normalize = \"email\"", "normalize = \"lowercase\"", 1);
    let server = Server::start(&data, Some(&norm));
    assert_ne!(
        tokens(&server, "pii", "email", "ana@example.com").await,
        email
    );

    // Audit lines name the index, never a value or a token.
    let audit = server.audit_with(&["\"rpc\":\"ComputeIndex\""]).await;
    let line = audit.lines().find(|l| l.contains("ComputeIndex")).unwrap();
    assert!(line.contains("\"index\":\"email\""), "{line}");
    assert!(line.contains("\"operation\":\"index\""), "{line}");
    assert!(!audit.contains("ana@example.com") && !audit.contains(&hex::encode(&email[0].1)));
}

#[tokio::test]
async fn a_rotation_gives_two_tokens_until_the_old_version_is_retired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(KEYS));
    let before = tokens(&server, "pii", "email", "ana@example.com").await;
    // A row written before the rotation: its record and its token.
    let mut client = server.client().await;
    let row = client
        .compute_index(request("pii", "email", &["ana@example.com"], &[]))
        .await
        .unwrap()
        .into_inner()
        .results[0]
        .tokens[0]
        .token
        .clone();
    let record = encrypt(&server, "pii", "ana@example.com", &[("row", "1")])
        .await
        .unwrap();
    let rotated = server
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest { key: "pii".into() })
        .await
        .unwrap()
        .into_inner();
    let after = tokens(&server, "pii", "email", "ana@example.com").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].0, rotated.current_version, "current version first");
    assert_ne!(after[0].1, before[0].1);
    // The row written before the rotation is found by the second token.
    assert_eq!(after[1], before[0]);
    assert!(after.iter().any(|(_, t)| *t == row.to_vec()));
    // A rotation begun and not finished (createSecret staged AWSPENDING,
    // and the server has refreshed) adds no token: AWSPENDING holds no
    // records (docs/SEARCH.md).
    let cfg = dir.path().join("keys.toml");
    std::fs::write(&cfg, KEYS).unwrap();
    let pending = uuid::Uuid::new_v4().to_string();
    let (ok, _, err) = common::run(
        &[
            "rotate",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--key",
            "pii",
            "--step",
            "createSecret",
            "--token",
            &pending,
        ],
        &[],
    );
    assert!(ok, "{err}");
    let mut admin = server.admin().await;
    admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap();
    let status = admin
        .key_status(pb::KeyStatusRequest { key: "pii".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        format!("{status:?}").contains(&pending),
        "the server has not loaded the pending version: {status:?}"
    );
    assert_eq!(
        tokens(&server, "pii", "email", "ana@example.com").await,
        after
    );
    // Rewrap with the index returns the token under the version that now
    // wraps the record, from the plaintext opened inside the server.
    let moved = client
        .rewrap(pb::RewrapRequest {
            key: "pii".into(),
            ciphertext: record.ciphertext.clone(),
            context: ctx(&[("row", "1")]),
            indexes: vec!["email".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.index_tokens["email"].to_vec(), after[0].1);
    // The CLI prints the same tokens, a line per value; a value with none
    // leaves its line empty and fails the command.
    let (ok, out, err) = common::run_stdin(
        &[
            "index",
            "--addr",
            &server.addr,
            "--key",
            "pii",
            "--index",
            "email",
        ],
        b"ana@example.com\n \n",
    );
    assert!(!ok);
    assert!(err.contains("line 2:"), "{err}");
    let expected: Vec<String> = after
        .iter()
        .map(|(v, t)| format!("{v}:{}", hex::encode(t)))
        .collect();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}\n\n", expected.join(" "))
    );
    // Rewrap moves the record forward; with min_decryption_version set to
    // the new version, only one token is left.
    let rewrapped = client
        .rewrap(pb::RewrapRequest {
            indexes: Vec::new(),
            key: "pii".into(),
            ciphertext: record.ciphertext.clone(),
            context: ctx(&[("row", "1")]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rewrapped.key_version, rotated.current_version);
    drop(client);
    drop(server);
    let retired = KEYS.replacen(
        "name = \"pii\"\n",
        &format!(
            "name = \"pii\"\nmin_decryption_version = \"{}\"\n",
            rotated.current_version
        ),
        1,
    );
    let server = Server::start(&data, Some(&retired));
    let one = tokens(&server, "pii", "email", "ana@example.com").await;
    assert_eq!(one, after[..1].to_vec());
}

/// Tokens returned where records are written equal ComputeIndex's, under
/// the version that wrote the record: Encrypt, EncryptBatch items and
/// EncryptColumn (a token column per index, the row id in the scope).
#[tokio::test]
async fn writes_return_the_tokens_computeindex_gives() {
    let dir = tempfile::tempdir().unwrap();
    let config = KEYS.replacen("scope = [\"tenant\"]", "scope = [\"tenant\", \"row\"]", 1);
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let mut c = server.client().await;
    let want = tokens(&server, "pii", "email", "ana@example.com").await;
    let e = c
        .encrypt(pb::EncryptRequest {
            key: "pii".into(),
            plaintext: Bytes::from_static(b" Ana@Example.com"),
            context: ctx(&[("tenant", "acme"), ("row", "7")]),
            indexes: vec!["email".into(), "tenant_email".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.index_tokens["email"].to_vec(), want[0].1);
    assert_eq!(e.key_version, want[0].0);
    let scoped = compute(
        &server,
        "pii",
        "tenant_email",
        &["ana@example.com"],
        &[("tenant", "acme"), ("row", "7")],
    )
    .await
    .unwrap();
    assert_eq!(e.index_tokens["tenant_email"], scoped[0].tokens[0].token);
    // RewrapBatch items carry them too, from the plaintext opened inside.
    let rewrapped = c
        .rewrap_batch(pb::RewrapBatchRequest {
            key: "pii".into(),
            items: vec![pb::RewrapItem {
                ciphertext: e.ciphertext.clone(),
                context: ctx(&[("tenant", "acme"), ("row", "7")]),
                indexes: vec!["email".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rewrapped.results[0].index_tokens["email"].to_vec(),
        want[0].1
    );
    // A batch item, with a value that normalizes to nothing beside it.
    let b = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: "pii".into(),
            items: vec![
                pb::EncryptItem {
                    plaintext: Bytes::from_static(b"ana@example.com"),
                    context: Default::default(),
                    indexes: vec!["email".into()],
                },
                pb::EncryptItem {
                    plaintext: Bytes::from_static(b"no digits"),
                    context: Default::default(),
                    indexes: vec!["cpf".into()],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results[0].index_tokens["email"].to_vec(), want[0].1);
    let Some(pb::encrypt_result::Result::Error(no_token)) = &b.results[1].result else {
        panic!("{b:?}")
    };
    assert_eq!(no_token.code, Code::InvalidArgument as i32, "{no_token:?}");
    // The same value alone fails its call, with the same code.
    let alone = c
        .encrypt(pb::EncryptRequest {
            key: "pii".into(),
            plaintext: Bytes::from_static(b"no digits"),
            context: Default::default(),
            indexes: vec!["cpf".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(alone.code(), Code::InvalidArgument, "{alone:?}");
    // A column: the row id is in the scope, so each row has its own key.
    let col = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: "pii".into(),
            context: ctx(&[("tenant", "acme")]),
            plaintexts: vec![Bytes::from_static(b"ana@example.com"); 2],
            row_field: "row".into(),
            row_values: vec!["7".into(), "8".into()],
            indexes: vec!["email".into(), "tenant_email".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let email = &col.index_tokens["email"].tokens;
    assert_eq!(email[0].to_vec(), want[0].1);
    assert_eq!(email[0], email[1]);
    let per_row = &col.index_tokens["tenant_email"].tokens;
    assert_eq!(per_row[0], scoped[0].tokens[0].token);
    assert_ne!(per_row[0], per_row[1]);
    // In a column, a value with no token fails its item alone: no record,
    // INVALID_ARGUMENT in `errors`, and the other value sealed.
    let col = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: "pii".into(),
            context: Default::default(),
            plaintexts: vec![
                Bytes::from_static(b"123.456.789-09"),
                Bytes::from_static(b"no digits"),
            ],
            row_field: String::new(),
            row_values: Vec::new(),
            indexes: vec!["cpf".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        col.ciphertexts[1].is_empty() && !col.ciphertexts[0].is_empty(),
        "{col:?}"
    );
    assert_eq!(col.errors.len(), 1, "{col:?}");
    assert_eq!(col.errors[&1].code, Code::InvalidArgument as i32, "{col:?}");
    // An unknown index fails the write before anything is sealed.
    let unknown = c
        .encrypt(pb::EncryptRequest {
            key: "pii".into(),
            plaintext: Bytes::from_static(b"x"),
            context: Default::default(),
            indexes: vec!["phone".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // Nothing was sealed: on the cold key "other", neither an Encrypt nor a
    // batch naming an unknown index makes a data key; one without does.
    let generated = || {
        let (_, m) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("envelope_data_keys_generated_total{key=\"other\"} "))
            .map(str::to_owned)
    };
    let on_other = |indexes: Vec<String>| pb::EncryptRequest {
        key: "other".into(),
        plaintext: Bytes::from_static(b"x"),
        context: Default::default(),
        indexes,
    };
    let unknown = c.encrypt(on_other(vec!["phone".into()])).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(generated().as_deref(), Some("0"));
    // In a batch it is the item's error (docs/API.md); the others are sealed.
    let mut batch = common::requests::batch("other", 0, 3);
    batch.items[1].indexes = vec!["phone".into()];
    let results = c.encrypt_batch(batch).await.unwrap().into_inner().results;
    let codes: Vec<Option<i32>> = results
        .iter()
        .map(|r| match &r.result {
            Some(pb::encrypt_result::Result::Error(e)) => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [None, Some(Code::NotFound as i32), None]);
    assert_eq!(generated().as_deref(), Some("1"));
    // SEARCH.md: more values than max_batch_items (10,000) is INVALID_ARGUMENT.
    let many = vec!["ana@example.com"; 10_001];
    let over = compute(&server, "pii", "email", &many, &[])
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument, "{over:?}");
}

const POLICY: &str = r#"
[[allow]]
anonymous = true
keys = ["pii"]
operations = ["encrypt", "index"]
index_tokens_per_second = 10
index_tokens_per_day = 15

[[allow]]
anonymous = true
keys = ["other"]
operations = ["encrypt", "decrypt"]
"#;

#[tokio::test]
async fn the_index_operation_is_its_own_and_metered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = format!(
        "policy_file = \"{}/policy.toml\"\n{KEYS}",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    // Calls refused for their context or scope take nothing from the
    // quota (the burst of 10 is still whole below).
    let bad_context = compute(&server, "pii", "email", &["a@x.com"], &[("", "x")])
        .await
        .unwrap_err();
    assert_eq!(bad_context.code(), Code::InvalidArgument);
    let no_scope = server
        .client()
        .await
        .encrypt(pb::EncryptRequest {
            indexes: vec!["tenant_email".into()],
            ..common::requests::enc("pii", "a@x.com", &[])
        })
        .await
        .unwrap_err();
    assert_eq!(no_scope.code(), Code::InvalidArgument);
    // Tokens without decrypt.
    let values = ["a@x.com"; 10];
    assert_eq!(
        compute(&server, "pii", "email", &values, &[])
            .await
            .unwrap()
            .len(),
        10
    );
    let record = encrypt(&server, "pii", "a@x.com", &[]).await.unwrap();
    let denied = common::requests::decrypt(&server, "pii", &record.ciphertext, &[])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // The burst of 10 is spent: refused, and nothing taken.
    let refused = compute(&server, "pii", "email", &["b@x.com"], &[])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("quota"), "{}", refused.message());
    // A second later 5 more fit the day's 15; then the day is used up.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        compute(&server, "pii", "email", &["c@x.com"; 5], &[])
            .await
            .is_ok()
    );
    let day = compute(&server, "pii", "email", &["d@x.com"], &[])
        .await
        .unwrap_err();
    assert_eq!(day.code(), Code::ResourceExhausted);
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        metrics.contains("envelope_refused_calls_total{reason=\"index_quota\"} 2"),
        "{metrics}"
    );
    // Tokens on write count against the same quota; a write without an
    // index does not.
    let write = |indexes: Vec<String>| pb::EncryptRequest {
        key: "pii".into(),
        plaintext: Bytes::from_static(b"e@x.com"),
        context: Default::default(),
        indexes,
    };
    let mut c = server.client().await;
    let refused = c.encrypt(write(vec!["email".into()])).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(c.encrypt(write(Vec::new())).await.is_ok());
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(metrics.contains("envelope_refused_calls_total{reason=\"index_quota\"} 3"));
    // Nor get them on write without an `index` grant on the key: that would
    // be the same oracle.
    let no_grant = c
        .encrypt(pb::EncryptRequest {
            key: "other".into(),
            ..write(vec!["email".into()])
        })
        .await
        .unwrap_err();
    assert_eq!(no_grant.code(), Code::PermissionDenied);
    // Nor ComputeIndex with encrypt and decrypt but no index grant.
    let no_index = compute(&server, "other", "email", &["a@x.com"], &[])
        .await
        .unwrap_err();
    assert_eq!(no_index.code(), Code::PermissionDenied);
    let (_, metrics) = common::process::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        metrics.contains("envelope_refused_calls_total{reason=\"index_not_granted\"} 1\n"),
        "{metrics}"
    );
    // Both are audited as the denials they are (docs/AUDIT.md, `outcome`).
    let audit = server
        .audit_with(&["\"rpc\":\"ComputeIndex\",\"operation\":\"index\",\"key\":\"other\""])
        .await;
    let on_other: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"key\":\"other\""))
        .collect();
    assert_eq!(on_other.len(), 2, "{audit}");
    for line in on_other {
        assert!(
            line.contains("\"outcome\":\"denied\",\"code\":\"PERMISSION_DENIED\""),
            "{line}"
        );
    }
    // The same through EncryptStream: each message is charged and checked
    // as the batch it is.
    let stream_item = |key: &str| pb::EncryptStreamRequest {
        key: key.into(),
        items: vec![pb::EncryptItem {
            plaintext: Bytes::from_static(b"e@x.com"),
            context: Default::default(),
            indexes: vec!["email".into()],
        }],
    };
    for (key, code) in [
        ("pii", Code::ResourceExhausted),
        ("other", Code::PermissionDenied),
    ] {
        let mut answers = c
            .encrypt_stream(tokio_stream::iter(vec![stream_item(key)]))
            .await
            .unwrap()
            .into_inner();
        let end = answers.message().await.unwrap_err();
        assert_eq!(end.code(), code, "EncryptStream on {key}: {end:?}");
    }
    assert!(
        c.encrypt(pb::EncryptRequest {
            key: "other".into(),
            ..write(Vec::new())
        })
        .await
        .is_ok()
    );
    // A caller without the index operation cannot compute tokens at all.
    let other = compute(&server, "other", "email", &["a@x.com"], &[])
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
}

/// SEARCH.md, "Which versions get a token": a pinned version that is no
/// longer AWSPREVIOUS still gets one; once unpinned it gets none, even on
/// a replica that fetched it on demand to open a record.
#[tokio::test]
async fn pinned_versions_get_tokens_and_versions_fetched_on_demand_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(KEYS));
    let first = encrypt(&server, "pii", "ana@example.com", &[])
        .await
        .unwrap();
    for _ in 0..2 {
        common::requests::rotate(&server, "pii").await;
    }
    let versions = |t: Vec<(String, Vec<u8>)>| t.into_iter().map(|(v, _)| v).collect::<Vec<_>>();
    let pinned = versions(tokens(&server, "pii", "email", "ana@example.com").await);
    assert_eq!(
        pinned.len(),
        3,
        "AWSCURRENT, AWSPREVIOUS and the pinned first: {pinned:?}"
    );
    assert!(pinned.contains(&first.key_version));
    drop(server);

    // The first version's pin label removed: a restarted replica opens its
    // record by fetching it, and still gives it no token.
    let path = data.join("secrets").join("pii.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for v in file["versions"].as_array_mut().unwrap() {
        if v["id"] == first.key_version.as_str() {
            v["stages"] = serde_json::json!([]);
        }
    }
    std::fs::write(&path, file.to_string()).unwrap();
    let server = Server::start(&data, Some(KEYS));
    let opened = common::requests::decrypt(&server, "pii", &first.ciphertext, &[])
        .await
        .unwrap();
    assert_eq!(opened.plaintext.as_ref(), b"ana@example.com");
    let now = versions(tokens(&server, "pii", "email", "ana@example.com").await);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(!now.contains(&first.key_version));
    // OPERATIONS.md: a version loaded on demand is `stage="none"`.
    let (_, metrics) = common::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let series = format!(
        "envelope_master_key_age_seconds{{key=\"pii\",version=\"{}\",stage=\"none\"}}",
        first.key_version
    );
    assert!(metrics.contains(&series), "{metrics}");
}

/// SEARCH.md, "The token oracle and the quota": a call is charged
/// `values × versions` tokens before any is computed; with two versions,
/// two values cost four.
#[tokio::test]
async fn the_charge_is_values_times_versions() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[[allow]]\nanonymous = true\nkeys = [\"pii\"]\noperations = [\"index\", \"admin\"]\nindex_tokens_per_second = 3\nindex_tokens_per_day = 1000\n";
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let config = format!(
        "policy_file = \"{}/policy.toml\"\n{KEYS}",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    common::requests::rotate(&server, "pii").await;
    // Two versions: two values would take 4 of a burst of 3.
    let two = compute(&server, "pii", "email", &["a@x.com", "b@x.com"], &[])
        .await
        .unwrap_err();
    assert_eq!(two.code(), Code::ResourceExhausted, "{two:?}");
    // One value takes 2, and nothing was taken by the refusal.
    let one = compute(&server, "pii", "email", &["a@x.com"], &[])
        .await
        .unwrap();
    assert_eq!(one[0].tokens.len(), 2);
}

/// ROTATION.md, "A compromised version": ComputeIndex still gives tokens
/// under the marked version (rows not yet migrated stay findable), while
/// DecryptColumn refuses its records, item by item.
#[tokio::test]
async fn a_compromised_version_still_indexes_but_its_column_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(KEYS));
    let mut c = server.client().await;
    let column = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: "pii".into(),
            context: ctx(&[("table", "users")]),
            plaintexts: vec![Bytes::from_static(b"ana@example.com")],
            row_field: "row".into(),
            row_values: vec!["1".into()],
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let old = column.key_version.clone();
    common::requests::rotate(&server, "pii").await;
    server
        .admin()
        .await
        .mark_compromised(pb::MarkCompromisedRequest {
            key: "pii".into(),
            version: old.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let versions: Vec<String> = tokens(&server, "pii", "email", "ana@example.com")
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert!(versions.contains(&old), "{versions:?}");
    let opened = c
        .decrypt_column(pb::DecryptColumnRequest {
            key: "pii".into(),
            context: ctx(&[("table", "users")]),
            ciphertexts: column.ciphertexts.clone(),
            row_field: "row".into(),
            row_values: vec!["1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let refused = &opened.errors[&0];
    assert_eq!(refused.code, Code::FailedPrecondition as i32, "{refused:?}");
    assert!(
        refused.message.contains("is marked compromised"),
        "{refused:?}"
    );
}
