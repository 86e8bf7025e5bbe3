//! Directories of an ext2/3/4 filesystem listed by inode number, for walks.
//!
//! Why not `ext4-view`: its API is path-based only, so a walk that lists a
//! directory and then each child resolves every child's path from the root
//! again (and re-verifies every directory block on the way): a full walk of
//! `/usr` costs more than `mount` + `find`. Listing by inode number reads
//! each directory's inode and blocks once, and gives the walk real cycle
//! detection (a directory inode reached twice).
//!
//! Scope is deliberately small: superblock, group descriptors, inodes,
//! extent trees and indirect block maps, and linear directory blocks (an
//! htree directory's index blocks hide in entries with inode 0, so a linear
//! read of every block lists it completely). Anything else, and above all a
//! journal that needs recovery, is [`FsError::Unsupported`] here, and the
//! walk falls back to `ext4-view`, which replays the journal.
//!
//! Format reference: the kernel's `Documentation/filesystems/ext4/`
//! (`super.rst`, `group_descr.rst`, `inodes.rst`, `ifork.rst`,
//! `directory.rst`).

use std::sync::Arc;

use super::super::{FileType, FsError};
use crate::block::BlockSource;

/// `s_feature_incompat` bits (ext4 `super.rst`).
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// Everything this lister reads correctly; any other bit means "fall back".
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_LARGEDIR
    | INCOMPAT_CSUM_SEED;

/// `i_flags` bits (ext4 `inodes.rst`).
const FLAG_EXTENTS: u32 = 0x8_0000;
const FLAG_INLINE_DATA: u32 = 0x1000_0000;
const FLAG_ENCRYPTED: u32 = 0x800;

/// Extent tree node magic.
const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's extent trees have depth 0 to 5 (`EXT4_MAX_EXTENT_DEPTH`); more is corrupt.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Largest directory listed (ext4's largedir tops out at 4 GiB too).
const MAX_DIR_BYTES: u64 = 4 << 30;
/// Group descriptors loaded at most (a 16 TiB filesystem of 4 KiB blocks has 131,072).
const MAX_GROUPS: u64 = 1 << 22;

/// One entry of a directory, with the inode it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeEntry {
    /// The name, non-UTF-8 bytes replaced.
    pub name: String,
    /// The type the directory entry records.
    pub file_type: FileType,
    /// The inode number.
    pub inode: u64,
}

/// An ext4 filesystem's directories by inode number. `Send + Sync`: every
/// read is a positional read of the shared source.
#[derive(Debug)]
pub struct Ext4Dirs {
    source: Arc<dyn BlockSource>,
    block_size: u64,
    inodes_per_group: u64,
    inode_size: u64,
    inodes_count: u64,
    blocks_count: u64,
    /// Byte offset of each group's inode table.
    inode_tables: Vec<u64>,
}

/// Read `N` little-endian bytes at `at` of `bytes`, or report `what` corrupt.
fn le<const N: usize>(bytes: &[u8], at: usize, what: &str) -> Result<[u8; N], FsError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| corrupt(what, format!("{N} bytes at {at} are past the end")))
}
fn u16_at(bytes: &[u8], at: usize, what: &str) -> Result<u16, FsError> {
    le::<2>(bytes, at, what).map(u16::from_le_bytes)
}
fn u32_at(bytes: &[u8], at: usize, what: &str) -> Result<u32, FsError> {
    le::<4>(bytes, at, what).map(u32::from_le_bytes)
}

fn corrupt(what: &str, detail: String) -> FsError {
    FsError::Corrupt {
        what: format!("ext4 {what}"),
        detail,
    }
}

fn unsupported(feature: &str) -> FsError {
    FsError::Unsupported {
        feature: format!("ext4 inode-level listing: {feature}"),
    }
}

impl Ext4Dirs {
    /// Read the superblock and group descriptors of the ext4 filesystem on
    /// `source`.
    ///
    /// # Errors
    /// [`FsError::Unsupported`] for a journal that needs recovery or a
    /// feature not read here (the caller falls back to `ext4-view`);
    /// [`FsError::Corrupt`] or [`FsError::Io`] otherwise.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self, FsError> {
        let mut sb = vec![0u8; 1024];
        read(&*source, 1024, &mut sb, "superblock")?;
        if u16_at(&sb, 0x38, "superblock")? != 0xEF53 {
            return Err(corrupt("superblock", "bad magic".to_string()));
        }
        let incompat = u32_at(&sb, 0x60, "superblock")?;
        if incompat & INCOMPAT_RECOVER != 0 {
            return Err(unsupported("the journal needs recovery"));
        }
        if incompat & (INCOMPAT_JOURNAL_DEV | INCOMPAT_META_BG) != 0
            || incompat & !INCOMPAT_KNOWN != 0
        {
            return Err(unsupported(&format!("incompat features {incompat:#x}")));
        }
        if incompat & INCOMPAT_FILETYPE == 0 {
            return Err(unsupported("directory entries without a file type"));
        }
        let log_block_size = u32_at(&sb, 0x18, "superblock")?;
        if log_block_size > 6 {
            return Err(corrupt(
                "superblock",
                format!("s_log_block_size {log_block_size}"),
            ));
        }
        let block_size = 1024u64 << log_block_size;
        let first_data_block = u64::from(u32_at(&sb, 0x14, "superblock")?);
        let blocks_per_group = u64::from(u32_at(&sb, 0x20, "superblock")?);
        let inodes_per_group = u64::from(u32_at(&sb, 0x28, "superblock")?);
        let inodes_count = u64::from(u32_at(&sb, 0x00, "superblock")?);
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let blocks_hi = if is_64bit {
            u64::from(u32_at(&sb, 0x150, "superblock")?)
        } else {
            0
        };
        let blocks_count = (blocks_hi << 32) | u64::from(u32_at(&sb, 0x04, "superblock")?);
        let inode_size = if u32_at(&sb, 0x4C, "superblock")? == 0 {
            128
        } else {
            u64::from(u16_at(&sb, 0x58, "superblock")?)
        };
        let desc_size = if is_64bit {
            u64::from(u16_at(&sb, 0xFE, "superblock")?)
        } else {
            32
        };
        if blocks_per_group == 0
            || inodes_per_group == 0
            || !(128..=block_size).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || !(32..=block_size).contains(&desc_size)
            || !desc_size.is_power_of_two()
        {
            return Err(corrupt(
                "superblock",
                format!(
                    "inconsistent geometry: {blocks_per_group} blocks and {inodes_per_group} \
                     inodes per group, inode size {inode_size}, descriptor size {desc_size}"
                ),
            ));
        }
        let groups = blocks_count
            .saturating_sub(first_data_block)
            .div_ceil(blocks_per_group);
        if groups > MAX_GROUPS || groups == 0 {
            return Err(corrupt("superblock", format!("{groups} block groups")));
        }
        let table_len = usize::try_from(groups.saturating_mul(desc_size))
            .map_err(|_| corrupt("superblock", "descriptor table too large".to_string()))?;
        let mut table = vec![0u8; table_len];
        let table_at = first_data_block
            .checked_add(1)
            .and_then(|b| b.checked_mul(block_size))
            .ok_or_else(|| {
                corrupt(
                    "superblock",
                    "descriptor table offset overflows".to_string(),
                )
            })?;
        read(&*source, table_at, &mut table, "group descriptors")?;
        let mut inode_tables = Vec::with_capacity(table.len() / 32);
        for (group, desc) in table
            .chunks_exact(usize::try_from(desc_size).unwrap_or(32))
            .enumerate()
        {
            let what = format!("group descriptor {group}");
            let lo = u64::from(u32_at(desc, 0x08, &what)?);
            let hi = if is_64bit {
                u64::from(u32_at(desc, 0x28, &what)?)
            } else {
                0
            };
            let block = (hi << 32) | lo;
            if block >= blocks_count {
                return Err(corrupt(
                    &what,
                    format!("inode table at block {block} is past the end"),
                ));
            }
            inode_tables.push(block.saturating_mul(block_size));
        }
        Ok(Self {
            source,
            block_size,
            inodes_per_group,
            inode_size,
            inodes_count,
            blocks_count,
            inode_tables,
        })
    }

    /// The root directory's inode number.
    pub fn root(&self) -> u64 {
        2
    }

    /// The entries of directory inode `dir` (not `.`, `..`, or unused slots),
    /// in on-disk order. `path` only names it in errors.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] naming the inode and block for damaged
    /// structures, [`FsError::NotADirectory`], [`FsError::Io`].
    pub fn list(&self, dir: u64, path: &str) -> Result<Vec<InodeEntry>, FsError> {
        let inode = self.read_inode(dir)?;
        let what = format!("inode {dir} ({path})");
        let mode = u16_at(&inode, 0x00, &what)?;
        if mode & 0xF000 != 0x4000 {
            return Err(FsError::NotADirectory {
                path: path.to_string(),
            });
        }
        let flags = u32_at(&inode, 0x20, &what)?;
        if flags & FLAG_INLINE_DATA != 0 {
            return Err(unsupported("inline-data directories"));
        }
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(FsError::Encrypted {
                path: path.to_string(),
            });
        }
        let size = u64::from(u32_at(&inode, 0x04, &what)?)
            | (u64::from(u32_at(&inode, 0x6C, &what)?) << 32);
        if size > MAX_DIR_BYTES || size % self.block_size != 0 {
            return Err(corrupt(&what, format!("directory size {size}")));
        }
        let blocks = size / self.block_size;
        let i_block = inode
            .get(0x28..0x28 + 60)
            .ok_or_else(|| corrupt(&what, "inode too short".to_string()))?;
        let mut physical = Vec::new();
        if flags & FLAG_EXTENTS != 0 {
            self.extent_blocks(i_block, MAX_EXTENT_DEPTH + 1, blocks, &what, &mut physical)?;
        } else {
            self.indirect_blocks(i_block, blocks, &what, &mut physical)?;
        }
        let mut entries = Vec::new();
        let mut block = vec![0u8; usize::try_from(self.block_size).unwrap_or(4096)];
        for (logical, at) in physical {
            read(&*self.source, at, &mut block, &what)?;
            parse_block(&block, &mut entries)
                .map_err(|detail| corrupt(&what, format!("directory block {logical}: {detail}")))?;
        }
        Ok(entries)
    }

    fn read_inode(&self, number: u64) -> Result<Vec<u8>, FsError> {
        if number == 0 || number > self.inodes_count {
            return Err(corrupt(
                "directory entry",
                format!("inode number {number} is out of range"),
            ));
        }
        let index = number - 1;
        let group = usize::try_from(index / self.inodes_per_group).unwrap_or(usize::MAX);
        let table = *self
            .inode_tables
            .get(group)
            .ok_or_else(|| corrupt("directory entry", format!("inode {number} is in no group")))?;
        let at = (index % self.inodes_per_group)
            .checked_mul(self.inode_size)
            .and_then(|offset| table.checked_add(offset))
            .ok_or_else(|| corrupt("inode table", format!("inode {number} offset overflows")))?;
        let mut inode = vec![0u8; usize::try_from(self.inode_size).unwrap_or(256)];
        read(&*self.source, at, &mut inode, &format!("inode {number}"))?;
        Ok(inode)
    }

    /// Byte offsets of the allocated blocks of an extent tree, with their
    /// logical numbers, in logical order, below `limit` logical blocks.
    fn extent_blocks(
        &self,
        node: &[u8],
        depth_left: u16,
        limit: u64,
        what: &str,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), FsError> {
        if u16_at(node, 0, what)? != EXTENT_MAGIC {
            return Err(corrupt(what, "bad extent header magic".to_string()));
        }
        let entries = usize::from(u16_at(node, 2, what)?);
        let depth = u16_at(node, 6, what)?;
        if depth >= depth_left || entries > (node.len().saturating_sub(12)) / 12 {
            return Err(corrupt(
                what,
                format!("extent node depth {depth}, {entries} entries"),
            ));
        }
        for entry in 0..entries {
            let at = 12 + entry * 12;
            if depth == 0 {
                let first = u64::from(u32_at(node, at, what)?);
                let mut len = u64::from(u16_at(node, at + 4, what)?);
                let uninitialized = len > 32768;
                if uninitialized {
                    len -= 32768;
                }
                let start = (u64::from(u16_at(node, at + 6, what)?) << 32)
                    | u64::from(u32_at(node, at + 8, what)?);
                if uninitialized {
                    continue; // reads as zeros: no entries in it
                }
                for i in 0..len {
                    let logical = first.saturating_add(i);
                    if logical >= limit {
                        break;
                    }
                    let block = start.saturating_add(i);
                    if block >= self.blocks_count {
                        return Err(corrupt(
                            what,
                            format!("extent block {block} is past the end"),
                        ));
                    }
                    if out.len() as u64 >= limit {
                        return Err(corrupt(
                            what,
                            "more extents than the directory's size".to_string(),
                        ));
                    }
                    out.push((logical, block.saturating_mul(self.block_size)));
                }
            } else {
                let child = (u64::from(u16_at(node, at + 8, what)?) << 32)
                    | u64::from(u32_at(node, at + 4, what)?);
                if child >= self.blocks_count {
                    return Err(corrupt(
                        what,
                        format!("extent index block {child} is past the end"),
                    ));
                }
                let mut block = vec![0u8; usize::try_from(self.block_size).unwrap_or(4096)];
                read(
                    &*self.source,
                    child.saturating_mul(self.block_size),
                    &mut block,
                    what,
                )?;
                self.extent_blocks(&block, depth, limit, what, out)?;
            }
        }
        Ok(())
    }

    /// The same for the ext2/3 block map: 12 direct blocks, then single,
    /// double and triple indirect blocks.
    fn indirect_blocks(
        &self,
        i_block: &[u8],
        limit: u64,
        what: &str,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), FsError> {
        let mut logical = 0u64;
        for slot in 0..15 {
            if logical >= limit {
                break;
            }
            let block = u64::from(u32_at(i_block, slot * 4, what)?);
            let level = slot.saturating_sub(11) as u32; // 0 direct, then 1..3
            self.map_indirect(block, level, &mut logical, limit, what, out)?;
        }
        Ok(())
    }

    fn map_indirect(
        &self,
        block: u64,
        level: u32,
        logical: &mut u64,
        limit: u64,
        what: &str,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), FsError> {
        let per_block = self.block_size / 4;
        let span = per_block.saturating_pow(level);
        if block == 0 {
            *logical = logical.saturating_add(span); // a hole
            return Ok(());
        }
        if block >= self.blocks_count {
            return Err(corrupt(what, format!("block {block} is past the end")));
        }
        if level == 0 {
            out.push((*logical, block.saturating_mul(self.block_size)));
            *logical += 1;
            return Ok(());
        }
        let mut pointers = vec![0u8; usize::try_from(self.block_size).unwrap_or(4096)];
        read(
            &*self.source,
            block.saturating_mul(self.block_size),
            &mut pointers,
            what,
        )?;
        for pointer in pointers.chunks_exact(4) {
            if *logical >= limit {
                break;
            }
            let child = u64::from(u32::from_le_bytes([
                pointer[0], pointer[1], pointer[2], pointer[3],
            ]));
            self.map_indirect(child, level - 1, logical, limit, what, out)?;
        }
        Ok(())
    }
}

/// Append the live entries of one directory block (`directory.rst`, linear
/// directories; htree index blocks parse as one unused entry).
fn parse_block(block: &[u8], entries: &mut Vec<InodeEntry>) -> Result<(), String> {
    let mut at = 0usize;
    while at + 8 <= block.len() {
        let inode = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
        let rec_len = usize::from(u16::from_le_bytes([block[at + 4], block[at + 5]]));
        let name_len = usize::from(block[at + 6]);
        let file_type = block[at + 7];
        if rec_len < 8 || rec_len % 4 != 0 || at + rec_len > block.len() || 8 + name_len > rec_len {
            return Err(format!(
                "entry at byte {at}: record length {rec_len}, name length {name_len}"
            ));
        }
        if inode != 0 {
            let name = &block[at + 8..at + 8 + name_len];
            if name != b"." && name != b".." {
                entries.push(InodeEntry {
                    name: String::from_utf8_lossy(name).into_owned(),
                    file_type: match file_type {
                        1 => FileType::File,
                        2 => FileType::Dir,
                        7 => FileType::Symlink,
                        _ => FileType::Special,
                    },
                    inode: u64::from(inode),
                });
            }
        }
        at += rec_len;
    }
    Ok(())
}

fn read(source: &dyn BlockSource, offset: u64, buf: &mut [u8], what: &str) -> Result<(), FsError> {
    source
        .read_exact_at(buf, offset)
        .map_err(|err| FsError::Io {
            what: format!("ext4 {what}"),
            detail: err.to_string(),
        })
}
