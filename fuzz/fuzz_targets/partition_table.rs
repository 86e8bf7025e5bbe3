//! GPT and MBR parsing on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker::block::Memory;
use worker::partition::read_partitions;

fuzz_target!(|data: &[u8]| {
    let _ = read_partitions(&Memory::new(data.to_vec()));
});
