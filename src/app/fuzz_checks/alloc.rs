//! Allocation accounting for the fuzz properties: with `peak_alloc`'s
//! counting allocator installed, a check can assert that handling an input
//! never holds more bytes at once than a bound linear in the input's length
//! (a quadratic blow-up, or a length field trusted before it is checked, is
//! a finding even when it stays under libFuzzer's fixed
//! `-malloc_limit_mb`). The fuzz targets and `tests/fuzz_corpus.rs` install
//! it. The counts are the process's: each check runs on the calling thread
//! (current-thread runtimes), and nothing else allocates meanwhile.

pub use peak_alloc::PeakAlloc as Counting;

/// Runs `f` and returns the most bytes the process held at once while it
/// ran, beyond what it held before. Zero unless [`Counting`] is the global
/// allocator (see [`counting`]).
pub fn peak_of(f: impl FnOnce()) -> usize {
    let base = Counting.current_usage();
    Counting.reset_peak_usage();
    f();
    Counting.peak_usage().saturating_sub(base)
}

/// Whether [`Counting`] is this binary's global allocator: without it every
/// bound would hold vacuously, so the checks refuse to run.
pub fn counting() -> bool {
    peak_of(|| drop(std::hint::black_box(vec![0u8; 4096]))) >= 4096
}
