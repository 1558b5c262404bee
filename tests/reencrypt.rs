//! ReencryptBatch and ReencryptColumn against the real binary: a record is
//! opened and sealed again under the current version with another data key
//! (its payload changes, unlike Rewrap's), it still opens to the same
//! plaintext, and one bad item fails alone.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use bytes::Bytes;
use common::Server;
use common::requests::{CTX, ctx, dec, enc, rotate};
use envelope::pb;
use envelope::primitives::record::{Kind, parse};
use tonic::Code;

/// A column of "v1" to "v3" in rows `rows`, under CTX.
fn three_rows(rows: &[String]) -> pb::EncryptColumnRequest {
    pb::EncryptColumnRequest {
        key: String::new(),
        context: ctx(CTX),
        plaintexts: (1..=3).map(|i| Bytes::from(format!("v{i}"))).collect(),
        row_field: "row".into(),
        row_values: rows.to_vec(),
        indexes: Vec::new(),
    }
}

/// A record's payload: nonce, ciphertext and tag, after the header.
fn payload(record: &[u8]) -> Vec<u8> {
    record[parse(record, Kind::Record).unwrap().header_len..].to_vec()
}

#[tokio::test]
async fn records_are_sealed_again_under_a_new_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let old = c
        .encrypt(enc("", "ana@example.com", CTX))
        .await
        .unwrap()
        .into_inner();
    let v2 = rotate(&server, "default").await.current_version;

    let item = |ct: &Bytes, c: &[(&str, &str)]| pb::RewrapItem {
        ciphertext: ct.clone(),
        context: ctx(c),
        indexes: Vec::new(),
    };
    let out = c
        .reencrypt_batch(pb::ReencryptBatchRequest {
            key: String::new(),
            items: vec![
                item(&old.ciphertext, CTX),
                item(&old.ciphertext, &[("table", "x")]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let new = match &out.results[0].result {
        Some(pb::rewrap_result::Result::Ciphertext(c)) => c.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(out.results[0].key_version, v2);
    match &out.results[1].result {
        Some(pb::rewrap_result::Result::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32)
        }
        other => panic!("{other:?}"),
    }
    // Rewrap keeps the payload (the old data key); re-encryption does not.
    let rewrapped = c
        .rewrap(pb::RewrapRequest {
            key: String::new(),
            ciphertext: old.ciphertext.clone(),
            context: ctx(CTX),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payload(&rewrapped.ciphertext), payload(&old.ciphertext));
    assert_ne!(payload(&new), payload(&old.ciphertext));
    let opened = c.decrypt(dec("", &new, CTX)).await.unwrap().into_inner();
    assert_eq!(opened.plaintext.as_ref(), b"ana@example.com");
    assert_eq!(opened.key_version, v2);

    // A column, each record bound to its row.
    let rows: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
    let sealed = c
        .encrypt_column(three_rows(&rows))
        .await
        .unwrap()
        .into_inner();
    let v3 = rotate(&server, "default").await.current_version;
    let mut wrong = rows.clone();
    wrong[1] = "9".into();
    let again = c
        .reencrypt_column(pb::ReencryptColumnRequest {
            key: String::new(),
            context: ctx(CTX),
            ciphertexts: sealed.ciphertexts.clone(),
            row_field: "row".into(),
            row_values: wrong,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.key_version, v3);
    assert_eq!(again.errors.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert!(again.ciphertexts[1].is_empty());
    let opened = c
        .decrypt_column(pb::DecryptColumnRequest {
            key: String::new(),
            context: ctx(CTX),
            ciphertexts: vec![again.ciphertexts[0].clone(), again.ciphertexts[2].clone()],
            row_field: "row".into(),
            row_values: vec!["1".into(), "3".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        opened.plaintexts,
        vec![Bytes::from("v1"), Bytes::from("v3")]
    );
    assert_ne!(
        payload(&again.ciphertexts[0]),
        payload(&sealed.ciphertexts[0])
    );

    let audit = server.audit_with(&["\"rpc\":\"ReencryptColumn\""]).await;
    let line = audit
        .lines()
        .find(|l| l.contains("ReencryptBatch"))
        .unwrap();
    assert!(
        line.contains("\"operation\":\"rewrap\"") && line.contains("\"failed_items\":1"),
        "{line}"
    );
}

/// CONFIG.md, `compromised_versions`: ReencryptColumn opens a column under
/// a version marked compromised (DecryptColumn refuses it), seals every
/// row again under the current version, and counts them `reencrypted`.
#[tokio::test]
async fn reencrypt_column_moves_a_column_off_a_compromised_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n"),
    );
    let mut c = server.client().await;
    let rows: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
    let sealed = c
        .encrypt_column(three_rows(&rows))
        .await
        .unwrap()
        .into_inner();
    let marked = sealed.key_version.clone();
    let current = server
        .admin()
        .await
        .mark_compromised(pb::MarkCompromisedRequest {
            key: String::new(),
            version: marked.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .current_version;
    assert_ne!(current, marked);
    let column = |ciphertexts: Vec<Bytes>| pb::DecryptColumnRequest {
        key: String::new(),
        context: ctx(CTX),
        ciphertexts,
        row_field: "row".into(),
        row_values: rows.clone(),
    };
    let refused = c
        .decrypt_column(column(sealed.ciphertexts.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.errors.len(), 3, "{:?}", refused.errors);
    let moved = c
        .reencrypt_column(pb::ReencryptColumnRequest {
            key: String::new(),
            context: ctx(CTX),
            ciphertexts: sealed.ciphertexts.clone(),
            row_field: "row".into(),
            row_values: rows.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(moved.errors.is_empty(), "{:?}", moved.errors);
    assert_eq!(moved.key_version, current);
    let opened = c
        .decrypt_column(column(moved.ciphertexts))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        opened.plaintexts,
        vec![Bytes::from("v1"), Bytes::from("v2"), Bytes::from("v3")]
    );
    let (_, metrics) = common::http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let series = format!(
        "envelope_compromised_records_total{{key=\"default\",version=\"{marked}\",outcome=\"reencrypted\"}} 3\n"
    );
    assert!(metrics.contains(&series), "{metrics}");
}
