//! The audit line's timestamp, formatted without an allocation.

use std::time::{SystemTime, UNIX_EPOCH};

use std::io::Write;

use serde::Serialize;
use time::OffsetDateTime;

/// When an event happened: serialized as RFC 3339 in UTC with nanoseconds,
/// trailing zeros dropped (`2026-03-14T09:26:53.4812071Z`), as the `time`
/// crate writes it, but without an allocation: the date and time of day are
/// formatted once a second per thread and reused.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

thread_local! {
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch.
fn second(secs: u64) -> [u8; 19] {
    let mut out = [b'0'; 19];
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut w = &mut out[..];
    let _ = write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    out
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let date = SECOND.with(|c| {
            let (cached, text) = c.get();
            if cached == secs {
                text
            } else {
                let text = second(secs);
                c.set((secs, text));
                text
            }
        });
        f.write_str(std::str::from_utf8(&date).map_err(|_| std::fmt::Error)?)?;
        let mut nanos = since.subsec_nanos();
        if nanos != 0 {
            let mut digits = 9;
            while nanos.is_multiple_of(10) {
                nanos /= 10;
                digits -= 1;
            }
            write!(f, ".{nanos:0digits$}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn timestamps_match_the_time_crates_rfc3339() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_773_480_413, 0),
            UNIX_EPOCH + Duration::new(1_773_480_413, 481_207_113),
            UNIX_EPOCH + Duration::new(1_773_480_413, 100_000_000),
            UNIX_EPOCH + Duration::new(1_773_480_413, 1),
            UNIX_EPOCH + Duration::new(4_102_444_799, 999_999_999),
            SystemTime::now(),
        ];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let nanos = u32::try_from(x % 1_000_000_000).unwrap();
            // Round some to whole milli- and microseconds: trailing zeros.
            let nanos = match x % 4 {
                0 => nanos - nanos % 1_000_000,
                1 => nanos - nanos % 1_000,
                _ => nanos,
            };
            cases.push(UNIX_EPOCH + Duration::new(x % 4_102_444_800, nanos));
        }
        for t in cases {
            let ours = Timestamp(t).to_string();
            let theirs = OffsetDateTime::from(t).format(&Rfc3339).unwrap();
            assert_eq!(ours, theirs);
        }
    }
}
