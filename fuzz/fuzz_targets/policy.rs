//! Fuzz target: see envelope::app::fuzz_checks::policy for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envelope::app::fuzz_checks::policy(data));
