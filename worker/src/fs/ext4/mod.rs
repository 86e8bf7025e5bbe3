//! ext2/3/4 in user space, through the `ext4-view` crate.
//!
//! `ext4-view` is a well-kept, pure-Rust, read-only reader whose design goal
//! is that invalid data never panics or loops. It covers extents and indirect
//! blocks, htree directories, 64bit, flex_bg and metadata_csum, and it replays
//! a dirty journal in memory (a crash-consistent snapshot of a running
//! instance is the normal case). It refuses inline_data, meta_bg, large_dir
//! and ea_inode as "incompatible", which becomes a clear `Unsupported` skip
//! reason in the report.
//!
//! Its `Ext4` handle uses `Rc`, so it is `!Send`: the [`Volume`](super::Volume)
//! opens one per rayon thread, each reading through the shared block source.
//!
//! Paths are resolved by [`super::resolve`], never by `ext4-view`: it would
//! follow a symlink by allocating the link's recorded size, which a corrupt
//! inode sets to gigabytes. `ext4-view` is only handed symlink-free paths.

mod dirs;

use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::resolve::{self, KnownDirs, Lookup};
use super::{DirEntry, FileType, Filesystem, FsError, Metadata};
use crate::block::BlockSource;

pub use dirs::{Ext4Dirs, InodeEntry};

/// Bytes read per call while copying a file out (the reader's own block
/// cache sits below this).
const READ_CHUNK: usize = 64 * 1024;

/// Lets `ext4-view` read through a shared [`BlockSource`].
struct SourceReader(Arc<dyn BlockSource>);

impl Ext4Read for SourceReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(Into::into)
    }
}

/// One open ext2/3/4 filesystem (not `Send`; open one per thread).
pub struct Ext4Fs {
    inner: Ext4,
    known: Arc<KnownDirs>,
}

impl Ext4Fs {
    /// Load the superblock, group descriptors and journal of the filesystem
    /// on `source`.
    ///
    /// # Errors
    /// [`FsError::Unsupported`] for incompatible features, [`FsError::Corrupt`]
    /// for damaged metadata, [`FsError::Io`] when the source fails.
    pub fn open(source: Arc<dyn BlockSource>, known: Arc<KnownDirs>) -> Result<Self, FsError> {
        let inner = Ext4::load(Box::new(SourceReader(source)))
            .map_err(|err| convert_error(err, "ext4 superblock"))?;
        Ok(Self { inner, known })
    }

    fn resolve(&self, path: &str, follow_last: bool) -> Result<String, FsError> {
        resolve::resolve(self, &self.known, path, follow_last)
    }
}

impl Lookup for Ext4Fs {
    fn lstat(&self, path: &str) -> Result<Metadata, FsError> {
        self.inner
            .symlink_metadata(path)
            .map(|m| convert_metadata(&m))
            .map_err(|err| convert_error(err, path))
    }

    fn link_target(&self, path: &str) -> Result<String, FsError> {
        self.inner
            .read_link(path)
            .map(|target| String::from_utf8_lossy(target.as_ref()).into_owned())
            .map_err(|err| convert_error(err, path))
    }
}

/// Map an `ext4-view` error to ours, naming `path` (or the structure).
fn convert_error(err: Ext4Error, path: &str) -> FsError {
    let path = path.to_string();
    match err {
        Ext4Error::NotFound => FsError::NotFound { path },
        Ext4Error::NotADirectory => FsError::NotADirectory { path },
        Ext4Error::IsADirectory | Ext4Error::IsASpecialFile => FsError::NotAFile { path },
        Ext4Error::NotASymlink => FsError::NotASymlink { path },
        Ext4Error::TooManySymlinks => FsError::TooManySymlinks { path },
        Ext4Error::Encrypted => FsError::Encrypted { path },
        Ext4Error::Io(source) => FsError::Io {
            what: path,
            detail: source.to_string(),
        },
        Ext4Error::Incompatible(incompatible) => FsError::Unsupported {
            feature: format!("ext4: {incompatible}"),
        },
        Ext4Error::Corrupt(corrupt) => FsError::Corrupt {
            what: format!("ext4 {path}"),
            detail: corrupt.to_string(),
        },
        other => FsError::Corrupt {
            what: format!("ext4 {path}"),
            detail: other.to_string(),
        },
    }
}

fn convert_type(file_type: ext4_view::FileType) -> FileType {
    if file_type.is_regular_file() {
        FileType::File
    } else if file_type.is_dir() {
        FileType::Dir
    } else if file_type.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Special
    }
}

fn convert_metadata(metadata: &ext4_view::Metadata) -> Metadata {
    Metadata {
        file_type: convert_type(metadata.file_type()),
        len: metadata.len(),
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
    }
}

impl Filesystem for Ext4Fs {
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let canonical = self.resolve(path, true)?;
        let entries = self
            .inner
            .read_dir(canonical.as_str())
            .map_err(|err| convert_error(err, path))?;
        let mut listing = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| convert_error(err, path))?;
            let name = entry.file_name();
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let file_type = entry
                .file_type()
                .map(convert_type)
                .map_err(|err| convert_error(err, &format!("{path}/{name}")))?;
            // The entry's type byte can lie; a directory is remembered as
            // one (so later lookups skip it) only when its inode agrees.
            if file_type == FileType::Dir
                && entry
                    .metadata()
                    .is_ok_and(|m| convert_type(m.file_type()) == FileType::Dir)
            {
                self.known.insert(&resolve::join(&canonical, &name));
            }
            listing.push(DirEntry { name, file_type });
        }
        listing.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let canonical = self.resolve(path, false)?;
        self.lstat(&canonical)
    }

    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let canonical = self.resolve(path, true)?;
        self.lstat(&canonical)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        let canonical = self.resolve(path, true)?;
        let mut file = self
            .inner
            .open(canonical.as_str())
            .map_err(|err| convert_error(err, path))?;
        let size = file.metadata().len();
        if size > limit {
            return Err(FsError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        let capacity = usize::try_from(size).map_err(|_| FsError::TooLarge {
            path: path.to_string(),
            size,
            limit,
        })?;
        let mut content = Vec::with_capacity(capacity);
        let mut chunk = vec![0u8; READ_CHUNK.min(capacity.max(1))];
        loop {
            let n = file
                .read_bytes(&mut chunk)
                .map_err(|err| convert_error(err, path))?;
            if n == 0 {
                break;
            }
            content.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        Ok(content)
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        let canonical = self.resolve(path, false)?;
        let metadata = self.lstat(&canonical)?;
        if metadata.file_type != FileType::Symlink {
            return Err(FsError::NotASymlink {
                path: path.to_string(),
            });
        }
        if metadata.len > resolve::MAX_LINK_LEN {
            return Err(FsError::Corrupt {
                what: format!("symlink {path}"),
                detail: format!(
                    "target length {} is over {} bytes",
                    metadata.len,
                    resolve::MAX_LINK_LEN
                ),
            });
        }
        self.link_target(&canonical)
    }
}
