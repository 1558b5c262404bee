//! A key name's loaded master-key versions over time: the snapshot the
//! request path reads without a lock, the periodic refresh, and versions
//! fetched on demand when a record names one that is not loaded — one fetch
//! at a time, with a negative cache and a token bucket so that records naming
//! made-up versions cannot drain the store's request quota.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::error::Error;
use super::key_set::{KeySet, Loaded, evict_unstaged, read_set};
use super::limits::Limits;
use super::master_key::MasterKey;
use super::source::KeySource;
use crate::backends::store::{StoreError, VersionInfo};
use crate::primitives::record::VersionId;

/// Versions remembered as missing, at most.
const MAX_MISSING: usize = 1024;
/// On-demand version fetches allowed at once, per key name.
pub const FETCH_BURST: f64 = 50.0;
/// On-demand version fetches allowed per second, per key name, after the burst.
pub const FETCH_PER_SEC: f64 = 10.0;

/// The versions of one key name.
#[derive(Debug)]
pub(super) struct Versions {
    state: ArcSwap<KeySet>,
    fetch_lock: tokio::sync::Mutex<()>,
    refresh_lock: tokio::sync::Mutex<()>,
    missing: std::sync::Mutex<HashMap<Box<[u8]>, Instant>>,
    fetch_bucket: std::sync::Mutex<(f64, Instant)>,
    refresh_failures: AtomicU64,
    /// Why the last refresh failed (a refused version, an unreachable
    /// store), until one succeeds: for `/readyz`.
    last_failure: std::sync::Mutex<Option<String>>,
}

impl Versions {
    /// Reads the staged versions; fails without a usable AWSCURRENT.
    pub(super) async fn load(source: &KeySource, limits: &Limits) -> Result<Self, Error> {
        let set = read_set(source, None, limits).await?;
        Ok(Self {
            state: ArcSwap::from_pointee(set),
            fetch_lock: tokio::sync::Mutex::new(()),
            refresh_lock: tokio::sync::Mutex::new(()),
            missing: std::sync::Mutex::new(HashMap::new()),
            fetch_bucket: std::sync::Mutex::new((FETCH_BURST, Instant::now())),
            refresh_failures: AtomicU64::new(0),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// The current snapshot.
    pub(super) fn snapshot(&self) -> Arc<KeySet> {
        self.state.load_full()
    }

    /// The AWSCURRENT version.
    pub(super) fn current(&self) -> Arc<MasterKey> {
        self.state.load().current.clone()
    }

    /// Whether `version` is the AWSCURRENT version and may encrypt (is not
    /// marked compromised), without a reference count.
    pub(super) fn is_current(&self, version: &VersionId) -> bool {
        let set = self.state.load();
        set.current.version == *version && !set.current_compromised
    }

    /// Whether `version` is marked compromised.
    pub(super) fn is_compromised(&self, version: &str) -> bool {
        self.state.load().compromised.iter().any(|v| v == version)
    }

    /// Failed refreshes since start.
    pub(super) fn refresh_failures(&self) -> u64 {
        self.refresh_failures.load(Ordering::Relaxed)
    }

    /// Why the last refresh failed, if it did.
    pub(super) fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|l| l.clone())
    }

    /// Time since the store was last read successfully.
    pub(super) fn staleness(&self) -> Duration {
        let age = OffsetDateTime::now_utc() - self.state.load().loaded_at;
        age.try_into().unwrap_or(Duration::ZERO)
    }

    /// Refuses a version created before the key's `min_decryption_version`.
    pub(super) fn check_retired(
        &self,
        key: &str,
        version: &str,
        created: Option<OffsetDateTime>,
    ) -> Result<(), Error> {
        match (self.state.load().retired_before, created) {
            // Fail closed: with a minimum set, a version of unknown age is refused.
            (Some(before), created) if created.is_none_or(|c| c < before) => Err(Error::Retired {
                key: key.to_owned(),
                version: version.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Re-reads the store. Keeps loaded versions (no KMS call for them) and
    /// versions fetched on demand; on failure the old snapshot stays.
    pub(super) async fn refresh(&self, source: &KeySource, limits: &Limits) -> Result<(), Error> {
        let _guard = self.refresh_lock.lock().await;
        let old = self.state.load_full();
        let set = match read_set(source, Some(&old), limits).await {
            Ok(set) => set,
            Err(e) => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if let Ok(mut last) = self.last_failure.lock() {
            *last = None;
        }
        if let Ok(mut missing) = self.missing.lock() {
            // A version may have been created since it was found missing.
            missing.clear();
        }
        // Keep versions fetched on demand while the store was being read.
        let set = Arc::new(set);
        self.state.rcu(|cur| {
            let extra: Vec<_> = cur
                .versions
                .iter()
                .filter(|(k, _)| !set.versions.contains_key(*k))
                .map(|(k, l)| (k.clone(), l.unstaged()))
                .collect();
            if extra.is_empty() {
                return set.clone();
            }
            let mut versions = set.versions.clone();
            versions.extend(extra);
            evict_unstaged(&mut versions, limits.max_loaded_versions);
            Arc::new(set.with_versions(versions))
        });
        Ok(())
    }

    /// The loaded version named by `raw`, fetching it from the store on
    /// demand: one fetch at a time per key name, and a version the store
    /// lacks is remembered as missing for a while, so a flood of bogus
    /// versions costs at most one store call each per TTL.
    pub(super) async fn master_for(
        &self,
        source: &KeySource,
        limits: &Limits,
        raw: &[u8],
    ) -> Result<Arc<MasterKey>, Error> {
        if let Some(l) = self.state.load().versions.get(raw) {
            return Ok(l.master.clone());
        }
        let version = VersionId::from_raw(raw)?;
        let not_found = || Error::VersionNotFound {
            key: source.name.clone(),
            version: version.as_str().to_owned(),
        };
        let ttl = limits.negative_cache_ttl;
        if self.recently_missing(raw, ttl) {
            return Err(not_found());
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(l) = self.state.load().versions.get(raw) {
            return Ok(l.master.clone());
        }
        if self.recently_missing(raw, ttl) {
            return Err(not_found());
        }
        // Only an actual store call takes a token.
        if !self.fetch_allowed() {
            return Err(Error::FetchThrottled(source.name.clone()));
        }
        let value = match source.store.get(&source.secret_id, version.as_str()).await {
            Ok(v) => v,
            Err(StoreError::VersionNotFound { .. }) => {
                self.remember_missing(raw, ttl);
                return Err(not_found());
            }
            Err(e) => return Err(e.into()),
        };
        let info = VersionInfo {
            stages: Vec::new(),
            ..value.info.clone()
        };
        let master = Arc::new(source.parse(info, &value.value).await?);
        tracing::info!(key = %source.name, version = %version.as_str(), "loaded master-key version on demand");
        self.state.rcu(|set| {
            let mut versions = set.versions.clone();
            evict_unstaged(&mut versions, limits.max_loaded_versions.saturating_sub(1));
            versions.insert(
                raw.into(),
                Loaded {
                    master: master.clone(),
                    stages: Vec::new(),
                },
            );
            set.with_versions(versions)
        });
        Ok(master)
    }

    fn recently_missing(&self, raw: &[u8], ttl: Duration) -> bool {
        let Ok(missing) = self.missing.lock() else {
            return false;
        };
        missing.get(raw).is_some_and(|at| at.elapsed() < ttl)
    }

    fn remember_missing(&self, raw: &[u8], ttl: Duration) {
        if let Ok(mut missing) = self.missing.lock() {
            missing.retain(|_, at| at.elapsed() < ttl);
            if missing.len() >= MAX_MISSING {
                // Forget the oldest rather than stop remembering.
                let oldest = missing
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    missing.remove(&k);
                }
            }
            missing.insert(raw.into(), Instant::now());
        }
    }

    /// Takes a token for one on-demand store fetch: at most
    /// [`FETCH_BURST`] at once, refilled at [`FETCH_PER_SEC`] per second.
    fn fetch_allowed(&self) -> bool {
        let Ok(mut bucket) = self.fetch_bucket.lock() else {
            return false;
        };
        take_token(&mut bucket, Instant::now())
    }
}

/// Takes one token from a bucket of (tokens, last update) at `now`, after
/// adding [`FETCH_PER_SEC`] per second since the last update, up to
/// [`FETCH_BURST`].
fn take_token(bucket: &mut (f64, Instant), now: Instant) -> bool {
    let (tokens, at) = *bucket;
    let refilled =
        (tokens + now.saturating_duration_since(at).as_secs_f64() * FETCH_PER_SEC).min(FETCH_BURST);
    if refilled < 1.0 {
        *bucket = (refilled, now);
        return false;
    }
    *bucket = (refilled - 1.0, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ROTATION.md and CONFIG.md: on-demand fetches take a burst of 50,
    /// then 10 per second, and an idle bucket holds no more than 50.
    #[test]
    fn fetch_tokens_refill_at_ten_per_second_up_to_the_burst() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut bucket = (FETCH_BURST, start);
        let taken = (0..60).filter(|_| take_token(&mut bucket, start)).count();
        assert_eq!(taken, 50);
        // One token per 100 ms.
        assert!(!take_token(&mut bucket, ms(90)));
        assert!(take_token(&mut bucket, ms(101)));
        assert!(!take_token(&mut bucket, ms(150)));
        // A second later (half a token was left), ten more.
        let in_a_second = (0..20)
            .filter(|_| take_token(&mut bucket, ms(1160)))
            .count();
        assert_eq!(in_a_second, 10);
        // An hour idle refills the burst, no more.
        let after_idle = (0..100)
            .filter(|_| take_token(&mut bucket, ms(3_600_000)))
            .count();
        assert_eq!(after_idle, 50);
    }

    /// SECURITY.md, "Limits": at most MAX_MISSING versions are remembered
    /// as missing; past that the oldest is forgotten, not the newest.
    #[tokio::test]
    async fn at_most_max_missing_versions_are_remembered() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else {
            panic!("no temporary directory")
        };
        let source = KeySource::open_local(dir.path(), "k").await;
        let Ok(source) = source else {
            panic!("no local key")
        };
        let Ok(v) = Versions::load(&source, &Limits::default()).await else {
            panic!("the key did not load")
        };
        let ttl = Duration::from_secs(3600);
        let raw = |i: usize| i.to_be_bytes().to_vec();
        for i in 0..=MAX_MISSING {
            v.remember_missing(&raw(i), ttl);
            if i == 0 {
                // Strictly the oldest, whatever the clock's resolution.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let missing = v.missing.lock().map(|m| {
            (
                m.len(),
                m.contains_key(raw(0).as_slice()),
                m.contains_key(raw(MAX_MISSING).as_slice()),
            )
        });
        assert_eq!(missing.ok(), Some((MAX_MISSING, false, true)));
    }
}
