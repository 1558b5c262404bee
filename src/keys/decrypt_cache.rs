//! Data keys unwrapped for decryption, cached by their wrapped bytes, so a
//! record whose data key was seen before opens with no unwrap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use time::OffsetDateTime;

use crate::primitives::crypto::AeadKey;

/// A data key unwrapped for decryption.
#[derive(Debug)]
pub struct CachedKey {
    /// The expanded data key.
    pub(super) key: Arc<AeadKey>,
    /// The master-key version that wrapped it.
    pub(super) version: Arc<str>,
    /// When that version was created, if known.
    pub(super) created: Option<OffsetDateTime>,
    /// That version's read counters.
    pub(super) usage: Arc<super::usage::VersionUse>,
}

/// Counts evictions for the metrics.
#[derive(Debug, Clone)]
struct Evictions(Arc<AtomicU64>);

impl quick_cache::Lifecycle<Bytes, Arc<CachedKey>> for Evictions {
    type RequestState = ();
    fn begin_request(&self) {}
    fn on_evict(&self, _state: &mut (), _key: Bytes, _val: Arc<CachedKey>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Cache = quick_cache::sync::Cache<
    Bytes,
    Arc<CachedKey>,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    Evictions,
>;

/// A bounded cache of unwrapped data keys, keyed by version ‖ wrapped key
/// (a record's "wrap slot"), with its hit, miss and eviction counts.
#[derive(Debug)]
pub(super) struct DecryptCache {
    cache: Cache,
    evictions: Arc<AtomicU64>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DecryptCache {
    /// A cache of at most `entries` keys (at least one).
    pub(super) fn new(entries: usize) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        Self {
            cache: quick_cache::sync::Cache::with(
                entries.max(1),
                entries.max(1) as u64,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                Evictions(evictions.clone()),
            ),
            evictions,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key for `slot`, counting the hit or miss.
    pub(super) fn get(&self, slot: &[u8]) -> Option<Arc<CachedKey>> {
        let hit = self.cache.get(slot);
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Remembers the key for `slot`.
    pub(super) fn insert(&self, slot: Bytes, key: Arc<CachedKey>) {
        self.cache.insert(slot, key);
    }

    /// (entries, hits, misses, evictions).
    pub(super) fn figures(&self) -> (u64, u64, u64, u64) {
        (
            self.cache.len() as u64,
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.evictions.load(Ordering::Relaxed),
        )
    }
}
