//! `envelope migrate`'s progress report.

/// Progress: a bar with rate and ETA on a terminal, plain lines otherwise
/// (one per batch, so logs and tests can follow a run).
pub(super) struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// Counts the rows left (after `last`) for the bar's length.
    pub(super) async fn start(
        db: &tokio_postgres::Client,
        table: &str,
        id: &str,
        column: &str,
        last: i64,
    ) -> anyhow::Result<Self> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Ok(Self(None));
        }
        let total: i64 = db
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} WHERE {id} > $1::bigint AND {column} IS NOT NULL"
                ),
                &[&last],
            )
            .await?
            .get(0);
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows, {per_sec}, ETA {eta}",
        ) {
            bar.set_style(style);
        }
        Ok(Self(Some(bar)))
    }

    pub(super) fn batch(&self, rows: u64, line: &str) {
        match &self.0 {
            Some(bar) => bar.inc(rows),
            None => eprintln!("{line}"),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
