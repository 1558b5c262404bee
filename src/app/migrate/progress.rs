//! `envelope migrate`'s progress report: the rows left, counted only when
//! a bar shows them.

use crate::app::progress::Progress;

/// Counts the rows left (after `last`) for the bar's length.
pub(super) async fn start(
    db: &tokio_postgres::Client,
    table: &str,
    id: &str,
    column: &str,
    last: i64,
) -> anyhow::Result<Progress> {
    if !Progress::on_terminal() {
        return Ok(Progress::new(0, "rows"));
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
    Ok(Progress::new(u64::try_from(total).unwrap_or(0), "rows"))
}
