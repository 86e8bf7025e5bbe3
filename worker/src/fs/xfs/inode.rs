//! On-disk inodes (`struct xfs_dinode`, XFS on-disk format reference,
//! "On-disk Inode"): a big-endian core of 100 bytes (v1/v2) or 176 bytes
//! (v3, with CRC32c at byte 100, its own number at 152 and the filesystem
//! UUID at 160), then the data fork and, from `di_forkoff × 8`, the
//! attribute fork.
//!
//! The data fork is `LOCAL` (bytes inline: short-form directories and
//! short symlinks), `EXTENTS` (an array of 16-byte extent records),
//! `BTREE` (the root of a bmbt, see [`bmbt`](super::bmbt)) or `DEV`.
//! With the `NREXT64` inode flag (RHEL 10, Fedora 40+: `mkfs.xfs -i
//! nrext64=1`) the data fork extent count is a 64-bit field at byte 24 and
//! the attribute count a 32-bit one at 76; otherwise they are 32 and 16
//! bits at 76 and 80. Timestamps (`bigtime` or not) are not read: the
//! [`Metadata`](crate::fs::Metadata) seam has none.

use super::bmbt::{self, Extent};
use super::bytes::{be16, be32, be64, byte, corrupt, short, to_usize};
use super::crc;
use super::superblock::Superblock;
use crate::fs::{FileType, FsError};

/// `IN`.
const MAGIC: u16 = 0x494e;

/// Size of the v1/v2 core and of the v3 core.
const CORE_V2: usize = 100;
const CORE_V3: usize = 176;

/// Offset of `di_crc` in a v3 inode.
pub(super) const CRC_OFFSET: usize = 100;

/// `di_flags` bit: the data lives on the realtime device.
const DIFLAG_REALTIME: u16 = 0x1;

/// `di_flags2` bit: large extent counters.
const FLAGS2_NREXT64: u64 = 0x10;

/// `di_format` values.
const FMT_DEV: u8 = 0;
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;

/// `S_IFMT` and the types of `di_mode`.
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

/// What a data fork holds.
#[derive(Debug, Clone)]
pub(super) enum Fork {
    /// Inline bytes (the whole fork area; `size` says how many are used).
    Local(Vec<u8>),
    /// The extent map, decoded from the inode.
    Extents(Vec<Extent>),
    /// The bmbt root (`xfs_bmdr_block`) and the fork area's size.
    Btree(Vec<u8>),
    /// A device, FIFO or socket: no data.
    Device,
}

/// One inode, parsed and checked.
#[derive(Debug, Clone)]
pub(super) struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Data on the realtime device (`XFS_DIFLAG_REALTIME`), not read here.
    pub realtime: bool,
    pub fork: Fork,
}

impl Inode {
    /// Parse inode `ino` from its `inode_size` bytes. `replayed`: the log
    /// replay wrote these bytes, so the CRC is stale and not checked.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] naming the inode and its byte offset.
    pub(super) fn parse(
        sb: &Superblock,
        ino: u64,
        at: u64,
        bytes: &[u8],
        replayed: bool,
    ) -> Result<Self, FsError> {
        let what = format!("xfs inode {ino} at byte {at}");
        let f16 = |o| be16(bytes, o).ok_or_else(|| short(&what));
        let f32 = |o| be32(bytes, o).ok_or_else(|| short(&what));
        let f64 = |o| be64(bytes, o).ok_or_else(|| short(&what));
        let f8 = |o| byte(bytes, o).ok_or_else(|| short(&what));
        if f16(0)? != MAGIC {
            return Err(corrupt(&what, "bad magic (expected IN)"));
        }
        let mode = f16(2)?;
        let version = f8(4)?;
        let format = f8(5)?;
        let core = match version {
            1 | 2 if !sb.has_crc() => CORE_V2,
            3 if sb.has_crc() => CORE_V3,
            other => {
                return Err(corrupt(
                    &what,
                    format!("inode version {other} on a v{} filesystem", sb.version),
                ));
            }
        };
        if version == 3 {
            if !replayed && !crc::verify(bytes, CRC_OFFSET) {
                return Err(corrupt(&what, "CRC mismatch"));
            }
            if f64(152)? != ino {
                return Err(corrupt(
                    &what,
                    format!("records inode number {}", f64(152)?),
                ));
            }
            if bytes.get(160..176) != Some(&sb.meta_uuid[..]) {
                return Err(corrupt(&what, "filesystem UUID mismatch"));
            }
        }
        let flags2 = if version == 3 { f64(120)? } else { 0 };
        let nrext64 = flags2 & FLAGS2_NREXT64 != 0;
        if nrext64 && !sb.nrext64 {
            return Err(corrupt(
                &what,
                "large extent counts on a filesystem without nrext64",
            ));
        }
        let extents = if nrext64 {
            f64(24)?
        } else {
            u64::from(f32(76)?)
        };
        let uid = f32(8)?;
        let gid = f32(12)?;
        let size = f64(56)?;
        if size > i64::MAX.unsigned_abs() {
            return Err(corrupt(&what, format!("size {size} is negative")));
        }
        let forkoff = usize::from(f8(82)?).saturating_mul(8);
        let literal = bytes.len().checked_sub(core).ok_or_else(|| short(&what))?;
        let fork_size = if forkoff == 0 { literal } else { forkoff };
        if fork_size > literal {
            return Err(corrupt(
                &what,
                format!("attribute fork offset {forkoff} past the inode"),
            ));
        }
        let area = bytes
            .get(core..core.saturating_add(fork_size))
            .ok_or_else(|| short(&what))?;
        let kind = mode & S_IFMT;
        let fork = match (format, kind) {
            (_, 0) => return Err(corrupt(&what, "mode 0: a free inode")),
            (FMT_LOCAL, S_IFDIR | S_IFLNK) => {
                if size > crate::fs::xfs::bytes::to_u64(fork_size) {
                    return Err(corrupt(
                        &what,
                        format!("inline size {size} over the fork's {fork_size} bytes"),
                    ));
                }
                Fork::Local(area.to_vec())
            }
            (FMT_EXTENTS, S_IFDIR | S_IFLNK | S_IFREG) => {
                let count = to_usize(extents);
                if count > fork_size / bmbt::RECORD_SIZE {
                    return Err(corrupt(
                        &what,
                        format!("{extents} extents do not fit the {fork_size}-byte fork"),
                    ));
                }
                let mut list = Vec::with_capacity(count);
                for record in area.chunks_exact(bmbt::RECORD_SIZE).take(count) {
                    list.push(bmbt::decode(record).ok_or_else(|| short(&what))?);
                }
                bmbt::check_sorted(&list, &what)?;
                Fork::Extents(list)
            }
            (FMT_BTREE, S_IFDIR | S_IFREG | S_IFLNK) => Fork::Btree(area.to_vec()),
            (FMT_DEV, k) if k != S_IFDIR && k != S_IFREG && k != S_IFLNK => Fork::Device,
            (format, kind) => {
                return Err(corrupt(
                    &what,
                    format!("data fork format {format} for file type {kind:#o}"),
                ));
            }
        };
        Ok(Self {
            ino,
            mode,
            uid,
            gid,
            size,
            realtime: f16(90)? & DIFLAG_REALTIME != 0,
            fork,
        })
    }

    /// The kind of file.
    pub(super) fn file_type(&self) -> FileType {
        mode_type(self.mode)
    }
}

/// The kind of file a `di_mode` describes.
pub(super) fn mode_type(mode: u16) -> FileType {
    match mode & S_IFMT {
        S_IFREG => FileType::File,
        S_IFDIR => FileType::Dir,
        S_IFLNK => FileType::Symlink,
        _ => FileType::Special,
    }
}
