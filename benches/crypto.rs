//! In-process baseline: Envelope's encrypt and decrypt of 64-byte records
//! (no RPC), beside the raw AES-256-GCM seal and open they are built on, and
//! the envelope parser and context encoding; then 1,000-record batches and
//! columns. Run: `cargo bench --bench crypto`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use envelope::keys::{KeySource, Limits, NamedKey};
use envelope::primitives::crypto::{AeadKey, KeyBytes};
use envelope::primitives::record::{Kind, parse};

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = rt
        .block_on(async {
            let source = KeySource::open_local(dir.path(), "default").await?;
            NamedKey::load(source, Limits::default()).await
        })
        .unwrap();
    let pt = [0x5au8; 64];
    let mut ctx = BTreeMap::new();
    ctx.insert("table".to_owned(), "users".to_owned());
    ctx.insert("column".to_owned(), "cpf".to_owned());
    let (record, _) = rt.block_on(key.encrypt(&pt, &ctx)).unwrap();

    let mut g = c.benchmark_group("record_64B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("envelope_encrypt", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(key.encrypt(black_box(&pt), &ctx).await.unwrap()) })
    });
    g.bench_function("envelope_decrypt", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(key.decrypt(black_box(&record), &ctx).await.unwrap()) })
    });
    let aes = AeadKey::new(&KeyBytes::random().unwrap()).unwrap();
    let mut buf = pt;
    g.bench_function("raw_aes256gcm_seal", |b| {
        b.iter(|| {
            black_box(
                aes.seal(
                    [7u8; 12],
                    b"aad-of-similar-size-0123456789",
                    black_box(&mut buf),
                )
                .unwrap(),
            )
        })
    });
    let mut sealed = pt;
    let tag = aes.seal([7u8; 12], b"aad", &mut sealed).unwrap();
    let mut out = [0u8; 64];
    g.bench_function("raw_aes256gcm_open", |b| {
        b.iter(|| {
            aes.open([7u8; 12], b"aad", black_box(&sealed), &tag, &mut out)
                .unwrap()
        })
    });
    g.bench_function("parse_header", |b| {
        b.iter(|| black_box(parse(black_box(&record), Kind::Record).unwrap().header_len))
    });
    g.bench_function("encode_context", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(64);
            envelope::primitives::context::encode_into(black_box(&ctx), &mut v);
            black_box(v)
        })
    });
    g.finish();

    // The batch path: 1,000 records sealed into one buffer and opened back,
    // per record (what EncryptBatch and DecryptBatch run after decoding).
    let items: Vec<([u8; 64], BTreeMap<String, String>)> =
        (0..1000).map(|_| (pt, ctx.clone())).collect();
    let sealed = rt.block_on(key.encrypt_many(&items, |(p, c)| (p, c)));
    let records: Vec<(Vec<u8>, BTreeMap<String, String>)> = sealed
        .results
        .iter()
        .map(|r| {
            (
                sealed.records[r.as_ref().unwrap().0.clone()].to_vec(),
                ctx.clone(),
            )
        })
        .collect();
    let mut g = c.benchmark_group("batch_1000x64B");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encrypt_many", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(key.encrypt_many(black_box(&items), |(p, c)| (p, c)).await)
        })
    });
    g.bench_function("decrypt_many", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(key.decrypt_many(black_box(&records), |(r, c)| (r, c)).await)
        })
    });
    g.finish();

    // The column path: the same 1,000 values under one shared context, each
    // bound to its row id (what EncryptColumn and DecryptColumn run).
    let plaintexts: Vec<bytes::Bytes> = (0..1000)
        .map(|_| bytes::Bytes::copy_from_slice(&pt))
        .collect();
    let row_values: Vec<String> = (0..1000).map(|i| format!("{}", 1_000_000 + i)).collect();
    let rows = envelope::keys::column::Rows {
        field: "row",
        values: &row_values,
    };
    let column = rt
        .block_on(key.encrypt_column(&ctx, rows, &plaintexts))
        .unwrap();
    let column_records: Vec<bytes::Bytes> = column
        .results
        .iter()
        .map(|r| column.records.slice(r.as_ref().unwrap().clone()))
        .collect();
    let mut g = c.benchmark_group("column_1000x64B");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encrypt_column", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                key.encrypt_column(&ctx, rows, black_box(&plaintexts))
                    .await
                    .unwrap(),
            )
        })
    });
    g.bench_function("decrypt_column", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                key.decrypt_column(&ctx, rows, black_box(&column_records))
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(crypto, benches);
criterion_main!(crypto);
