//! Progress of long CLI work (`envelope migrate`, `envelope rewrap`): a bar
//! with rate and ETA when stderr is a terminal, and otherwise a plain line
//! with the count and rate after the first batch and then at most every
//! [`PLAIN_EVERY`], so a log shows the run moving without a line per batch.

use std::time::{Duration, Instant};

/// How often a plain progress line is printed, at most.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// A progress report on stderr.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    /// When the last plain line was printed.
    last: Option<Instant>,
}

impl Progress {
    /// Whether a bar would be drawn: a caller can skip counting the total
    /// when it would not be shown.
    pub fn on_terminal() -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// A report of `total` `unit`s (a bar only on a terminal).
    pub fn new(total: u64, unit: &str) -> Self {
        let mut report = Self::plain();
        if Self::on_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            report.bar = Some(bar);
        }
        report
    }

    /// A report of a stream of `unit`s of unknown length (stdin): a count
    /// and rate on a terminal.
    pub fn stream(unit: &str) -> Self {
        let mut report = Self::plain();
        if Self::on_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            let template = format!("{{spinner}} {{pos}} {unit}, {{per_sec}}");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            report.bar = Some(bar);
        }
        report
    }

    /// Prints `line` on stderr, above the bar when one is drawn.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn plain() -> Self {
        Self {
            bar: None,
            started: Instant::now(),
            last: None,
        }
    }

    /// A report of the non-blank lines of the file at `path` (counted only
    /// for a bar): the records `rewrap` will count.
    pub fn of_lines(path: &std::path::Path, unit: &str) -> Self {
        use std::io::BufRead;
        if !Self::on_terminal() {
            return Self::new(0, unit);
        }
        let lines = std::fs::File::open(path)
            .map(|f| {
                std::io::BufReader::new(f)
                    .lines()
                    .filter(|l| l.as_ref().is_ok_and(|l| !l.trim().is_empty()))
                    .count()
            })
            .unwrap_or(0);
        Self::new(u64::try_from(lines).unwrap_or(0), unit)
    }

    /// `n` more done, of `done` so far; without a bar, `line` (with the
    /// rate) is printed if it is due.
    pub fn batch(&mut self, n: u64, done: u64, line: &str) {
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                if let Some(shown) = self.plain_line(done, line, Instant::now()) {
                    eprintln!("{shown}");
                }
            }
        }
    }

    /// The plain line for `done` at `now`, if one is due: after the first
    /// batch, then once [`PLAIN_EVERY`] has passed since the last.
    fn plain_line(&mut self, done: u64, line: &str, now: Instant) -> Option<String> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < PLAIN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        Some(format!("{line} ({rate:.0}/s)"))
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_after_the_first_batch_and_then_every_interval() {
        let mut p = Progress::plain();
        let t0 = p.started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        let shown: Vec<Option<String>> = [
            (1, 100),
            (5, 600),
            (9, 1000),
            (11, 1100),
            (12, 1200),
            (21, 2100),
        ]
        .into_iter()
        .map(|(s, done)| p.plain_line(done, &format!("{done} so far"), at(s)))
        .collect();
        assert_eq!(
            shown,
            [
                Some("100 so far (100/s)".to_owned()),
                None,
                None,
                Some("1100 so far (100/s)".to_owned()),
                None,
                Some("2100 so far (100/s)".to_owned()),
            ]
        );
    }
}
