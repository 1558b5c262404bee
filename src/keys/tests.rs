//! Property tests of the operations in-process: every mutation of a record
//! is refused, and records round-trip whatever their plaintext and context.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use std::collections::BTreeMap;

use super::*;
use crate::primitives::record;

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    key: NamedKey,
}

/// A current-thread runtime, as each test here uses.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let key = rt
        .block_on(async {
            let source = KeySource::open_local(dir.path(), "default").await?;
            NamedKey::load(source, Limits::default()).await
        })
        .unwrap();
    Fixture { _dir: dir, rt, key }
}

thread_local! {
    static FIX: Fixture = fixture();
}

/// Runs `f` on a fresh local key named `k` with `limits`.
fn with_key(limits: Limits, f: impl AsyncFnOnce(NamedKey)) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let key = NamedKey::load(
            KeySource::open_local(dir.path(), "k").await.unwrap(),
            limits,
        )
        .await
        .unwrap();
        f(key).await;
    });
}

fn context() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z\u{e9}\u{4e2d}]{1,8}", ".{0,12}", 0..4)
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs a longer soak.

    #[test]
    fn round_trip(pt in vec(any::<u8>(), 0..600), ctx in context()) {
        FIX.with(|f| {
            let (ct, _) = f.rt.block_on(f.key.encrypt(&pt, &ctx)).unwrap();
            prop_assert_eq!(ct.len(), pt.len() + record::RECORD_OVERHEAD_UUID);
            let (back, _) = f.rt.block_on(f.key.decrypt(&ct, &ctx)).unwrap();
            prop_assert_eq!(back, pt);
            Ok(())
        })?;
    }

    #[test]
    fn every_mutation_is_refused(
        pt in vec(any::<u8>(), 0..64),
        ctx in context(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 1..8),
        other_ctx in context(),
    ) {
        FIX.with(|f| {
            let (ct, _) = f.rt.block_on(f.key.encrypt(&pt, &ctx)).unwrap();
            let mut flipped = ct.clone();
            let i = pos.index(ct.len());
            flipped[i] = flipped[i].wrapping_add(delta);
            prop_assert!(f.rt.block_on(f.key.decrypt(&flipped, &ctx)).is_err(), "byte {} changed", i);
            let n = cut.index(ct.len());
            prop_assert!(f.rt.block_on(f.key.decrypt(&ct[..n], &ctx)).is_err(), "cut to {}", n);
            let mut longer = ct.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(f.rt.block_on(f.key.decrypt(&longer, &ctx)).is_err());
            if other_ctx != ctx {
                prop_assert!(matches!(f.rt.block_on(f.key.decrypt(&ct, &other_ctx)), Err(Error::Unauthentic)));
            }
            Ok(())
        })?;
    }
}

#[test]
fn data_key_is_reused_within_limits_and_rotation_retires_it() {
    FIX.with(|f| {
        let ctx = BTreeMap::new();
        let before = f.key.figures().data_keys_generated;
        for _ in 0..10 {
            f.rt.block_on(f.key.encrypt(b"x", &ctx)).unwrap();
        }
        assert!(f.key.figures().data_keys_generated <= before + 1);
        let (old, _) = f.rt.block_on(f.key.encrypt(b"old", &ctx)).unwrap();
        let generated = f.key.figures().data_keys_generated;
        f.rt.block_on(f.key.rotate()).unwrap();
        let (new, master) = f.rt.block_on(f.key.encrypt(b"new", &ctx)).unwrap();
        assert_eq!(master.version, f.key.snapshot().current.version);
        // A new AWSCURRENT takes a new data key, though the old one had room.
        assert_eq!(f.key.figures().data_keys_generated, generated + 1);
        assert_ne!(old[..83], new[..83]);
        assert_eq!(f.rt.block_on(f.key.decrypt(&old, &ctx)).unwrap().0, b"old");
    });
}

#[test]
fn lookups_of_unknown_versions_are_rate_limited() {
    FIX.with(|f| {
        let mut outcomes = Vec::new();
        for i in 0..60u8 {
            let mut raw = vec![0u8; 17];
            raw[1] = 0xee;
            raw[16] = i;
            outcomes.push(f.rt.block_on(f.key.master_for(&raw)).unwrap_err());
        }
        let not_found = outcomes
            .iter()
            .filter(|e| matches!(e, Error::VersionNotFound { .. }))
            .count();
        let throttled = outcomes
            .iter()
            .filter(|e| matches!(e, Error::FetchThrottled(_)))
            .count();
        assert_eq!(not_found, FETCH_BURST as usize);
        assert_eq!(throttled, 60 - FETCH_BURST as usize);
        let refusal = outcomes.last().unwrap().to_string();
        assert_eq!(
            refusal,
            "too many lookups of unknown master-key versions for key \"default\"; retry later"
        );
        // A version already known missing costs no token and still answers NOT_FOUND.
        let mut raw = vec![0u8; 17];
        raw[1] = 0xee;
        assert!(matches!(
            f.rt.block_on(f.key.master_for(&raw)),
            Err(Error::VersionNotFound { .. })
        ));
    });
}

#[test]
fn the_decryption_cache_is_bounded_and_counts_evictions() {
    let limits = Limits {
        decrypt_cache_entries: 2,
        data_key: DataKeyLimits {
            max_records: 1,
            ..DataKeyLimits::default()
        },
        ..Limits::default()
    };
    with_key(limits, async |key| {
        let ctx = BTreeMap::new();
        let mut records = Vec::new();
        for i in 0..8u8 {
            // One record per data key: every encryption makes (and caches) a new one.
            records.push(key.encrypt(&[i], &ctx).await.unwrap().0);
        }
        for (i, r) in records.iter().enumerate() {
            assert_eq!(key.decrypt(r, &ctx).await.unwrap().0, vec![i as u8]);
        }
        let f = key.figures();
        assert_eq!(f.data_keys_generated, 8);
        assert!(f.decrypt_entries <= 2, "{f:?}");
        assert!(f.evictions >= 6, "{f:?}");
    });
}

#[test]
fn batches_span_data_keys_and_keep_failures_to_their_items() {
    let limits = Limits {
        max_plaintext_bytes: 100,
        data_key: DataKeyLimits {
            max_records: 3,
            ..DataKeyLimits::default()
        },
        ..Limits::default()
    };
    with_key(limits, async |key| {
        let ctx_a: BTreeMap<String, String> = [("t".to_owned(), "a".to_owned())].into();
        let ctx_b: BTreeMap<String, String> = [("t".to_owned(), "b".to_owned())].into();
        let bad: BTreeMap<String, String> = [(String::new(), "x".to_owned())].into();
        let mut items: Vec<(Vec<u8>, BTreeMap<String, String>)> = (0..10u8)
            .map(|i| {
                (
                    vec![i; usize::from(i) * 7],
                    if i % 2 == 0 {
                        ctx_a.clone()
                    } else {
                        ctx_b.clone()
                    },
                )
            })
            .collect();
        items[4].1 = bad.clone(); // invalid context
        items[7].0 = vec![7; 101]; // over the plaintext limit
        let sealed = key.encrypt_many(&items, |(p, c)| (p, c)).await;
        assert_eq!(sealed.results.len(), 10);
        // Three records per data key: the batch took several data keys, all
        // under the one current version.
        assert!(key.figures().data_keys_generated >= 3);
        assert_eq!(sealed.versions.len(), 1);
        let mut records = Vec::new();
        for (i, r) in sealed.results.iter().enumerate() {
            match i {
                4 => assert!(matches!(r, Err(Error::Context(_))), "{r:?}"),
                7 => assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}"),
                _ => {
                    let (range, v) = r.as_ref().unwrap();
                    assert_eq!(*v, 0);
                    let record = sealed.records.slice(range.clone());
                    assert_eq!(
                        record.len(),
                        items[i].0.len() + record::RECORD_OVERHEAD_UUID
                    );
                    // Each record opens on its own, unary.
                    assert_eq!(
                        key.decrypt(&record, &items[i].1).await.unwrap().0,
                        items[i].0
                    );
                    records.push((record.to_vec(), items[i].1.clone(), items[i].0.clone()));
                }
            }
        }
        // Decrypt them back as a batch, with a tampered record and a wrong
        // context in the middle: only those two fail.
        records[2].0[60] ^= 1;
        records[5].1 = ctx_a.clone();
        records[5].1.insert("extra".into(), "1".into());
        let opened = key.decrypt_many(&records, |(r, c, _)| (r, c)).await;
        for (i, r) in opened.results.iter().enumerate() {
            if i == 2 || i == 5 {
                assert!(matches!(r, Err(Error::Unauthentic)), "{i}: {r:?}");
            } else {
                let (range, _) = r.as_ref().unwrap();
                assert_eq!(&opened.plaintexts[range.clone()], &records[i].2[..], "{i}");
            }
        }
    });
}

/// AWSCURRENT moved back past `min_decryption_version` is refused at the
/// refresh: the key keeps sealing under the version it had, never under
/// one it would refuse to open.
#[test]
fn a_rollback_past_the_minimum_is_not_used_to_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let first = KeySource::open_local(dir.path(), "k").await.unwrap();
        let store = first.store.clone();
        let old = store.get_stage("k", "AWSCURRENT").await.unwrap().info.id;
        let key = NamedKey::load(first, Limits::default()).await.unwrap();
        // Two rotations, then a minimum at the newest version.
        key.rotate().await.unwrap();
        let (_, newest) = key.rotate().await.unwrap();
        let mut source = KeySource::open_local(dir.path(), "k").await.unwrap();
        source.min_version = Some(newest.clone());
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let ctx = BTreeMap::new();
        let (_, master) = key.encrypt(b"before", &ctx).await.unwrap();
        assert_eq!(master.version.as_str(), newest);
        // A writer moves AWSCURRENT back to the first version.
        store
            .update_stage("k", "AWSCURRENT", Some(&old), Some(&newest))
            .await
            .unwrap();
        let refused = key.refresh().await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("older than min_decryption_version"),
            "{refused}"
        );
        let (ct, master) = key.encrypt(b"after", &ctx).await.unwrap();
        assert_eq!(
            master.version.as_str(),
            newest,
            "still the last good version"
        );
        assert_eq!(key.decrypt(&ct, &ctx).await.unwrap().0, b"after");
    });
}

/// Without a minimum too, AWSCURRENT moved back to an older version is
/// refused at the refresh; a new replica (a restart) accepts it.
#[test]
fn awscurrent_never_moves_back_on_a_running_replica() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let store = source.store.clone();
        let first = store.get_stage("k", "AWSCURRENT").await.unwrap().info.id;
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let (_, newest) = key.rotate().await.unwrap();
        store
            .update_stage("k", "AWSCURRENT", Some(&first), Some(&newest))
            .await
            .unwrap();
        let refused = key.refresh().await.unwrap_err();
        assert!(refused.to_string().contains("moved back"), "{refused}");
        let ctx = BTreeMap::new();
        let (_, master) = key.encrypt(b"x", &ctx).await.unwrap();
        assert_eq!(master.version.as_str(), newest);
        let restarted = NamedKey::load(
            KeySource::open_local(dir.path(), "k").await.unwrap(),
            Limits::default(),
        )
        .await
        .unwrap();
        let (_, master) = restarted.encrypt(b"x", &ctx).await.unwrap();
        assert_eq!(
            master.version.as_str(),
            first,
            "a restart accepts the rollback"
        );
    });
}

/// A pinned batch (a column) keeps sealing under the version it began with
/// when a rotation lands mid-way and its data key runs out: the column
/// answers with one version, and every record opens. An unpinned batch
/// moves on to the new version.
#[test]
fn a_column_keeps_its_version_across_a_rotation() {
    let limits = Limits {
        data_key: DataKeyLimits {
            max_records: 2,
            ..DataKeyLimits::default()
        },
        ..Limits::default()
    };
    with_key(limits, async |key| {
        let ctx = BTreeMap::new();
        let mut pinned = seal::SealBatch::pinned(&key, 1024);
        let mut loose = seal::SealBatch::new(&key, 1024);
        let encode = |aad: &mut Vec<u8>| {
            crate::primitives::context::encode_into(&ctx, aad);
            Ok(())
        };
        let first = pinned.seal_with(b"a", encode).await.unwrap();
        loose.seal_with(b"a", encode).await.unwrap();
        let before = pinned.version().unwrap().version.clone();
        key.rotate().await.unwrap();
        let mut ranges = vec![first];
        for _ in 0..4 {
            ranges.push(pinned.seal_with(b"b", encode).await.unwrap());
            loose.seal_with(b"b", encode).await.unwrap();
        }
        assert_eq!(pinned.version().unwrap().version, before);
        assert_ne!(loose.version().unwrap().version, before);
        for r in ranges {
            let record = &pinned.out[r];
            let (_, version) = key.decrypt(record, &ctx).await.unwrap();
            assert_eq!(&*version, before.as_str());
        }
    });
}

/// ROTATION.md, "Retiring old versions", fail closed: with a minimum set,
/// a version whose creation time is unknown is refused as retired; a
/// minimum the store lacks, or one newer than AWSCURRENT, stops the load.
#[test]
fn retirement_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = || async { KeySource::open_local(dir.path(), "k").await.unwrap() };
        let key = NamedKey::load(source().await, Limits::default())
            .await
            .unwrap();
        let (v1, v2) = key.rotate().await.unwrap();
        assert_ne!(v1, v2);

        // The minimum at v1: v1 itself and v2 pass, an undated version is refused.
        let mut at_v1 = source().await;
        at_v1.min_version = Some(v1.clone());
        let key = NamedKey::load(at_v1, Limits::default()).await.unwrap();
        let created = key.snapshot().current.created;
        key.versions.check_retired("k", &v2, created).unwrap();
        assert!(matches!(
            key.versions.check_retired("k", &v2, None),
            Err(Error::Retired { .. })
        ));

        // A minimum the store does not have.
        let mut missing = source().await;
        missing.min_version = Some(uuid::Uuid::new_v4().to_string());
        assert!(NamedKey::load(missing, Limits::default()).await.is_err());

        // A minimum newer than AWSCURRENT: AWSCURRENT back on v1.
        source()
            .await
            .store
            .update_stage("k", "AWSCURRENT", Some(&v1), Some(&v2))
            .await
            .unwrap();
        let mut newer = source().await;
        newer.min_version = Some(v2.clone());
        let err = NamedKey::load(newer, Limits::default()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("AWSCURRENT is older than min_decryption_version"),
            "{err}"
        );
    });
}

mod eviction;
mod missing;
mod redaction;
mod rollback;
