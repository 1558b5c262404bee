//! The per-caller quota on blind-index tokens. Tokens for every value of a
//! low-entropy field (a CPF has about 10^9) match an index column back to
//! its values, so computing tokens is metered: a token bucket per second
//! and a count per day, per caller identity, from the caller's `index`
//! grants ([`IndexQuota`]). Bounded: at most [`MAX_CALLERS`] callers are
//! tracked; past that, a new caller is refused until a day's entries expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many blind-index tokens a caller may compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexQuota {
    /// Tokens per second (also the burst).
    pub per_second: u64,
    /// Tokens per day.
    pub per_day: u64,
}

impl IndexQuota {
    /// Without a grant that says otherwise: 10,000 a second, 10 million a day.
    pub const DEFAULT: IndexQuota = IndexQuota {
        per_second: 10_000,
        per_day: 10_000_000,
    };
}

/// Most callers tracked at once.
pub const MAX_CALLERS: usize = 10_000;
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    day_began: Instant,
    day_used: u64,
}

/// Every caller's use so far.
#[derive(Debug, Default)]
pub struct IndexMeter {
    callers: Mutex<HashMap<String, Bucket>>,
}

impl IndexMeter {
    /// Takes `n` tokens from `caller`'s quota, or refuses (nothing taken).
    pub fn take(&self, caller: Option<&str>, quota: IndexQuota, n: u64) -> bool {
        self.take_at(caller, quota, n, Instant::now())
    }

    fn take_at(&self, caller: Option<&str>, quota: IndexQuota, n: u64, now: Instant) -> bool {
        let Ok(mut callers) = self.callers.lock() else {
            return false;
        };
        let name = caller.unwrap_or("anonymous");
        if !callers.contains_key(name) {
            if callers.len() >= MAX_CALLERS {
                callers.retain(|_, b| now.duration_since(b.day_began) < DAY);
                if callers.len() >= MAX_CALLERS {
                    return false;
                }
            }
            callers.insert(
                name.to_owned(),
                Bucket {
                    tokens: quota.per_second as f64,
                    refilled: now,
                    day_began: now,
                    day_used: 0,
                },
            );
        }
        let Some(b) = callers.get_mut(name) else {
            return false;
        };
        let rate = quota.per_second as f64;
        let elapsed = now.duration_since(b.refilled).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.refilled = now;
        if now.duration_since(b.day_began) >= DAY {
            b.day_began = now;
            b.day_used = 0;
        }
        let want = n as f64;
        if want > b.tokens || b.day_used.saturating_add(n) > quota.per_day {
            return false;
        }
        b.tokens -= want;
        b.day_used += n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most MAX_CALLERS callers are tracked: one more is refused (known
    /// callers still served) until a day's entries expire.
    #[test]
    fn callers_past_the_bound_are_refused_until_a_day_expires() {
        let m = IndexMeter::default();
        let q = IndexQuota {
            per_second: 10,
            per_day: 100,
        };
        let t0 = Instant::now();
        assert_eq!(MAX_CALLERS, 10_000, "SEARCH.md's figure");
        for i in 0..MAX_CALLERS {
            assert!(m.take_at(Some(&format!("caller-{i}")), q, 1, t0));
        }
        assert!(!m.take_at(Some("one-more"), q, 1, t0));
        assert!(
            m.take_at(Some("caller-0"), q, 1, t0),
            "a known caller is served"
        );
        assert!(!m.take_at(Some("one-more"), q, 1, t0 + DAY - Duration::from_secs(1)));
        assert!(m.take_at(Some("one-more"), q, 1, t0 + DAY));
        assert!(m.callers.lock().map_or(usize::MAX, |c| c.len()) <= MAX_CALLERS);
    }

    #[test]
    fn the_rate_and_the_day_are_both_enforced() {
        let m = IndexMeter::default();
        let q = IndexQuota {
            per_second: 100,
            per_day: 250,
        };
        let t0 = Instant::now();
        assert!(m.take_at(Some("a"), q, 100, t0));
        assert!(!m.take_at(Some("a"), q, 1, t0), "the burst is spent");
        // Other callers have their own.
        assert!(m.take_at(Some("b"), q, 100, t0));
        assert!(m.take_at(Some("a"), q, 100, t0 + Duration::from_secs(1)));
        // 200 of 250 used today: a refilled bucket still cannot exceed the day.
        assert!(!m.take_at(Some("a"), q, 60, t0 + Duration::from_secs(2)));
        assert!(m.take_at(Some("a"), q, 50, t0 + Duration::from_secs(2)));
        assert!(!m.take_at(Some("a"), q, 1, t0 + Duration::from_secs(3)));
        // A day later the count starts again.
        assert!(m.take_at(Some("a"), q, 100, t0 + DAY + Duration::from_secs(3)));
        // A request larger than the burst is refused, never partly taken.
        assert!(!m.take_at(Some("c"), q, 101, t0));
        assert!(m.take_at(Some("c"), q, 100, t0));
    }
}
