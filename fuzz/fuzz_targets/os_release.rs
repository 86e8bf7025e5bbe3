//! The os-release and legacy release-file parsers on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker::detect::os_release;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = os_release::parse_os_release(&text);
    let _ = os_release::parse_release_line(&text);
    let _ = os_release::parse_debian_version(&text);
    let _ = os_release::parse_alpine_release(&text);
});
