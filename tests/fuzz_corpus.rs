//! The fuzz targets' seed corpus and every past finding, replayed through
//! the same property checks and allocation bounds (src/app/fuzz_checks.rs)
//! in `cargo test`: a parser change that breaks a promise a fuzzer once
//! tested fails here, without a fuzzer. The corpus is
//! `fuzz/corpus/<target>/seed-*`; findings are `fuzz/regressions/<target>/*`
//! (docs/SECURITY.md, "Fuzzing"). With `ENVELOPE_FUZZ_REPLAY=all` it
//! replays a local fuzzing run's whole corpus too, and prints the most
//! bytes each target held.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use envelope::app::fuzz_checks::{self, Target};

#[global_allocator]
static ALLOC: fuzz_checks::Counting = fuzz_checks::Counting;

/// Replays the files of `dir` that `keep` selects; returns how many, and
/// the (bytes held, input length) nearest the target's bound.
fn replay(dir: &Path, t: &Target, keep: impl Fn(&str) -> bool) -> (usize, (usize, usize)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, (0, 0));
    };
    let (mut n, mut most) = (0, (0, 0));
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !keep(&name) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        match std::panic::catch_unwind(|| t.run(&data)) {
            Ok(held) => {
                let bound = |len: usize| t.base + t.per_byte * len;
                if held * bound(most.1) >= most.0 * bound(data.len()) {
                    most = (held, data.len());
                }
            }
            Err(_) => panic!("{} breaks its target's properties", path.display()),
        }
        n += 1;
    }
    (n, most)
}

#[test]
fn the_seed_corpus_and_past_findings_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let all = std::env::var("ENVELOPE_FUZZ_REPLAY").as_deref() == Ok("all");
    let mut seeds = 0;
    for t in &fuzz_checks::TARGETS {
        let (n, most) = replay(&root.join("corpus").join(t.name), t, |n| {
            all || n.starts_with("seed-")
        });
        assert!(n > 0, "{} has no seeds", t.name);
        seeds += n;
        replay(&root.join("regressions").join(t.name), t, |_| true);
        println!(
            "{}: {n} inputs; nearest its bound: held {} of {} bytes (a {}-byte input)",
            t.name,
            most.0,
            t.base + t.per_byte * most.1,
            most.1
        );
    }
    assert!(seeds >= fuzz_checks::TARGETS.len());
}
