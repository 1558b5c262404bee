//! Per-key-name state: the loaded master-key versions, the data key in use
//! for encryption and the cache of unwrapped data keys for decryption.
//!
//! The request path reads state through atomically swapped snapshots
//! (`arc-swap`), so it takes no lock and makes no store or KMS call once a
//! data key is warm; locks are taken only to make a new data key or to fetch
//! a version a record names that is not loaded (single flight).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use time::OffsetDateTime;

use crate::backends::kms::Kms;
use crate::backends::store::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretStore, StoreError, VersionInfo,
};
use crate::keys::error::Error;
use crate::keys::master_key::{self, MasterKey};
use crate::primitives::context::ContextLimits;
use crate::primitives::crypto::AeadKey;
use crate::primitives::record::{self, VersionId};

mod data_key;
mod ops;

pub use data_key::{DataKey, DataKeyLimits};
pub use ops::{Opened, Sealed};

/// The stages whose versions are loaded at every refresh.
pub const LOADED_STAGES: [&str; 3] = [AWSCURRENT, AWSPREVIOUS, AWSPENDING];

/// Bounds on what a key name may hold and accept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest plaintext accepted.
    pub max_plaintext_bytes: usize,
    /// Context limits.
    pub context: ContextLimits,
    /// Data-key reuse limits.
    pub data_key: DataKeyLimits,
    /// Unwrapped data keys held for decryption, per key name.
    pub decrypt_cache_entries: usize,
    /// Versions held per key name, staged ones included.
    pub max_loaded_versions: usize,
    /// How long a version the store did not have is remembered as missing.
    pub negative_cache_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Below the 4 MiB message limit, so an oversize plaintext gets our
            // clear INVALID_ARGUMENT rather than the transport's OUT_OF_RANGE.
            max_plaintext_bytes: 4 * 1024 * 1024 - 64 * 1024,
            context: ContextLimits::default(),
            data_key: DataKeyLimits::default(),
            decrypt_cache_entries: 10_000,
            max_loaded_versions: 32,
            negative_cache_ttl: Duration::from_secs(30),
        }
    }
}

/// A loaded version with the stages it had at the last refresh.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The version's key.
    pub master: Arc<MasterKey>,
    /// Its stages (empty for a version fetched on demand).
    pub stages: Vec<String>,
}

/// One consistent view of a key name's versions.
#[derive(Debug)]
pub struct KeySet {
    /// Versions by their record encoding.
    pub versions: HashMap<Box<[u8]>, Loaded>,
    /// The AWSCURRENT version.
    pub current: Arc<MasterKey>,
    /// When the store was last read successfully.
    pub loaded_at: OffsetDateTime,
    /// Versions carrying a pin label at the last refresh.
    pub pinned: Vec<String>,
    /// Records under versions created before this instant are refused
    /// (the key's `min_decryption_version`).
    pub retired_before: Option<OffsetDateTime>,
}

/// Counts the decryption cache's evictions for the metrics.
#[derive(Debug, Clone)]
struct Evictions(Arc<AtomicU64>);

impl quick_cache::Lifecycle<Bytes, Arc<CachedKey>> for Evictions {
    type RequestState = ();
    fn begin_request(&self) {}
    fn on_evict(&self, _state: &mut (), _key: Bytes, _val: Arc<CachedKey>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type DecryptCache = quick_cache::sync::Cache<
    Bytes,
    Arc<CachedKey>,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    Evictions,
>;

/// A data key unwrapped for decryption, cached by its wrapped bytes.
#[derive(Debug)]
pub struct CachedKey {
    key: Arc<AeadKey>,
    version: Arc<str>,
    created: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
struct Stats {
    refresh_failures: AtomicU64,
    rotation_failures: AtomicU64,
    data_keys_generated: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Figures for KeyStatus.
#[derive(Debug, Clone)]
pub struct CacheFigures {
    /// Failed refreshes since start.
    pub refresh_failures: u64,
    /// Failed rotations started by this process since start.
    pub rotation_failures: u64,
    /// Data keys generated for encryption since start.
    pub data_keys_generated: u64,
    /// Records sealed under the active data key.
    pub active_records: u64,
    /// Entries in the decryption cache.
    pub decrypt_entries: u64,
    /// Decryption cache hits.
    pub hits: u64,
    /// Decryption cache misses.
    pub misses: u64,
    /// Decryption cache evictions.
    pub evictions: u64,
}

/// Where a key name's master-key versions come from and how they are read.
pub struct KeySource {
    /// The key name.
    pub name: String,
    /// The secret holding its versions.
    pub secret_id: String,
    /// The secret store.
    pub store: Arc<dyn SecretStore>,
    /// The KMS that wraps master keys.
    pub kms: Arc<dyn Kms>,
    /// PBKDF2 parameters for passphrase-style secrets.
    pub kdf: master_key::KdfParams,
    /// Refuse records under versions created before this version.
    pub min_version: Option<String>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("name", &self.name)
            .field("secret_id", &self.secret_id)
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    /// A source with no PBKDF2 parameters (Envelope's own secret shape).
    pub fn new(
        name: &str,
        secret_id: &str,
        store: Arc<dyn SecretStore>,
        kms: Arc<dyn Kms>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            secret_id: secret_id.to_owned(),
            store,
            kms,
            kdf: master_key::KdfParams::default(),
            min_version: None,
        }
    }

    /// Fetches and reads one version named by `info`.
    async fn load_version(&self, info: VersionInfo) -> Result<MasterKey, Error> {
        let value = self.store.get(&self.secret_id, &info.id).await?;
        let info = VersionInfo {
            created: value.info.created.or(info.created),
            ..info
        };
        self.parse(info, &value.value).await
    }

    async fn parse(&self, info: VersionInfo, value: &str) -> Result<MasterKey, Error> {
        Ok(master_key::load(
            &self.name,
            &self.secret_id,
            info,
            value,
            self.kms.as_ref(),
            &self.kdf,
        )
        .await?)
    }
}

/// One key name.
pub struct NamedKey {
    source: KeySource,
    /// The name again, shared with metric labels (no allocation per request).
    label: Arc<str>,
    key_id: [u8; record::KEY_ID_LEN],
    limits: Limits,
    state: ArcSwap<KeySet>,
    active: ArcSwapOption<DataKey>,
    data_key_lock: tokio::sync::Mutex<()>,
    fetch_lock: tokio::sync::Mutex<()>,
    refresh_lock: tokio::sync::Mutex<()>,
    missing: std::sync::Mutex<HashMap<Box<[u8]>, Instant>>,
    fetch_bucket: std::sync::Mutex<(f64, Instant)>,
    cache: DecryptCache,
    evictions: Arc<AtomicU64>,
    stats: Stats,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("name", &self.source.name)
            .field("secret_id", &self.source.secret_id)
            .finish_non_exhaustive()
    }
}

const MAX_MISSING: usize = 1024;
/// On-demand version fetches allowed at once, per key name.
pub const FETCH_BURST: f64 = 50.0;
/// On-demand version fetches allowed per second, per key name, after the burst.
pub const FETCH_PER_SEC: f64 = 10.0;

impl NamedKey {
    /// Loads a key name's versions from the store; fails if it has no usable AWSCURRENT.
    pub async fn load(source: KeySource, limits: Limits) -> Result<Self, Error> {
        let set = read_set(&source, None, &limits).await?;
        let evictions = Arc::new(AtomicU64::new(0));
        Ok(Self {
            key_id: record::key_id(&source.name),
            label: source.name.as_str().into(),
            source,
            limits,
            state: ArcSwap::from_pointee(set),
            active: ArcSwapOption::empty(),
            data_key_lock: tokio::sync::Mutex::new(()),
            fetch_lock: tokio::sync::Mutex::new(()),
            refresh_lock: tokio::sync::Mutex::new(()),
            missing: std::sync::Mutex::new(HashMap::new()),
            fetch_bucket: std::sync::Mutex::new((FETCH_BURST, Instant::now())),
            cache: quick_cache::sync::Cache::with(
                limits.decrypt_cache_entries.max(1),
                limits.decrypt_cache_entries.max(1) as u64,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                Evictions(evictions.clone()),
            ),
            evictions,
            stats: Stats::default(),
        })
    }

    /// Refuses a version created before the key's `min_decryption_version`.
    fn check_retired(&self, version: &str, created: Option<OffsetDateTime>) -> Result<(), Error> {
        let set = self.state.load();
        match (set.retired_before, created) {
            // Fail closed: with a minimum set, a version of unknown age is refused.
            (Some(before), created) if created.is_none_or(|c| c < before) => Err(Error::Retired {
                key: self.source.name.clone(),
                version: version.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// A key backed by a local store and root key in `dir`, with a first
    /// version created if needed: for benches, tests and trials.
    pub async fn open_local(
        dir: &std::path::Path,
        name: &str,
        limits: Limits,
    ) -> Result<Self, Error> {
        let store: Arc<dyn SecretStore> = Arc::new(
            crate::backends::store::local::LocalStore::open(&dir.join("secrets"))?,
        );
        let kms: Arc<dyn Kms> = Arc::new(crate::backends::kms::local::LocalKms::open_or_create(
            &dir.join("root.key"),
        )?);
        crate::keys::rotation::ensure_initial_version(store.as_ref(), kms.as_ref(), name, name)
            .await?;
        Self::load(KeySource::new(name, name, store, kms), limits).await
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The key name as a shared string, for metric labels.
    pub fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    /// The secret that holds this key's versions.
    pub fn secret_id(&self) -> &str {
        &self.source.secret_id
    }

    /// Time since the store was last read successfully.
    pub fn staleness(&self) -> Duration {
        let loaded_at = self.state.load().loaded_at;
        let age = OffsetDateTime::now_utc() - loaded_at;
        age.try_into().unwrap_or(Duration::ZERO)
    }

    /// The current snapshot of versions.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.state.load_full()
    }

    /// Re-reads the store. Keeps loaded versions (no KMS call for them) and
    /// versions fetched on demand; on failure the old snapshot stays.
    pub async fn refresh(&self) -> Result<(), Error> {
        let _guard = self.refresh_lock.lock().await;
        let old = self.state.load_full();
        let set = match read_set(&self.source, Some(&old), &self.limits).await {
            Ok(set) => set,
            Err(e) => {
                self.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
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
                .map(|(k, l)| {
                    (
                        k.clone(),
                        Loaded {
                            master: l.master.clone(),
                            stages: Vec::new(),
                        },
                    )
                })
                .collect();
            if extra.is_empty() {
                return set.clone();
            }
            let mut versions = set.versions.clone();
            versions.extend(extra);
            evict_unstaged(&mut versions, self.limits.max_loaded_versions);
            Arc::new(KeySet {
                versions,
                current: set.current.clone(),
                loaded_at: set.loaded_at,
                pinned: set.pinned.clone(),
                retired_before: set.retired_before,
            })
        });
        Ok(())
    }

    /// Cache figures for KeyStatus.
    pub fn figures(&self) -> CacheFigures {
        CacheFigures {
            refresh_failures: self.stats.refresh_failures.load(Ordering::Relaxed),
            rotation_failures: self.stats.rotation_failures.load(Ordering::Relaxed),
            data_keys_generated: self.stats.data_keys_generated.load(Ordering::Relaxed),
            active_records: self.active.load().as_ref().map_or(0, |d| {
                d.records_used().min(self.limits.data_key.max_records)
            }),
            decrypt_entries: self.cache.len() as u64,
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The loaded version named by `raw`, fetching it from the store on
    /// demand: one fetch at a time per key name, and a version the store
    /// lacks is remembered as missing for a while, so a flood of bogus
    /// versions costs at most one store call each per TTL.
    async fn master_for(&self, raw: &[u8]) -> Result<Arc<MasterKey>, Error> {
        if let Some(l) = self.state.load().versions.get(raw) {
            return Ok(l.master.clone());
        }
        let version = VersionId::from_raw(raw)?;
        let not_found = || Error::VersionNotFound {
            key: self.source.name.clone(),
            version: version.as_str().to_owned(),
        };
        if self.recently_missing(raw) {
            return Err(not_found());
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(l) = self.state.load().versions.get(raw) {
            return Ok(l.master.clone());
        }
        if self.recently_missing(raw) {
            return Err(not_found());
        }
        // Only an actual store call takes a token.
        if !self.fetch_allowed() {
            return Err(Error::FetchThrottled(self.source.name.clone()));
        }
        let value = match self
            .source
            .store
            .get(&self.source.secret_id, version.as_str())
            .await
        {
            Ok(v) => v,
            Err(StoreError::VersionNotFound { .. }) => {
                self.remember_missing(raw);
                return Err(not_found());
            }
            Err(e) => return Err(e.into()),
        };
        let info = VersionInfo {
            stages: Vec::new(),
            ..value.info.clone()
        };
        let master = Arc::new(self.source.parse(info, &value.value).await?);
        tracing::info!(key = %self.source.name, version = %version.as_str(), "loaded master-key version on demand");
        self.state.rcu(|set| {
            let mut versions = set.versions.clone();
            evict_unstaged(
                &mut versions,
                self.limits.max_loaded_versions.saturating_sub(1),
            );
            versions.insert(
                raw.into(),
                Loaded {
                    master: master.clone(),
                    stages: Vec::new(),
                },
            );
            KeySet {
                versions,
                current: set.current.clone(),
                loaded_at: set.loaded_at,
                pinned: set.pinned.clone(),
                retired_before: set.retired_before,
            }
        });
        Ok(master)
    }

    fn recently_missing(&self, raw: &[u8]) -> bool {
        let Ok(missing) = self.missing.lock() else {
            return false;
        };
        missing
            .get(raw)
            .is_some_and(|at| at.elapsed() < self.limits.negative_cache_ttl)
    }

    fn remember_missing(&self, raw: &[u8]) {
        if let Ok(mut missing) = self.missing.lock() {
            let ttl = self.limits.negative_cache_ttl;
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
    /// [`FETCH_BURST`] at once, refilled at [`FETCH_PER_SEC`] per second, so
    /// records naming made-up versions cannot drain the store's request quota.
    fn fetch_allowed(&self) -> bool {
        let Ok(mut bucket) = self.fetch_bucket.lock() else {
            return false;
        };
        let (tokens, at) = *bucket;
        let now = Instant::now();
        let refilled =
            (tokens + now.duration_since(at).as_secs_f64() * FETCH_PER_SEC).min(FETCH_BURST);
        if refilled < 1.0 {
            *bucket = (refilled, now);
            return false;
        }
        *bucket = (refilled - 1.0, now);
        true
    }
}

/// Drops versions with no stage, oldest first, until at most `keep` remain.
fn evict_unstaged(versions: &mut HashMap<Box<[u8]>, Loaded>, keep: usize) {
    while versions.len() > keep {
        let oldest = versions
            .iter()
            .filter(|(_, l)| l.stages.is_empty())
            .min_by_key(|(_, l)| l.master.created)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                versions.remove(&k);
            }
            None => break,
        }
    }
}

/// Reads the staged versions of a secret into a [`KeySet`], reusing what
/// `old` already holds.
async fn read_set(
    source: &KeySource,
    old: Option<&KeySet>,
    limits: &Limits,
) -> Result<KeySet, Error> {
    let (name, secret_id) = (source.name.as_str(), source.secret_id.as_str());
    let infos = source.store.describe(secret_id).await?;
    let pinned: Vec<String> = infos
        .iter()
        .filter(|i| {
            i.stages
                .iter()
                .any(|s| s.starts_with(crate::backends::store::PIN_PREFIX))
        })
        .map(|i| i.id.clone())
        .collect();
    let mut versions: HashMap<Box<[u8]>, Loaded> = HashMap::new();
    let mut current = None;
    for info in infos
        .into_iter()
        .filter(|i| LOADED_STAGES.iter().any(|s| i.has(s)))
    {
        let is_current = info.has(AWSCURRENT);
        let raw: Box<[u8]> = match VersionId::new(&info.id) {
            Ok(v) => v.raw().into(),
            Err(e) => {
                let e = Error::MasterKey(master_key::MasterKeyError::Malformed {
                    secret: secret_id.to_owned(),
                    version: info.id.clone(),
                    reason: e.to_string(),
                });
                if is_current {
                    return Err(e);
                }
                tracing::warn!(key = %name, error = %e, "skipping master-key version with an unusable id");
                continue;
            }
        };
        let reused = old
            .and_then(|o| o.versions.get(&raw))
            .map(|l| l.master.clone());
        let master = match reused {
            Some(m) => m,
            None => {
                let loaded = source.load_version(info.clone()).await;
                match loaded {
                    Ok(m) => Arc::new(m),
                    // Only AWSCURRENT is required; a bad PREVIOUS or PENDING must not stop service.
                    Err(e) if !is_current => {
                        tracing::warn!(key = %name, version = %info.id, error = %e, "skipping unreadable master-key version");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if is_current {
            if let Some(other) = &current {
                // Secrets Manager keeps one AWSCURRENT; two means a broken
                // store or emulator. Keep the first, deterministically.
                tracing::warn!(key = %name, first = ?other, second = %info.id, "two versions carry AWSCURRENT; using the first");
            } else {
                current = Some(master.clone());
            }
        }
        versions.insert(
            raw,
            Loaded {
                master,
                stages: info.stages,
            },
        );
    }
    let current = current.ok_or_else(|| Error::NoCurrent(name.to_owned()))?;
    if let Some(o) = old {
        for (raw, l) in &o.versions {
            if !versions.contains_key(raw) {
                versions.insert(
                    raw.clone(),
                    Loaded {
                        master: l.master.clone(),
                        stages: Vec::new(),
                    },
                );
            }
        }
    }
    evict_unstaged(&mut versions, limits.max_loaded_versions);
    let retired_before = match (&source.min_version, old.and_then(|o| o.retired_before)) {
        (None, _) => None,
        // The minimum is fixed for the life of the process: resolve it once.
        (Some(_), Some(known)) => Some(known),
        (Some(min), None) => {
            let raw = VersionId::new(min)?.raw().to_vec();
            let created = match versions.get(raw.as_slice()) {
                Some(l) => l.master.created,
                None => {
                    let info = VersionInfo {
                        id: min.clone(),
                        stages: Vec::new(),
                        created: None,
                    };
                    source.load_version(info).await?.created
                }
            };
            let malformed = |reason: String| {
                Error::MasterKey(master_key::MasterKeyError::Malformed {
                    secret: secret_id.to_owned(),
                    version: min.clone(),
                    reason,
                })
            };
            let created = created.ok_or_else(|| {
                malformed(
                    "min_decryption_version: the store does not say when this version was created"
                        .into(),
                )
            })?;
            // Retiring AWSCURRENT's own predecessors is the point; retiring
            // AWSCURRENT itself would refuse the records being written now.
            if current.created.is_some_and(|c| created > c) {
                return Err(malformed(
                    "min_decryption_version is newer than AWSCURRENT".into(),
                ));
            }
            Some(created)
        }
    };
    Ok(KeySet {
        versions,
        current,
        loaded_at: OffsetDateTime::now_utc(),
        pinned,
        retired_before,
    })
}

/// Every configured key name.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<String, Arc<NamedKey>>,
}

/// The key name an empty request field means.
pub const DEFAULT_KEY: &str = "default";

impl Keyring {
    /// A keyring over loaded key names.
    pub fn new(keys: impl IntoIterator<Item = NamedKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| (k.source.name.clone(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key `name` (empty means `default`).
    pub fn get(&self, name: &str) -> Result<&Arc<NamedKey>, Error> {
        let name = if name.is_empty() { DEFAULT_KEY } else { name };
        self.keys
            .get(name)
            .ok_or_else(|| Error::UnknownKey(name.to_owned()))
    }

    /// All key names in order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<NamedKey>> {
        self.keys.values()
    }
}

impl NamedKey {
    /// Runs the four rotation steps on this key's secret, then reloads it so
    /// the new version encrypts here at once. Returns (previous, new) versions.
    pub async fn rotate(&self) -> Result<(String, String), Error> {
        let rotator = crate::keys::rotation::Rotator {
            store: self.source.store.as_ref(),
            kms: self.source.kms.as_ref(),
            key_name: &self.source.name,
            secret_id: &self.source.secret_id,
        };
        let versions = match rotator.rotate().await {
            Ok(v) => v,
            Err(e) => {
                self.stats.rotation_failures.fetch_add(1, Ordering::Relaxed);
                crate::ops::metrics::get().rotation(&self.source.name, false);
                return Err(e.into());
            }
        };
        crate::ops::metrics::get().rotation(&self.source.name, true);
        self.refresh().await?;
        Ok(versions)
    }
}

/// The most records a data key may seal (2^32, NIST SP 800-38D).
pub fn data_key_ceiling() -> u64 {
    data_key::MAX_RECORDS_CEILING
}

#[cfg(test)]
mod tests;
