//! Filesystems read in user space, through one read-only, path-based seam.
//!
//! A [`Volume`] is a block source whose filesystem kind has been probed from
//! its magic numbers. It is `Send + Sync` and opens one [`Filesystem`] per
//! rayon thread (filesystem readers keep caches that need not be shared).
//! Untrusted bytes never reach the kernel: every reader here parses them.

mod capped;
mod ext4;
pub mod host;
mod probe;
pub mod resolve;
mod xfs;

use std::fmt;
use std::sync::Arc;

use crate::block::BlockSource;

pub use capped::Capped;
pub use ext4::{Ext4Dirs, InodeEntry};
pub use probe::{FsKind, Probe, probe};

/// What kind of object a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Special,
}

/// What [`Filesystem::symlink_metadata`] and [`Filesystem::metadata`] tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Kind of object.
    pub file_type: FileType,
    /// Size in bytes.
    pub len: u64,
    /// Permission bits (the low 12 bits of `st_mode`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// One entry of a directory listing (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (not a path). Non-UTF-8 bytes are replaced.
    pub name: String,
    /// Kind of object, as the directory entry (or its inode) says.
    pub file_type: FileType,
}

/// Read-only, path-based access to one filesystem.
///
/// Paths are absolute (`/etc/os-release`) within the filesystem. Symlinks in
/// a path resolve inside the filesystem, never out of it: an absolute target
/// starts again at this filesystem's root and `..` stops at it. Loops end in
/// [`FsError::TooManySymlinks`].
pub trait Filesystem {
    /// The entries of the directory at `path`, sorted by name.
    ///
    /// # Errors
    /// [`FsError`] naming `path` when it is missing, not a directory, or corrupt.
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError>;

    /// Metadata of `path` itself (a final symlink is not followed).
    ///
    /// # Errors
    /// [`FsError`] naming `path`.
    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError>;

    /// Metadata of what `path` names, following a final symlink.
    ///
    /// # Errors
    /// [`FsError`] naming `path`.
    fn metadata(&self, path: &str) -> Result<Metadata, FsError>;

    /// The whole content of the file at `path` (symlinks followed), at most
    /// `limit` bytes.
    ///
    /// # Errors
    /// [`FsError::TooLarge`] when the file is longer than `limit` (nothing
    /// larger is ever allocated); other [`FsError`]s naming `path`.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError>;

    /// The target of the symlink at `path`.
    ///
    /// # Errors
    /// [`FsError`] naming `path`, [`FsError::NotASymlink`] when it is none.
    fn read_link(&self, path: &str) -> Result<String, FsError>;

    /// Conditions found at open time that qualify every result, e.g. "dirty
    /// log replayed in memory: 12 transactions" or "dirty log not replayed:
    /// results may be stale". Empty by default.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why a filesystem could not be opened or a path in it could not be read.
///
/// The categories matter: `Io` may be retried, `Corrupt` and `Unsupported`
/// become the report's per-volume skip reasons.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A directory was expected.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path asked for.
        path: String,
    },
    /// A regular file was expected.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path asked for.
        path: String,
    },
    /// A symlink was expected.
    #[error("{path}: not a symlink")]
    NotASymlink {
        /// The path asked for.
        path: String,
    },
    /// Symlinks nest too deep or loop.
    #[error("{path}: too many levels of symbolic links")]
    TooManySymlinks {
        /// The path asked for.
        path: String,
    },
    /// The file is larger than the caller allowed.
    #[error("{path}: {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The path asked for.
        path: String,
        /// The file's size.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// Reading the underlying source failed.
    #[error("{what}: I/O error: {detail}")]
    Io {
        /// What was being read (a path, or a structure).
        what: String,
        /// The reason.
        detail: String,
    },
    /// On-disk data is inconsistent.
    #[error("{what}: corrupt: {detail}")]
    Corrupt {
        /// The structure or path that is corrupt.
        what: String,
        /// What is wrong, with its location where known.
        detail: String,
    },
    /// The filesystem uses a feature this reader does not implement.
    #[error("unsupported: {feature}")]
    Unsupported {
        /// The feature, named as the format's documentation names it.
        feature: String,
    },
    /// The file is encrypted and cannot be read.
    #[error("{path}: encrypted")]
    Encrypted {
        /// The path asked for.
        path: String,
    },
}

impl FsError {
    /// True for "this path is simply not there" (including a missing parent),
    /// which detectors treat as "nothing to report", not as an error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::NotFound { .. })
    }
}

/// A block source holding a filesystem of a known kind. `Send + Sync`: it
/// opens one [`Filesystem`] per thread.
#[derive(Clone)]
pub struct Volume {
    source: Arc<dyn BlockSource>,
    kind: FsKind,
    /// Directories already resolved, shared by every reader of this volume.
    known_dirs: Arc<resolve::KnownDirs>,
    /// An XFS log replayed once, shared by every reader of this volume.
    xfs_log: Arc<xfs::SharedRecovery>,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("kind", &self.kind)
            .field("size", &self.source.size())
            .finish()
    }
}

impl Volume {
    /// A volume of `kind` on `source` (usually from [`probe()`]).
    pub fn new(source: Arc<dyn BlockSource>, kind: FsKind) -> Self {
        Self {
            source,
            kind,
            known_dirs: Arc::default(),
            xfs_log: Arc::default(),
        }
    }

    /// The filesystem kind.
    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// The bytes of the volume.
    pub fn source(&self) -> &Arc<dyn BlockSource> {
        &self.source
    }

    /// Open a reader of this volume's filesystem.
    ///
    /// # Errors
    /// [`FsError::Unsupported`] for kinds without a reader yet, otherwise what
    /// the reader found wrong with the superblock and what it loads first.
    pub fn open(&self) -> Result<Box<dyn Filesystem>, FsError> {
        match self.kind {
            FsKind::Ext4 => Ok(Box::new(ext4::Ext4Fs::open(
                Arc::clone(&self.source),
                Arc::clone(&self.known_dirs),
            )?)),
            FsKind::Xfs => Ok(Box::new(xfs::XfsFs::open(
                Arc::clone(&self.source),
                &self.xfs_log,
            )?)),
            other => Err(FsError::Unsupported {
                feature: format!("{} filesystem", other.name()),
            }),
        }
    }
}
