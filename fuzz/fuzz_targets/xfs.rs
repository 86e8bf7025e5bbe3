//! The XFS reader on arbitrary bytes: the input is the start of a 1 GiB
//! volume whose rest reads as zeros (a real image is hundreds of MiB, but
//! its metadata, log tail included, can be crafted in the first blocks).
//! Probe, open (log replay included), then list and read what is reachable.
//! A seed corpus: the first 64 KiB of images made by `mkfs.xfs -p`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use worker::block::{BlockError, BlockSource, check_range};
use worker::fs::{FileType, Filesystem, Volume, probe};

/// `data` followed by zeros up to `size` bytes.
#[derive(Debug)]
struct Padded {
    data: Vec<u8>,
    size: u64,
}

impl BlockSource for Padded {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size)?;
        buf.fill(0);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if let Some(have) = self.data.get(start..) {
            let n = have.len().min(buf.len());
            buf[..n].copy_from_slice(&have[..n]);
        }
        Ok(())
    }
}

fn visit(fs: &dyn Filesystem, path: &str, depth: u32, budget: &mut u32) {
    let Ok(entries) = fs.read_dir(path) else {
        return;
    };
    for entry in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let child = if path == "/" {
            format!("/{}", entry.name)
        } else {
            format!("{path}/{}", entry.name)
        };
        let _ = fs.metadata(&child);
        match entry.file_type {
            FileType::Dir if depth > 0 => visit(fs, &child, depth - 1, budget),
            FileType::File => {
                let _ = fs.read(&child, 64 * 1024);
            }
            FileType::Symlink => {
                let _ = fs.read_link(&child);
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let source: Arc<dyn BlockSource> = Arc::new(Padded {
        data: data.to_vec(),
        size: 1 << 30,
    });
    let Ok(Some(found)) = probe(&*source) else {
        return;
    };
    let volume = Volume::new(source, found.kind);
    if let Ok(fs) = volume.open() {
        let _ = fs.notes();
        let mut budget = 2000;
        visit(fs.as_ref(), "/", 4, &mut budget);
        let _ = fs.read("/etc/os-release", 4096);
        let _ = fs.read("/var/lib/rpm/rpmdb.sqlite", 64 * 1024);
    }
});
