//! The line-per-value commands: `envelope encrypt --column` and `envelope
//! decrypt --column`, answered line for line through EncryptColumn and
//! DecryptColumn in calls of `--batch` values, and `envelope index`, through
//! ComputeIndex, so memory stays bounded whatever the input.
//!
//! Encrypting, a line is the value (or `ROW<TAB>VALUE` with `--row-field`)
//! and the output line its base64 record (`ROW<TAB>RECORD`). Decrypting
//! reads those lines back. A value cannot hold a newline; a failed item
//! leaves its line empty, is named on stderr, and fails the command.

use std::io::{BufRead, Write};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use super::args::ClientArgs;
use super::cli::{client, connect, parse_context, status_err};
use crate::pb;

/// Longest input line.
const MAX_LINE: usize = 1 << 20;
/// Most values per call the CLI sends (the server's own limit may be lower).
const MAX_BATCH: usize = 10_000;

/// Which way the column goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Values in, records out.
    Encrypt,
    /// Records in, values out.
    Decrypt,
}

/// One line read from stdin, counted, its `\r` dropped, at most [`MAX_LINE`].
fn one_line(line: std::io::Result<Vec<u8>>, line_no: &mut usize) -> anyhow::Result<Vec<u8>> {
    *line_no += 1;
    let mut line = line.context("reading stdin")?;
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > MAX_LINE {
        bail!("line {line_no} is over {MAX_LINE} bytes");
    }
    Ok(line)
}

/// How many failed lines are named on stderr; the rest are counted.
const REPORTED: usize = 10;

/// Names the `failed`th failure, if it is among the first [`REPORTED`].
fn report(progress: &super::progress::Progress, failed: usize, line: &str) {
    if failed <= REPORTED {
        progress.note(line);
    }
}

/// Runs the column mode of `encrypt` or `decrypt` over stdin and stdout.
pub async fn run(args: &ClientArgs, mode: Mode) -> anyhow::Result<()> {
    if args.batch == 0 || args.batch > MAX_BATCH {
        bail!("--batch must be between 1 and {MAX_BATCH}");
    }
    let context = parse_context(&args.context)?;
    let row_field = args.row_field.clone().unwrap_or_default();
    if !row_field.is_empty() && context.contains_key(&row_field) {
        bail!("--row-field {row_field:?} is also given as a --context key");
    }
    let mut grpc = client(connect(&args.target).await?);
    let verb = match mode {
        Mode::Encrypt => "encrypt --column",
        Mode::Decrypt => "decrypt --column",
    };
    let mut progress = super::progress::Progress::stream("values");
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = stdin.split(b'\n');
    let mut line_no = 0usize;
    let mut failed = 0usize;
    loop {
        let mut rows = Vec::new();
        let mut values = Vec::new();
        for line in lines.by_ref().take(args.batch) {
            let mut line = one_line(line, &mut line_no)?;
            let value = if row_field.is_empty() {
                line
            } else {
                let tab = line
                    .iter()
                    .position(|b| *b == b'\t')
                    .with_context(|| format!("line {line_no} has no ROW<TAB>VALUE"))?;
                let value = line.split_off(tab + 1);
                line.pop();
                rows.push(
                    String::from_utf8(line)
                        .with_context(|| format!("line {line_no}: the row is not UTF-8"))?,
                );
                value
            };
            values.push(match mode {
                Mode::Encrypt => Bytes::from(value),
                Mode::Decrypt => Bytes::from(
                    B64.decode(value.trim_ascii())
                        .with_context(|| format!("line {line_no} is not base64"))?,
                ),
            });
        }
        if values.is_empty() {
            break;
        }
        let first = line_no + 1 - values.len();
        let (outputs, errors) = match mode {
            Mode::Encrypt => {
                let req = pb::EncryptColumnRequest {
                    indexes: Vec::new(),
                    key: args.key.clone(),
                    context: context.clone(),
                    plaintexts: values,
                    row_field: row_field.clone(),
                    row_values: rows.clone(),
                };
                let resp = grpc
                    .encrypt_column(req)
                    .await
                    .map_err(status_err)?
                    .into_inner();
                (resp.ciphertexts, resp.errors)
            }
            Mode::Decrypt => {
                let req = pb::DecryptColumnRequest {
                    key: args.key.clone(),
                    context: context.clone(),
                    ciphertexts: values,
                    row_field: row_field.clone(),
                    row_values: rows.clone(),
                };
                let resp = grpc
                    .decrypt_column(req)
                    .await
                    .map_err(status_err)?
                    .into_inner();
                (resp.plaintexts, resp.errors)
            }
        };
        for (i, value) in outputs.iter().enumerate() {
            if let Some(row) = rows.get(i) {
                write!(out, "{row}\t")?;
            }
            if let Some(e) = u32::try_from(i).ok().and_then(|i| errors.get(&i)) {
                failed += 1;
                report(
                    &progress,
                    failed,
                    &format!("line {}: {}", first + i, e.message),
                );
            } else if mode == Mode::Encrypt {
                out.write_all(B64.encode(value).as_bytes())?;
            } else if value.contains(&b'\n') {
                // It would split into two lines and misalign every line after.
                failed += 1;
                report(
                    &progress,
                    failed,
                    &format!(
                        "line {}: the value holds a newline; decrypt it without --column",
                        first + i
                    ),
                );
            } else {
                out.write_all(value)?;
            }
            out.write_all(b"\n")?;
        }
        let n = outputs.len() as u64;
        progress.batch(
            n,
            line_no as u64,
            &format!("{verb}: {line_no} values so far"),
        );
    }
    progress.finish();
    out.flush()?;
    if failed > 0 {
        bail!(
            "{failed} of {line_no} lines failed (their output lines are empty; the first {REPORTED} are named above)"
        );
    }
    Ok(())
}

/// `envelope index`: each stdin line's tokens, `VERSION:HEX` separated by
/// spaces, current version first; a value with no token leaves its line
/// empty, is named on stderr, and fails the command.
pub async fn index(
    target: &super::cli::Target,
    key: &str,
    index: &str,
    context: &[String],
) -> anyhow::Result<()> {
    let context = parse_context(context)?;
    let mut grpc = client(connect(target).await?);
    let mut lines = std::io::stdin().lock().split(b'\n');
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut line_no, mut failed) = (0usize, 0usize);
    let mut progress = super::progress::Progress::stream("values");
    loop {
        let mut values = Vec::new();
        for line in lines.by_ref().take(1000) {
            values.push(Bytes::from(one_line(line, &mut line_no)?));
        }
        if values.is_empty() {
            break;
        }
        let first = line_no + 1 - values.len();
        let req = pb::ComputeIndexRequest {
            key: key.to_owned(),
            index: index.to_owned(),
            values,
            context: context.clone(),
        };
        let resp = grpc
            .compute_index(req)
            .await
            .map_err(status_err)?
            .into_inner();
        for (i, r) in resp.results.iter().enumerate() {
            if let Some(e) = &r.error {
                failed += 1;
                report(
                    &progress,
                    failed,
                    &format!("line {}: {}", first + i, e.message),
                );
            }
            let tokens: Vec<String> = r
                .tokens
                .iter()
                .map(|t| format!("{}:{}", t.key_version, hex::encode(&t.token)))
                .collect();
            writeln!(out, "{}", tokens.join(" "))?;
        }
        let n = resp.results.len() as u64;
        progress.batch(
            n,
            line_no as u64,
            &format!("index: {line_no} values so far"),
        );
    }
    progress.finish();
    out.flush()?;
    if failed > 0 {
        bail!(
            "{failed} of {line_no} values have no token (their lines are empty; the first {REPORTED} are named above)"
        );
    }
    Ok(())
}
