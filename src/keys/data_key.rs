//! The data key in use for encryption, and the limits on its reuse.
//!
//! Nonces are `prefix(4 random bytes) || counter(8 bytes, big-endian)`: the
//! counter makes them unique under one data key with no syscall per record,
//! and the random prefix keeps two processes apart should a data key ever be
//! shared. A data key retires at `max_records`, which is far below the 2^32
//! messages NIST SP 800-38D allows per key for random 96-bit nonces (our
//! nonces are deterministic, so the bound that matters is the counter's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::keys::master_key::MasterKey;
use crate::primitives::crypto::{AeadKey, NONCE_BYTES};
use crate::primitives::record::WRAPPED_LEN;

/// When a data key is replaced.
#[derive(Debug, Clone, Copy)]
pub struct DataKeyLimits {
    /// Age after which a new data key is made.
    pub max_age: Duration,
    /// Records sealed under one data key.
    pub max_records: u64,
    /// Plaintext bytes sealed under one data key.
    pub max_bytes: u64,
}

/// The hard ceiling on `max_records`: the counter space we allow per key.
pub const MAX_RECORDS_CEILING: u64 = 1 << 32;

impl Default for DataKeyLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_records: 1 << 24,
            max_bytes: 1 << 36,
        }
    }
}

/// A data key sealing records: its expanded key, its wrapping under one
/// master-key version, and its use so far.
pub struct DataKey {
    pub(super) master: Arc<MasterKey>,
    pub(super) wrapped: [u8; WRAPPED_LEN],
    pub(super) key: Arc<AeadKey>,
    prefix: [u8; 4],
    records: AtomicU64,
    bytes: AtomicU64,
    born: Instant,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("version", &self.master.version)
            .field("records", &self.records.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub(super) fn new(
        master: Arc<MasterKey>,
        wrapped: [u8; WRAPPED_LEN],
        key: Arc<AeadKey>,
        prefix: [u8; 4],
    ) -> Self {
        Self {
            master,
            wrapped,
            key,
            prefix,
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Claims one record of `len` bytes and returns its nonce, or `None` if
    /// the key is spent. A claimed counter value is never handed out twice,
    /// even when the claim fails on the byte limit.
    pub(super) fn claim(&self, len: usize, limits: &DataKeyLimits) -> Option<[u8; NONCE_BYTES]> {
        if self.born.elapsed() >= limits.max_age {
            return None;
        }
        self.claim_counted(len, limits)
    }

    /// [`DataKey::claim`] without the age check, for the records of a batch
    /// after its first (a batch lasts milliseconds; the age limit is minutes).
    pub(super) fn claim_counted(
        &self,
        len: usize,
        limits: &DataKeyLimits,
    ) -> Option<[u8; NONCE_BYTES]> {
        let n = self.records.fetch_add(1, Ordering::Relaxed);
        if n >= limits.max_records.min(MAX_RECORDS_CEILING) {
            return None;
        }
        let len = len as u64;
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > limits.max_bytes {
            return None;
        }
        let mut nonce = [0u8; NONCE_BYTES];
        let (p, c) = nonce.split_at_mut(4);
        p.copy_from_slice(&self.prefix);
        c.copy_from_slice(&n.to_be_bytes());
        Some(nonce)
    }

    pub(super) fn records_used(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::primitives::crypto::KeyBytes;
    use crate::primitives::record::VersionId;
    use std::collections::HashSet;

    fn key() -> DataKey {
        let k = KeyBytes::random().unwrap();
        let master = Arc::new(MasterKey {
            version: VersionId::new("v-test").unwrap(),
            created: None,
            kek: AeadKey::new(&k).unwrap(),
            check_value: [0; 8],
            index_root: KeyBytes::random().unwrap(),
        });
        DataKey::new(
            master,
            [0; WRAPPED_LEN],
            Arc::new(AeadKey::new(&k).unwrap()),
            [1, 2, 3, 4],
        )
    }

    /// FORMAT.md: a record nonce is the key's 4-byte prefix and a 64-bit
    /// big-endian counter that starts at 0.
    #[test]
    fn the_counter_starts_at_zero_after_the_prefix() {
        let dk = key();
        let limits = DataKeyLimits::default();
        assert_eq!(
            dk.claim(1, &limits).unwrap(),
            [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            dk.claim(1, &limits).unwrap(),
            [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn nonces_are_unique_across_threads() {
        let dk = Arc::new(key());
        let limits = DataKeyLimits::default();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dk = dk.clone();
                std::thread::spawn(move || {
                    (0..20_000)
                        .map(|_| dk.claim(16, &limits).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for n in h.join().unwrap() {
                assert!(seen.insert(n), "nonce repeated");
            }
        }
        assert_eq!(seen.len(), 80_000);
    }

    #[test]
    fn limits_retire_the_key() {
        let dk = key();
        let limits = DataKeyLimits {
            max_records: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
        };
        assert!(dk.claim(10, &limits).is_some());
        assert!(dk.claim(95, &limits).is_none(), "byte limit");
        assert!(
            dk.claim(1, &limits).is_none(),
            "a key spent by bytes stays spent"
        );
        let dk = key();
        for _ in 0..3 {
            assert!(dk.claim(1, &limits).is_some());
        }
        assert!(dk.claim(1, &limits).is_none(), "record limit");
        let old = DataKeyLimits {
            max_age: Duration::ZERO,
            ..limits
        };
        assert!(key().claim(1, &old).is_none(), "age limit");
    }
}
