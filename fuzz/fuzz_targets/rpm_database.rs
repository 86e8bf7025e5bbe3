//! The rpm sqlite database reader on arbitrary bytes: the first half is the
//! database image, the second a WAL applied to it first.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (db, wal) = data.split_at(data.len() / 2);
    let mut image = db.to_vec();
    let _ = worker::detect::rpm::wal::apply_wal(&mut image, wal, 64 * 1024 * 1024);
    let _ = worker::detect::rpm::read_packages_from_bytes(image);
});
