//! The dpkg status parser on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = worker::detect::dpkg::parse_status(data);
});
