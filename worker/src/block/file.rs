//! An image file or block device, read with positional reads (`pread`).

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use super::{BlockError, BlockSource, check_range};

/// A disk image file or a block device opened read-only.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
    size: u64,
}

impl FileSource {
    /// Open `path` read-only. A block device's size comes from seeking to its
    /// end, since its metadata reports zero.
    ///
    /// # Errors
    /// [`BlockError::Open`] when the file cannot be opened or sized, or is
    /// neither a regular file nor a block device (a directory, a FIFO, …).
    pub fn open(path: &Path) -> Result<Self, BlockError> {
        let open_error = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open_error)?;
        let file_type = file.metadata().map_err(open_error)?.file_type();
        if !(file_type.is_file() || file_type.is_block_device()) {
            return Err(open_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a disk image file or block device",
            )));
        }
        let size = file.seek(SeekFrom::End(0)).map_err(open_error)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| BlockError::Read {
                offset,
                len: buf.len(),
                source,
            })
    }
}
