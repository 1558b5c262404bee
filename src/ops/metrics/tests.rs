//! The scrape-time gauges against real local keys.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;

use super::Metrics;
use crate::backends::store::local::LocalStore;
use crate::backends::store::{SecretStore, SecretValue, StoreError, VersionInfo};
use crate::keys::{KeySource, Keyring, Limits, NamedKey};

/// A local store that does not say when a version was created, as a
/// store whose GetSecretValue lacks `CreatedDate` would.
#[derive(Debug)]
struct Undated(LocalStore);

fn undated(mut v: SecretValue) -> SecretValue {
    v.info.created = None;
    v
}

#[async_trait]
impl SecretStore for Undated {
    async fn describe(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let mut all = self.0.describe(secret_id).await?;
        for v in &mut all {
            v.created = None;
        }
        Ok(all)
    }
    async fn get(&self, secret_id: &str, version_id: &str) -> Result<SecretValue, StoreError> {
        self.0.get(secret_id, version_id).await.map(undated)
    }
    async fn get_stage(&self, secret_id: &str, stage: &str) -> Result<SecretValue, StoreError> {
        self.0.get_stage(secret_id, stage).await.map(undated)
    }
    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), StoreError> {
        self.0.put(secret_id, version_id, value, stages).await
    }
    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.0
            .update_stage(secret_id, stage, move_to, remove_from)
            .await
    }
}

/// OPERATIONS.md, `envelope_master_key_age_seconds`: a version with no
/// creation time has no age series; it still has its check-value series.
#[tokio::test]
async fn a_version_with_no_creation_time_has_no_age_series() {
    let dir = tempfile::tempdir().unwrap();
    let dated = KeySource::open_local(dir.path(), "dated").await.unwrap();
    let mut plain = KeySource::open_local(dir.path(), "undated").await.unwrap();
    plain.store = Arc::new(Undated(
        LocalStore::open(&dir.path().join("secrets")).unwrap(),
    ));
    let keyring = Arc::new(Keyring::new([
        NamedKey::load(dated, Limits::default()).await.unwrap(),
        NamedKey::load(plain, Limits::default()).await.unwrap(),
    ]));
    let out = Metrics::new().render(&keyring);
    let series = |name: &str, key: &str| {
        out.lines()
            .filter(|l| l.starts_with(&format!("envelope_{name}{{")))
            .filter(|l| l.contains(&format!("key=\"{key}\"")))
            .count()
    };
    assert_eq!(series("master_key_age_seconds", "dated"), 1, "{out}");
    assert_eq!(series("master_key_age_seconds", "undated"), 0, "{out}");
    assert_eq!(series("master_key_check", "undated"), 1, "{out}");
}
