//! Nothing secret leaks: with the most verbose logging, a canary plaintext
//! and canary context values pass through every Envelope and Admin RPC and
//! several errors. Neither they, nor the records, the data keys or the root
//! key, appear in the log, the audit log, an error (read raw, not through
//! the redacting `Debug`), a response's non-secret fields, or the metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::requests::{dec, enc};
use common::{Server, ctx};
use envelope::pb;

const CANARY: &str = "CANARY-7f3a9c-PLAINTEXT";
const CANARY_CTX: &str = "CANARY-51b2e0-CONTEXT";

#[tokio::test]
async fn canaries_appear_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some(
            "log_level = \"trace\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [[keys]]\nname = \"default\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 64\n",
        ),
    );
    let mut c = server.client().await;
    let mut admin = server.admin().await;
    let pairs = [("cpf", CANARY_CTX)];
    let context = ctx(&pairs);
    let mut seen = String::new();

    let e = c
        .encrypt(enc("", CANARY, &pairs))
        .await
        .unwrap()
        .into_inner();
    let d = c
        .decrypt(dec("", &e.ciphertext, &pairs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext.as_ref(), CANARY.as_bytes());
    let batch = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items: vec![
                pb::EncryptItem {
                    indexes: Vec::new(),
                    plaintext: Bytes::from(CANARY),
                    context: context.clone(),
                },
                pb::EncryptItem {
                    indexes: Vec::new(),
                    plaintext: Bytes::from(CANARY),
                    context: ctx(&[("", CANARY_CTX)]),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{batch:?}"));
    let rotated = admin
        .rotate_master_key(pb::RotateMasterKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{rotated:?}"));
    let rw = c
        .rewrap(pb::RewrapRequest {
            indexes: Vec::new(),
            key: String::new(),
            ciphertext: e.ciphertext.clone(),
            context: context.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{} {:?}", rw.key_version, rw.index_tokens));
    let mut records = vec![e.ciphertext.clone(), rw.ciphertext.clone()];
    for r in &batch.results {
        match &r.result {
            Some(pb::encrypt_result::Result::Ciphertext(ct)) => records.push(ct.clone()),
            Some(pb::encrypt_result::Result::Error(e)) => {
                seen.push_str(&format!("{} {}", e.code, e.message))
            }
            None => {}
        }
    }
    // Errors: wrong context, tampered record, record under an unknown key name, garbage.
    let mut tampered = rw.ciphertext.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    for (key, ct, cx) in [
        ("", rw.ciphertext.to_vec(), ctx(&[("cpf", "other")])),
        ("", tampered, context.clone()),
        ("missing", rw.ciphertext.to_vec(), context.clone()),
        ("", CANARY.as_bytes().to_vec(), context.clone()),
    ] {
        let s = c
            .decrypt(pb::DecryptRequest {
                key: key.into(),
                ciphertext: Bytes::from(ct),
                context: cx,
            })
            .await
            .unwrap_err();
        seen.push_str(&status_text(&s));
    }
    let s = c
        .decrypt_batch(pb::DecryptBatchRequest {
            key: String::new(),
            items: vec![pb::DecryptItem {
                ciphertext: Bytes::from(CANARY),
                context: context.clone(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&results_text(&s.results));
    // A column whose values and row ids are canaries: item 1 fails (its row
    // id takes the context over the limit), and DecryptColumn gets a
    // canary that is no record.
    let column = c
        .encrypt_column(pb::EncryptColumnRequest {
            indexes: Vec::new(),
            key: String::new(),
            context: context.clone(),
            plaintexts: vec![Bytes::from(CANARY), Bytes::from(CANARY)],
            row_field: "row".into(),
            row_values: vec![CANARY_CTX.into(), CANARY_CTX.repeat(1000)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(column.errors.len(), 1);
    seen.push_str(&format!("{:?} {:?}", column.errors, column.key_version));
    records.extend(column.ciphertexts.iter().cloned());
    let s = c
        .decrypt_column(pb::DecryptColumnRequest {
            key: String::new(),
            context: context.clone(),
            ciphertexts: vec![column.ciphertexts[0].clone(), Bytes::from(CANARY)],
            row_field: "row".into(),
            row_values: vec![CANARY_CTX.into(), CANARY_CTX.into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.plaintexts[0].as_ref(), CANARY.as_bytes());
    assert_eq!(s.errors.len(), 1);
    seen.push_str(&format!("{:?}", s.errors));
    // ComputeIndex of the canary: the index is configured in this test's
    // config; its tokens, like the value, appear nowhere but the response.
    let tokens = c
        .compute_index(pb::ComputeIndexRequest {
            key: String::new(),
            index: "email".into(),
            values: vec![Bytes::from(CANARY), Bytes::from(format!("  {CANARY}  "))],
            context: context.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = hex::encode(&tokens.results[0].tokens[0].token);
    assert_eq!(tokens.results[0].tokens, tokens.results[1].tokens);
    // The same token returned on write.
    let written = c
        .encrypt(pb::EncryptRequest {
            indexes: vec!["email".into()],
            ..enc("", CANARY, &pairs)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&written.index_tokens["email"]), token);
    // Data keys: the plaintext key is a needle too.
    let dk = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: context.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&dk.key_version);
    let unwrapped = c
        .unwrap_data_key(pb::UnwrapDataKeyRequest {
            key: String::new(),
            wrapped_key: dk.wrapped_key.clone(),
            context: context.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext_key, dk.plaintext_key);
    seen.push_str(&unwrapped.key_version);
    let s = c
        .unwrap_data_key(pb::UnwrapDataKeyRequest {
            key: String::new(),
            wrapped_key: Bytes::from(CANARY),
            context: context.clone(),
        })
        .await
        .unwrap_err();
    seen.push_str(&status_text(&s));
    // Both streams: a canary sealed, then opened with a garbage item beside it.
    let sealed = c
        .encrypt_stream(tokio_stream::iter([pb::EncryptStreamRequest {
            key: String::new(),
            items: vec![pb::EncryptItem {
                indexes: Vec::new(),
                plaintext: Bytes::from(CANARY),
                context: context.clone(),
            }],
        }]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(pb::encrypt_result::Result::Ciphertext(streamed)) = sealed.results[0].result.clone()
    else {
        panic!("EncryptStream sealed nothing");
    };
    records.push(streamed.clone());
    let opened = c
        .decrypt_stream(tokio_stream::iter([pb::DecryptStreamRequest {
            key: String::new(),
            items: vec![
                pb::DecryptItem {
                    ciphertext: streamed,
                    context: context.clone(),
                },
                pb::DecryptItem {
                    ciphertext: Bytes::from(CANARY),
                    context: context.clone(),
                },
            ],
        }]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        opened.results[0].result,
        Some(pb::decrypt_result::Result::Plaintext(Bytes::from(CANARY)))
    );
    seen.push_str(&results_text(&opened.results[1..]));
    let refreshed = admin
        .refresh_keys(pb::RefreshKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{refreshed:?}"));
    let status = admin
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&format!("{status:?}"));
    // Metrics, health and readiness too.
    let m = server.metrics.clone().expect("metrics address");
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (code, body) = common::http_get(&m, path);
        assert_eq!(code, 200, "{path}");
        seen.push_str(&body);
    }
    assert!(seen.contains("envelope_requests_total"));

    // The server cannot dump core (Linux, the one platform served: /proc
    // is there, so this is never skipped).
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .expect("/proc/<pid>/limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().filter(|w| *w == "0").count() >= 2,
        "{core}"
    );
    let audit = server.audit_with(&["\"rpc\":\"KeyStatus\""]).await;
    let logs = server.logs() + &audit;
    assert!(
        audit.contains("\"rpc\":\"Encrypt\""),
        "the audit log is written"
    );
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the log is verbose"
    );
    // Every secret in the forms a log line could carry it in.
    let root_key = std::fs::read(dir.path().join("data").join("root.key")).unwrap();
    let mut secrets: Vec<Vec<u8>> = vec![
        CANARY.as_bytes().to_vec(),
        CANARY_CTX.as_bytes().to_vec(),
        dk.plaintext_key.to_vec(),
        root_key,
    ];
    secrets.extend(records.iter().map(|r| r.to_vec()));
    secrets.push(dk.wrapped_key.to_vec());
    let mut needles = vec![token, CANARY.to_lowercase(), CANARY_CTX.to_lowercase()];
    for s in &secrets {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        needles.push(STANDARD_NO_PAD.encode(s));
        needles.push(URL_SAFE_NO_PAD.encode(s));
        needles.push(hex::encode(s));
        needles.push(hex::encode_upper(s));
        needles.push(String::from_utf8_lossy(s).into_owned());
    }
    assert!(records.len() >= 6, "records: {}", records.len());
    for needle in needles.iter().filter(|n| n.len() >= 16) {
        assert!(!logs.contains(needle.as_str()), "{needle} in the log");
        assert!(
            !seen.contains(needle.as_str()),
            "{needle} in a response or error"
        );
    }
}

/// A status as a caller reads it: code, message and metadata, raw.
fn status_text(s: &tonic::Status) -> String {
    format!("{:?} {} {:?}", s.code(), s.message(), s.metadata())
}

/// The item errors of batch results, raw (the redacting `Debug` would hide
/// what a leak put in them).
fn results_text(results: &[pb::DecryptResult]) -> String {
    results
        .iter()
        .map(|r| match &r.result {
            Some(pb::decrypt_result::Result::Error(e)) => {
                format!("{} {} {}\n", e.code, e.message, r.key_version)
            }
            _ => format!("{}\n", r.key_version),
        })
        .collect()
}
