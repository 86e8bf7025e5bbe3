//! The rpm header-blob parser on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = worker::detect::rpm::header::parse_header(data);
});
