//! A filesystem whose file reads are capped at the scan's `max_file_size`,
//! whatever limit a detector asks for: one knob bounds every allocation a
//! detector can make from file contents.

use super::{DirEntry, Filesystem, FsError, Metadata};

/// Wraps a filesystem; [`Filesystem::read`] uses the smaller of the caller's
/// limit and `cap`.
pub struct Capped<'a> {
    inner: &'a dyn Filesystem,
    cap: u64,
}

impl<'a> Capped<'a> {
    /// Cap reads of `inner` at `cap` bytes.
    pub fn new(inner: &'a dyn Filesystem, cap: u64) -> Self {
        Self { inner, cap }
    }
}

impl Filesystem for Capped<'_> {
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        self.inner.read_dir(path)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.inner.symlink_metadata(path)
    }

    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        self.inner.metadata(path)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        self.inner.read(path, limit.min(self.cap))
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        self.inner.read_link(path)
    }
}
