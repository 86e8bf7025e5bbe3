//! Counts the bytes read from a source, for the report's `stats.bytes_read`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlockError, BlockSource, RemoteStats};

/// Wraps a source and counts the bytes successfully read through it.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    bytes_read: AtomicU64,
}

impl<S: BlockSource> Counted<S> {
    /// Start counting reads of `inner` from zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

impl<S: BlockSource> BlockSource for Counted<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        self.inner.read_exact_at(buf, offset)?;
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.bytes_read.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        self.inner.prefetch(ranges);
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        self.inner.remote_stats()
    }
}
