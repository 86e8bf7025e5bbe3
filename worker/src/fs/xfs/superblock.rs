//! The XFS superblock (`struct xfs_dsb`, XFS on-disk format reference,
//! "Superblocks"): geometry and features, big-endian, in the first sector
//! of allocation group 0.
//!
//! Only the primary copy is read. A v5 superblock carries a CRC32c over
//! the whole sector (field at byte 224). Geometry is checked before use:
//! every shift and size below is in range, so the arithmetic built on it
//! (block and inode addresses) cannot overflow silently.

use super::bytes::{be16, be32, be64, byte, corrupt, short};
use super::crc;
use crate::block::BlockSource;
use crate::fs::FsError;

/// `XFSB`.
const MAGIC: u32 = 0x5846_5342;

/// `sb_versionnum` bits.
const VERSION_NUMBITS: u16 = 0x000f;
const VERSION_MOREBITSBIT: u16 = 0x8000;
const VERSION_DIRV2BIT: u16 = 0x2000;

/// `sb_features2` bits.
const FEATURES2_CRC: u32 = 0x0100;
const FEATURES2_FTYPE: u32 = 0x0200;

/// `sb_features_incompat` bits (v5) understood here.
pub(super) const INCOMPAT_FTYPE: u32 = 0x01;
const INCOMPAT_SPINODES: u32 = 0x02;
const INCOMPAT_META_UUID: u32 = 0x04;
const INCOMPAT_BIGTIME: u32 = 0x08;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
pub(super) const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_EXCHRANGE: u32 = 0x40;
const INCOMPAT_PARENT: u32 = 0x80;
/// Everything this reader handles; the metadata directory tree (0x100)
/// and anything newer changes where things are and is refused.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

/// Byte offset of `sb_crc`.
const CRC_OFFSET: usize = 224;

/// The superblock fields the reader uses, checked.
#[derive(Debug, Clone)]
pub(super) struct Superblock {
    /// 4 (no CRCs) or 5.
    pub version: u8,
    pub block_size: u32,
    pub block_log: u8,
    pub data_blocks: u64,
    pub uuid: [u8; 16],
    /// `sb_meta_uuid` when `META_UUID` is set, else `uuid`: what v5 metadata
    /// blocks carry.
    pub meta_uuid: [u8; 16],
    pub log_start: u64,
    pub log_blocks: u32,
    pub root_ino: u64,
    pub ag_blocks: u32,
    pub ag_count: u32,
    pub ag_block_log: u8,
    pub inode_size: u16,
    pub inode_log: u8,
    pub inodes_per_block_log: u8,
    pub dir_block_log: u8,
    /// Directory entries carry the file type.
    pub ftype: bool,
    /// Large extent counters are allowed (`NREXT64`).
    pub nrext64: bool,
}

impl Superblock {
    /// Read and check the primary superblock of `source`.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] for a bad magic, CRC or geometry,
    /// [`FsError::Unsupported`] for unknown incompatible features or a
    /// realtime-only layout, [`FsError::Io`] when the source fails.
    pub(super) fn read(source: &dyn BlockSource) -> Result<Self, FsError> {
        let mut head = [0u8; 512];
        source
            .read_exact_at(&mut head, 0)
            .map_err(|err| FsError::Io {
                what: "xfs superblock at byte 0".to_string(),
                detail: err.to_string(),
            })?;
        let what = "xfs superblock at byte 0";
        let f16 = |at| be16(&head, at).ok_or_else(|| short(what));
        let f32 = |at| be32(&head, at).ok_or_else(|| short(what));
        let f64 = |at| be64(&head, at).ok_or_else(|| short(what));
        let f8 = |at| byte(&head, at).ok_or_else(|| short(what));
        if f32(0)? != MAGIC {
            return Err(corrupt(what, "bad magic (expected XFSB)"));
        }
        let versionnum = f16(100)?;
        let version = u8::try_from(versionnum & VERSION_NUMBITS).unwrap_or(0);
        let sector_size = u32::from(f16(102)?);
        let sector_log = f8(121)?;
        if !(9..=15).contains(&sector_log) || 1u32 << sector_log != sector_size {
            return Err(corrupt(
                what,
                format!(
                    "sector size {sector_size} (log {sector_log}) is not a power of two in 512..=32768"
                ),
            ));
        }
        // The whole sector: the CRC covers it.
        let mut sector = vec![0u8; usize::try_from(sector_size).unwrap_or(512)];
        source
            .read_exact_at(&mut sector, 0)
            .map_err(|err| FsError::Io {
                what: what.to_string(),
                detail: err.to_string(),
            })?;
        let features2 = f32(200)?;
        match version {
            4 => {
                if versionnum & VERSION_DIRV2BIT == 0 {
                    return Err(FsError::Unsupported {
                        feature: "xfs: version 1 directories".to_string(),
                    });
                }
            }
            5 => {
                if !crc::verify(&sector, CRC_OFFSET) {
                    return Err(corrupt(what, "CRC mismatch"));
                }
            }
            other => {
                return Err(FsError::Unsupported {
                    feature: format!("xfs superblock version {other}"),
                });
            }
        }
        let incompat = if version == 5 { f32(216)? } else { 0 };
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported {
                feature: format!(
                    "xfs incompatible features {:#x}",
                    incompat & !INCOMPAT_KNOWN
                ),
            });
        }
        let more = versionnum & VERSION_MOREBITSBIT != 0;
        let ftype = if version == 5 {
            incompat & INCOMPAT_FTYPE != 0
        } else {
            more && features2 & FEATURES2_FTYPE != 0
        };
        if version == 4 && more && features2 & FEATURES2_CRC != 0 {
            return Err(corrupt(what, "version 4 superblock with the CRC feature"));
        }

        let block_size = f32(4)?;
        let block_log = f8(120)?;
        if !(9..=16).contains(&block_log) || 1u32 << block_log != block_size {
            return Err(corrupt(
                what,
                format!(
                    "block size {block_size} (log {block_log}) is not a power of two in 512..=65536"
                ),
            ));
        }
        if block_size < sector_size {
            return Err(corrupt(what, "block size smaller than the sector size"));
        }
        let inode_size = f16(104)?;
        let inode_log = f8(122)?;
        if !(8..=11).contains(&inode_log) || 1u16 << inode_log != inode_size {
            return Err(corrupt(
                what,
                format!(
                    "inode size {inode_size} (log {inode_log}) is not a power of two in 256..=2048"
                ),
            ));
        }
        if version == 5 && inode_size < 512 {
            return Err(corrupt(what, "v5 inodes are at least 512 bytes"));
        }
        let inodes_per_block_log = f8(123)?;
        if u32::from(inodes_per_block_log).checked_add(u32::from(inode_log))
            != Some(u32::from(block_log))
        {
            return Err(corrupt(
                what,
                "inodes per block disagrees with block and inode sizes",
            ));
        }
        let ag_blocks = f32(84)?;
        let ag_count = f32(88)?;
        let ag_block_log = f8(124)?;
        if ag_blocks == 0
            || ag_count == 0
            || ag_block_log > 31
            || (1u64 << ag_block_log) < u64::from(ag_blocks)
            || ag_block_log
                .checked_sub(1)
                .is_some_and(|log| (1u64 << log) >= u64::from(ag_blocks))
        {
            return Err(corrupt(
                what,
                format!("AG geometry: {ag_count} AGs of {ag_blocks} blocks (log {ag_block_log})"),
            ));
        }
        let data_blocks = f64(8)?;
        let max_blocks = u64::from(ag_blocks).checked_mul(u64::from(ag_count));
        if max_blocks.is_none_or(|max| data_blocks > max) || data_blocks == 0 {
            return Err(corrupt(
                what,
                format!("{data_blocks} data blocks do not fit the AGs"),
            ));
        }
        let dir_block_log = f8(192)?;
        if u32::from(dir_block_log).saturating_add(u32::from(block_log)) > 16 {
            return Err(corrupt(
                what,
                format!("directory block log {dir_block_log} over 64 KiB"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(sector.get(32..48).ok_or_else(|| short(what))?);
        let mut meta_uuid = uuid;
        if incompat & INCOMPAT_META_UUID != 0 {
            meta_uuid.copy_from_slice(sector.get(248..264).ok_or_else(|| short(what))?);
        }
        Ok(Self {
            version,
            block_size,
            block_log,
            data_blocks,
            uuid,
            meta_uuid,
            log_start: f64(48)?,
            log_blocks: f32(96)?,
            root_ino: f64(56)?,
            ag_blocks,
            ag_count,
            ag_block_log,
            inode_size,
            inode_log,
            inodes_per_block_log,
            dir_block_log,
            ftype,
            nrext64: incompat & INCOMPAT_NREXT64 != 0,
        })
    }

    /// True for v5 (CRC-protected metadata).
    pub(super) fn has_crc(&self) -> bool {
        self.version == 5
    }

    /// Byte offset of filesystem block `fsbno` (AG number in the high bits,
    /// AG block in the low `ag_block_log` bits), checked against the
    /// geometry.
    pub(super) fn fsb_to_byte(&self, fsbno: u64) -> Option<u64> {
        let agno = fsbno.checked_shr(u32::from(self.ag_block_log))?;
        let agbno = fsbno & ((1u64 << self.ag_block_log).checked_sub(1)?);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return None;
        }
        let block = agno
            .checked_mul(u64::from(self.ag_blocks))?
            .checked_add(agbno)?;
        if block >= self.data_blocks {
            return None;
        }
        block.checked_shl(u32::from(self.block_log))
    }

    /// Byte offset of inode `ino`, checked against the geometry.
    pub(super) fn inode_byte(&self, ino: u64) -> Option<u64> {
        let shift = u32::from(self.inodes_per_block_log);
        let fsbno = ino.checked_shr(shift)?;
        if fsbno.checked_shr(u32::from(self.ag_block_log))? >= u64::from(self.ag_count) {
            return None;
        }
        // Inode numbers have no bits above the AG number.
        let within = ino & ((1u64 << shift).checked_sub(1)?);
        self.fsb_to_byte(fsbno)?
            .checked_add(within.checked_shl(u32::from(self.inode_log))?)
    }

    /// Directory block size in bytes.
    pub(super) fn dir_block_size(&self) -> u32 {
        self.block_size << self.dir_block_log
    }

    /// Filesystem blocks per directory block.
    pub(super) fn dir_block_fsbs(&self) -> u64 {
        1u64 << self.dir_block_log
    }
}
