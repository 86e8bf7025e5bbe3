//! The whole pipeline on arbitrary bytes: partition tables, the filesystem
//! probe, ext4 (with journal replay) and every detector.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use worker::block::Memory;
use worker::{ScanOptions, scan};

fuzz_target!(|data: &[u8]| {
    let source = Arc::new(Memory::new(data.to_vec()));
    let options = ScanOptions {
        max_file_size: 1024 * 1024,
        ..ScanOptions::default()
    };
    let _ = scan(source, "fuzz", &options);
});
