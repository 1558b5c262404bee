//! Fuzz target: see envelope::app::fuzz_checks::context for the properties; the
//! counting allocator holds it to the target's allocation bound.
#![no_main]

use envelope::app::fuzz_checks::{CONTEXT, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    CONTEXT.run(data);
});
