//! ROTATION.md, "No rollback", where creation dates cannot tell versions
//! apart (Secrets Manager's are to the second).

use super::*;
use crate::keys::rotation::Rotator;

/// Sets every version's creation time in the local store to one second.
fn same_second(dir: &std::path::Path) {
    let path = dir.join("secrets").join("k.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for v in file["versions"].as_array_mut().unwrap() {
        v["created"] = serde_json::json!("2026-11-28T10:00:00Z");
    }
    std::fs::write(&path, file.to_string()).unwrap();
}

/// AWSCURRENT moved back to a version this replica used as AWSCURRENT
/// before is refused, even when both were created in the same second.
#[test]
fn awscurrent_never_moves_back_to_a_former_current_of_the_same_second() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let store = source.store.clone();
        let kms = source.kms.clone();
        same_second(dir.path());
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let first = key.snapshot().current.version.as_str().to_owned();
        // Another process rotates; both versions carry the same second.
        let rotator = Rotator {
            store: store.as_ref(),
            kms: kms.as_ref(),
            key_name: "k",
            secret_id: "k",
        };
        let (_, newest) = rotator.rotate().await.unwrap();
        same_second(dir.path());
        key.refresh().await.unwrap();
        assert_eq!(key.snapshot().current.version.as_str(), newest);
        // A writer moves AWSCURRENT back to the first.
        store
            .update_stage("k", "AWSCURRENT", Some(&first), Some(&newest))
            .await
            .unwrap();
        let refused = key.refresh().await.unwrap_err();
        assert!(refused.to_string().contains("moved back"), "{refused}");
        let ctx = BTreeMap::new();
        let (_, master) = key.encrypt(b"x", &ctx).await.unwrap();
        assert_eq!(master.version.as_str(), newest);
    });
}

/// ROTATION.md: the last 64 former AWSCURRENT versions are remembered; the
/// one before them is forgotten (creation dates still refuse it).
#[test]
fn the_last_64_former_currents_are_remembered() {
    use crate::keys::key_set::MAX_FORMER;
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = KeySource::open_local(dir.path(), "k").await.unwrap();
        let (store, kms) = (source.store.clone(), source.kms.clone());
        let key = NamedKey::load(source, Limits::default()).await.unwrap();
        let mut currents = vec![key.snapshot().current.version.as_str().to_owned()];
        let rotator = Rotator {
            store: store.as_ref(),
            kms: kms.as_ref(),
            key_name: "k",
            secret_id: "k",
        };
        for _ in 0..=MAX_FORMER {
            let (_, newest) = rotator.rotate().await.unwrap();
            key.refresh().await.unwrap();
            currents.push(newest);
        }
        assert_eq!(MAX_FORMER, 64);
        // The 66 currents: the last is current, the 64 before it remembered.
        let remembered = &key.snapshot().formerly_current;
        assert_eq!(remembered[..], currents[1..=MAX_FORMER]);
    });
}

/// ROTATION.md, retirement "Compared by": a version created in the same
/// second as `min_decryption_version` is not retired (Secrets Manager's
/// dates are to the second, and only an older date retires).
#[test]
fn a_version_of_the_minimums_second_is_not_retired() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let source = || async { KeySource::open_local(dir.path(), "k").await.unwrap() };
        let key = NamedKey::load(source().await, Limits::default())
            .await
            .unwrap();
        let (v1, v2) = key.rotate().await.unwrap();
        same_second(dir.path());
        let mut at_v2 = source().await;
        at_v2.min_version = Some(v2.clone());
        let key = NamedKey::load(at_v2, Limits::default()).await.unwrap();
        let second = "2026-11-28T10:00:00Z";
        let second =
            time::OffsetDateTime::parse(second, &time::format_description::well_known::Rfc3339)
                .unwrap();
        key.check_retired(&v1, Some(second)).unwrap();
        // One second earlier is retired.
        let earlier = second - time::Duration::seconds(1);
        assert!(matches!(
            key.check_retired(&v1, Some(earlier)),
            Err(Error::Retired { .. })
        ));
    });
}
