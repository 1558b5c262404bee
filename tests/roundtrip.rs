//! Round trips, refusals and their status codes, against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bytes::Bytes;
use common::requests::{CTX, dec, enc};
use common::{Server, ctx};
use envelope::pb;
use tonic::Code;

#[tokio::test]
async fn round_trips_at_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    for size in [0usize, 1, 11, 64, 4096, 1 << 20] {
        let pt: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let e = c.encrypt(enc("", &pt, CTX)).await.unwrap().into_inner();
        assert_eq!(e.ciphertext.len(), pt.len() + 111, "overhead at {size}");
        assert!(!e.key_version.is_empty());
        let d = c
            .decrypt(dec("default", &e.ciphertext, CTX))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext.as_ref(), pt.as_slice(), "size {size}");
        assert_eq!(d.key_version, e.key_version);
    }
}

#[tokio::test]
async fn refusals_carry_their_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("[[keys]]\nname = \"default\"\n[[keys]]\nname = \"pii\"\n"),
    );
    let mut c = server.client().await;
    let pt = b"123.456.789-09";
    let ct = c
        .encrypt(enc("default", pt, CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;

    let code =
        |r: Result<tonic::Response<pb::DecryptResponse>, tonic::Status>| r.unwrap_err().code();
    // Wrong, missing or extra context.
    assert_eq!(
        code(c.decrypt(dec("default", &ct, &[("table", "users")])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.decrypt(dec("default", &ct, &[])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.decrypt(dec(
                "default",
                &ct,
                &[("table", "users"), ("column", "cpf"), ("x", "")]
            ))
            .await
        ),
        Code::InvalidArgument
    );
    // Unknown key name.
    assert_eq!(code(c.decrypt(dec("nope", &ct, CTX)).await), Code::NotFound);
    assert_eq!(
        c.encrypt(enc("nope", pt, CTX)).await.unwrap_err().code(),
        Code::NotFound
    );
    // Another key name's record.
    let pii = c
        .encrypt(enc("pii", pt, CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert_eq!(
        code(c.decrypt(dec("default", &pii, CTX)).await),
        Code::InvalidArgument
    );
    // Every truncation, and an extension.
    for n in 0..ct.len() {
        assert_eq!(
            code(c.decrypt(dec("default", &ct[..n], CTX)).await),
            Code::InvalidArgument,
            "prefix {n}"
        );
    }
    let mut longer = ct.to_vec();
    longer.push(0);
    assert_eq!(
        code(c.decrypt(dec("default", &longer, CTX)).await),
        Code::InvalidArgument
    );
    // A flipped bit at every byte position. The 16 bytes of the version id
    // (offsets 7..23) name a version the store does not have: FAILED_PRECONDITION.
    for i in 0..ct.len() {
        let mut bad = ct.to_vec();
        bad[i] ^= 0x80;
        let want = if (7..23).contains(&i) {
            Code::FailedPrecondition
        } else {
            Code::InvalidArgument
        };
        let status = c.decrypt(dec("default", &bad, CTX)).await.unwrap_err();
        assert_eq!(status.code(), want, "byte {i}: {}", status.message());
    }
    // A well-formed record naming a version that never existed.
    let mut unknown = ct.to_vec();
    unknown[7..23].copy_from_slice(&[0x42; 16]);
    let s = c.decrypt(dec("default", &unknown, CTX)).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(
        s.message().contains("42424242-4242-4242-4242-424242424242"),
        "{}",
        s.message()
    );
    // The original still decrypts: nothing above disturbed the key state.
    let d = c
        .decrypt(dec("default", &ct, CTX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext.as_ref(), pt);
    // Tampering messages never echo the input.
    let s = c
        .decrypt(dec("default", &ct, &[("table", "x")]))
        .await
        .unwrap_err();
    assert!(!s.message().contains("123.456"));
    // An oversize plaintext is refused before anything is sealed; a message
    // over the request limit is refused by the transport before it is decoded.
    let big = vec![0u8; (4 << 20) - (64 << 10) + 1];
    assert_eq!(
        c.encrypt(enc("default", &big, &[]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let huge = vec![0u8; (4 << 20) + 1];
    assert_eq!(
        c.encrypt(enc("default", &huge, &[]))
            .await
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );
    // Context with an empty key.
    assert_eq!(
        c.encrypt(enc("default", pt, &[("", "v")]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn batches_keep_order_and_isolate_bad_items() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    // An empty batch is an empty answer, not an error.
    let empty = c
        .encrypt_batch(pb::EncryptBatchRequest::default())
        .await
        .unwrap();
    assert!(empty.into_inner().results.is_empty());
    let empty = c
        .decrypt_batch(pb::DecryptBatchRequest::default())
        .await
        .unwrap();
    assert!(empty.into_inner().results.is_empty());
    let items: Vec<pb::EncryptItem> = (0..5)
        .map(|i| pb::EncryptItem {
            indexes: Vec::new(),
            plaintext: Bytes::from(format!("record-{i}")),
            context: if i == 3 {
                ctx(&[("", "bad")])
            } else {
                ctx(&[("row", &i.to_string())])
            },
        })
        .collect();
    let r = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(r.len(), 5);
    let mut dec_items = Vec::new();
    for (i, res) in r.iter().enumerate() {
        match (&res.result, i) {
            (Some(pb::encrypt_result::Result::Error(e)), 3) => {
                assert_eq!(e.code, Code::InvalidArgument as i32)
            }
            (Some(pb::encrypt_result::Result::Ciphertext(ct)), _) => {
                dec_items.push(pb::DecryptItem {
                    ciphertext: ct.clone(),
                    context: ctx(&[("row", &i.to_string())]),
                })
            }
            other => panic!("item {i}: {other:?}"),
        }
    }
    // Mix in bad items: garbage, and a good record under the wrong context.
    dec_items.insert(
        1,
        pb::DecryptItem {
            ciphertext: Bytes::from_static(b"garbage"),
            context: ctx(&[]),
        },
    );
    let wrong = pb::DecryptItem {
        ciphertext: dec_items[0].ciphertext.clone(),
        context: ctx(&[("row", "9")]),
    };
    dec_items.push(wrong);
    let r = c
        .decrypt_batch(pb::DecryptBatchRequest {
            key: "default".into(),
            items: dec_items,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let want = ["record-0", "!", "record-1", "record-2", "record-4", "!"];
    assert_eq!(r.len(), want.len());
    for (res, w) in r.iter().zip(want) {
        match &res.result {
            Some(pb::decrypt_result::Result::Plaintext(p)) => assert_eq!(p.as_ref(), w.as_bytes()),
            Some(pb::decrypt_result::Result::Error(e)) => {
                assert_eq!(w, "!");
                assert_eq!(e.code, Code::InvalidArgument as i32);
            }
            None => panic!("empty result"),
        }
    }
    // A batch over the limit fails as a whole.
    let too_many = (0..10_001).map(|_| pb::EncryptItem::default()).collect();
    let s = c
        .encrypt_batch(pb::EncryptBatchRequest {
            key: String::new(),
            items: too_many,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn data_keys_round_trip_with_their_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let g = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(CTX),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.plaintext_key.len(), 32);
    let unwrap = |wrapped: Bytes, c2: &[(&str, &str)]| pb::UnwrapDataKeyRequest {
        key: String::new(),
        wrapped_key: wrapped,
        context: ctx(c2),
    };
    let u = c
        .unwrap_data_key(unwrap(g.wrapped_key.clone(), CTX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.plaintext_key, g.plaintext_key);
    assert_eq!(u.key_version, g.key_version);
    let s = c
        .unwrap_data_key(unwrap(g.wrapped_key.clone(), &[]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // A record is not a data-key blob: its data key never comes out this way.
    let ct = c
        .encrypt(enc("", b"x", CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let s = c.unwrap_data_key(unwrap(ct, CTX)).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

/// CLIENTS.md, "Idempotency": Decrypt, DecryptBatch, DecryptColumn,
/// UnwrapDataKey, ComputeIndex and KeyStatus give the same answer each
/// time, so a client may retry them freely (KeyStatus's ages aside, which
/// count seconds).
#[tokio::test]
async fn safe_calls_give_the_same_answer_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[keys]]\nname = \"default\"\n[[keys.indexes]]\nname = \"email\"\nnormalize = \"email\"\nbits = 64\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let mut c = server.client().await;
    let record = c
        .encrypt(enc("", b"ana@example.com", CTX))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let column = c
        .encrypt_column(pb::EncryptColumnRequest {
            key: String::new(),
            context: ctx(CTX),
            plaintexts: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            row_field: "row".into(),
            row_values: vec!["1".into(), "2".into()],
            indexes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let data_key = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(CTX),
        })
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let decrypted = c.decrypt(dec("", &record, CTX)).await.unwrap().into_inner();
        let batch = c
            .decrypt_batch(pb::DecryptBatchRequest {
                key: String::new(),
                items: vec![
                    pb::DecryptItem {
                        ciphertext: record.clone(),
                        context: ctx(CTX),
                    };
                    2
                ],
            })
            .await
            .unwrap()
            .into_inner();
        let opened_column = c
            .decrypt_column(pb::DecryptColumnRequest {
                key: String::new(),
                context: ctx(CTX),
                ciphertexts: column.ciphertexts.clone(),
                row_field: "row".into(),
                row_values: vec!["1".into(), "2".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let unwrapped = c
            .unwrap_data_key(pb::UnwrapDataKeyRequest {
                key: String::new(),
                wrapped_key: data_key.wrapped_key.clone(),
                context: ctx(CTX),
            })
            .await
            .unwrap()
            .into_inner();
        let tokens = c
            .compute_index(pb::ComputeIndexRequest {
                key: String::new(),
                index: "email".into(),
                values: vec![Bytes::from_static(b"Ana@Example.com")],
                context: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        answers.push((decrypted, batch, opened_column, unwrapped, tokens));
    }
    assert_eq!(answers[0], answers[1]);
    let (decrypted, _, opened_column, unwrapped, _) = &answers[0];
    assert_eq!(decrypted.plaintext.as_ref(), b"ana@example.com");
    assert_eq!(opened_column.plaintexts[1].as_ref(), b"b");
    assert_eq!(unwrapped.plaintext_key, data_key.plaintext_key);
    let status = || async {
        let mut s = server
            .admin()
            .await
            .key_status(pb::KeyStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        for k in &mut s.keys {
            k.last_refresh_age_seconds = 0;
            for v in &mut k.versions {
                v.age_seconds = 0;
            }
        }
        s
    };
    assert_eq!(status().await, status().await);
}

/// CLIENTS.md, "Idempotency": Encrypt and GenerateDataKey make something new
/// each time; Rewrap and ReencryptBatch of a record under an older version
/// answer a new record each time, and the old record still opens. (Rewrap of
/// a record already under the current version answers it unchanged.)
#[tokio::test]
async fn repeated_writes_make_something_new() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let mut seal = async || {
        c.encrypt(enc("", b"same", CTX))
            .await
            .unwrap()
            .into_inner()
            .ciphertext
    };
    let old = seal().await;
    assert_ne!(old, seal().await);
    let mut c = server.client().await;
    let key = || pb::GenerateDataKeyRequest {
        key: String::new(),
        context: ctx(CTX),
    };
    let k1 = c.generate_data_key(key()).await.unwrap().into_inner();
    let k2 = c.generate_data_key(key()).await.unwrap().into_inner();
    assert_ne!(
        (k1.plaintext_key, k1.wrapped_key),
        (k2.plaintext_key, k2.wrapped_key)
    );
    common::requests::rotate(&server, "").await;
    let item = || pb::RewrapItem {
        ciphertext: old.clone(),
        context: ctx(CTX),
        indexes: Vec::new(),
    };
    let rewrap = || pb::RewrapRequest {
        key: String::new(),
        ciphertext: old.clone(),
        context: ctx(CTX),
        indexes: Vec::new(),
    };
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(c.rewrap(rewrap()).await.unwrap().into_inner().ciphertext);
        let re = c
            .reencrypt_batch(pb::ReencryptBatchRequest {
                key: String::new(),
                items: vec![item()],
            })
            .await
            .unwrap()
            .into_inner();
        let Some(pb::rewrap_result::Result::Ciphertext(ct)) = &re.results[0].result else {
            panic!("{re:?}")
        };
        answers.push(ct.clone());
    }
    answers.push(old.clone());
    for (i, a) in answers.iter().enumerate() {
        assert!(!answers[i + 1..].contains(a), "answer {i} came twice");
        let opened = c.decrypt(dec("", a, CTX)).await.unwrap().into_inner();
        assert_eq!(opened.plaintext.as_ref(), b"same");
    }
    // Already current: answered unchanged.
    let current = answers[0].clone();
    let again = c
        .rewrap(pb::RewrapRequest {
            ciphertext: current.clone(),
            ..rewrap()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert_eq!(again, current);
}
