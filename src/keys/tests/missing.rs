//! CONFIG.md `missing_version_ttl_secs`: versions the store did not have.

use super::*;
use crate::keys::master_key::new_secret_value;

/// A missing version is remembered for the TTL, so asking again costs no
/// fetch token; `0` turns that off; a refresh clears the list, so a version
/// created since is found.
#[test]
fn missing_versions_are_remembered_until_a_refresh_and_not_at_ttl_zero() {
    let id = uuid::Uuid::new_v4().to_string();
    let raw = record::VersionId::new(&id).unwrap().raw().to_vec();
    let asks = async |key: &NamedKey| {
        let mut throttled = 0;
        for _ in 0..60 {
            if matches!(key.master_for(&raw).await, Err(Error::FetchThrottled(_))) {
                throttled += 1;
            }
        }
        throttled
    };
    // Remembered: one fetch, then 59 answers from the list.
    with_key(Limits::default(), async |key| {
        assert_eq!(asks(&key).await, 0);
        // The version appears; a refresh forgets it was missing.
        let value = new_secret_value("k", &id, key.source.kms.as_ref())
            .await
            .unwrap();
        key.source
            .store
            .put("k", &id, &value, &["envelope-pin-x"])
            .await
            .unwrap();
        assert!(matches!(
            key.master_for(&raw).await,
            Err(Error::VersionNotFound { .. })
        ));
        key.refresh().await.unwrap();
        key.master_for(&raw).await.unwrap();
    });
    // TTL 0: every ask is a fetch, and the burst of 50 runs out.
    let no_ttl = Limits {
        negative_cache_ttl: std::time::Duration::ZERO,
        ..Limits::default()
    };
    with_key(no_ttl, async |key| {
        assert_eq!(asks(&key).await, 10);
    });
}
