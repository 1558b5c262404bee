//! Fuzz target: see envelope::app::fuzz_checks::request for the properties; the
//! counting allocator holds it to the target's allocation bound.
#![no_main]

use envelope::app::fuzz_checks::{Counting, REQUEST};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    REQUEST.run(data);
});
