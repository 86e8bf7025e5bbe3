//! Extent maps: the 16-byte extent record (`xfs_bmbt_rec`) and the B+tree
//! of them (bmbt) that an inode's fork holds in `BTREE` format (XFS on-disk
//! format reference, "Data Extents" and "B+tree Extent List").
//!
//! A record packs, big-endian over 128 bits: the unwritten flag (bit 127),
//! the file offset in blocks (54 bits), the start block (52 bits,
//! an AG-relative filesystem block number) and the length (21 bits).
//!
//! The root sits in the inode (`xfs_bmdr_block`: level, numrecs, then
//! `maxrecs` keys and `maxrecs` pointers where `maxrecs` follows from the
//! fork size). Interior and leaf blocks are long-form btree blocks with
//! magic `BMAP` (v4, 24-byte header) or `BMA3` (v5, 72-byte header with
//! block number, UUID, owner inode and CRC32c at byte 64).
//!
//! The walk is bounded: every level must be one less than its parent's,
//! the height at most [`MAX_HEIGHT`], no block is visited twice, at most
//! [`MAX_EXTENTS`] records are collected, and the records must come out
//! sorted and non-overlapping.

use std::collections::HashSet;

use super::bytes::{be16, be32, be64, corrupt, short, to_usize};
use super::crc;
use super::device::Device;
use super::superblock::Superblock;
use crate::fs::FsError;

/// Bytes in one extent record.
pub(super) const RECORD_SIZE: usize = 16;

/// Tallest bmbt walked. The kernel's limit for 2⁶⁴ extents with the
/// smallest blocks is 9 (`xfs_bmbt_maxlevels_ondisk`).
const MAX_HEIGHT: u16 = 9;

/// Most extent records loaded for one file: a 16 GiB file fragmented into
/// single 4 KiB blocks (≈ 100 MiB of map in memory).
pub(super) const MAX_EXTENTS: usize = 4 * 1024 * 1024;

/// `BMAP` and `BMA3`.
const MAGIC_V4: u32 = 0x424d_4150;
const MAGIC_V5: u32 = 0x424d_4133;

/// Long-form btree header sizes.
const HEADER_V4: usize = 24;
const HEADER_V5: usize = 72;

/// Offset of the CRC in a v5 long-form btree block.
const CRC_OFFSET: usize = 64;

/// One mapping of file blocks to disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Extent {
    /// First file block.
    pub offset: u64,
    /// First filesystem block (AG number in the high bits).
    pub block: u64,
    /// Length in blocks (never 0).
    pub count: u64,
    /// Preallocated, never written: reads as zeros.
    pub unwritten: bool,
}

impl Extent {
    /// The file block after the last one.
    pub(super) fn end(&self) -> u64 {
        self.offset.saturating_add(self.count)
    }
}

/// Decode one record; `None` when `record` is short.
pub(super) fn decode(record: &[u8]) -> Option<Extent> {
    let l0 = be64(record, 0)?;
    let l1 = be64(record, 8)?;
    Some(Extent {
        unwritten: l0 >> 63 != 0,
        offset: (l0 & ((1u64 << 63) - 1)) >> 9,
        block: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        count: l1 & 0x1f_ffff,
    })
}

/// Check that `list` is sorted by offset, without overlaps or empty
/// extents.
pub(super) fn check_sorted(list: &[Extent], what: &str) -> Result<(), FsError> {
    let mut next = 0u64;
    for (i, extent) in list.iter().enumerate() {
        if extent.count == 0 {
            return Err(corrupt(what, format!("extent {i} has length 0")));
        }
        if extent.offset < next {
            return Err(corrupt(
                what,
                format!(
                    "extent {i} at file block {} overlaps the one before",
                    extent.offset
                ),
            ));
        }
        next = extent
            .offset
            .checked_add(extent.count)
            .ok_or_else(|| corrupt(what, format!("extent {i} ends past 2^64")))?;
    }
    Ok(())
}

/// The extent map of a `BTREE` fork whose root (`xfs_bmdr_block`) is
/// `root`, for inode `ino`.
///
/// # Errors
/// [`FsError::Corrupt`] naming the inode and the btree block (by byte
/// offset) that is wrong.
pub(super) fn walk(
    dev: &Device,
    sb: &Superblock,
    ino: u64,
    root: &[u8],
) -> Result<Vec<Extent>, FsError> {
    let what = format!("xfs inode {ino} bmbt root");
    let level = be16(root, 0).ok_or_else(|| short(&what))?;
    let numrecs = usize::from(be16(root, 2).ok_or_else(|| short(&what))?);
    if level == 0 || level > MAX_HEIGHT {
        return Err(corrupt(&what, format!("root level {level}")));
    }
    // xfs_bmdr_maxrecs: (size - 4) / (key + pointer).
    let maxrecs = root.len().saturating_sub(4) / 16;
    if numrecs == 0 || numrecs > maxrecs {
        return Err(corrupt(
            &what,
            format!("{numrecs} records, at most {maxrecs}"),
        ));
    }
    let pointers = ptrs(root, 4, maxrecs, numrecs).ok_or_else(|| short(&what))?;
    let mut walker = Walker {
        dev,
        sb,
        ino,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    for ptr in pointers {
        walker.block(ptr, level.saturating_sub(1))?;
    }
    check_sorted(&walker.out, &format!("xfs inode {ino} bmbt"))?;
    Ok(walker.out)
}

/// The `numrecs` pointers of a node whose keys start at `keys_at` and
/// whose key and pointer arrays hold `maxrecs` each.
fn ptrs(node: &[u8], keys_at: usize, maxrecs: usize, numrecs: usize) -> Option<Vec<u64>> {
    let ptrs_at = keys_at.checked_add(maxrecs.checked_mul(8)?)?;
    (0..numrecs)
        .map(|i| be64(node, ptrs_at.checked_add(i.checked_mul(8)?)?))
        .collect()
}

struct Walker<'a> {
    dev: &'a Device,
    sb: &'a Superblock,
    ino: u64,
    seen: HashSet<u64>,
    out: Vec<Extent>,
}

impl Walker<'_> {
    /// Read the block `fsbno` expected at `level` and collect its records.
    fn block(&mut self, fsbno: u64, level: u16) -> Result<(), FsError> {
        let ino = self.ino;
        let at = self.sb.fsb_to_byte(fsbno).ok_or_else(|| {
            corrupt(
                format!("xfs inode {ino} bmbt"),
                format!("block pointer {fsbno:#x} is outside the filesystem"),
            )
        })?;
        let what = format!("xfs inode {ino} bmbt block at byte {at}");
        if !self.seen.insert(fsbno) {
            return Err(corrupt(&what, "visited twice (a cycle or shared block)"));
        }
        let size = to_usize(u64::from(self.sb.block_size));
        let block = self.dev.block(at, size, &what)?;
        let bytes = &block.bytes[..];
        let (magic, header) = if self.sb.has_crc() {
            (MAGIC_V5, HEADER_V5)
        } else {
            (MAGIC_V4, HEADER_V4)
        };
        if be32(bytes, 0) != Some(magic) {
            return Err(corrupt(&what, "bad magic (expected BMAP/BMA3)"));
        }
        if self.sb.has_crc() {
            if !block.replayed && !crc::verify(bytes, CRC_OFFSET) {
                return Err(corrupt(&what, "CRC mismatch"));
            }
            if be64(bytes, 24) != Some(at >> 9) {
                return Err(corrupt(&what, "records another block number"));
            }
            if be64(bytes, 56) != Some(ino) {
                return Err(corrupt(&what, "owned by another inode"));
            }
            if bytes.get(40..56) != Some(&self.sb.meta_uuid[..]) {
                return Err(corrupt(&what, "filesystem UUID mismatch"));
            }
        }
        let got_level = be16(bytes, 4).ok_or_else(|| short(&what))?;
        if got_level != level {
            return Err(corrupt(
                &what,
                format!("level {got_level}, expected {level}"),
            ));
        }
        let numrecs = usize::from(be16(bytes, 6).ok_or_else(|| short(&what))?);
        let body = size.saturating_sub(header);
        if level == 0 {
            if numrecs == 0 || numrecs > body / RECORD_SIZE {
                return Err(corrupt(&what, format!("{numrecs} records in a leaf")));
            }
            if self.out.len().saturating_add(numrecs) > MAX_EXTENTS {
                return Err(FsError::Unsupported {
                    feature: format!("xfs inode {ino}: more than {MAX_EXTENTS} extents"),
                });
            }
            for i in 0..numrecs {
                let start = header.saturating_add(i.saturating_mul(RECORD_SIZE));
                let record = bytes
                    .get(start..start.saturating_add(RECORD_SIZE))
                    .ok_or_else(|| short(&what))?;
                self.out.push(decode(record).ok_or_else(|| short(&what))?);
            }
            return Ok(());
        }
        let maxrecs = body / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(corrupt(&what, format!("{numrecs} records in a node")));
        }
        let pointers = ptrs(bytes, header, maxrecs, numrecs).ok_or_else(|| short(&what))?;
        drop(block);
        for ptr in pointers {
            self.block(ptr, level.saturating_sub(1))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_fields() {
        // flag=1, offset=0x123456789, block=0x0f_1234_5678_9abc, count=0x1f_fffe
        let offset: u64 = 0x1_2345_6789;
        let block: u64 = 0xf_1234_5678_9abc;
        let count: u64 = 0x1f_fffe;
        let l0 = (1u64 << 63) | (offset << 9) | (block >> 43);
        let l1 = (block << 21) | count;
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&l0.to_be_bytes());
        rec[8..].copy_from_slice(&l1.to_be_bytes());
        assert_eq!(
            decode(&rec),
            Some(Extent {
                offset,
                block,
                count,
                unwritten: true
            })
        );
    }
}
