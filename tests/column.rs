//! The column RPCs against the real binary: a column of values under one
//! shared context, each bound to its row; column records are ordinary
//! records (unary Decrypt opens them under the merged context, and
//! DecryptColumn opens unary records); bad items fail alone, rows that do
//! not fit fail the call; the streams answer in order; the audit line
//! counts items; the CLI's `--column` mode round-trips lines.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use bytes::Bytes;
use common::requests::{ctx, decrypt, encrypt};
use common::{Server, run_stdin};
use envelope::pb;
use tonic::Code;

const SHARED: &[(&str, &str)] = &[("table", "users"), ("column", "email")];

fn values(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("user{i}@example.com")))
        .collect()
}

fn rows(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{}", 1000 + i)).collect()
}

fn enc_column(plaintexts: Vec<Bytes>, row_values: Vec<String>) -> pb::EncryptColumnRequest {
    pb::EncryptColumnRequest {
        indexes: Vec::new(),
        key: String::new(),
        context: ctx(SHARED),
        plaintexts,
        row_field: if row_values.is_empty() {
            String::new()
        } else {
            "row".into()
        },
        row_values,
    }
}

fn dec_column(ciphertexts: Vec<Bytes>, row_values: Vec<String>) -> pb::DecryptColumnRequest {
    pb::DecryptColumnRequest {
        key: String::new(),
        context: ctx(SHARED),
        ciphertexts,
        row_field: if row_values.is_empty() {
            String::new()
        } else {
            "row".into()
        },
        row_values,
    }
}

#[tokio::test]
async fn a_column_round_trips_and_its_records_are_ordinary_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;

    let n = 1000;
    let sealed = c
        .encrypt_column(enc_column(values(n), rows(n)))
        .await
        .unwrap()
        .into_inner();
    assert!(sealed.errors.is_empty(), "{:?}", sealed.errors);
    assert_eq!(sealed.ciphertexts.len(), n);
    assert!(!sealed.key_version.is_empty());
    let opened = c
        .decrypt_column(dec_column(sealed.ciphertexts.clone(), rows(n)))
        .await
        .unwrap()
        .into_inner();
    assert!(opened.errors.is_empty(), "{:?}", opened.errors);
    assert_eq!(opened.plaintexts, values(n));

    // Record 7 is an ordinary record under the shared context plus its row.
    let merged = [SHARED, &[("row", "1007")]].concat();
    let one = decrypt(&server, "", &sealed.ciphertexts[7], &merged)
        .await
        .unwrap();
    assert_eq!(one.plaintext, values(n)[7]);
    assert_eq!(one.key_version, sealed.key_version);
    // Moved to another row, it does not open.
    let moved = [SHARED, &[("row", "1008")]].concat();
    let e = decrypt(&server, "", &sealed.ciphertexts[7], &moved)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Nor without its row.
    assert!(
        decrypt(&server, "", &sealed.ciphertexts[7], SHARED)
            .await
            .is_err()
    );

    // Unary records open with DecryptColumn, wherever the row field sorts
    // among the shared keys ("a" first, "row" between, "zz" last).
    for field in ["a", "row", "zz"] {
        let mut records = Vec::new();
        for i in 0..3 {
            let row = format!("r{i}");
            let merged = [SHARED, &[(field, row.as_str())]].concat();
            let e = encrypt(&server, "", format!("v{i}"), &merged)
                .await
                .unwrap();
            records.push(e.ciphertext);
        }
        let req = pb::DecryptColumnRequest {
            row_field: field.into(),
            ..dec_column(records, vec!["r0".into(), "r1".into(), "r2".into()])
        };
        let opened = c.decrypt_column(req).await.unwrap().into_inner();
        assert!(opened.errors.is_empty(), "{field}: {:?}", opened.errors);
        assert_eq!(opened.plaintexts, ["v0", "v1", "v2"].map(Bytes::from));
    }

    // Without a row field, every record is bound to the shared context alone.
    let plain = c
        .encrypt_column(enc_column(values(3), Vec::new()))
        .await
        .unwrap()
        .into_inner();
    let one = decrypt(&server, "", &plain.ciphertexts[2], SHARED)
        .await
        .unwrap();
    assert_eq!(one.plaintext, values(3)[2]);

    // One line per call, with its item count.
    let audit = server
        .audit_with(&["\"rpc\":\"EncryptColumn\"", "\"rpc\":\"DecryptColumn\""])
        .await;
    let line = audit
        .lines()
        .find(|l| l.contains("\"rpc\":\"EncryptColumn\""))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["items"], 1000, "{line}");
    assert_eq!(line["failed_items"], 0, "{line}");
    assert_eq!(line["key_version"], sealed.key_version.as_str(), "{line}");
    assert_eq!(line["operation"], "encrypt", "{line}");
}

#[tokio::test]
async fn bad_items_fail_alone_and_rows_that_do_not_fit_fail_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[limits]\nmax_plaintext_bytes = 64\nmax_context_bytes = 64\nmax_batch_items = 10\n";
    let server = Server::start(&dir.path().join("data"), Some(config));
    let mut c = server.client().await;

    // An unknown key fails the whole call (API.md), either way.
    let mut unknown = enc_column(vec![Bytes::from_static(b"a")], Vec::new());
    unknown.key = "nope".into();
    assert_eq!(
        c.encrypt_column(unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut unknown = dec_column(vec![Bytes::from_static(b"a")], Vec::new());
    unknown.key = "nope".into();
    assert_eq!(
        c.decrypt_column(unknown).await.unwrap_err().code(),
        Code::NotFound
    );

    // Item 1 is too large; item 2's row value is over the context limit.
    let plaintexts = vec![
        Bytes::from_static(b"a"),
        Bytes::from(vec![b'x'; 65]),
        Bytes::from_static(b"c"),
        Bytes::from_static(b"d"),
    ];
    let row_values = vec!["1".into(), "2".into(), "y".repeat(64), "4".into()];
    let sealed = c
        .encrypt_column(enc_column(plaintexts, row_values.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sealed.errors.keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(sealed.errors[&1].code, Code::InvalidArgument as i32);
    assert!(
        sealed.errors[&2].message.contains("context"),
        "{:?}",
        sealed.errors
    );
    assert!(sealed.ciphertexts[1].is_empty() && sealed.ciphertexts[2].is_empty());
    assert!(!sealed.ciphertexts[0].is_empty() && !sealed.ciphertexts[3].is_empty());

    // A tampered record fails alone; so does one given the wrong row.
    let mut records = sealed.ciphertexts.clone();
    let mut tampered = records[3].to_vec();
    *tampered.last_mut().unwrap() ^= 1;
    records[3] = Bytes::from(tampered);
    let opened = c
        .decrypt_column(dec_column(records.clone(), row_values.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintexts[0], Bytes::from_static(b"a"));
    assert_eq!(
        opened.errors.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(opened.plaintexts[3].is_empty());

    // Whole-call refusals: INVALID_ARGUMENT, nothing sealed.
    let refused = |r: Result<tonic::Response<pb::EncryptColumnResponse>, tonic::Status>| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        s.message().to_owned()
    };
    // The row field is already a key of the shared context.
    let mut req = enc_column(values(2), rows(2));
    req.row_field = "table".into();
    assert!(refused(c.encrypt_column(req).await).contains("row_field"));
    // One row value too few, and row values without a row field.
    let msg = refused(c.encrypt_column(enc_column(values(3), rows(2))).await);
    assert!(msg.contains("one entry per item"), "{msg}");
    let mut req = enc_column(values(2), rows(2));
    req.row_field.clear();
    assert!(refused(c.encrypt_column(req).await).contains("without row_field"));
    // More items than max_batch_items.
    let msg = refused(c.encrypt_column(enc_column(values(11), rows(11))).await);
    assert!(msg.contains("over the limit of 10"), "{msg}");
    let s = c
        .decrypt_column(dec_column(records, rows(3)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_column_streams_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let messages: Vec<_> = (0..3)
        .map(|m| pb::EncryptColumnStreamRequest {
            column: Some(enc_column(
                (0..5).map(|i| Bytes::from(format!("{m}-{i}"))).collect(),
                rows(5),
            )),
        })
        .collect();
    let mut out = c
        .encrypt_column_stream(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut sealed = Vec::new();
    while let Some(m) = out.message().await.unwrap() {
        sealed.push(m.column.unwrap());
    }
    assert_eq!(sealed.len(), 3);
    let back: Vec<_> = sealed
        .iter()
        .map(|s| pb::DecryptColumnStreamRequest {
            column: Some(dec_column(s.ciphertexts.clone(), rows(5))),
        })
        .collect();
    let mut out = c
        .decrypt_column_stream(tokio_stream::iter(back))
        .await
        .unwrap()
        .into_inner();
    for m in 0..3 {
        let opened = out.message().await.unwrap().unwrap().column.unwrap();
        assert_eq!(opened.plaintexts[4], Bytes::from(format!("{m}-4")));
    }
    assert!(out.message().await.unwrap().is_none());

    // A message without a column ends the stream with INVALID_ARGUMENT.
    let mut out = c
        .encrypt_column_stream(tokio_stream::iter(vec![
            pb::EncryptColumnStreamRequest {
                column: Some(enc_column(values(1), Vec::new())),
            },
            pb::EncryptColumnStreamRequest { column: None },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(out.message().await.unwrap().is_some());
    assert_eq!(
        out.message().await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn the_cli_column_mode_answers_line_for_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let args = |cmd: &'static str| {
        vec![
            cmd,
            "--addr",
            server.addr.as_str(),
            "--column",
            "--row-field",
            "row",
            "--context",
            "table=users",
            "--context",
            "column=email",
            "--batch",
            "2",
        ]
    };
    let input = b"17\tana@example.com\n18\tbruno@example.com\n19\tcarla@example.com\n";
    let (ok, sealed, err) = run_stdin(&args("encrypt"), input);
    assert!(ok, "{err}");
    // Progress, not on a terminal: a line after the first batch, then one
    // every 10 s at most (this run is shorter).
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("so far")).collect();
    assert_eq!(progress.len(), 1, "{err}");
    assert!(
        progress[0].starts_with("encrypt --column: 2 values so far ("),
        "{err}"
    );
    let sealed_text = String::from_utf8(sealed.clone()).unwrap();
    assert_eq!(sealed_text.lines().count(), 3);
    assert!(sealed_text.lines().all(|l| l.split_once('\t').is_some()));
    // A line is an ordinary record under the merged context.
    let (row, record) = sealed_text
        .lines()
        .nth(1)
        .unwrap()
        .split_once('\t')
        .unwrap();
    assert_eq!(row, "18");
    use base64::Engine as _;
    let record = base64::engine::general_purpose::STANDARD
        .decode(record)
        .unwrap();
    let merged = [("table", "users"), ("column", "email"), ("row", "18")];
    let one = decrypt(&server, "", &record, &merged).await.unwrap();
    assert_eq!(one.plaintext.as_ref(), b"bruno@example.com");

    let (ok, opened, err) = run_stdin(&args("decrypt"), &sealed);
    assert!(ok, "{err}");
    assert_eq!(opened, input);

    // A record moved to another row fails its line and the command.
    let swapped = sealed_text.replacen("17\t", "99\t", 1);
    let (ok, opened, err) = run_stdin(&args("decrypt"), swapped.as_bytes());
    assert!(!ok);
    assert!(err.contains("line 1:"), "{err}");
    assert_eq!(
        String::from_utf8(opened).unwrap(),
        "99\t\n18\tbruno@example.com\n19\tcarla@example.com\n"
    );
    // Twelve failed lines: the first 10 are named (API.md).
    let bad: String = (1..=12).map(|i| format!("{i}\tAAAA\n")).collect();
    let (ok, _, err) = run_stdin(&args("decrypt"), bad.as_bytes());
    assert!(!ok);
    let named: Vec<&str> = err.lines().filter(|l| l.contains("line ")).collect();
    assert_eq!(named.len(), 10, "{err}");
    assert!(named[9].contains("line 10:"), "{err}");
    // Without --batch, 1,000 values a call: 1,001 lines make two calls.
    let many: String = (0..1001)
        .map(|i| format!("{i}\tv{i}@example.com\n"))
        .collect();
    let mut default_batch = args("encrypt");
    default_batch.truncate(default_batch.len() - 2);
    let columns = || -> Vec<u64> {
        server
            .stdout()
            .lines()
            .filter(|l| l.contains("\"rpc\":\"EncryptColumn\""))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["items"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let before = columns().len();
    let (ok, _, err) = run_stdin(&default_batch, many.as_bytes());
    assert!(ok, "{err}");
    // Its two calls' audit lines, once the writer has flushed them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut items = columns();
    while items.len() < before + 2 {
        assert!(std::time::Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        items = columns();
    }
    assert_eq!(items[before..], [1000, 1], "{items:?}");
}
