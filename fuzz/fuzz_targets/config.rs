//! Fuzz target: see envelope::app::fuzz_checks::config for the properties; the
//! counting allocator holds it to the target's allocation bound.
#![no_main]

use envelope::app::fuzz_checks::{CONFIG, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    CONFIG.run(data);
});
