//! Reading `envelope doctor --json`: an array of checks, each with
//! `check`, `outcome` (ok, warn, fail, skip), `detail` and `fix`.
#![allow(dead_code)]

/// The names of the failed checks, in order.
pub fn failed(checks: &[serde_json::Value]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["check"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `field` (outcome, detail, fix) of check `name`; panics if it has none.
pub fn field<'a>(checks: &'a [serde_json::Value], name: &str, field: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .and_then(|c| c[field].as_str())
        .unwrap_or_else(|| panic!("no {field} for {name}: {checks:?}"))
}
