//! Narrower grants against the real binary: `generate_data_key` no longer
//! unwraps, and a grant with `context = { … }` admits only calls whose
//! context (every item of a batch, every row of a column, every message of
//! a stream) carries those entries.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::Server;
use common::requests::{ctx, encrypt};
use envelope::pb;
use tonic::Code;

const POLICY: &str = r#"
[[allow]]
anonymous = true
keys = ["default"]
operations = ["encrypt"]
context = { tenant = "acme" }

[[allow]]
anonymous = true
keys = ["default"]
operations = ["generate_data_key"]
"#;

fn item(tenant: &str) -> pb::EncryptItem {
    pb::EncryptItem {
        indexes: Vec::new(),
        plaintext: b"x".to_vec().into(),
        context: ctx(&[("tenant", tenant), ("row", "1")]),
    }
}

#[tokio::test]
async fn context_grants_and_the_unwrap_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = format!(
        "metrics_listen = \"127.0.0.1:0\"\npolicy_file = \"{}/policy.toml\"\n",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let client = server.client().await;

    // Unary: only the granted tenant.
    assert!(
        encrypt(&client, "", b"x", &[("tenant", "acme")])
            .await
            .is_ok()
    );
    let other = encrypt(&client, "", b"x", &[("tenant", "globex")])
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(
        other.message().contains("only in the contexts"),
        "{}",
        other.message()
    );
    let none = encrypt(&client, "", b"x", &[]).await.unwrap_err();
    assert_eq!(none.code(), Code::PermissionDenied);

    // A batch: every item must be in a granted context.
    let mut c = client.clone();
    let ok = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items: vec![item("acme"), item("acme")],
        })
        .await;
    assert!(ok.is_ok());
    let mixed = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items: vec![item("acme"), item("globex")],
        })
        .await
        .unwrap_err();
    assert_eq!(mixed.code(), Code::PermissionDenied);

    // A stream: the first message is answered, the one with a foreign
    // tenant ends the stream with PERMISSION_DENIED.
    let messages = vec![
        pb::EncryptBatchRequest {
            key: String::new(),
            items: vec![item("acme")],
        },
        pb::EncryptBatchRequest {
            key: String::new(),
            items: vec![item("globex")],
        },
    ];
    let mut out = c
        .encrypt_stream(tokio_stream::iter(
            messages.into_iter().map(pb::EncryptStreamRequest::from),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(out.message().await.unwrap().is_some());
    assert_eq!(
        out.message().await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // A column: the shared context, merged with each row's entry, must be
    // granted for every row.
    let column = |shared: &[(&str, &str)], field: &str, rows: &[&str]| pb::EncryptColumnRequest {
        indexes: Vec::new(),
        key: String::new(),
        context: ctx(shared),
        plaintexts: rows
            .iter()
            .map(|_| bytes::Bytes::from_static(b"x"))
            .collect(),
        row_field: field.into(),
        row_values: rows.iter().map(|r| (*r).to_owned()).collect(),
    };
    let shared = c
        .encrypt_column(column(&[("tenant", "acme")], "row", &["1", "2"]))
        .await;
    assert!(shared.is_ok());
    let per_row = c
        .encrypt_column(column(&[], "tenant", &["acme", "acme"]))
        .await;
    assert!(per_row.is_ok());
    let one_foreign_row = c
        .encrypt_column(column(&[], "tenant", &["acme", "globex"]))
        .await
        .unwrap_err();
    assert_eq!(one_foreign_row.code(), Code::PermissionDenied);
    let mut out = c
        .encrypt_column_stream(tokio_stream::iter(vec![pb::EncryptColumnStreamRequest {
            column: Some(column(&[("tenant", "globex")], "row", &["1"])),
        }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        out.message().await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // generate_data_key alone does not unwrap.
    let generated = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(&[("purpose", "files")]),
        })
        .await
        .unwrap()
        .into_inner();
    let unwrap = c
        .unwrap_data_key(pb::UnwrapDataKeyRequest {
            key: String::new(),
            wrapped_key: generated.wrapped_key,
            context: ctx(&[("purpose", "files")]),
        })
        .await
        .unwrap_err();
    assert_eq!(unwrap.code(), Code::PermissionDenied);
    assert!(server.logs().contains("no longer allows UnwrapDataKey"));
    // Each refusal is counted (the series starts at zero).
    let (_, metrics) = common::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let denied: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("envelope_refused_calls_total{reason=\"permission_denied\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(denied >= 3.0, "{denied}");
}

/// SECURITY.md, "Which key is checked": an empty key is `default` for
/// Envelope RPCs and `*` for KeyStatus; with no key named `default`
/// configured, an empty key a caller may use is NOT_FOUND.
#[tokio::test]
async fn an_empty_key_is_default_or_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |grants: &str| {
        std::fs::write(dir.path().join("policy.toml"), grants).unwrap();
    };
    policy(
        "[[allow]]\nanonymous = true\nkeys = [\"pii\"]\noperations = [\"encrypt\", \"admin\"]\n",
    );
    let config = format!(
        "policy_file = \"{}/policy.toml\"\n[[keys]]\nname = \"pii\"\n",
        dir.path().display()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let client = server.client().await;
    let mut admin = server.admin().await;
    let status = |key: &str| pb::KeyStatusRequest { key: key.into() };

    // Granted `pii` only: "" is `default` (Encrypt) and `*` (KeyStatus).
    assert!(encrypt(&client, "pii", b"x", &[]).await.is_ok());
    let e = encrypt(&client, "", b"x", &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(admin.key_status(status("pii")).await.is_ok());
    let e = admin.key_status(status("")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // RefreshKeys likewise: "" is every key.
    let refresh = |key: &str| pb::RefreshKeysRequest { key: key.into() };
    assert!(admin.refresh_keys(refresh("pii")).await.is_ok());
    let e = admin.refresh_keys(refresh("")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Granted `default` only: Encrypt "" passes the policy and finds no
    // key named `default`; KeyStatus "" still needs every key.
    policy(
        "[[allow]]\nanonymous = true\nkeys = [\"default\"]\noperations = [\"encrypt\", \"admin\"]\n",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let e = encrypt(&client, "", b"x", &[]).await.unwrap_err();
        if e.code() == Code::NotFound {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy change not picked up: {e:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let e = admin.key_status(status("")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Granted every key: KeyStatus "" lists every key.
    policy("[[allow]]\nanonymous = true\nkeys = [\"*\"]\noperations = [\"encrypt\", \"admin\"]\n");
    let listed = loop {
        if let Ok(r) = admin.key_status(status("")).await {
            break r.into_inner();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy change not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = listed.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["pii"]);
    let refreshed = admin.refresh_keys(refresh("")).await.unwrap().into_inner();
    assert_eq!(refreshed.refreshed, ["pii"]);
    let e = encrypt(&client, "", b"x", &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

/// SECURITY.md, "Authorization": a call with no identity, under a policy
/// where no grant has `anonymous = true`, is UNAUTHENTICATED with the
/// documented message.
#[tokio::test]
async fn no_identity_without_an_anonymous_grant_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[[allow]]\ncallers = [\"spiffe://example.org/billing\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n";
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let config = format!("policy_file = \"{}/policy.toml\"\n", dir.path().display());
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let err = encrypt(&server, "", b"x", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        "the call carries no client certificate identity; connect with mTLS"
    );
}
