//! The redacting Debug of the messages that carry secrets.

use bytes::Bytes;

use crate::pb;

#[test]
fn secret_bearing_messages_print_redacted() {
    let mut ctx = std::collections::BTreeMap::new();
    ctx.insert("table".to_owned(), "CANARY-ctx".to_owned());
    let out = format!(
        "{:?} {:?} {:?} {:?}",
        pb::EncryptRequest {
            indexes: Vec::new(),
            key: "k".into(),
            plaintext: Bytes::from_static(b"CANARY-pt"),
            context: ctx.clone()
        },
        pb::DecryptBatchResponse {
            results: vec![pb::DecryptResult {
                result: Some(pb::decrypt_result::Result::Plaintext(Bytes::from_static(
                    b"CANARY-pt"
                ))),
                key_version: "v".into(),
            }],
        },
        pb::GenerateDataKeyResponse {
            plaintext_key: Bytes::from_static(b"CANARY-key"),
            wrapped_key: Bytes::new(),
            key_version: "v".into()
        },
        pb::DecryptResponse {
            plaintext: Bytes::from_static(b"CANARY-pt"),
            key_version: "v".into()
        },
    );
    assert!(!out.contains("CANARY"), "{out}");
    assert!(
        out.contains("REDACTED 9 bytes") && out.contains("table"),
        "{out}"
    );
    let canary = || Bytes::from_static(b"CANARY-pt");
    // The stream twins of the batch messages.
    let streams = format!(
        "{:?} {:?}",
        pb::EncryptStreamRequest {
            key: "k".into(),
            items: vec![pb::EncryptItem {
                plaintext: canary(),
                context: ctx.clone(),
                indexes: Vec::new(),
            }],
        },
        pb::DecryptStreamResponse {
            results: vec![pb::DecryptResult {
                result: Some(pb::decrypt_result::Result::Plaintext(canary())),
                key_version: "v".into(),
            }],
        },
    );
    assert!(!streams.contains("CANARY"), "{streams}");
    assert!(streams.contains("EncryptStreamRequest"), "{streams}");
    let column = format!(
        "{:?} {:?} {:?}",
        pb::EncryptColumnStreamRequest {
            column: Some(pb::EncryptColumnRequest {
                indexes: Vec::new(),
                key: "k".into(),
                context: ctx.clone(),
                plaintexts: vec![canary(), canary()],
                row_field: "row".into(),
                row_values: vec!["CANARY-row".into(), "CANARY-row".into()],
            }),
        },
        pb::DecryptColumnRequest {
            key: "k".into(),
            context: ctx.clone(),
            ciphertexts: vec![canary()],
            row_field: "row".into(),
            row_values: vec!["CANARY-row".into()],
        },
        pb::DecryptColumnStreamResponse {
            column: Some(pb::DecryptColumnResponse {
                plaintexts: vec![canary()],
                errors: Default::default(),
            }),
        },
    );
    assert!(!column.contains("CANARY"), "{column}");
    assert!(
        column.contains("REDACTED 2 items, 18 bytes") && column.contains("table"),
        "{column}"
    );
}

/// SECURITY.md's list, each message printed by itself: its own name,
/// a redaction, and no canary.
#[test]
fn each_listed_message_is_redacted_by_itself() {
    let pt = || Bytes::from_static(b"CANARY-pt");
    let ctx: std::collections::BTreeMap<String, String> =
        [("table".to_owned(), "CANARY-ctx".to_owned())].into();
    let item = || pb::EncryptItem {
        plaintext: pt(),
        context: ctx.clone(),
        indexes: Vec::new(),
    };
    let result = || pb::DecryptResult {
        result: Some(pb::decrypt_result::Result::Plaintext(pt())),
        key_version: "v".into(),
    };
    let enc_column = || pb::EncryptColumnRequest {
        indexes: Vec::new(),
        key: "k".into(),
        context: ctx.clone(),
        plaintexts: vec![pt()],
        row_field: "row".into(),
        row_values: vec!["CANARY-row".into()],
    };
    let dec_column = || pb::DecryptColumnResponse {
        plaintexts: vec![pt()],
        errors: Default::default(),
    };
    let printed = [
        (
            "EncryptRequest",
            format!(
                "{:?}",
                pb::EncryptRequest {
                    indexes: Vec::new(),
                    key: "k".into(),
                    plaintext: pt(),
                    context: ctx.clone()
                }
            ),
        ),
        ("EncryptItem", format!("{:?}", item())),
        (
            "EncryptBatchRequest",
            format!(
                "{:?}",
                pb::EncryptBatchRequest {
                    key: "k".into(),
                    items: vec![item()]
                }
            ),
        ),
        (
            "EncryptStreamRequest",
            format!(
                "{:?}",
                pb::EncryptStreamRequest {
                    key: "k".into(),
                    items: vec![item()]
                }
            ),
        ),
        (
            "DecryptResponse",
            format!(
                "{:?}",
                pb::DecryptResponse {
                    plaintext: pt(),
                    key_version: "v".into()
                }
            ),
        ),
        ("DecryptResult", format!("{:?}", result())),
        (
            "DecryptBatchResponse",
            format!(
                "{:?}",
                pb::DecryptBatchResponse {
                    results: vec![result()]
                }
            ),
        ),
        (
            "DecryptStreamResponse",
            format!(
                "{:?}",
                pb::DecryptStreamResponse {
                    results: vec![result()]
                }
            ),
        ),
        (
            "GenerateDataKeyResponse",
            format!(
                "{:?}",
                pb::GenerateDataKeyResponse {
                    plaintext_key: pt(),
                    wrapped_key: Bytes::new(),
                    key_version: "v".into()
                }
            ),
        ),
        (
            "UnwrapDataKeyResponse",
            format!(
                "{:?}",
                pb::UnwrapDataKeyResponse {
                    plaintext_key: pt(),
                    key_version: "v".into()
                }
            ),
        ),
        ("EncryptColumnRequest", format!("{:?}", enc_column())),
        (
            "DecryptColumnRequest",
            format!(
                "{:?}",
                pb::DecryptColumnRequest {
                    key: "k".into(),
                    context: ctx.clone(),
                    ciphertexts: vec![pt()],
                    row_field: "row".into(),
                    row_values: vec!["CANARY-row".into()]
                }
            ),
        ),
        ("DecryptColumnResponse", format!("{:?}", dec_column())),
        (
            "EncryptColumnStreamRequest",
            format!(
                "{:?}",
                pb::EncryptColumnStreamRequest {
                    column: Some(enc_column())
                }
            ),
        ),
        (
            "DecryptColumnStreamResponse",
            format!(
                "{:?}",
                pb::DecryptColumnStreamResponse {
                    column: Some(dec_column())
                }
            ),
        ),
        (
            "ComputeIndexRequest",
            format!(
                "{:?}",
                pb::ComputeIndexRequest {
                    key: "k".into(),
                    index: "email".into(),
                    values: vec![pt()],
                    context: ctx.clone(),
                }
            ),
        ),
        (
            "IndexTokens",
            format!(
                "{:?}",
                pb::IndexTokens {
                    tokens: vec![pb::IndexToken {
                        key_version: "v".into(),
                        token: pt(),
                    }],
                    error: None,
                }
            ),
        ),
    ];
    for (name, out) in &printed {
        assert!(out.contains(name), "{name}: {out}");
        assert!(
            out.contains("REDACTED") && !out.contains("CANARY"),
            "{name}: {out}"
        );
    }
}
