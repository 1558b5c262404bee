//! Fuzz target: see envelope::app::fuzz_checks::request for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| envelope::app::fuzz_checks::request(data));
