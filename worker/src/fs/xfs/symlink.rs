//! Symlink targets (XFS on-disk format reference, "Symbolic Links"): inline
//! in the inode (`LOCAL`) when they fit, else in "remote" blocks mapped by
//! the data fork. On v5 every remote block starts with a 56-byte header
//! (`XSLM`, the offset and length of its piece of the target, CRC32c at
//! byte 12, UUID, owner inode, block number). Targets are at most 1024
//! bytes (`XFS_SYMLINK_MAXLEN`).

use super::bmbt::Extent;
use super::bytes::{be32, be64, corrupt, to_u64, to_usize};
use super::crc;
use super::device::Device;
use super::superblock::Superblock;
use crate::fs::FsError;

/// Longest symlink target.
pub(super) const MAX_LEN: u64 = 1024;

/// `XSLM`.
const MAGIC: u32 = 0x5853_4c4d;

/// Remote block header size (v5).
const HEADER: usize = 56;

/// The target of symlink `ino` of `size` bytes whose remote blocks are
/// mapped by `extents`.
///
/// # Errors
/// [`FsError::Corrupt`] naming the inode and block.
pub(super) fn remote(
    dev: &Device,
    sb: &Superblock,
    ino: u64,
    size: u64,
    extents: &[Extent],
) -> Result<Vec<u8>, FsError> {
    let what = format!("xfs symlink {ino}");
    if size == 0 || size > MAX_LEN {
        return Err(corrupt(&what, format!("target length {size}")));
    }
    let mut target = Vec::with_capacity(to_usize(size));
    let block_size = to_usize(u64::from(sb.block_size));
    'extents: for extent in extents {
        for i in 0..extent.count {
            if to_u64(target.len()) >= size {
                break 'extents;
            }
            let fsbno = extent.block.checked_add(i);
            let at = fsbno
                .and_then(|b| sb.fsb_to_byte(b))
                .ok_or_else(|| corrupt(&what, "remote block outside the filesystem"))?;
            let block = dev.block(at, block_size, &what)?;
            let bytes = &block.bytes[..];
            let piece = if sb.has_crc() {
                let bwhat = format!("{what} remote block at byte {at}");
                if be32(bytes, 0) != Some(MAGIC) {
                    return Err(corrupt(&bwhat, "bad magic (expected XSLM)"));
                }
                if !block.replayed && !crc::verify(bytes, 12) {
                    return Err(corrupt(&bwhat, "CRC mismatch"));
                }
                if be64(bytes, 32) != Some(ino) {
                    return Err(corrupt(&bwhat, "owned by another inode"));
                }
                let offset = be32(bytes, 4).map(u64::from);
                if offset != Some(to_u64(target.len())) {
                    return Err(corrupt(&bwhat, "piece at the wrong offset"));
                }
                let len = be32(bytes, 8).map_or(0, |n| to_usize(u64::from(n)));
                bytes
                    .get(HEADER..HEADER.saturating_add(len))
                    .ok_or_else(|| corrupt(&bwhat, format!("piece of {len} bytes")))?
            } else {
                bytes
            };
            let want = to_usize(size).saturating_sub(target.len());
            target.extend_from_slice(piece.get(..want.min(piece.len())).unwrap_or_default());
        }
    }
    if to_u64(target.len()) != size {
        return Err(corrupt(
            &what,
            format!("{} of {size} target bytes mapped", target.len()),
        ));
    }
    Ok(target)
}
