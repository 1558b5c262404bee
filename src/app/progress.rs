//! Progress of long CLI work (`envelope migrate`, `envelope rewrap`): a bar
//! with rate and ETA when stderr is a terminal, and otherwise one plain
//! line per batch, so logs and tests can follow a run.

/// A progress report on stderr.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// Whether a bar would be drawn: a caller can skip counting the total
    /// when it would not be shown.
    pub fn on_terminal() -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// A report of `total` `unit`s (a bar only on a terminal).
    pub fn new(total: u64, unit: &str) -> Self {
        if !Self::on_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}");
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Self(Some(bar))
    }

    /// A report of the lines of the file at `path` (counted only for a bar).
    pub fn of_lines(path: &std::path::Path, unit: &str) -> Self {
        use std::io::BufRead;
        if !Self::on_terminal() {
            return Self(None);
        }
        let lines = std::fs::File::open(path)
            .map(|f| std::io::BufReader::new(f).lines().count())
            .unwrap_or(0);
        Self::new(u64::try_from(lines).unwrap_or(0), unit)
    }

    /// `n` more done; without a bar, `line` is printed.
    pub fn batch(&self, n: u64, line: &str) {
        match &self.0 {
            Some(bar) => bar.inc(n),
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
