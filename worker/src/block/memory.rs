//! Bytes in memory as a block source: for tests, fuzzing and small images.

use super::{BlockError, BlockSource, check_range};

/// A disk held in memory.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    bytes: Vec<u8>,
}

impl Memory {
    /// A source over `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }
}

impl BlockSource for Memory {
    fn size(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size())?;
        let start = usize::try_from(offset).map_err(|_| BlockError::OutOfRange {
            offset,
            len: buf.len(),
            size: self.size(),
        })?;
        let end = start.saturating_add(buf.len());
        match self.bytes.get(start..end) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(BlockError::OutOfRange {
                offset,
                len: buf.len(),
                size: self.size(),
            }),
        }
    }
}
