//! Loop mounts: the kernel's view of an image, to cross-check the scanner
//! (read-only), and to make a filesystem dirty the way a running machine
//! does (read-write, then a forced shutdown).
//!
//! Mounting needs root and a kernel that allows loop devices. A test that
//! needs a mount fails when it cannot mount, unless `SCANNER_NO_MOUNT=1` is
//! set explicitly, in which case [`mounts_allowed`] is false and the test
//! says why it did nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::tools::{run, tool};

/// Whether mounting is allowed: false only when `SCANNER_NO_MOUNT=1`.
pub fn mounts_allowed() -> bool {
    std::env::var("SCANNER_NO_MOUNT").as_deref() != Ok("1")
}

/// A mounted loop device, unmounted on drop.
#[derive(Debug)]
pub struct LoopMount {
    dir: PathBuf,
    mounted: bool,
}

impl LoopMount {
    /// `mount -o loop,OPTIONS IMAGE DIR` (creating `DIR`).
    ///
    /// # Errors
    /// When the kernel refuses, with mount's message.
    pub fn new(image: &Path, dir: &Path, options: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        run(tool("mount")?
            .arg("-o")
            .arg(format!("loop,{options}"))
            .arg(image)
            .arg(dir))
        .with_context(|| {
            format!(
                "loop-mounting {} (needs root and loop devices; set SCANNER_NO_MOUNT=1 to skip \
                 the tests that need a kernel mount)",
                image.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Mount the partition at `offset` (`size` bytes) of `disk` read-only.
    ///
    /// # Errors
    /// As [`LoopMount::new`].
    pub fn partition_ro(disk: &Path, dir: &Path, offset: u64, size: u64) -> Result<Self> {
        Self::new(disk, dir, &format!("ro,offset={offset},sizelimit={size}"))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmount now.
    ///
    /// # Errors
    /// When umount fails.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        run(tool("umount")?.arg(&self.dir))?;
        Ok(())
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            // Best effort on an error path: a lazy unmount never blocks.
            if let Ok(mut cmd) = tool("umount") {
                let _ = cmd.arg("-l").arg(&self.dir).status();
            }
        }
    }
}

/// Make a crash-consistent snapshot of a filesystem in use: mount `live`
/// read-write, let `edit` change files under the mount point (it must fsync
/// what it writes, which commits the journal), stop the filesystem dead
/// with `xfs_io -x -c 'shutdown -f'` (FS_IOC_GOINGDOWN after flushing the
/// log, as fstests does on ext4), copy the image as the disk holds it at
/// that instant to `snapshot`, and unmount.
///
/// The snapshot's journal holds committed transactions that were never
/// checkpointed, and its superblock says `needs_recovery`; `sync` is
/// avoided on purpose, as it would write the metadata home.
///
/// # Errors
/// When mounting, `edit`, the shutdown or the copy fail.
pub fn dirty_snapshot(
    live: &Path,
    mountpoint: &Path,
    snapshot: &Path,
    edit: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let mounted = LoopMount::new(live, mountpoint, "rw")?;
    edit(mounted.path())?;
    run(tool("xfs_io")?
        .args(["-x", "-c", "shutdown -f"])
        .arg(mounted.path()))?;
    crate::tools::copy_sparse(live, snapshot)?;
    mounted.unmount()
}

/// Replace `path` the way dpkg does: write `path-new`, fsync it, rename it
/// over `path`, fsync the directory.
///
/// # Errors
/// On I/O failure.
pub fn replace_durably(path: &Path, contents: &str) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    let mut staged = path.as_os_str().to_owned();
    staged.push("-new");
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, contents)?;
    std::fs::File::open(&staged)?.sync_all()?;
    std::fs::rename(&staged, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
