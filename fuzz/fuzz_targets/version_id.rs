//! Fuzz target: see envelope::app::fuzz_checks::version_id for the properties; the
//! counting allocator holds it to the target's allocation bound.
#![no_main]

use envelope::app::fuzz_checks::{Counting, VERSION_ID};

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    VERSION_ID.run(data);
});
