//! Hostile input, table-driven, against the real binary: every malformed,
//! truncated, tampered, mismatched or oversized request is refused with its
//! documented status code, and the server keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "hostile/calls.rs"]
mod calls;
mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use calls::{Call, context_entry, run_call, run_call_seen};
use common::requests::{CTX, encrypt, rotate};
use common::{Server, ctx};
use envelope::pb;
use prost::Message;
use tonic::Code;

/// Hostile requests in the table (docs/SECURITY.md, "Hostile input").
const HOSTILE_CASES: usize = 49;

#[tokio::test]
async fn hostile_requests_get_their_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = "[[keys]]\nname = \"default\"\n[[keys]]\nname = \"pii\"\n";
    let mut server = Server::start(&data, Some(keys));
    let mut c = server.client().await;
    let good = encrypt(&c, "", b"123.456.789-09", CTX).await.unwrap();
    let ct = good.ciphertext.to_vec();
    let pii = encrypt(&c, "pii", b"123.456.789-09", CTX)
        .await
        .unwrap()
        .ciphertext
        .to_vec();
    let blob = c
        .generate_data_key(pb::GenerateDataKeyRequest {
            key: String::new(),
            context: ctx(CTX),
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped_key
        .to_vec();
    let unicode = ctx(&[("tabela", "usuários"), ("coluna", "名前")]);
    let uni_ct = encrypt(&c, "", b"x", &[("tabela", "usuários"), ("coluna", "名前")])
        .await
        .unwrap()
        .ciphertext
        .to_vec();
    // A record under the first version, then a rotation: the retired case and the cross-version swap.
    rotate(&server, "").await;
    let after = encrypt(&c, "", b"after rotation", CTX).await.unwrap();
    let after_ct = after.ciphertext.to_vec();

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = ct.clone();
        f(&mut v);
        v
    };
    let dec = |ct: Vec<u8>| Call::Decrypt {
        key: String::new(),
        ct,
        ctx: ctx(CTX),
    };
    let dec_ctx = |c: BTreeMap<String, String>| Call::Decrypt {
        key: String::new(),
        ct: ct.clone(),
        ctx: c,
    };
    let many: BTreeMap<String, String> =
        (0..65).map(|i| (format!("k{i}"), String::new())).collect();
    // A DecryptRequest whose context map repeats a key: protobuf keeps the last value.
    let mut dup = Vec::new();
    pb::DecryptRequest {
        key: String::new(),
        ciphertext: Bytes::from(ct.clone()),
        context: ctx(&[("column", "cpf")]),
    }
    .encode(&mut dup)
    .unwrap();
    let mut dup_last_wins = dup.clone();
    dup_last_wins.extend(context_entry("table", "orders"));
    dup_last_wins.extend(context_entry("table", "users"));
    let mut dup_first_wins = dup.clone();
    dup_first_wins.extend(context_entry("table", "users"));
    dup_first_wins.extend(context_entry("table", "orders"));

    let cases: Vec<(&str, Call, Code)> = vec![
        ("empty ciphertext", dec(vec![]), Code::InvalidArgument),
        (
            "truncated in kind",
            dec(ct[..1].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in key id",
            dec(ct[..4].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in version-id form",
            dec(ct[..6].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in version id",
            dec(ct[..15].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in wrapped key",
            dec(ct[..50].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in nonce",
            dec(ct[..90].to_vec()),
            Code::InvalidArgument,
        ),
        (
            "truncated in tag",
            dec(ct[..ct.len() - 1].to_vec()),
            Code::InvalidArgument,
        ),
        ("header only", dec(ct[..83].to_vec()), Code::InvalidArgument),
        (
            "extended by one byte",
            dec(with(&|v| v.push(0))),
            Code::InvalidArgument,
        ),
        (
            "extended by 64 KiB",
            dec(with(&|v| v.extend(vec![0u8; 65536]))),
            Code::InvalidArgument,
        ),
        (
            "format version 2",
            dec(with(&|v| v[0] = 2)),
            Code::InvalidArgument,
        ),
        (
            "format version 0",
            dec(with(&|v| v[0] = 0)),
            Code::InvalidArgument,
        ),
        (
            "unknown kind",
            dec(with(&|v| v[1] = 0x7f)),
            Code::InvalidArgument,
        ),
        (
            "data-key blob sent as a record",
            dec(blob.clone()),
            Code::InvalidArgument,
        ),
        (
            "unknown version-id form",
            dec(with(&|v| v[6] = 9)),
            Code::InvalidArgument,
        ),
        (
            "text version id of length 0",
            dec(with(&|v| {
                v[6] = 1;
                v[7] = 0;
            })),
            Code::InvalidArgument,
        ),
        (
            "text version id of length 65",
            dec(with(&|v| {
                v[6] = 1;
                v[7] = 65;
            })),
            Code::InvalidArgument,
        ),
        (
            "text version id with a control byte",
            dec(with(&|v| {
                v[6] = 1;
                v[7] = 4;
                v[8..12].copy_from_slice(b"a\x01bc");
            })),
            Code::InvalidArgument,
        ),
        (
            "unknown master-key version",
            dec(with(&|v| v[7..23].copy_from_slice(&[0x42; 16]))),
            Code::FailedPrecondition,
        ),
        (
            "flipped wrapped-key byte",
            dec(with(&|v| v[40] ^= 1)),
            Code::InvalidArgument,
        ),
        (
            "flipped nonce byte",
            dec(with(&|v| v[85] ^= 1)),
            Code::InvalidArgument,
        ),
        (
            "flipped ciphertext byte",
            dec(with(&|v| v[96] ^= 1)),
            Code::InvalidArgument,
        ),
        (
            "flipped tag byte",
            dec(with(&|v| {
                let n = v.len();
                v[n - 1] ^= 1;
            })),
            Code::InvalidArgument,
        ),
        (
            "wrapped key swapped from a record of another version",
            dec(with(&|v| v[23..83].copy_from_slice(&after_ct[23..83]))),
            Code::InvalidArgument,
        ),
        (
            "header swapped from another record",
            dec(with(&|v| v[..83].copy_from_slice(&after_ct[..83]))),
            Code::InvalidArgument,
        ),
        (
            "wrapped key from another key name's record",
            dec(with(&|v| v[23..83].copy_from_slice(&pii[23..83]))),
            Code::InvalidArgument,
        ),
        (
            "another key name's record",
            dec(pii.clone()),
            Code::InvalidArgument,
        ),
        (
            // Its version id names a version our secret does not have.
            "another key name's header with our key id",
            dec({
                let mut v = pii.clone();
                v[2..6].copy_from_slice(&ct[2..6]);
                v
            }),
            Code::FailedPrecondition,
        ),
        (
            "context missing an entry",
            dec_ctx(ctx(&[("table", "users")])),
            Code::InvalidArgument,
        ),
        (
            "context with an extra entry",
            dec_ctx(ctx(&[("table", "users"), ("column", "cpf"), ("x", "")])),
            Code::InvalidArgument,
        ),
        (
            "context with an empty key",
            dec_ctx(ctx(&[("", "users")])),
            Code::InvalidArgument,
        ),
        (
            "context with 65 entries",
            dec_ctx(many),
            Code::InvalidArgument,
        ),
        (
            "context value over 8 KiB",
            dec_ctx(ctx(&[("table", &"u".repeat(9000))])),
            Code::InvalidArgument,
        ),
        (
            "unicode context, exact",
            Call::Decrypt {
                key: String::new(),
                ct: uni_ct.clone(),
                ctx: unicode.clone(),
            },
            Code::Ok,
        ),
        (
            "unicode context, other normalisation",
            Call::Decrypt {
                key: String::new(),
                ct: uni_ct.clone(),
                ctx: ctx(&[("tabela", "usua\u{301}rios"), ("coluna", "名前")]),
            },
            Code::InvalidArgument,
        ),
        (
            "duplicate context key, last value matches",
            Call::Raw {
                path: "/envelope.v1.Envelope/Decrypt",
                body: dup_last_wins,
            },
            Code::Ok,
        ),
        (
            "duplicate context key, last value differs",
            Call::Raw {
                path: "/envelope.v1.Envelope/Decrypt",
                body: dup_first_wins,
            },
            Code::InvalidArgument,
        ),
        (
            "garbage protobuf",
            Call::Raw {
                path: "/envelope.v1.Envelope/Decrypt",
                body: vec![0xff; 32],
            },
            Code::Internal,
        ),
        (
            "protobuf with a truncated length",
            Call::Raw {
                path: "/envelope.v1.Envelope/Decrypt",
                body: vec![0x12, 0xff, 0xff, 0x03],
            },
            Code::Internal,
        ),
        (
            "unknown method",
            Call::Raw {
                path: "/envelope.v1.Envelope/Explode",
                body: vec![],
            },
            Code::Unimplemented,
        ),
        (
            "unknown key name",
            Call::Decrypt {
                key: "nope".into(),
                ct: ct.clone(),
                ctx: ctx(CTX),
            },
            Code::NotFound,
        ),
        (
            "path-like key name",
            Call::Encrypt {
                key: "../secrets/default".into(),
                pt: b"x".to_vec(),
                ctx: ctx(&[]),
            },
            Code::NotFound,
        ),
        (
            "10 KiB key name",
            Call::Encrypt {
                key: "k".repeat(10240),
                pt: b"x".to_vec(),
                ctx: ctx(&[]),
            },
            Code::NotFound,
        ),
        (
            "plaintext over the limit",
            Call::Encrypt {
                key: String::new(),
                pt: vec![0; (4 << 20) - (64 << 10) + 1],
                ctx: ctx(&[]),
            },
            Code::InvalidArgument,
        ),
        (
            "message over the request limit",
            Call::Encrypt {
                key: String::new(),
                pt: vec![0; (4 << 20) + 1],
                ctx: ctx(&[]),
            },
            Code::OutOfRange,
        ),
        (
            "batch over the item limit",
            Call::EncryptBatch { items: 10_001 },
            Code::InvalidArgument,
        ),
        (
            "record sent as a data-key blob",
            Call::Unwrap {
                blob: ct.clone(),
                ctx: ctx(CTX),
            },
            Code::InvalidArgument,
        ),
        (
            "data-key blob with a trailing byte",
            Call::Unwrap {
                blob: {
                    let mut b = blob.clone();
                    b.push(0);
                    b
                },
                ctx: ctx(CTX),
            },
            Code::InvalidArgument,
        ),
        (
            "data-key blob under the wrong context",
            Call::Unwrap {
                blob: blob.clone(),
                ctx: ctx(&[]),
            },
            Code::InvalidArgument,
        ),
        (
            "tampered record sent to Rewrap",
            Call::Rewrap {
                ct: with(&|v| v[100] ^= 1),
                ctx: ctx(CTX),
            },
            Code::InvalidArgument,
        ),
    ];
    // No input counted twice.
    for (i, (name, call, _)) in cases.iter().enumerate() {
        for (other, c, _) in &cases[i + 1..] {
            assert!(call != c, "{name} and {other} send the same request");
        }
    }
    let mut table = String::new();
    let mut wrong = Vec::new();
    // The set-up calls' lines are written within 10 ms of their calls.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let lines_before = audit_lines(&server.stdout());
    let mut seen = 0;
    for (name, call, want) in &cases {
        let (got, has_id) = run_call_seen(&server, call).await;
        table.push_str(&format!("| {name} | {want:?} | {got:?} |\n"));
        if got != *want {
            wrong.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        // API.md, "Codes produced by tonic": those requests never reach the
        // gate, so they have no x-request-id (and no audit line, below).
        let by_tonic = matches!(got, Code::Internal | Code::Unimplemented | Code::OutOfRange);
        if has_id == by_tonic {
            wrong.push(format!("{name}: {got:?} with x-request-id: {has_id}"));
        }
        seen += usize::from(has_id);
    }
    // One audit line for each call that had an x-request-id, and no more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while audit_lines(&server.stdout()) < lines_before + seen {
        assert!(std::time::Instant::now() < deadline, "{}", server.stdout());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(audit_lines(&server.stdout()), lines_before + seen);
    let hostile = cases
        .iter()
        .filter(|(_, _, want)| *want != Code::Ok)
        .count();
    eprintln!(
        "{hostile} hostile requests and {} controls:\n{table}",
        cases.len() - hostile
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The count docs/SECURITY.md gives ("Hostile input"); the two
    // controls (accepted on purpose) are not among them.
    assert_eq!((hostile, cases.len() - hostile), (HOSTILE_CASES, 2));
    // The same server, after all of it: alive and serving.
    assert!(!server.exited(), "the server exited: {}", server.logs());
    assert_eq!(
        run_call(
            &server,
            &Call::Encrypt {
                key: String::new(),
                pt: b"still serving".to_vec(),
                ctx: ctx(&[])
            }
        )
        .await,
        Code::Ok
    );

    // Retired: a server whose minimum decryption version is the new one
    // refuses the record made before the rotation.
    let v1 = after.key_version.clone();
    drop(server);
    let retiring = format!(
        "[[keys]]\nname = \"default\"\nmin_decryption_version = \"{v1}\"\n[[keys]]\nname = \"pii\"\n"
    );
    let server = Server::start(&data, Some(&retiring));
    assert_eq!(
        run_call(&server, &dec(ct.clone())).await,
        Code::FailedPrecondition,
        "retired version"
    );
    assert_eq!(run_call(&server, &dec(after_ct.clone())).await, Code::Ok);
}

/// The audit lines in the server's stdout.
fn audit_lines(stdout: &str) -> usize {
    stdout.lines().filter(|l| l.starts_with('{')).count()
}
