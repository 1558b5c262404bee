//! Nothing secret leaks: with the most verbose logging, a canary plaintext
//! and canary context values pass through every RPC and several errors, and
//! appear nowhere in the log, the errors or the status output.
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
    admin
        .rotate_master_key(pb::RotateMasterKeyRequest::default())
        .await
        .unwrap();
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
        seen.push_str(&format!("{s:?}"));
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
    seen.push_str(&format!("{s:?}"));
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

    // The server cannot dump core (where the OS tells us).
    if let Ok(limits) = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())) {
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(
            core.split_whitespace().filter(|w| *w == "0").count() >= 2,
            "{core}"
        );
    }
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
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    let hex_canary = hex::encode(CANARY);
    let folded = CANARY.to_lowercase();
    for needle in [CANARY, CANARY_CTX, &b64, &hex_canary, &folded, &token] {
        assert!(!logs.contains(needle), "{needle} in the log");
        assert!(!seen.contains(needle), "{needle} in a response or error");
    }
}
