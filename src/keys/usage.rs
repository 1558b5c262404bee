//! Re-encryption debt as the server sees it: per master-key version, how
//! many records (and data-key blobs) it has opened and when it last did.
//! A version that is still read is still holding records somewhere; one that
//! has not been read for a chosen window is a candidate for
//! `min_decryption_version` (docs/ROTATION.md). Counting costs one atomic
//! add and one store per record; the clock is read once per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most versions tracked per key name; a store holds far fewer.
pub const MAX_TRACKED: usize = 1024;

/// How many data keys one KEK may wrap: AES-GCM with random 96-bit nonces
/// stays within NIST SP 800-38D's bound of 2^32 invocations per key.
pub const WRAP_BUDGET: u64 = 1 << 32;

/// One version's reads, and the data keys it wrapped.
#[derive(Debug, Default)]
pub struct VersionUse {
    opened: AtomicU64,
    /// Unix seconds of the last read; 0 for never.
    last_read: AtomicI64,
    /// Data keys wrapped under the version by this process.
    wraps: AtomicU64,
}

impl VersionUse {
    /// Counts `n` records opened at `now` (Unix seconds).
    pub fn record(&self, n: u64, now: i64) {
        self.opened.fetch_add(n, Ordering::Relaxed);
        self.last_read.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts one data key wrapped under the version.
    pub fn wrapped(&self) {
        self.wraps.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reads of one key name, by version.
#[derive(Debug, Default)]
pub struct Usage {
    versions: Mutex<HashMap<Arc<str>, Arc<VersionUse>>>,
}

/// One version's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseFigures {
    /// The version id.
    pub version: String,
    /// Records and blobs opened since start.
    pub opened: u64,
    /// Unix seconds of the last read, if any.
    pub last_read: Option<i64>,
    /// Data keys wrapped under it since start (against [`WRAP_BUDGET`]).
    pub wraps: u64,
}

impl Usage {
    /// The counters of `version` (a detached one past [`MAX_TRACKED`]).
    pub fn of(&self, version: &str) -> Arc<VersionUse> {
        let Ok(mut map) = self.versions.lock() else {
            return Arc::default();
        };
        if let Some(u) = map.get(version) {
            return u.clone();
        }
        if map.len() >= MAX_TRACKED {
            return Arc::default();
        }
        let u = Arc::new(VersionUse::default());
        map.insert(Arc::from(version), u.clone());
        u
    }

    /// Every tracked version's figures, by version id.
    pub fn figures(&self) -> Vec<UseFigures> {
        let Ok(map) = self.versions.lock() else {
            return Vec::new();
        };
        let mut out: Vec<UseFigures> = map
            .iter()
            .map(|(v, u)| UseFigures {
                version: v.to_string(),
                opened: u.opened.load(Ordering::Relaxed),
                last_read: Some(u.last_read.load(Ordering::Relaxed)).filter(|t| *t > 0),
                wraps: u.wraps.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.version.cmp(&b.version));
        out
    }
}

/// Now, in Unix seconds (once per call, not per record).
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_per_version_and_bounded() {
        let u = Usage::default();
        u.of("v1").record(3, 100);
        u.of("v1").record(1, 90);
        u.of("v2").record(2, 200);
        assert_eq!(
            u.figures(),
            vec![
                UseFigures {
                    version: "v1".into(),
                    opened: 4,
                    last_read: Some(100),
                    wraps: 0,
                },
                UseFigures {
                    version: "v2".into(),
                    opened: 2,
                    last_read: Some(200),
                    wraps: 0,
                },
            ]
        );
        for i in 0..MAX_TRACKED + 10 {
            u.of(&format!("x{i}")).record(1, 1);
        }
        assert_eq!(u.figures().len(), MAX_TRACKED);
    }
}
