//! The refresh schedule: jitter and backoff.

use super::*;

/// README and CONFIG.md: refreshes every `refresh_secs` ±10%, spread so
/// that replicas do not refresh in step.
#[test]
fn refreshes_are_jittered_by_ten_percent_either_way() {
    let base = Duration::from_secs(300);
    let draws: Vec<Duration> = (0..2000).map(|_| jittered(base)).collect();
    let (lo, hi) = (base.mul_f64(0.9), base.mul_f64(1.1));
    assert!(draws.iter().all(|d| (lo..=hi).contains(d)), "outside ±10%");
    let min = draws.iter().min().copied().unwrap_or(base);
    let max = draws.iter().max().copied().unwrap_or(base);
    // 2,000 uniform draws reach the outer 2% at each end but for a
    // chance of 0.98^2000 (< 1e-17).
    assert!(
        min < base.mul_f64(0.904) && max > base.mul_f64(1.096),
        "{min:?}..{max:?}"
    );
}

/// CONFIG.md, "Refresh and readiness": after a failed pass the next comes
/// after 1 s, 2 s, 4 s, … doubling up to the interval; a good pass goes
/// back to the interval, and the next failure starts again at 1 s.
#[test]
fn failed_refreshes_back_off_from_one_second_doubling_to_the_interval() {
    let s = Duration::from_secs;
    let mut b = Backoff::new(s(300));
    let failing: Vec<Duration> = (0..11).map(|_| b.next(true)).collect();
    let expected: Vec<Duration> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        .into_iter()
        .map(s)
        .collect();
    assert_eq!(failing, expected);
    assert_eq!(b.next(false), s(300));
    assert_eq!(b.next(false), s(300));
    assert_eq!(b.next(true), s(1));
    assert_eq!(b.next(true), s(2));

    // An interval under a second caps the first retry too.
    let mut short = Backoff::new(Duration::from_millis(500));
    assert_eq!(short.next(true), Duration::from_millis(500));
    assert_eq!(short.next(true), Duration::from_millis(500));
}
