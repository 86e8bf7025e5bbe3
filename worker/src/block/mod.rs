//! Block sources: read-only random access to a disk image, block device,
//! partition or (later) EBS snapshot.
//!
//! Everything above this layer (partition tables, filesystems, detectors)
//! reads through [`BlockSource`], so a new kind of disk slots in unchanged.
//! The trait takes `&self`, like `std::os::unix::fs::FileExt::read_exact_at`,
//! so one source is shared by every rayon thread without a lock.

mod counted;
mod ebs;
mod file;
mod memory;
mod slice;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use counted::Counted;
pub use ebs::{EbsOptions, EbsSource, LIST_WINDOW};
pub use file::FileSource;
pub use memory::Memory;
pub use slice::Slice;

/// Read-only random access to a disk, partition or snapshot, shared by every
/// rayon thread.
pub trait BlockSource: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`.
    ///
    /// # Errors
    /// Reading past [`size`](Self::size) is [`BlockError::OutOfRange`], never
    /// a short read; a failed read is [`BlockError::Read`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError>;

    /// A hint: these `(offset, len)` ranges will be read soon. A remote
    /// source starts fetching them in parallel; a local one ignores it.
    fn prefetch(&self, ranges: &[(u64, u64)]) {
        let _ = ranges;
    }

    /// What reading cost, for a source behind an API (`None` for local ones).
    fn remote_stats(&self) -> Option<RemoteStats> {
        None
    }
}

/// What reading a remote source (an EBS snapshot) cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteStats {
    /// Blocks the snapshot has (written blocks; the rest read as zeros).
    pub blocks_allocated: u64,
    /// Blocks fetched (each once, however often read).
    pub blocks_fetched: u64,
    /// API calls made, listing and retries included.
    pub api_calls: u64,
    /// Calls that were retried (throttling, 5xx, timeouts, bad checksums).
    pub retries: u64,
    /// Block reads served from the cache or a fetch already under way.
    pub cache_hits: u64,
}

/// Why a block source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image file or device could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// What was opened.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A read went past the end of the source.
    #[error("read of {len} bytes at offset {offset} is past the end ({size} bytes)")]
    OutOfRange {
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read.
        len: usize,
        /// Size of the source.
        size: u64,
    },
    /// A remote source (an EBS snapshot) failed.
    #[error("{what}: {detail}")]
    Remote {
        /// The snapshot, and the block where one is concerned.
        what: String,
        /// What the service said, after retries.
        detail: String,
    },
    /// The underlying read failed.
    #[error("read of {len} bytes at offset {offset} failed: {source}")]
    Read {
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read.
        len: usize,
        /// The operating system's reason.
        source: io::Error,
    },
}

/// Check that `len` bytes at `offset` lie within a source of `size` bytes.
///
/// # Errors
/// [`BlockError::OutOfRange`] when they do not (including on overflow).
pub fn check_range(offset: u64, len: usize, size: u64) -> Result<(), BlockError> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len));
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

impl<T: BlockSource + ?Sized> BlockSource for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        (**self).read_exact_at(buf, offset)
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        (**self).prefetch(ranges);
    }

    fn remote_stats(&self) -> Option<RemoteStats> {
        (**self).remote_stats()
    }
}
