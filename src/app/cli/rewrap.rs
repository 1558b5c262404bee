//! `envelope rewrap`: a file of base64 records through RewrapBatch, line
//! for line.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use tonic::transport::Channel;

use super::{Target, client, connect, parse_context, status_err};
use crate::pb;

/// `envelope rewrap`: [`rewrap_file`], then a one-line report; fails if
/// any record could not be rewrapped.
pub async fn rewrap(
    target: &Target,
    key: &str,
    context: &[String],
    input: &std::path::Path,
    output: &std::path::Path,
    batch: usize,
) -> anyhow::Result<()> {
    let c = rewrap_file(target, key, context, input, output, batch).await?;
    println!(
        "rewrap: {} records, {} rewrapped, {} already current, {} failed",
        c.total, c.rewrapped, c.current, c.failed
    );
    if c.failed > 0 {
        anyhow::bail!(
            "{} records could not be rewrapped (left unchanged in the output)",
            c.failed
        );
    }
    Ok(())
}

/// What `envelope rewrap` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RewrapCounts {
    /// Records read.
    pub total: u64,
    /// Records moved to the current version.
    pub rewrapped: u64,
    /// Records already under the current version.
    pub current: u64,
    /// Records refused (left unchanged in the output).
    pub failed: u64,
}

impl RewrapCounts {
    fn add(&mut self, other: RewrapCounts) {
        self.total += other.total;
        self.rewrapped += other.rewrapped;
        self.current += other.current;
        self.failed += other.failed;
    }
}

/// `envelope rewrap`: reads one base64 record per line from `input`, sends
/// them through RewrapBatch in batches of `batch`, and writes the results,
/// line for line, to `output` (atomically, via a temporary file). A record
/// that fails is written unchanged, counted, and reported on stderr (the
/// first ten, by line number).
pub async fn rewrap_file(
    target: &Target,
    key: &str,
    context: &[String],
    input: &std::path::Path,
    output: &std::path::Path,
    batch: usize,
) -> anyhow::Result<RewrapCounts> {
    use std::io::BufRead;
    let batch = batch.clamp(1, 10_000);
    let ctx = parse_context(context)?;
    // The local file first: a wrong path is told before any connection.
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
    );
    let mut client = client(connect(target).await?);
    let tmp = output.with_extension("rewrap-tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut progress = crate::app::progress::Progress::of_lines(input, "records");
    let result = async {
        let mut counts = RewrapCounts::default();
        // Blank lines are kept (as blank lines) so output line N is input line N.
        let mut chunk: Vec<(u64, String)> = Vec::with_capacity(batch);
        let mut records_in_chunk = 0;
        let mut reported = 0;
        let mut lines = reader.lines();
        let mut line_no = 0u64;
        loop {
            let next = lines.next().transpose().context("reading input")?;
            if let Some(line) = &next {
                line_no += 1;
                let line = line.trim().to_owned();
                if !line.is_empty() {
                    records_in_chunk += 1;
                }
                chunk.push((line_no, line));
            }
            if records_in_chunk == batch || (next.is_none() && !chunk.is_empty()) {
                let c = rewrap_chunk(
                    &mut client,
                    key,
                    &ctx,
                    &chunk,
                    &mut out,
                    (&mut reported, &progress),
                )
                .await?;
                counts.add(c);
                progress.batch(
                    c.total,
                    counts.total,
                    &format!("rewrap: {} records so far", counts.total),
                );
                chunk.clear();
                records_in_chunk = 0;
            }
            if next.is_none() {
                break;
            }
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok::<_, anyhow::Error>(counts)
    }
    .await;
    progress.finish();
    match result {
        Ok(counts) => {
            std::fs::rename(&tmp, output)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(counts)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

async fn rewrap_chunk(
    client: &mut pb::envelope_client::EnvelopeClient<Channel>,
    key: &str,
    ctx: &BTreeMap<String, String>,
    chunk: &[(u64, String)],
    out: &mut impl Write,
    (reported, progress): (&mut usize, &crate::app::progress::Progress),
) -> anyhow::Result<RewrapCounts> {
    let records: Vec<&(u64, String)> = chunk.iter().filter(|(_, l)| !l.is_empty()).collect();
    let decoded: Vec<Option<Vec<u8>>> = records.iter().map(|(_, l)| B64.decode(l).ok()).collect();
    let items = decoded
        .iter()
        .map(|d| pb::RewrapItem {
            indexes: Vec::new(),
            ciphertext: Bytes::from(d.clone().unwrap_or_default()),
            context: ctx.clone(),
        })
        .collect();
    let results = client
        .rewrap_batch(pb::RewrapBatchRequest {
            key: key.to_owned(),
            items,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .results;
    if results.len() != records.len() {
        bail!(
            "server answered {} results for {} records",
            results.len(),
            records.len()
        );
    }
    let mut c = RewrapCounts::default();
    let mut answers = decoded.into_iter().zip(results);
    for (line_no, line) in chunk {
        if line.is_empty() {
            writeln!(out)?;
            continue;
        }
        let Some((input, result)) = answers.next() else {
            bail!("fewer results than records");
        };
        c.total += 1;
        let why = match (input, result.result) {
            (Some(input), Some(pb::rewrap_result::Result::Ciphertext(ct))) => {
                if ct.as_ref() == input.as_slice() {
                    c.current += 1;
                } else {
                    c.rewrapped += 1;
                }
                writeln!(out, "{}", B64.encode(&ct))?;
                continue;
            }
            (None, _) => "not base64".to_owned(),
            (_, Some(pb::rewrap_result::Result::Error(e))) => e.message,
            (_, None) => "no result".to_owned(),
        };
        c.failed += 1;
        writeln!(out, "{line}")?;
        if *reported < 10 {
            progress.note(&format!("line {line_no}: {why}"));
            *reported += 1;
        }
    }
    Ok(c)
}
