//! A compromised version on one in-process key over a local store: what
//! each use of its records may still do, and that nothing seals under it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;

use super::super::*;
use crate::backends::store::{AWSCURRENT, AWSPENDING, compromised_label};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn is_compromised_refusal(e: &Error, version: &str) -> bool {
    matches!(e, Error::Compromised { version: v, .. } if v == version)
}

/// Marking a current version rotates at once; records under it are
/// refused by Decrypt, Rewrap and UnwrapDataKey, re-encrypted under a new
/// data key of the new version, and nothing seals under it again.
#[test]
fn a_compromised_version_is_only_reencrypted_and_never_sealed_under() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let store = source.store.clone();
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let ctx = BTreeMap::from([("t".to_owned(), "u".to_owned())]);
        let (old_ct, v) = key.encrypt(b"secret", &ctx).await.unwrap();
        let v = v.version.as_str().to_owned();
        let (_, blob, _) = key.generate_data_key(&ctx).await.unwrap();

        let current = key.mark_compromised(&v).await.unwrap();
        assert_ne!(current, v, "a compromised AWSCURRENT rotates at once");
        let labels = store.describe("k").await.unwrap();
        let marked = labels.iter().find(|i| i.id == v).unwrap();
        assert!(marked.has(&compromised_label(&v)), "{marked:?}");
        assert!(!marked.has(AWSCURRENT));
        assert_eq!(key.compromised_versions(), vec![v.clone()]);

        let e = key.decrypt(&old_ct, &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let e = key.rewrap(&old_ct, &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let e = key.unwrap_data_key(&blob, &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let opened = key.decrypt_many(&[(&old_ct, &ctx)], |(c, x)| (c, x)).await;
        assert!(is_compromised_refusal(
            opened.results[0].as_ref().unwrap_err(),
            &v
        ));

        let (done, flagged) = key
            .reencrypt_many(&[(&old_ct, &ctx)], |(c, x)| (c.as_slice(), *x, &[]))
            .await;
        assert_eq!(flagged, 1);
        let (new_ct, master, _) = done.into_iter().next().unwrap().unwrap();
        assert_eq!(master.version.as_str(), current);
        // A new data key: the wrapped key in the header differs, not only its version.
        let (old_p, new_p) = (
            crate::primitives::record::parse(&old_ct, crate::primitives::record::Kind::Record)
                .unwrap(),
            crate::primitives::record::parse(&new_ct, crate::primitives::record::Kind::Record)
                .unwrap(),
        );
        assert_ne!(old_p.wrapped, new_p.wrapped);
        assert_eq!(key.decrypt(&new_ct, &ctx).await.unwrap().0, b"secret");

        let counts = key
            .version_use()
            .into_iter()
            .find(|u| u.version == v)
            .unwrap();
        // Refused: Decrypt, Rewrap, UnwrapDataKey, DecryptBatch; re-encrypted: one.
        assert_eq!(counts.compromised, [4, 0, 1]);
        assert_eq!(counts.compromised_recent, 5);

        // A writer moves AWSCURRENT back to the compromised version: this
        // replica keeps the new one (no rollback), and a fresh replica
        // that knows the mark from configuration alone refuses to encrypt.
        store
            .update_stage("k", &compromised_label(&v), None, Some(&v))
            .await
            .unwrap();
        store
            .update_stage("k", AWSCURRENT, Some(&v), Some(&current))
            .await
            .unwrap();
        assert!(key.refresh().await.is_err());
        let (_, m) = key.encrypt(b"x", &ctx).await.unwrap();
        assert_eq!(m.version.as_str(), current);
        assert!(key.is_compromised(&v), "a removed label does not unmark");
        let mut source = KeySource::open_local(dir.path(), "k").await.unwrap();
        source.compromised = vec![v.clone()];
        let restarted = NamedKey::load(source, Limits::default()).await.unwrap();
        let e = restarted.encrypt(b"x", &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let e = restarted.generate_data_key(&ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        // A column, whose batch is pinned to one version: every row refused.
        let rows = crate::keys::column::Rows {
            field: "",
            values: &[],
        };
        let column = restarted
            .encrypt_column(&ctx, rows, &[b"a", b"b"])
            .await
            .unwrap();
        assert!(column.version.is_none() && column.records.is_empty());
        for r in &column.results {
            assert!(
                matches!(r, Err(e) if is_compromised_refusal(e, &v)),
                "{r:?}"
            );
        }
        // Nor is a good record moved onto it, by rewrap or re-encryption.
        let e = restarted.rewrap(&new_ct, &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let (done, _) = restarted
            .reencrypt_many(&[(&new_ct, &ctx)], |(c, x)| (&c[..], *x, &[]))
            .await;
        let e = done.into_iter().next().unwrap().unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        let e = restarted.decrypt(&old_ct, &ctx).await.unwrap_err();
        assert!(is_compromised_refusal(&e, &v), "{e}");
        assert_eq!(restarted.decrypt(&new_ct, &ctx).await.unwrap().0, b"secret");
    });
}

/// A key that allows decrypts for a migration window opens the records
/// and counts each one as decrypted.
#[test]
fn a_migration_window_allows_decrypts_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let ctx = BTreeMap::new();
        let (ct, v) = key.encrypt(b"kept", &ctx).await.unwrap();
        let v = v.version.as_str().to_owned();
        let (data_key, blob, _) = key.generate_data_key(&ctx).await.unwrap();
        let no_rows = crate::keys::column::Rows {
            field: "",
            values: &[],
        };
        let column = key.encrypt_column(&ctx, no_rows, &[b"col"]).await.unwrap();
        let cell = column
            .records
            .slice(column.results[0].as_ref().unwrap().clone());
        key.rotate().await.unwrap();
        // Not current: marked without a rotation.
        let current = key.snapshot().current.version.as_str().to_owned();
        assert_eq!(key.mark_compromised(&v).await.unwrap(), current);
        let mut source = KeySource::open_local(dir.path(), "k").await.unwrap();
        source.allow_compromised_decrypts = true;
        let window = NamedKey::load(source, Limits::default()).await.unwrap();
        assert!(window.is_compromised(&v), "the label alone marks it");
        assert_eq!(window.decrypt(&ct, &ctx).await.unwrap().0, b"kept");
        let opened = window.decrypt_many(&[(&ct, &ctx)], |(c, x)| (c, x)).await;
        assert_eq!(opened.compromised, 1);
        // DecryptColumn too.
        let opened = window
            .decrypt_column(&ctx, no_rows, std::slice::from_ref(&cell))
            .await
            .unwrap();
        assert_eq!(opened.compromised, 1);
        let range = opened.results[0].as_ref().unwrap().0.clone();
        assert_eq!(&opened.plaintexts[range], b"col");
        // Outside the window, the column's record is refused like any other.
        let refused = key
            .decrypt_column(&ctx, no_rows, std::slice::from_ref(&cell))
            .await
            .unwrap();
        assert!(matches!(&refused.results[0], Err(e) if is_compromised_refusal(e, &v)));
        let e = window.rewrap(&ct, &ctx).await.unwrap_err();
        assert!(
            is_compromised_refusal(&e, &v),
            "rewrap is refused even then: {e}"
        );
        // UnwrapDataKey opens its blobs too (CONFIG.md, the window).
        let unwrapped = window.unwrap_data_key(&blob, &ctx).await.unwrap();
        assert_eq!(unwrapped.0.expose(), data_key.expose());
        let counts = window
            .version_use()
            .into_iter()
            .find(|u| u.version == v)
            .unwrap();
        assert_eq!(counts.compromised, [1, 4, 0]);
        // An unknown version cannot be marked.
        assert!(matches!(
            key.mark_compromised("no-such-version").await,
            Err(Error::VersionNotFound { .. })
        ));
    });
}

/// A pending version that carries the compromise label is neither tested
/// good nor promoted, whichever entry point runs the steps.
#[test]
fn a_marked_pending_version_is_never_promoted() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let (store, kms) = (source.store.clone(), source.kms.clone());
        let rotator = crate::keys::rotation::Rotator {
            store: store.as_ref(),
            kms: kms.as_ref(),
            key_name: "k",
            secret_id: "k",
        };
        let token = "0f8e2c7a-9d41-4b3e-a6f5-1c2d3e4f5a6b";
        rotator.create_secret(token).await.unwrap();
        store
            .update_stage("k", &compromised_label(token), Some(token), None)
            .await
            .unwrap();
        for r in [
            rotator.test_secret(token).await,
            rotator.finish_secret(token).await,
        ] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("marked compromised"), "{e}");
        }
        let current = store.get_stage("k", AWSCURRENT).await.unwrap().info.id;
        assert_ne!(current, token);
    });
}

/// ROTATION.md, MarkCompromised step 2: marking a pending version takes
/// AWSPENDING from it (and leaves AWSCURRENT where it was).
#[test]
fn marking_a_pending_version_takes_awspending_from_it() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let (store, kms) = (source.store.clone(), source.kms.clone());
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let rotator = crate::keys::rotation::Rotator {
            store: store.as_ref(),
            kms: kms.as_ref(),
            key_name: "k",
            secret_id: "k",
        };
        let before = store.get_stage("k", AWSCURRENT).await.unwrap().info.id;
        let token = "0f8e2c7a-9d41-4b3e-a6f5-1c2d3e4f5a6b";
        rotator.create_secret(token).await.unwrap();
        assert_eq!(key.mark_compromised(token).await.unwrap(), before);
        let infos = store.describe("k").await.unwrap();
        let marked = infos.iter().find(|i| i.id == token).unwrap();
        assert!(!marked.has(AWSPENDING), "{marked:?}");
        assert!(marked.has(&compromised_label(token)), "{marked:?}");
        assert!(infos.iter().all(|i| !i.has(AWSPENDING)), "{infos:?}");
    });
}
