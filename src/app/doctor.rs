//! `envelope doctor --config FILE`: every check a deployment depends on,
//! each a line with ✓ (passed), ! (a warning) or ✗ (failed, with its fix).
//! It reads what `serve` would read, with the identity it runs as (or a
//! role it assumes with `--role-arn`), prints no key material and changes
//! nothing. Exit status 0 only when nothing failed.

mod aws;
mod files;
mod key;

use std::path::Path;

use serde::Serialize;

use super::config::{Mode, Overrides, Settings};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed.
    Ok,
    /// Passed, with something to look at.
    Warn,
    /// Failed: `serve` would fail, or calls would.
    Fail,
    /// Not run: a step it depends on failed.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `config`, `tls`, `policy`, `key pii`, …
    pub check: String,
    /// How it came out.
    pub outcome: Outcome,
    /// One line: what was found.
    pub detail: String,
    /// What to do, for a failure (and some warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix,
        }
    }

    /// A failure from an error: its message on one line, and the fix the
    /// start-up report would give.
    fn failed(check: impl Into<String>, err: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Fail,
            detail: super::report::one_line(&err.to_string()),
            fix: super::report::fix(err),
        }
    }

    fn skip(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check for the configuration at `config`; `role_arn` is a
/// role to assume for the AWS checks.
pub async fn run(config: &Path, role_arn: Option<&str>) -> Vec<Check> {
    let settings = match Settings::load(Some(config), Overrides::default()) {
        Ok(s) => s,
        Err(e) => return vec![Check::failed("config", &e)],
    };
    let mut checks = vec![Check::ok(
        "config",
        format!(
            "{}: {} mode, {} key{}",
            config.display(),
            match settings.mode {
                Mode::Aws => "AWS",
                Mode::Local => "local",
            },
            settings.keys.len(),
            if settings.keys.len() == 1 { "" } else { "s" }
        ),
    )];
    match &settings.tls {
        Some(tls) => checks.extend(files::tls(tls)),
        None => checks.push(Check::warn(
            "tls",
            format!(
                "none: callers reach {} over plaintext gRPC, and the policy cannot tell them apart by certificate",
                settings.listen
            ),
            Some("configure [tls] (docs/CONFIG.md); without it, serve on loopback only".into()),
        )),
    }
    checks.push(files::policy(&settings));
    checks.push(files::audit(&settings));
    match (&settings.mode, &settings.aws) {
        (Mode::Aws, Some(a)) => checks.extend(aws::checks(&settings, a, role_arn).await),
        _ => checks.extend(files::local_keys(&settings).await),
    }
    checks
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.outcome == Outcome::Fail)
}

/// The report as a table for a person.
pub fn table(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.check.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => '✓',
            Outcome::Warn => '!',
            Outcome::Fail => '✗',
            Outcome::Skip => '-',
        };
        out.push_str(&format!("{mark} {:<width$}  {}\n", c.check, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("  {:<width$}  fix: {fix}\n", ""));
        }
    }
    let failures = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    out.push_str(&match failures {
        0 => "every check passed\n".to_owned(),
        n => format!("{n} check{} failed\n", if n == 1 { "" } else { "s" }),
    });
    out
}

/// The report as JSON for a machine: an array of checks.
pub fn json(checks: &[Check]) -> String {
    serde_json::to_string_pretty(checks).unwrap_or_else(|_| "[]".to_owned())
}
