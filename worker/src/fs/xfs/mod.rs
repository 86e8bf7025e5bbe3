//! XFS in user space: a read-only reader of the filesystem of Amazon Linux
//! and RHEL-family root volumes, behind the same [`Filesystem`] seam as
//! ext4.
//!
//! # Why hand-written
//! No crate fits. `xfs` on crates.io parses XFS *performance statistics*;
//! `xfs-fuse` is a FUSE server (a binary that mounts through the kernel's
//! FUSE layer, reading from a file), not a library over a positional-read
//! trait, and neither bounds its traversals against hostile images nor
//! replays the log. So this module parses the format itself, with checked
//! arithmetic, capped allocations and bounded walks.
//!
//! # Format reference
//! The XFS on-disk format as the kernel documents it ("XFS Algorithms &
//! Data Structures", `Documentation/filesystems/xfs/`) and as xfsprogs'
//! headers define it (`xfs_format.h`, `xfs_da_format.h`,
//! `xfs_log_format.h`). One file per structure:
//!
//! - [`superblock`]: geometry and features, v4 and v5 (CRC32c), any sector
//!   size (512 B to 32 KiB) and block size (512 B to 64 KiB), any number of
//!   allocation groups. Block and inode numbers encode the AG in their high
//!   bits; an address is `(agno × agblocks + agbno) × blocksize`.
//! - [`inode`]: v2 and v3 inodes of 256 to 2048 bytes; local, extent-list
//!   and btree data forks; the large extent counter (`nrext64`). Sparse
//!   inode chunks, `bigtime` and the inode btrees need nothing here: an
//!   inode's place follows from its number.
//! - [`bmbt`]: extent records and the extent B+tree.
//! - [`dir`]: short-form, block, leaf, node and B+tree directories, with or
//!   without `ftype`.
//! - [`symlink`]: inline and remote symlink targets.
//! - [`log`] and [`recover`]: the journal. A snapshot of a running
//!   instance has a dirty log; it is replayed in memory (see there).
//! - [`device`]: reads with the replayed metadata laid over the source and
//!   a bounded block cache; [`crc`]: CRC32c; [`cache`]; [`bytes`].
//!
//! Regular files read sparse holes and unwritten (preallocated) extents as
//! zeros. Every v5 structure read is checked for its magic, CRC, owner,
//! block number and UUID; a mismatch is [`FsError::Corrupt`] naming the
//! structure and its byte offset. Files on a realtime device, external
//! logs, and the metadata directory tree (`metadir`) are not supported.
//!
//! One [`XfsFs`] is opened per thread (it caches in `RefCell`s); the log is
//! replayed once per block source and shared (see [`log`]). Opening reads
//! the superblock and the root inode only (no AG headers: an inode's or a
//! block's place follows from its number). Lookups binary-search cached,
//! sorted directory listings, so resolving a path costs one cached lookup
//! per component; the caches (inodes, listings, metadata blocks) are
//! bounded. What open found about the log is in
//! [`Filesystem::notes`]: "dirty log replayed in memory: N transactions
//! (…)", or "dirty log not replayed: results may be stale (why)".

#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

mod bmbt;
mod bytes;
mod cache;
mod crc;
mod device;
mod dir;
mod inode;
mod log;
pub use self::log::SharedRecovery;
mod recover;
mod superblock;
mod symlink;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use self::bmbt::Extent;
use self::bytes::{corrupt, to_u64, to_usize};
use self::cache::Cache;
use self::device::Device;
use self::dir::Entry;
use self::inode::{Fork, Inode};
use self::superblock::Superblock;
use super::resolve::MAX_SYMLINKS;
use super::{DirEntry, FileType, Filesystem, FsError, Metadata};
use crate::block::BlockSource;

/// Inodes cached per open filesystem (two generations of this many).
const CACHED_INODES: usize = 8192;

/// Directory listings cached per open filesystem (two generations).
const CACHED_DIRS: usize = 1024;

/// Listings longer than this are not put in the general cache (a hostile
/// image could otherwise make it hold `CACHED_DIRS` huge listings); the
/// most recent one is kept on its own.
const CACHED_DIR_ENTRIES: usize = 65_536;

/// Most entries read from one directory (about 64 bytes each in memory).
const MAX_DIR_ENTRIES: usize = 4 * 1024 * 1024;

/// Largest read of file data in one call.
const READ_CHUNK: u64 = 4 * 1024 * 1024;

/// A directory's entries, sorted by name.
#[derive(Debug)]
struct Listing {
    entries: Vec<Entry>,
}

impl Listing {
    fn lookup(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.entries.get(i))
    }
}

/// One open XFS filesystem (not `Send`; open one per thread).
pub struct XfsFs {
    sb: Superblock,
    dev: Device,
    inodes: RefCell<Cache<u64, Rc<Inode>>>,
    dirs: RefCell<Cache<u64, Rc<Listing>>>,
    big_dir: RefCell<Option<(u64, Rc<Listing>)>>,
    notes: Vec<String>,
}

impl XfsFs {
    /// Read the superblock of the XFS filesystem on `source` and check its
    /// log: a dirty log is replayed in memory (once per source, shared by
    /// every thread's reader).
    ///
    /// # Errors
    /// [`FsError::Corrupt`] for a damaged superblock or root inode,
    /// [`FsError::Unsupported`] for features this reader lacks,
    /// [`FsError::Io`] when the source fails.
    pub fn open(source: Arc<dyn BlockSource>, shared: &SharedRecovery) -> Result<Self, FsError> {
        let sb = Superblock::read(&*source)?;
        let recovery = log::recover_shared(shared, &*source, &sb);
        let fs = Self {
            dev: Device::new(source, recovery.overlay.clone()),
            sb,
            inodes: RefCell::new(Cache::new(CACHED_INODES)),
            dirs: RefCell::new(Cache::new(CACHED_DIRS)),
            big_dir: RefCell::new(None),
            notes: recovery.notes.clone(),
        };
        let root = fs.inode(fs.sb.root_ino)?;
        if root.file_type() != FileType::Dir {
            return Err(corrupt(
                format!("xfs root inode {}", fs.sb.root_ino),
                "not a directory",
            ));
        }
        Ok(fs)
    }

    /// Open without replaying a dirty log: what a reader that ignores the
    /// log would see (tests prove the replay matters with it).
    #[cfg(test)]
    fn open_without_replay(source: Arc<dyn BlockSource>) -> Result<Self, FsError> {
        let sb = Superblock::read(&*source)?;
        Ok(Self {
            dev: Device::new(source, None),
            sb,
            inodes: RefCell::new(Cache::new(CACHED_INODES)),
            dirs: RefCell::new(Cache::new(CACHED_DIRS)),
            big_dir: RefCell::new(None),
            notes: Vec::new(),
        })
    }

    /// What open found worth telling (a replayed or unreplayable log).
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Inode `ino`, through the cache.
    fn inode(&self, ino: u64) -> Result<Rc<Inode>, FsError> {
        if let Some(inode) = self.inodes.borrow_mut().get(&ino) {
            return Ok(inode);
        }
        let at = self.sb.inode_byte(ino).ok_or_else(|| {
            corrupt(
                format!("xfs inode {ino}"),
                "inode number outside the filesystem",
            )
        })?;
        let block_size = u64::from(self.sb.block_size);
        let block_at = at & !(block_size.saturating_sub(1));
        let what = format!("xfs inode {ino} at byte {at}");
        let block = self.dev.block(block_at, to_usize(block_size), &what)?;
        let start = to_usize(at.saturating_sub(block_at));
        let bytes = block
            .bytes
            .get(start..start.saturating_add(usize::from(self.sb.inode_size)))
            .ok_or_else(|| corrupt(&what, "inode past its block"))?;
        let inode = Rc::new(Inode::parse(&self.sb, ino, at, bytes, block.replayed)?);
        self.inodes.borrow_mut().insert(ino, Rc::clone(&inode));
        Ok(inode)
    }

    /// The extent map of `inode`'s data fork.
    fn extents(&self, inode: &Inode) -> Result<Vec<Extent>, FsError> {
        match &inode.fork {
            Fork::Extents(list) => Ok(list.clone()),
            Fork::Btree(root) => bmbt::walk(&self.dev, &self.sb, inode.ino, root),
            Fork::Local(_) | Fork::Device => Ok(Vec::new()),
        }
    }

    /// Byte offset of `extent`'s first block, checked: the whole extent
    /// lies in one AG, inside the filesystem.
    fn extent_byte(&self, extent: &Extent, what: &str) -> Result<u64, FsError> {
        let bad = || {
            corrupt(
                what,
                format!(
                    "extent of {} blocks at block {:#x} is outside the filesystem",
                    extent.count, extent.block
                ),
            )
        };
        let last = extent
            .block
            .checked_add(extent.count.saturating_sub(1))
            .ok_or_else(bad)?;
        let first = self.sb.fsb_to_byte(extent.block).ok_or_else(bad)?;
        let end = self.sb.fsb_to_byte(last).ok_or_else(bad)?;
        let span = extent
            .count
            .saturating_sub(1)
            .checked_shl(u32::from(self.sb.block_log));
        if first.checked_add(span.ok_or_else(bad)?) != Some(end) {
            return Err(bad());
        }
        Ok(first)
    }

    /// The sorted listing of directory `inode`.
    fn listing(&self, inode: &Inode) -> Result<Rc<Listing>, FsError> {
        if let Some(listing) = self.dirs.borrow_mut().get(&inode.ino) {
            return Ok(listing);
        }
        if let Some((ino, listing)) = &*self.big_dir.borrow()
            && *ino == inode.ino
        {
            return Ok(Rc::clone(listing));
        }
        let mut entries = match &inode.fork {
            Fork::Local(data) => dir::shortform(&self.sb, inode.ino, data, inode.size)?,
            Fork::Extents(_) | Fork::Btree(_) => self.dir_blocks(inode)?,
            Fork::Device => {
                return Err(corrupt(
                    format!("xfs directory {}", inode.ino),
                    "device data fork",
                ));
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let listing = Rc::new(Listing { entries });
        if listing.entries.len() <= CACHED_DIR_ENTRIES {
            self.dirs
                .borrow_mut()
                .insert(inode.ino, Rc::clone(&listing));
        } else {
            *self.big_dir.borrow_mut() = Some((inode.ino, Rc::clone(&listing)));
        }
        Ok(listing)
    }

    /// The entries of every data block of a block/leaf/node/btree directory.
    fn dir_blocks(&self, inode: &Inode) -> Result<Vec<Entry>, FsError> {
        let what = format!("xfs directory {}", inode.ino);
        let extents = self.extents(inode)?;
        let fsbs = self.sb.dir_block_fsbs();
        let leaf_fsb = dir::LEAF_OFFSET_BYTES >> self.sb.block_log;
        let dir_size = to_usize(u64::from(self.sb.dir_block_size()));
        let block_size = to_usize(u64::from(self.sb.block_size));
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        let mut last_db = None;
        let mut buf = vec![0u8; dir_size];
        for extent in &extents {
            if extent.offset >= leaf_fsb {
                break;
            }
            let end = extent.end().min(leaf_fsb);
            let mut fsb = extent.offset;
            while fsb < end {
                let db = fsb.checked_div(fsbs).unwrap_or(fsb);
                fsb = db.saturating_add(1).saturating_mul(fsbs);
                if last_db == Some(db) {
                    continue;
                }
                last_db = Some(db);
                // Assemble the directory block from its filesystem blocks.
                let first = db.saturating_mul(fsbs);
                let mut at_first = None;
                let mut replayed = false;
                for (i, chunk) in buf.chunks_exact_mut(block_size).enumerate() {
                    let file_block = first.saturating_add(to_u64(i));
                    let ext = find(&extents, file_block).ok_or_else(|| {
                        corrupt(&what, format!("hole inside directory block {db}"))
                    })?;
                    if ext.unwritten {
                        return Err(corrupt(&what, "unwritten directory block"));
                    }
                    let base = self.extent_byte(ext, &what)?;
                    let at = file_block
                        .checked_sub(ext.offset)
                        .and_then(|n| n.checked_shl(u32::from(self.sb.block_log)))
                        .and_then(|n| base.checked_add(n))
                        .ok_or_else(|| corrupt(&what, "block address overflows"))?;
                    if !seen.insert(at) {
                        return Err(corrupt(&what, format!("block at byte {at} mapped twice")));
                    }
                    at_first.get_or_insert(at);
                    replayed |= self.dev.read_into(chunk, at, &what)?;
                }
                let at = at_first.unwrap_or(0);
                dir::data_block(&self.sb, inode.ino, at, &buf, replayed, &mut entries)?;
                if entries.len() > MAX_DIR_ENTRIES {
                    return Err(FsError::Unsupported {
                        feature: format!("{what}: more than {MAX_DIR_ENTRIES} entries"),
                    });
                }
            }
        }
        Ok(entries)
    }

    /// The target of symlink `inode`.
    fn link_target(&self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        match &inode.fork {
            Fork::Local(data) => data
                .get(..to_usize(inode.size))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt(format!("xfs symlink {}", inode.ino), "size over the fork")),
            _ => {
                let extents = self.extents(inode)?;
                symlink::remote(&self.dev, &self.sb, inode.ino, inode.size, &extents)
            }
        }
    }

    /// Resolve `path` to an inode, following symlinks in every component
    /// (and in the last one when `follow_last`), inside this filesystem.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<Rc<Inode>, FsError> {
        let mut links = 0u32;
        let mut pending: Vec<Vec<u8>> = split(path.as_bytes()).rev().collect();
        let root = self.sb.root_ino;
        // Directories entered, the root first (for `..`).
        let mut stack: Vec<u64> = vec![root];
        let mut current = self.inode(root)?;
        while let Some(component) = pending.pop() {
            match component.as_slice() {
                b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    let top = stack.last().copied().unwrap_or(root);
                    current = self.inode(top)?;
                    continue;
                }
                _ => {}
            }
            let listing = self.listing(&current).map_err(|err| at_path(err, path))?;
            let entry = listing
                .lookup(&component)
                .ok_or_else(|| FsError::NotFound {
                    path: path.to_string(),
                })?;
            let child = self.inode(entry.ino).map_err(|err| at_path(err, path))?;
            let is_last = pending.is_empty();
            match child.file_type() {
                FileType::Symlink if !is_last || follow_last => {
                    links = links.saturating_add(1);
                    if links > MAX_SYMLINKS {
                        return Err(FsError::TooManySymlinks {
                            path: path.to_string(),
                        });
                    }
                    let target = self.link_target(&child).map_err(|err| at_path(err, path))?;
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                        current = self.inode(root)?;
                    }
                    pending.extend(split(&target).rev());
                    continue;
                }
                FileType::Dir => {
                    stack.push(child.ino);
                    current = child;
                }
                _ if !is_last => {
                    return Err(FsError::NotADirectory {
                        path: path.to_string(),
                    });
                }
                _ => {
                    // The final component: returned below, never a parent.
                    return Ok(child);
                }
            }
        }
        Ok(current)
    }

    /// The content of regular file `inode`, which is at most `limit` bytes.
    fn file_content(&self, inode: &Inode, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        let size = inode.size;
        let too_large = || FsError::TooLarge {
            path: path.to_string(),
            size,
            limit,
        };
        if size > limit {
            return Err(too_large());
        }
        let len = usize::try_from(size).map_err(|_| too_large())?;
        if inode.realtime && size > 0 {
            return Err(FsError::Unsupported {
                feature: format!("{path}: xfs realtime device data"),
            });
        }
        let what = format!("{path} (xfs inode {})", inode.ino);
        let extents = self.extents(inode).map_err(|err| at_path(err, path))?;
        let mut content = vec![0u8; len];
        let block_log = u32::from(self.sb.block_log);
        // Tell the source every extent to come, so that a remote one fetches
        // them at once (a package database is many extents on a busy disk).
        let ranges: Vec<(u64, u64)> = extents
            .iter()
            .filter(|extent| !extent.unwritten)
            .filter_map(|extent| {
                let start = extent.offset.checked_shl(block_log)?;
                let end = extent.end().checked_shl(block_log)?.min(size);
                let base = self.extent_byte(extent, &what).ok()?;
                (start < end).then(|| (base, end.saturating_sub(start)))
            })
            .collect();
        self.dev.prefetch(&ranges);
        for extent in &extents {
            let start = extent.offset.checked_shl(block_log).unwrap_or(u64::MAX);
            if start >= size {
                break;
            }
            if extent.unwritten {
                continue;
            }
            let base = self.extent_byte(extent, &what)?;
            let end = extent
                .end()
                .checked_shl(block_log)
                .unwrap_or(u64::MAX)
                .min(size);
            let mut pos = start;
            while pos < end {
                let n = end.saturating_sub(pos).min(READ_CHUNK);
                let from = to_usize(pos);
                let dst = content
                    .get_mut(from..from.saturating_add(to_usize(n)))
                    .ok_or_else(|| corrupt(&what, "extent past the end"))?;
                let disk = base.saturating_add(pos.saturating_sub(start));
                self.dev.read_raw(dst, disk, &what)?;
                pos = pos.saturating_add(n);
            }
        }
        Ok(content)
    }
}

/// The extent of `extents` (sorted) that maps file block `block`.
fn find(extents: &[Extent], block: u64) -> Option<&Extent> {
    let i = extents.partition_point(|e| e.end() <= block);
    extents.get(i).filter(|e| e.offset <= block)
}

/// The non-empty components of `path`.
fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

/// Name `path` in an error about a structure met while resolving it.
fn at_path(err: FsError, path: &str) -> FsError {
    match err {
        FsError::Corrupt { what, detail } => FsError::Corrupt {
            what: format!("{path}: {what}"),
            detail,
        },
        FsError::Io { what, detail } => FsError::Io {
            what: format!("{path}: {what}"),
            detail,
        },
        other => other,
    }
}

fn metadata(inode: &Inode) -> Metadata {
    Metadata {
        file_type: inode.file_type(),
        len: inode.size,
        mode: inode.mode & 0o7777,
        uid: inode.uid,
        gid: inode.gid,
    }
}

impl Filesystem for XfsFs {
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let inode = self.resolve(path, true)?;
        if inode.file_type() != FileType::Dir {
            return Err(FsError::NotADirectory {
                path: path.to_string(),
            });
        }
        let listing = self.listing(&inode).map_err(|err| at_path(err, path))?;
        let mut out = Vec::with_capacity(listing.entries.len());
        for entry in &listing.entries {
            let file_type = match dir::ftype_type(entry.ftype) {
                Some(file_type) if self.sb.ftype => file_type,
                _ => self
                    .inode(entry.ino)
                    .map_err(|err| at_path(err, path))?
                    .file_type(),
            };
            out.push(DirEntry {
                name: String::from_utf8_lossy(&entry.name).into_owned(),
                file_type,
            });
        }
        // Sorted by bytes already; lossy names may sort differently.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn symlink_metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let inode = self.resolve(path, false)?;
        Ok(metadata(&inode))
    }

    fn metadata(&self, path: &str) -> Result<Metadata, FsError> {
        let inode = self.resolve(path, true)?;
        Ok(metadata(&inode))
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, FsError> {
        let inode = self.resolve(path, true)?;
        if inode.file_type() != FileType::File {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        self.file_content(&inode, path, limit)
    }

    fn read_link(&self, path: &str) -> Result<String, FsError> {
        let inode = self.resolve(path, false)?;
        if inode.file_type() != FileType::Symlink {
            return Err(FsError::NotASymlink {
                path: path.to_string(),
            });
        }
        let target = self.link_target(&inode).map_err(|err| at_path(err, path))?;
        Ok(String::from_utf8_lossy(&target).into_owned())
    }

    fn notes(&self) -> Vec<String> {
        XfsFs::notes(self)
    }
}
