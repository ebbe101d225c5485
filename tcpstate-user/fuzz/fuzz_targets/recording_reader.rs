//! Any bytes, read as a recording: errors are fine, panics, hangs and
//! unbounded allocations are not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcpstate::recording::fuzz_read(data));
