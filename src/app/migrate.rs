//! `envelope migrate`: moves an encrypted `bytea` column of a PostgreSQL
//! table to the key's current master-key version in place, through the
//! server (RewrapBatch, or ReencryptBatch with `--reencrypt`: the plaintext
//! never leaves it).
//!
//! - Keyset pagination by an integer id column; one transaction per batch.
//! - A row is updated only if its value is still the one read (no lost
//!   concurrent writes); once the first batch's answers name the current
//!   version, rows already under it are skipped from their record header,
//!   with no RPC.
//! - A checkpoint row per (table, column, key) in `envelope_migrate_checkpoint`,
//!   written in each batch's transaction: a killed run resumes from the last
//!   committed batch, and a second run finds nothing left to do.
//! - `--dry-run` counts the records per master-key version (the column's
//!   re-encryption debt) without writing.
//! - The password never comes from the command line: the URL (from
//!   `--database-url` or `DATABASE_URL`) may omit it, and `PGPASSWORD` or the
//!   password file (`PGPASSFILE` or `~/.pgpass`, see [`super::pgpass`]) fills it.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use bytes::Bytes;

mod db;
mod progress;

use db::database;

use super::cli::{Target, connect, parse_context, status_err};
use crate::pb;
use crate::primitives::record::{self, Kind, VersionId};

/// What `envelope migrate` takes.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The server.
    #[command(flatten)]
    pub target: Target,
    /// PostgreSQL URL without a password (default: `DATABASE_URL`); the
    /// password comes from `PGPASSWORD` or the password file. `sslmode`
    /// (disable, prefer, require, verify-ca, verify-full) is honoured, and
    /// a server certificate is always verified (against `--db-ca-file`,
    /// `PGSSLROOTCERT`, or the system's roots).
    #[arg(long)]
    pub database_url: Option<String>,
    /// PEM file of the CA(s) that sign the PostgreSQL server's certificate.
    #[arg(long, env = "PGSSLROOTCERT", value_name = "PEM")]
    pub db_ca_file: Option<std::path::PathBuf>,
    /// The table.
    #[arg(long)]
    pub table: String,
    /// Its integer primary-key column.
    #[arg(long)]
    pub id_column: String,
    /// The `bytea` column of records.
    #[arg(long)]
    pub column: String,
    /// Key name.
    #[arg(long, default_value = "default")]
    pub key: String,
    /// Encryption context every record shares, key=value; repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Each row's id is bound into its context under this name (as the
    /// column API does).
    #[arg(long, value_name = "NAME")]
    pub row_field: Option<String>,
    /// A blind index of the key whose token column is rewritten with the
    /// record, to the new version's token, in the same update.
    #[arg(long, requires = "index_column")]
    pub index: Option<String>,
    /// The `bytea` column holding that index's tokens.
    #[arg(long, requires = "index")]
    pub index_column: Option<String>,
    /// At most this many rows a second (0: as fast as it goes).
    #[arg(long, default_value_t = 0)]
    pub max_rate: u64,
    /// Rows per batch (one RewrapBatch and one transaction).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Re-encrypt (ReencryptBatch: a new data key under the current version)
    /// instead of rewrapping: after a compromise, rewrapping keeps the data
    /// key that whoever holds the old version can unwrap.
    #[arg(long)]
    pub reencrypt: bool,
    /// Count records per master-key version; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A SQL identifier, checked and quoted: letters, digits and `_` only.
fn ident(name: &str, what: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        bail!("--{what} {name:?} must be a plain SQL identifier (letters, digits, '_')");
    }
    Ok(format!("\"{name}\""))
}

/// The master-key version a record names, from its header alone.
fn version_of(value: &[u8]) -> Option<String> {
    let parsed = record::parse(value, Kind::Record).ok()?;
    VersionId::from_raw(parsed.version_raw)
        .ok()
        .map(|v| v.as_str().to_owned())
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    scanned: u64,
    rewrapped: u64,
    /// Of the rewritten records, those re-encrypted because a rewrap was
    /// refused (a compromised version).
    reencrypted: u64,
    already_current: u64,
    changed_meanwhile: u64,
    failed: u64,
    before: BTreeMap<String, u64>,
}

/// Runs `envelope migrate`.
pub async fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.batch > 10_000 {
        bail!("--batch must be between 1 and 10,000");
    }
    let table = ident(&args.table, "table")?;
    let id = ident(&args.id_column, "id-column")?;
    let column = ident(&args.column, "column")?;
    let index_column = args
        .index_column
        .as_deref()
        .map(|c| ident(c, "index-column"))
        .transpose()?;
    let context = parse_context(&args.context)?;
    let db = database(args).await?;
    let select = format!(
        "SELECT {id}::bigint, {column} FROM {table} WHERE {id} > $1::bigint AND {column} IS NOT NULL \
         ORDER BY {id} LIMIT $2::bigint"
    );
    let limit = i64::try_from(args.batch).unwrap_or(1000);
    if args.dry_run {
        return dry_run(&db, &select, limit).await;
    }
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS envelope_migrate_checkpoint (\
         tbl text NOT NULL, col text NOT NULL, key text NOT NULL, last_id bigint NOT NULL, \
         updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tbl, col, key))",
    )
    .await
    .context("creating envelope_migrate_checkpoint")?;
    let mut last: i64 = db
        .query_opt(
            "SELECT last_id FROM envelope_migrate_checkpoint WHERE tbl = $1 AND col = $2 AND key = $3",
            &[&args.table, &args.column, &args.key],
        )
        .await?
        .map_or(i64::MIN, |r| r.get(0));
    if last != i64::MIN {
        eprintln!("resuming after {} = {last}", args.id_column);
    }
    let mut grpc = pb::envelope_client::EnvelopeClient::new(connect(&args.target).await?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut current: Option<String> = None;
    // A failed row holds the checkpoint before it, so a rerun retries it.
    let mut first_failure: Option<i64> = None;
    let mut sum = Summary::default();
    let started = std::time::Instant::now();
    let mut progress = progress::start(&db, &table, &id, &column, last).await?;
    let mut db = db;
    loop {
        let rows = db.query(&select, &[&last, &limit]).await?;
        let Some(end) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            break;
        };
        let mut todo: Vec<(i64, Vec<u8>)> = Vec::new();
        for r in &rows {
            let (row_id, value): (i64, Vec<u8>) = (r.get(0), r.get(1));
            sum.scanned += 1;
            let version = version_of(&value).unwrap_or_else(|| "unreadable".to_owned());
            *sum.before.entry(version.clone()).or_default() += 1;
            // Re-encryption skips nothing: a record rewrapped earlier names
            // the current version but still holds its old data key.
            if !args.reencrypt && current.as_deref() == Some(version.as_str()) {
                sum.already_current += 1;
            } else {
                todo.push((row_id, value));
            }
        }
        let items = todo
            .iter()
            .map(|(row_id, value)| {
                let mut ctx = context.clone();
                if let Some(f) = &args.row_field {
                    ctx.insert(f.clone(), row_id.to_string());
                }
                pb::RewrapItem {
                    ciphertext: Bytes::copy_from_slice(value),
                    context: ctx,
                    indexes: args.index.iter().cloned().collect(),
                }
            })
            .collect::<Vec<_>>();
        let key = args.key.clone();
        let results = if items.is_empty() {
            Vec::new()
        } else if args.reencrypt {
            grpc.reencrypt_batch(pb::ReencryptBatchRequest { key, items })
                .await
                .map_err(status_err)?
                .into_inner()
                .results
        } else {
            let mut results = grpc
                .rewrap_batch(pb::RewrapBatchRequest {
                    key: key.clone(),
                    items: items.clone(),
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .results;
            // Records under a compromised version (or a retired one, which
            // fails again) are refused a rewrap: re-encrypt them instead.
            let refused: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches!(&r.result, Some(pb::rewrap_result::Result::Error(e))
                        if e.code == tonic::Code::FailedPrecondition as i32)
                })
                .map(|(i, _)| i)
                .collect();
            if !refused.is_empty() {
                let items = refused
                    .iter()
                    .filter_map(|&i| items.get(i).cloned())
                    .collect();
                let again = grpc
                    .reencrypt_batch(pb::ReencryptBatchRequest { key, items })
                    .await
                    .map_err(status_err)?
                    .into_inner()
                    .results;
                for (&i, r) in refused.iter().zip(again) {
                    if matches!(r.result, Some(pb::rewrap_result::Result::Ciphertext(_))) {
                        sum.reencrypted += 1;
                    }
                    if let Some(slot) = results.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            results
        };
        // The rows to write: id, the value read, its replacement (and token).
        let (mut ids, mut olds, mut news, mut tokens) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if results.len() != todo.len() {
            bail!(
                "the server answered {} results for {} records; nothing of this batch was written",
                results.len(),
                todo.len()
            );
        }
        for ((row_id, old), result) in todo.iter().zip(&results) {
            match &result.result {
                Some(pb::rewrap_result::Result::Ciphertext(new)) => {
                    current.get_or_insert_with(|| result.key_version.clone());
                    if new.as_ref() == old.as_slice() {
                        sum.already_current += 1;
                        continue;
                    }
                    if let Some(name) = &args.index {
                        let token = result
                            .index_tokens
                            .get(name)
                            .context("the server returned no index token")?;
                        tokens.push(token.to_vec());
                    }
                    ids.push(*row_id);
                    olds.push(old.clone());
                    news.push(new.to_vec());
                }
                Some(pb::rewrap_result::Result::Error(e)) => {
                    sum.failed += 1;
                    first_failure.get_or_insert(*row_id);
                    progress.note(&format!("{} = {row_id}: {}", args.id_column, e.message));
                }
                None => {
                    sum.failed += 1;
                    first_failure.get_or_insert(*row_id);
                }
            }
        }
        let tx = db.transaction().await?;
        if !ids.is_empty() {
            // One statement for the batch; a row changed since it was read
            // does not match and is left alone.
            let n = match &index_column {
                Some(ic) => {
                    tx.execute(
                        &format!(
                            "UPDATE {table} AS t SET {column} = v.new, {ic} = v.token \
                             FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[]) AS v(id, old, new, token) \
                             WHERE t.{id} = v.id AND t.{column} = v.old"
                        ),
                        &[&ids, &olds, &news, &tokens],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        &format!(
                            "UPDATE {table} AS t SET {column} = v.new \
                             FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS v(id, old, new) \
                             WHERE t.{id} = v.id AND t.{column} = v.old"
                        ),
                        &[&ids, &olds, &news],
                    )
                    .await?
                }
            };
            sum.rewrapped += n;
            sum.changed_meanwhile += (ids.len() as u64).saturating_sub(n);
        }
        tx.execute(
            "INSERT INTO envelope_migrate_checkpoint (tbl, col, key, last_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tbl, col, key) DO UPDATE SET last_id = EXCLUDED.last_id, updated_at = now()",
            &[&args.table, &args.column, &args.key, &checkpoint_at(end, first_failure)],
        )
        .await?;
        tx.commit().await?;
        last = end;
        if args.max_rate > 0 {
            // Ahead of the allowed pace: wait until the rows scanned so far are due.
            let due = std::time::Duration::from_secs_f64(sum.scanned as f64 / args.max_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        progress.batch(
            rows.len() as u64,
            sum.scanned,
            &format!(
                "{}: up to {} = {end}, {} rewrapped so far",
                args.table, args.id_column, sum.rewrapped
            ),
        );
    }
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    let verb = if args.reencrypt {
        "re-encrypted"
    } else {
        "rewrapped"
    };
    let refused = match sum.reencrypted {
        0 => String::new(),
        n => format!(
            " (of them {n} re-encrypted: a rewrap was refused, as for a compromised version)"
        ),
    };
    println!(
        "scanned {}, {verb} {}{refused}, already current {}, changed meanwhile {}, failed {} in {secs:.1} s ({:.0} rows/s)",
        sum.scanned,
        sum.rewrapped,
        sum.already_current,
        sum.changed_meanwhile,
        sum.failed,
        sum.scanned as f64 / secs.max(1e-9)
    );
    for (v, n) in &sum.before {
        println!("before: {n} records under {v}");
    }
    if sum.failed > 0 {
        bail!(
            "{} records could not be rewrapped (left unchanged)",
            sum.failed
        );
    }
    // Done: the next run starts over (and finds everything current).
    db.execute(
        "DELETE FROM envelope_migrate_checkpoint WHERE tbl = $1 AND col = $2 AND key = $3",
        &[&args.table, &args.column, &args.key],
    )
    .await?;
    Ok(())
}

/// Where a batch ending at `end` leaves the checkpoint: never past a row
/// that failed, so a later run goes back to it.
fn checkpoint_at(end: i64, first_failure: Option<i64>) -> i64 {
    first_failure.map_or(end, |f| end.min(f.saturating_sub(1)))
}

/// Counts the records per master-key version, from their headers.
async fn dry_run(db: &tokio_postgres::Client, select: &str, limit: i64) -> anyhow::Result<()> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = i64::MIN;
    let mut progress = crate::app::progress::Progress::stream("rows");
    let mut scanned = 0u64;
    loop {
        let rows = db.query(select, &[&last, &limit]).await?;
        let Some(end) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            break;
        };
        for r in &rows {
            let value: Vec<u8> = r.get(1);
            let v = version_of(&value).unwrap_or_else(|| "unreadable".to_owned());
            *counts.entry(v).or_default() += 1;
        }
        scanned += rows.len() as u64;
        progress.batch(
            rows.len() as u64,
            scanned,
            &format!("dry run: {scanned} rows scanned so far"),
        );
        last = end;
    }
    progress.finish();
    for (v, n) in &counts {
        println!("{n} records under {v}");
    }
    if counts.is_empty() {
        println!("0 records");
    }
    Ok(())
}
