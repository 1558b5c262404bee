//! CONFIG.md `max_loaded_versions`: which master-key versions a key holds.

use super::*;
use crate::keys::rotation::Rotator;

/// The ids of the versions `key` holds, sorted.
fn held(key: &NamedKey) -> Vec<String> {
    let mut ids: Vec<String> = key
        .snapshot()
        .versions
        .values()
        .map(|l| l.master.version.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    ids.sort();
    ids
}

/// Staged versions (AWSCURRENT, AWSPREVIOUS, AWSPENDING) are never
/// evicted; unstaged ones go oldest-created first, and a version fetched on
/// demand takes the place of the oldest unstaged one.
#[test]
fn staged_versions_are_never_evicted_and_unstaged_go_oldest_first() {
    let limits = Limits {
        max_loaded_versions: 3,
        ..Limits::default()
    };
    with_key(limits, async |key| {
        let mut v = vec![key.snapshot().current.version.as_str().to_owned()];
        for _ in 0..4 {
            v.push(key.rotate().await.unwrap().1);
        }
        // v4 AWSCURRENT, v3 AWSPREVIOUS, v2 the newest unstaged.
        assert_eq!(held(&key), sorted(&[&v[2], &v[3], &v[4]]));

        // v0 fetched on demand: v2, the oldest unstaged, makes room.
        let raw = record::VersionId::new(&v[0]).unwrap().raw().to_vec();
        key.master_for(&raw).await.unwrap();
        assert_eq!(held(&key), sorted(&[&v[0], &v[3], &v[4]]));

        // A pending version makes three staged ones: the unstaged one goes.
        let token = uuid::Uuid::new_v4().to_string();
        let rotator = Rotator {
            store: key.source.store.as_ref(),
            kms: key.source.kms.as_ref(),
            key_name: "k",
            secret_id: "k",
        };
        rotator.create_secret(&token).await.unwrap();
        key.refresh().await.unwrap();
        assert_eq!(held(&key), sorted(&[&v[3], &v[4], &token]));

        // Below the staged count, eviction still leaves every staged version.
        let mut versions = key.snapshot().versions.clone();
        key_set::evict_unstaged(&mut versions, 1);
        assert_eq!(versions.len(), 3);
    });
}
