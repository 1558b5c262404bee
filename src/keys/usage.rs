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

/// What became of a record under a compromised version that the server
/// was asked to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused (Decrypt by default, Rewrap always).
    Refused,
    /// Decrypted, in a migration window the key allows.
    Decrypted,
    /// Opened and sealed again under a fresh data key.
    Reencrypted,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Decrypted => "decrypted",
            Outcome::Reencrypted => "reencrypted",
        }
    }
}

/// One version's reads, and the data keys it wrapped.
#[derive(Debug, Default)]
pub struct VersionUse {
    opened: AtomicU64,
    /// Unix seconds of the last read; 0 for never.
    last_read: AtomicI64,
    /// Data keys wrapped under the version by this process.
    wraps: AtomicU64,
    /// Records under the version, once compromised, by [`Outcome`].
    compromised: [AtomicU64; 3],
    /// The same, all outcomes, in two windows: (window index, in it, in
    /// the one before). Touched only for compromised versions.
    recent: Mutex<(i64, u64, u64)>,
    /// The windows' width in seconds (0: [`RECENT_WINDOW_SECS`]).
    window: i64,
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

    /// Counts `n` records under the version, marked compromised, that the
    /// server was asked to open.
    pub fn compromised(&self, outcome: Outcome, n: u64) {
        if let Some(c) = self.compromised.get(outcome as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        let window = now().div_euclid(self.window());
        if let Ok(mut r) = self.recent.lock() {
            *r = match window - r.0 {
                0 => (window, r.1 + n, r.2),
                1 => (window, n, r.1),
                _ => (window, n, 0),
            };
        }
    }

    /// Records under the version asked to be opened since it was
    /// compromised, in this window and the one before (so between one and
    /// two windows of history; 0 once two windows pass with none).
    fn recent(&self, now: i64) -> u64 {
        let window = now.div_euclid(self.window());
        let Ok(r) = self.recent.lock() else { return 0 };
        match window - r.0 {
            0 => r.1 + r.2,
            1 => r.1,
            _ => 0,
        }
    }

    fn window(&self) -> i64 {
        if self.window > 0 {
            self.window
        } else {
            RECENT_WINDOW_SECS
        }
    }
}

/// The default width of the windows behind the "recent" compromised-record gauge.
pub const RECENT_WINDOW_SECS: i64 = 60;

/// The reads of one key name, by version.
#[derive(Debug, Default)]
pub struct Usage {
    versions: Mutex<HashMap<Arc<str>, Arc<VersionUse>>>,
    /// The width of the compromised-record windows, seconds (0: the default).
    window: i64,
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
    /// Records under it, once compromised, asked to be opened since start:
    /// refused, decrypted (a migration window), re-encrypted.
    pub compromised: [u64; 3],
    /// Of those, in the last one to two windows (`limits.compromised_window_secs`).
    pub compromised_recent: u64,
}

impl Usage {
    /// Counters whose compromised-record gauge covers one to two windows
    /// of `window`.
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            versions: Mutex::default(),
            window: i64::try_from(window.as_secs()).unwrap_or(RECENT_WINDOW_SECS),
        }
    }

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
        let u = Arc::new(VersionUse {
            window: self.window,
            ..VersionUse::default()
        });
        map.insert(Arc::from(version), u.clone());
        u
    }

    /// Every tracked version's figures, by version id.
    pub fn figures(&self) -> Vec<UseFigures> {
        let Ok(map) = self.versions.lock() else {
            return Vec::new();
        };
        let now = now();
        let mut out: Vec<UseFigures> = map
            .iter()
            .map(|(v, u)| UseFigures {
                version: v.to_string(),
                opened: u.opened.load(Ordering::Relaxed),
                last_read: Some(u.last_read.load(Ordering::Relaxed)).filter(|t| *t > 0),
                wraps: u.wraps.load(Ordering::Relaxed),
                compromised: u.compromised.each_ref().map(|c| c.load(Ordering::Relaxed)),
                compromised_recent: u.recent(now),
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
                    compromised: [0; 3],
                    compromised_recent: 0,
                },
                UseFigures {
                    version: "v2".into(),
                    opened: 2,
                    last_read: Some(200),
                    wraps: 0,
                    compromised: [0; 3],
                    compromised_recent: 0,
                },
            ]
        );
        for i in 0..MAX_TRACKED + 10 {
            u.of(&format!("x{i}")).record(1, 1);
        }
        assert_eq!(u.figures().len(), MAX_TRACKED);
    }

    #[test]
    fn compromised_records_are_counted_by_outcome_and_age_out_of_the_recent_gauge() {
        let v = VersionUse::default();
        v.compromised(Outcome::Refused, 2);
        v.compromised(Outcome::Reencrypted, 5);
        let counts = v.compromised.each_ref().map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [2, 0, 5]);
        let t = now();
        assert_eq!(v.recent(t), 7);
        let w = RECENT_WINDOW_SECS;
        // Next window: still shown; two windows on: gone.
        assert_eq!(v.recent(t + w), 7);
        assert_eq!(v.recent(t + 2 * w), 0);
        // The counters stay.
        assert_eq!(v.compromised[0].load(Ordering::Relaxed), 2);
    }
}
