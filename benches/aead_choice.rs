//! Which AES-256-GCM: *ring* (Envelope's choice, through `AeadKey`),
//! aws-lc-rs and RustCrypto's `aes-gcm`, each sealing with a pre-expanded
//! key, at record sizes from 16 bytes to 4 KiB, side by side in one run.
//! Run: `cargo bench --bench aead_choice`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envelope::primitives::crypto::{AeadKey, KeyBytes};

fn seal(c: &mut Criterion) {
    let key = KeyBytes::random().unwrap();
    let ring = AeadKey::new(&key).unwrap();
    let lc = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key.expose()).unwrap(),
    );
    let rc = aes_gcm::Aes256Gcm::new_from_slice(key.expose()).unwrap();
    let nonce = [3u8; 12];
    let mut g = c.benchmark_group("aes256gcm_seal");
    for size in [16usize, 64, 256, 1024, 4096] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| black_box(ring.seal(nonce, b"aad", black_box(&mut buf)).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("aws-lc-rs", size), &size, |b, _| {
            b.iter(|| {
                black_box(
                    lc.seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(b"aad"),
                        black_box(&mut buf),
                    )
                    .unwrap(),
                )
            })
        });
        g.bench_with_input(
            BenchmarkId::new("rustcrypto-aes-gcm", size),
            &size,
            |b, _| {
                b.iter(|| {
                    black_box(
                        rc.encrypt_inout_detached(
                            &nonce.into(),
                            b"aad",
                            black_box(buf.as_mut_slice()).into(),
                        )
                        .unwrap(),
                    )
                })
            },
        );
    }
    g.finish();

    // A column record's associated data: the payload label, the key name and
    // a context of table, column and row id (89 bytes).
    let mut aad = Vec::new();
    envelope::primitives::record::payload_aad_prefix(&mut aad, "default");
    let context = [("column", "email"), ("row", "1000000"), ("table", "users")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    envelope::primitives::context::encode_into(&context, &mut aad);
    let mut g = c.benchmark_group(format!("aes256gcm_seal_64B_aad{}B", aad.len()));
    let mut buf = vec![0x5au8; 64];
    g.throughput(Throughput::Elements(1));
    g.bench_function("ring", |b| {
        b.iter(|| black_box(ring.seal(nonce, &aad, black_box(&mut buf)).unwrap()))
    });
    g.bench_function("aws-lc-rs", |b| {
        b.iter(|| {
            black_box(
                lc.seal_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(&aad),
                    black_box(&mut buf),
                )
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(aead, seal);
criterion_main!(aead);
