//! A directory on the host as a [`Filesystem`]: a volume the kernel mounted
//! (attach mode, for filesystems we do not parse) and fixture trees in tests.
//!
//! Paths resolve as in an image (see [`super::resolve`]): component by
//! component with `lstat`, and symlinks inside the root, never out of it.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::resolve::{self, KnownDirs, Lookup};
use super::{DirEntry, FileType, Filesystem, FsError, Metadata};

/// A directory tree treated as a filesystem root.
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    /// Treat `root` as `/`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Resolve `path` (see [`super::resolve`]) to a host path under the root.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, FsError> {
        // No cache across calls: a mounted tree may change under us.
        let canonical = resolve::resolve(self, &KnownDirs::default(), path, follow_last)?;
        Ok(self.host_path(&canonical))
    }

    /// The host path of a canonical in-filesystem path.
    fn host_path(&self, canonical: &str) -> PathBuf {
        let mut host = self.root.clone();
        host.extend(canonical.split('/').filter(|c| !c.is_empty()));
        host
    }
}

impl Lookup for HostFs {
    fn lstat(&self, path: &str) -> Result<Metadata, FsError> {
        fs::symlink_metadata(self.host_path(path))
            .map(|m| convert_metadata(&m))
            .map_err(|err| io_error(err, path))
    }

    fn link_target(&self, path: &str) -> Result<String, FsError> {
        fs::read_link(self.host_path(path))
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(|err| io_error(err, path))
    }
}

fn io_error(err: io::Error, path: &str) -> FsError {
    let path = path.to_string();
    match err.kind() {
        io::ErrorKind::NotFound => FsError::NotFound { path },
        io::ErrorKind::NotADirectory => FsError::NotADirectory { path },
        _ => FsError::Io {
            what: path,
            detail: err.to_string(),
        },
    }
}

fn convert_metadata(metadata: &fs::Metadata) -> Metadata {
    let file_type = metadata.file_type();
    Metadata {
        file_type: if file_type.is_file() {
            FileType::File
        } else if file_type.is_dir() {
            FileType::Dir
        } else if file_type.is_symlink() {
            FileType::Symlink
        } else {
            FileType::Special
        },
        len: metadata.len(),
        mode: u16::try_from(metadata.permissions().mode() & 0o7777).unwrap_or(0),
        uid: metadata.uid(),
        gid: metadata.gid(),
    }
}

impl Filesystem for HostFs {
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let dir = self.resolve(path, true)?;
        let entries = fs::read_dir(&dir).map_err(|err| io_error(err, path))?;
        let mut listing = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| io_error(err, path))?;
            let metadata = entry.metadata().map_err(|err| io_error(err, path))?;
            listing.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                file_type: convert_metadata(&metadata).file_type,
            });
        }
        listing.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let host = self.resolve(path, false)?;
        fs::symlink_metadata(host)
            .map(|m| convert_metadata(&m))
            .map_err(|err| io_error(err, path))
    }

    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let host = self.resolve(path, true)?;
        fs::symlink_metadata(host)
            .map(|m| convert_metadata(&m))
            .map_err(|err| io_error(err, path))
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        let host = self.resolve(path, true)?;
        let file = fs::File::open(&host).map_err(|err| io_error(err, path))?;
        let metadata = file.metadata().map_err(|err| io_error(err, path))?;
        if !metadata.is_file() {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        if metadata.len() > limit {
            return Err(FsError::TooLarge {
                path: path.to_string(),
                size: metadata.len(),
                limit,
            });
        }
        let mut content = Vec::new();
        // take(): the file may grow between the check and the read.
        file.take(limit)
            .read_to_end(&mut content)
            .map_err(|err| io_error(err, path))?;
        Ok(content)
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        let host = self.resolve(path, false)?;
        let metadata = fs::symlink_metadata(&host).map_err(|err| io_error(err, path))?;
        if !metadata.file_type().is_symlink() {
            return Err(FsError::NotASymlink {
                path: path.to_string(),
            });
        }
        fs::read_link(&host)
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(|err| io_error(err, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib"))?;
        fs::create_dir_all(root.join("etc"))?;
        fs::write(root.join("usr/lib/os-release"), "ID=test\n")?;
        symlink("../usr/lib/os-release", root.join("etc/os-release"))?;
        symlink("/usr/lib", root.join("etc/abs"))?;
        symlink("../../../../../../etc/passwd", root.join("etc/escape"))?;
        symlink("loop", root.join("etc/loop"))?;
        let fs = HostFs::new(root);
        assert_eq!(fs.read("/etc/os-release", 100)?, b"ID=test\n");
        assert_eq!(fs.read("/etc/abs/os-release", 100)?, b"ID=test\n");
        assert!(matches!(
            fs.read("/etc/escape", 100),
            Err(FsError::NotFound { .. })
        ));
        assert!(matches!(
            fs.read("/etc/loop", 100),
            Err(FsError::TooManySymlinks { .. })
        ));
        assert!(matches!(
            fs.read("/etc/os-release", 3),
            Err(FsError::TooLarge { size: 8, .. })
        ));
        assert_eq!(fs.read_link("/etc/os-release")?, "../usr/lib/os-release");
        Ok(())
    }
}
