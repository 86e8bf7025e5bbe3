//! Directories (XFS on-disk format reference, "Directories"): the entries
//! of every format, read in the same two ways.
//!
//! - Short form: the entries inline in the inode's data fork (`LOCAL`):
//!   a header (count, count of 8-byte inode numbers, the parent), then per
//!   entry a name length, a 2-byte offset tag, the name, the file type
//!   (with `ftype`) and a 4- or 8-byte inode number.
//! - Block, leaf, node and B+tree directories all keep their entries in
//!   *data blocks* of `blocksize << dirblklog` bytes mapped below the 32 GiB
//!   "leaf offset" of the directory's logical space; the hash index (leaf
//!   and node blocks) and free-space blocks live above it. A listing reads
//!   every data block; lookups use the sorted listing, so the hash index is
//!   never needed. A data block has magic `XD2B`/`XDB3` (the single block
//!   of a block directory, which ends in its leaf array and a tail) or
//!   `XD2D`/`XDD3`; v5 headers (64 bytes) carry a CRC32c at byte 4, the
//!   block's disk address, the filesystem UUID and the owner inode.
//! - Entries are 8-byte aligned: inode number (8), name length, name,
//!   file type, padding, and a 2-byte tag holding the entry's own offset;
//!   unused space is a `0xffff` tag, a length, and the same trailing tag.

use super::bytes::{be16, be32, be64, byte, corrupt, short, to_usize};
use super::crc;
use super::superblock::Superblock;
use crate::fs::FileType;
use crate::fs::FsError;

/// The start of the hash index in a directory's logical space, in bytes
/// (`XFS_DIR2_LEAF_OFFSET`).
pub(super) const LEAF_OFFSET_BYTES: u64 = 1 << 35;

/// Magic numbers of data blocks.
const BLOCK_V4: u32 = 0x5844_3242; // XD2B
const DATA_V4: u32 = 0x5844_3244; // XD2D
const BLOCK_V5: u32 = 0x5844_4233; // XDB3
const DATA_V5: u32 = 0x5844_4433; // XDD3

/// Data block header sizes.
const HEADER_V4: usize = 16;
const HEADER_V5: usize = 64;

/// The tag of unused space.
const FREE_TAG: u16 = 0xffff;

/// One directory entry (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `XFS_DIR3_FT_*`, 0 when the filesystem has no `ftype`.
    pub ftype: u8,
}

/// The file type an entry's `ftype` names, if it names one.
pub(super) fn ftype_type(ftype: u8) -> Option<FileType> {
    match ftype {
        1 => Some(FileType::File),
        2 => Some(FileType::Dir),
        3..=6 => Some(FileType::Special),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

/// The entries of a short-form directory whose fork bytes are `data`, of
/// which `size` are used.
///
/// # Errors
/// [`FsError::Corrupt`] naming the directory inode.
pub(super) fn shortform(
    sb: &Superblock,
    ino: u64,
    data: &[u8],
    size: u64,
) -> Result<Vec<Entry>, FsError> {
    let what = format!("xfs inode {ino} short-form directory");
    let data = data
        .get(..to_usize(size))
        .ok_or_else(|| corrupt(&what, format!("size {size} over the fork")))?;
    let count = usize::from(byte(data, 0).ok_or_else(|| short(&what))?);
    let i8count = byte(data, 1).ok_or_else(|| short(&what))?;
    let ino_len: usize = if i8count == 0 { 4 } else { 8 };
    let extra = usize::from(sb.ftype);
    let mut pos = 2usize.saturating_add(ino_len);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bad = || corrupt(&what, format!("entry {i} at byte {pos} runs past the end"));
        let namelen = usize::from(byte(data, pos).ok_or_else(bad)?);
        if namelen == 0 {
            return Err(corrupt(&what, format!("entry {i} has an empty name")));
        }
        let name_at = pos.saturating_add(3);
        let name = data
            .get(name_at..name_at.saturating_add(namelen))
            .ok_or_else(bad)?;
        let after = name_at.saturating_add(namelen);
        let ftype = if sb.ftype {
            byte(data, after).ok_or_else(bad)?
        } else {
            0
        };
        let ino_at = after.saturating_add(extra);
        let child = if ino_len == 4 {
            u64::from(be32(data, ino_at).ok_or_else(bad)?)
        } else {
            be64(data, ino_at).ok_or_else(bad)?
        };
        out.push(Entry {
            name: name.to_vec(),
            ino: child,
            ftype,
        });
        pos = ino_at.saturating_add(ino_len);
    }
    Ok(out)
}

/// Append the entries of one directory data block to `out`. `bytes` is the
/// whole directory block, read from byte `at` (its first filesystem
/// block); `replayed` skips the CRC (the log replay wrote it).
///
/// # Errors
/// [`FsError::Corrupt`] naming the directory inode and the block's offset.
pub(super) fn data_block(
    sb: &Superblock,
    dir_ino: u64,
    at: u64,
    bytes: &[u8],
    replayed: bool,
    out: &mut Vec<Entry>,
) -> Result<(), FsError> {
    let what = format!("xfs directory {dir_ino} data block at byte {at}");
    let magic = be32(bytes, 0).ok_or_else(|| short(&what))?;
    let (header, block_form) = match (sb.has_crc(), magic) {
        (false, BLOCK_V4) => (HEADER_V4, true),
        (false, DATA_V4) => (HEADER_V4, false),
        (true, BLOCK_V5) => (HEADER_V5, true),
        (true, DATA_V5) => (HEADER_V5, false),
        _ => return Err(corrupt(&what, format!("bad magic {magic:#010x}"))),
    };
    if sb.has_crc() {
        if !replayed && !crc::verify(bytes, 4) {
            return Err(corrupt(&what, "CRC mismatch"));
        }
        if be64(bytes, 8) != Some(at >> 9) {
            return Err(corrupt(&what, "records another block number"));
        }
        if bytes.get(24..40) != Some(&sb.meta_uuid[..]) {
            return Err(corrupt(&what, "filesystem UUID mismatch"));
        }
        if be64(bytes, 40) != Some(dir_ino) {
            return Err(corrupt(&what, "owned by another inode"));
        }
    }
    let size = bytes.len();
    let end = if block_form {
        // Tail: leaf entry count and stale count; the leaf array before it.
        let tail = size.checked_sub(8).ok_or_else(|| short(&what))?;
        let count = to_usize(u64::from(be32(bytes, tail).ok_or_else(|| short(&what))?));
        count
            .checked_mul(8)
            .and_then(|leaf| tail.checked_sub(leaf))
            .filter(|&end| end >= header)
            .ok_or_else(|| corrupt(&what, format!("{count} leaf entries do not fit")))?
    } else {
        size
    };
    let extra = usize::from(sb.ftype);
    let mut pos = header;
    while pos < end {
        let tag = be16(bytes, pos).ok_or_else(|| short(&what))?;
        if tag == FREE_TAG {
            let len = usize::from(be16(bytes, pos.saturating_add(2)).ok_or_else(|| short(&what))?);
            if len < 8 || len % 8 != 0 || pos.saturating_add(len) > end {
                return Err(corrupt(
                    &what,
                    format!("unused entry at {pos} of length {len}"),
                ));
            }
            pos = pos.saturating_add(len);
            continue;
        }
        let child = be64(bytes, pos).ok_or_else(|| short(&what))?;
        let namelen = usize::from(byte(bytes, pos.saturating_add(8)).ok_or_else(|| short(&what))?);
        // inumber, namelen, name, ftype, tag; rounded up to 8.
        let raw = 11usize.saturating_add(namelen).saturating_add(extra);
        let len = raw.saturating_add(7) & !7;
        if namelen == 0 || pos.saturating_add(len) > end {
            return Err(corrupt(
                &what,
                format!("entry at {pos} (name length {namelen}) runs past the end"),
            ));
        }
        let name_at = pos.saturating_add(9);
        let name = bytes
            .get(name_at..name_at.saturating_add(namelen))
            .ok_or_else(|| short(&what))?;
        let ftype = if sb.ftype {
            byte(bytes, name_at.saturating_add(namelen)).ok_or_else(|| short(&what))?
        } else {
            0
        };
        let tag_at = pos.saturating_add(len).saturating_sub(2);
        if be16(bytes, tag_at).map(usize::from) != Some(pos) {
            return Err(corrupt(&what, format!("entry at {pos} has a wrong tag")));
        }
        if name != b"." && name != b".." {
            out.push(Entry {
                name: name.to_vec(),
                ino: child,
                ftype,
            });
        }
        pos = pos.saturating_add(len);
    }
    Ok(())
}
