//! Fuzz target: see envelope::app::fuzz_checks::version_id for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envelope::app::fuzz_checks::version_id(data));
