//! The fuzz targets' seed corpus and every past finding, replayed through
//! the same property checks (src/app/fuzz_checks.rs) in `cargo test`: a
//! parser change that breaks a promise a fuzzer once tested fails here,
//! without a fuzzer. The corpus is `fuzz/corpus/<target>/seed-*`; findings
//! are `fuzz/regressions/<target>/*` (docs/SECURITY.md, "Fuzzing").
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use envelope::app::fuzz_checks;

/// A target's property check.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 7] = [
    ("record", fuzz_checks::record),
    ("version_id", fuzz_checks::version_id),
    ("context", fuzz_checks::context),
    ("policy", fuzz_checks::policy),
    ("config", fuzz_checks::config),
    ("secret", fuzz_checks::secret),
    ("request", fuzz_checks::request),
];

fn replay(dir: &Path, check: Check, keep: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !keep(&name) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} breaks its target's properties", path.display());
        }
        n += 1;
    }
    n
}

#[test]
fn the_seed_corpus_and_past_findings_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = 0;
    for (target, check) in TARGETS {
        seeds += replay(&root.join("corpus").join(target), check, |n| {
            n.starts_with("seed-")
        });
        replay(&root.join("regressions").join(target), check, |_| true);
    }
    assert!(seeds >= TARGETS.len(), "every target has seeds: {seeds}");
}
