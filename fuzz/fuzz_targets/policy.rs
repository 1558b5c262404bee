//! Fuzz target: see envelope::app::fuzz_checks::policy for the properties; the
//! counting allocator holds it to the target's allocation bound.
#![no_main]

use envelope::app::fuzz_checks::{Counting, POLICY};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    POLICY.run(data);
});
