//! Re-encryption debt as the server sees it: every record and data-key blob
//! opened is counted under the master-key version that wrapped it, with the
//! time of the last read, in /metrics and KeyStatus (docs/OPERATIONS.md).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::Server;
use common::process::http_get;
use common::requests::{CTX, dec, enc, key_status, rotate};
use envelope::pb;

/// A per-version series of the default key from /metrics (0 when absent).
fn per_version(server: &Server, name: &str, version: &str) -> f64 {
    let (_, text) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    let series = format!("{name}{{key=\"default\",version=\"{version}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn opened(server: &Server, version: &str) -> f64 {
    per_version(server, "envelope_records_opened_total", version)
}

fn wraps(server: &Server, version: &str) -> f64 {
    per_version(server, "envelope_data_key_wraps_total", version)
}

#[tokio::test]
async fn reads_are_counted_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n"),
    );
    let mut c = server.client().await;
    let a = c.encrypt(enc("", "a", CTX)).await.unwrap().into_inner();
    let v1 = a.key_version.clone();
    // Sealing is not reading.
    assert_eq!(opened(&server, &v1), 0.0);
    for _ in 0..2 {
        c.decrypt(dec("", &a.ciphertext, CTX)).await.unwrap();
    }
    assert_eq!(opened(&server, &v1), 2.0);
    let v2 = rotate(&server, "default").await.current_version;
    // A version never read has no last-read series (OPERATIONS.md).
    let (_, text) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(
        text.contains(&format!(
            "envelope_version_last_read_timestamp_seconds{{key=\"default\",version=\"{v1}\"}}"
        )),
        "{text}"
    );
    assert!(!text.contains(&format!(
        "envelope_version_last_read_timestamp_seconds{{key=\"default\",version=\"{v2}\"}}"
    )));
    // A batch counts each record; a failed open counts nothing.
    let batch = pb::DecryptBatchRequest {
        key: String::new(),
        items: vec![
            pb::DecryptItem {
                ciphertext: a.ciphertext.clone(),
                context: common::ctx(CTX),
            },
            pb::DecryptItem {
                ciphertext: a.ciphertext.clone(),
                context: common::ctx(&[("table", "other")]),
            },
        ],
    };
    c.decrypt_batch(batch).await.unwrap();
    assert_eq!(opened(&server, &v1), 3.0);
    // Rewrap reads the old version; the rewrapped record reads the new one.
    let moved = c
        .rewrap(pb::RewrapRequest {
            key: String::new(),
            ciphertext: a.ciphertext.clone(),
            context: common::ctx(CTX),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened(&server, &v1), 4.0);
    c.decrypt(dec("", &moved.ciphertext, CTX)).await.unwrap();
    assert_eq!(opened(&server, &v2), 1.0);
    // Data-key blobs too.
    let blob = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    c.unwrap_data_key(pb::UnwrapDataKeyRequest {
        key: String::new(),
        wrapped_key: blob.wrapped_key,
        context: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(opened(&server, &v2), 2.0);
    // A column's records, one each.
    let column = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: String::new(),
            context: common::ctx(CTX),
            plaintexts: vec![bytes::Bytes::from_static(b"c"); 3],
            row_field: String::new(),
            row_values: Vec::new(),
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    c.decrypt_column(pb::DecryptColumnRequest {
        key: String::new(),
        context: common::ctx(CTX),
        ciphertexts: column.ciphertexts,
        row_field: String::new(),
        row_values: Vec::new(),
    })
    .await
    .unwrap();
    assert_eq!(opened(&server, &v2), 5.0);
    // KeyStatus says the same, with the last read's time.
    let info = key_status(&server).await;
    let old = info.versions.iter().find(|v| v.version == v1).unwrap();
    assert_eq!(old.records_opened, 4);
    assert!(old.last_read.ends_with('Z'), "{}", old.last_read);
    let (_, text) = http_get(server.metrics.as_deref().unwrap(), "/metrics");
    assert!(text.contains(&format!(
        "envelope_version_last_read_timestamp_seconds{{key=\"default\",version=\"{v1}\"}}"
    )));
}

/// A bulk rewrap wraps each distinct data key once, and every wrap is
/// counted against the version's budget.
#[tokio::test]
async fn a_bulk_rewrap_wraps_each_data_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n"),
    );
    let mut c = server.client().await;
    let records: Vec<_> = {
        let mut out = Vec::new();
        for i in 0..5 {
            out.push(
                c.encrypt(enc("", format!("v{i}"), CTX))
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        out
    };
    // One data key sealed all five, one wrap under the first version.
    assert_eq!(wraps(&server, &records[0].key_version), 1.0);
    assert_eq!(
        key_status(&server)
            .await
            .cache
            .unwrap()
            .active_data_key_records,
        5
    );
    let v2 = rotate(&server, "default").await.current_version;
    let before = wraps(&server, &v2);
    let out = c
        .rewrap_batch(pb::RewrapBatchRequest {
            key: String::new(),
            items: records
                .iter()
                .map(|r| pb::RewrapItem {
                    ciphertext: r.ciphertext.clone(),
                    context: common::ctx(CTX),
                    indexes: Vec::new(),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        wraps(&server, &v2),
        before + 1.0,
        "five records, one data key, one wrap"
    );
    let headers: Vec<Vec<u8>> = out
        .results
        .iter()
        .map(|r| match &r.result {
            Some(pb::rewrap_result::Result::Ciphertext(ct)) => ct[..83].to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(headers.windows(2).all(|w| w[0] == w[1]));
    for (i, r) in out.results.iter().enumerate() {
        if let Some(pb::rewrap_result::Result::Ciphertext(ct)) = &r.result {
            let d = c.decrypt(dec("", ct, CTX)).await.unwrap().into_inner();
            assert_eq!(d.plaintext.as_ref(), format!("v{i}").as_bytes());
        }
    }
    let info = key_status(&server).await;
    let v = info.versions.iter().find(|v| v.version == v2).unwrap();
    assert_eq!(v.data_key_wraps as f64, before + 1.0);
}

/// KeyStatus dates each version (API.md, `KeyInfo`): `created_at` is the
/// time the store made it, in RFC 3339 UTC, and `age_seconds` is the time
/// since then.
#[tokio::test]
async fn versions_carry_their_creation_time_and_age() {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let dir = tempfile::tempdir().unwrap();
    // The store keeps whole seconds.
    let started = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let first = key_status(&server).await.current_version;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = rotate(&server, "default").await.current_version;
    let info = key_status(&server).await;
    let now = OffsetDateTime::now_utc();
    let created = |id: &str| {
        let v = info.versions.iter().find(|v| v.version == id).unwrap();
        assert!(v.created_at.ends_with('Z'), "{}", v.created_at);
        let at = OffsetDateTime::parse(&v.created_at, &Rfc3339).unwrap();
        assert!(started <= at && at <= now, "{started} {at} {now}");
        let age = (now - at).whole_seconds();
        assert!(
            (age - 1..=age).contains(&i64::try_from(v.age_seconds).unwrap()),
            "{} against {age}",
            v.age_seconds
        );
        at
    };
    assert!(created(&first) < created(&second));
}
