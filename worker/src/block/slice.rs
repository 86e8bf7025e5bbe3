//! A window onto another source: one partition of a disk.

use std::sync::Arc;

use super::{BlockError, BlockSource, RemoteStats, check_range};

/// `len` bytes of `inner` starting at byte `start`, itself a block source.
#[derive(Debug, Clone)]
pub struct Slice {
    inner: Arc<dyn BlockSource>,
    start: u64,
    len: u64,
}

impl Slice {
    /// A view of `len` bytes of `inner` from `start`, clamped to the end of
    /// `inner` so that a partition entry that overhangs the disk still reads
    /// what exists (and errors past it).
    pub fn new(inner: Arc<dyn BlockSource>, start: u64, len: u64) -> Self {
        let available = inner.size().saturating_sub(start);
        Self {
            inner,
            start,
            len: len.min(available),
        }
    }
}

impl BlockSource for Slice {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.len)?;
        // Cannot overflow: offset + len <= self.len <= inner.size() - start.
        let absolute = self.start.saturating_add(offset);
        self.inner.read_exact_at(buf, absolute)
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        let inside: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|(offset, _)| *offset < self.len)
            .map(|&(offset, len)| {
                (
                    self.start.saturating_add(offset),
                    len.min(self.len - offset),
                )
            })
            .collect();
        self.inner.prefetch(&inside);
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        self.inner.remote_stats()
    }
}
