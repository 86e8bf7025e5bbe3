//! Log replay into memory (the kernel's `xlog_recover_*_commit_pass2`):
//! applies the log items of committed transactions to copies of the
//! metadata buffers they name, and keeps the results in an
//! [`Overlay`](super::device::Overlay). The source is never written.
//!
//! Item formats (`xfs_log_format.h`) are in the writing host's byte order
//! (little-endian here; big-endian logs are refused), the logged metadata
//! itself in on-disk (big-endian) order. Replayed:
//!
//! - buffer items (`XFS_LI_BUF`): the 128-byte chunks marked in the dirty
//!   bitmap are copied into the buffer, in order;
//! - cancelled buffers (`XFS_BLF_CANCEL`, a freed metadata block): as pass 1
//!   of the kernel, every cancel record is counted first, and a buffer item
//!   is skipped while a later cancel record for it remains;
//! - inode items (`XFS_LI_INODE`): the core (logged in host order and
//!   converted to disk order here), the data fork (inline data and extent
//!   lists verbatim, a bmbt root converted from its in-memory block form)
//!   and the attribute fork; the inode's CRC is recomputed;
//! - inode creation (`XFS_LI_ICREATE`, v5): new inode chunks initialised.
//!
//! Not replayed, because a read-only reader does not need them: unlinked
//! list updates in inode buffers (`XFS_BLF_INODE_BUF`), quota items, and
//! the intents (EFI, RUI, CUI, BUI, ATTRI) whose completion only touches
//! free-space, reverse-map and reference-count btrees, except for bmap
//! intents (BUI, used by reflink remaps), which are counted in the note.
//! Within a transaction, items are applied in the kernel's order: buffers
//! and inode creations, then inodes, then cancel records.

use std::collections::HashMap;

use super::bytes::{be32, byte, le16, le32, le64, to_u64, to_usize};
use super::crc;
use super::device::Overlay;
use super::inode::CRC_OFFSET;
use super::log::{BB, MAX_HELD_BYTES, Transaction};
use super::superblock::Superblock;
use crate::block::BlockSource;

/// Item types.
const LI_INODE: u16 = 0x123b;
const LI_BUF: u16 = 0x123c;
const LI_ICREATE: u16 = 0x123f;
const LI_BUI: u16 = 0x1244;

/// Buffer item flags.
const BLF_INODE_BUF: u16 = 0x1;
const BLF_CANCEL: u16 = 0x2;

/// Chunk size of the buffer item's dirty bitmap.
const CHUNK: usize = 128;

/// Inode item field flags.
const ILOG_CORE: u32 = 0x001;
const ILOG_DDATA: u32 = 0x002;
const ILOG_DEXT: u32 = 0x004;
const ILOG_DBROOT: u32 = 0x008;
const ILOG_DEV: u32 = 0x010;
const ILOG_ADATA: u32 = 0x040;
const ILOG_AEXT: u32 = 0x080;
const ILOG_ABROOT: u32 = 0x100;

/// Largest buffer an item may name (64 KiB, the largest block).
const MAX_BUFFER: u64 = 64 * 1024;

/// Replay `transactions`; returns the overlay and a summary for the note.
///
/// # Errors
/// A description of the first item that cannot be applied.
pub(super) fn replay(
    source: &dyn BlockSource,
    sb: &Superblock,
    transactions: &[Transaction],
) -> Result<(Overlay, String), String> {
    // Pass 1: count cancel records per buffer.
    let mut cancels: HashMap<(u64, u64), u32> = HashMap::new();
    for trans in transactions {
        for item in &trans.items {
            if let Some(buf) = BufFormat::parse(item)?
                && buf.flags & BLF_CANCEL != 0
            {
                let count = cancels.entry((buf.blkno, buf.len)).or_insert(0);
                *count = count.saturating_add(1);
            }
        }
    }
    let mut replay = Replay {
        source,
        sb,
        overlay: Overlay::default(),
        cancels,
        buffers: 0,
        inodes: 0,
        skipped: 0,
        intents: 0,
    };
    for trans in transactions {
        let kind =
            |item: &super::log::Item| item.regions.first().and_then(|r| le16(r, 0)).unwrap_or(0);
        let mut order: Vec<(u8, usize)> = Vec::with_capacity(trans.items.len());
        for (i, item) in trans.items.iter().enumerate() {
            let rank = match kind(item) {
                LI_BUF => match BufFormat::parse(item)? {
                    Some(buf) if buf.flags & BLF_CANCEL != 0 => 3,
                    Some(buf) if buf.flags & BLF_INODE_BUF != 0 => 1,
                    _ => 0,
                },
                LI_ICREATE => 0,
                _ => 2,
            };
            order.push((rank, i));
        }
        // Stable: log order within each rank.
        order.sort_by_key(|&(rank, _)| rank);
        for (_, i) in order {
            let Some(item) = trans.items.get(i) else {
                continue;
            };
            match kind(item) {
                LI_BUF => replay.buffer(item)?,
                LI_INODE => replay.inode(item)?,
                LI_ICREATE => replay.icreate(item)?,
                LI_BUI => replay.intents = replay.intents.saturating_add(1),
                _ => {}
            }
            if replay.overlay.bytes() > MAX_HELD_BYTES {
                return Err(format!(
                    "more than {MAX_HELD_BYTES} bytes of replayed metadata"
                ));
            }
        }
    }
    let mut summary = format!(
        "{} buffer and {} inode updates to {} blocks",
        replay.buffers,
        replay.inodes,
        replay.overlay.len()
    );
    if replay.skipped > 0 {
        summary.push_str(&format!(", {} cancelled", replay.skipped));
    }
    if replay.intents > 0 {
        summary.push_str(&format!(
            "; {} bmap intents not finished: some file mappings may be stale",
            replay.intents
        ));
    }
    Ok((replay.overlay, summary))
}

/// A buffer item's format structure.
struct BufFormat {
    flags: u16,
    /// Disk address in BBs.
    blkno: u64,
    /// Length in BBs.
    len: u64,
    /// Dirty bitmap words.
    map: Vec<u32>,
}

impl BufFormat {
    /// The format of a buffer item, `None` for other items.
    fn parse(item: &super::log::Item) -> Result<Option<Self>, String> {
        let Some(head) = item.regions.first() else {
            return Ok(None);
        };
        if le16(head, 0) != Some(LI_BUF) {
            return Ok(None);
        }
        let short = || "short buffer log item".to_string();
        let flags = le16(head, 4).ok_or_else(short)?;
        let len = u64::from(le16(head, 6).ok_or_else(short)?);
        let blkno = le64(head, 8).ok_or_else(short)?;
        let words = to_usize(u64::from(le32(head, 16).ok_or_else(short)?));
        if len == 0 || len.saturating_mul(BB) > MAX_BUFFER || words > 17 {
            return Err(format!("buffer log item of {len} BBs, {words} map words"));
        }
        let map = (0..words)
            .map(|w| le32(head, 20usize.saturating_add(w.saturating_mul(4))))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(short)?;
        Ok(Some(Self {
            flags,
            blkno,
            len,
            map,
        }))
    }

    fn bit(&self, bit: usize) -> bool {
        self.map
            .get(bit / 32)
            .is_some_and(|word| word >> (bit % 32) & 1 != 0)
    }
}

struct Replay<'a> {
    source: &'a dyn BlockSource,
    sb: &'a Superblock,
    overlay: Overlay,
    cancels: HashMap<(u64, u64), u32>,
    buffers: u64,
    inodes: u64,
    skipped: u64,
    intents: u64,
}

impl Replay<'_> {
    /// The current content of `len` BBs at `blkno`: disk, then replayed.
    fn current(&self, blkno: u64, len: u64) -> Result<(u64, Vec<u8>), String> {
        let at = blkno
            .checked_mul(BB)
            .filter(|&at| at.saturating_add(len.saturating_mul(BB)) <= self.source.size())
            .ok_or_else(|| format!("log item names block {blkno} outside the volume"))?;
        let mut buf = vec![0u8; to_usize(len.saturating_mul(BB))];
        self.source
            .read_exact_at(&mut buf, at)
            .map_err(|err| format!("reading byte {at} for the log replay: {err}"))?;
        self.overlay.apply(&mut buf, at);
        Ok((at, buf))
    }

    /// True when a cancel record for this buffer is still ahead.
    fn cancelled(&self, blkno: u64, len: u64) -> bool {
        self.cancels.get(&(blkno, len)).is_some_and(|&n| n > 0)
    }

    fn buffer(&mut self, item: &super::log::Item) -> Result<(), String> {
        let Some(format) = BufFormat::parse(item)? else {
            return Ok(());
        };
        let key = (format.blkno, format.len);
        if format.flags & BLF_CANCEL != 0 {
            if let Some(count) = self.cancels.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.cancels.remove(&key);
                }
            }
            return Ok(());
        }
        if self.cancelled(format.blkno, format.len) {
            self.skipped = self.skipped.saturating_add(1);
            return Ok(());
        }
        if format.flags & BLF_INODE_BUF != 0 {
            // Only unlinked-list pointers: not needed to read files.
            return Ok(());
        }
        let (at, mut buf) = self.current(format.blkno, format.len)?;
        let chunks = buf.len() / CHUNK;
        let mut bit = 0usize;
        let mut region = 1usize;
        while bit < chunks {
            if !format.bit(bit) {
                bit = bit.saturating_add(1);
                continue;
            }
            let mut run = 1usize;
            while bit.saturating_add(run) < chunks && format.bit(bit.saturating_add(run)) {
                run = run.saturating_add(1);
            }
            let data = item.regions.get(region).ok_or_else(|| {
                format!(
                    "buffer item for block {} lacks region {region}",
                    format.blkno
                )
            })?;
            let from = bit.saturating_mul(CHUNK);
            let len = run.saturating_mul(CHUNK).min(data.len());
            let dst = buf
                .get_mut(from..from.saturating_add(len))
                .ok_or("buffer item region past the buffer")?;
            dst.copy_from_slice(data.get(..len).ok_or("short region")?);
            bit = bit.saturating_add(run);
            region = region.saturating_add(1);
        }
        self.overlay.put(at, buf);
        self.buffers = self.buffers.saturating_add(1);
        Ok(())
    }

    fn inode(&mut self, item: &super::log::Item) -> Result<(), String> {
        let head = item.regions.first().ok_or("empty inode item")?;
        let short = || "short inode log item".to_string();
        let fields = le32(head, 4).ok_or_else(short)?;
        let asize = usize::from(le16(head, 8).ok_or_else(short)?);
        let dsize = usize::from(le16(head, 10).ok_or_else(short)?);
        // The 64-bit layout (56 bytes) or the packed 32-bit one (52).
        let (ino, rdev, blkno, len, boffset) = match head.len() {
            56 => (
                le64(head, 16),
                le32(head, 24),
                le64(head, 40),
                le32(head, 48),
                le32(head, 52),
            ),
            52 => (
                le64(head, 12),
                le32(head, 20),
                le64(head, 36),
                le32(head, 44),
                le32(head, 48),
            ),
            other => return Err(format!("inode log item format of {other} bytes")),
        };
        let (ino, rdev, blkno, len, boffset) = (
            ino.ok_or_else(short)?,
            rdev.ok_or_else(short)?,
            blkno.ok_or_else(short)?,
            u64::from(len.ok_or_else(short)?),
            to_usize(u64::from(boffset.ok_or_else(short)?)),
        );
        if fields & ILOG_CORE == 0 {
            return Ok(());
        }
        if len == 0 || len.saturating_mul(BB) > MAX_BUFFER {
            return Err(format!("inode {ino} item names a buffer of {len} BBs"));
        }
        if self.cancelled(blkno, len) {
            self.skipped = self.skipped.saturating_add(1);
            return Ok(());
        }
        let isize = usize::from(self.sb.inode_size);
        let (at, mut buf) = self.current(blkno, len)?;
        let dip = buf
            .get_mut(boffset..boffset.saturating_add(isize))
            .ok_or_else(|| format!("inode {ino} at offset {boffset} is outside its buffer"))?;
        let v3 = self.sb.has_crc();
        let core = item.regions.get(1).ok_or("inode item without its core")?;
        if le16(core, 0) != Some(0x494e) {
            return Err(format!("inode {ino} item has a bad core magic"));
        }
        dinode_from_log(core, dip, v3)?;
        let core_size: usize = if v3 { 176 } else { 100 };
        let forkoff = usize::from(byte(dip, 82).unwrap_or(0)).saturating_mul(8);
        let literal = isize.saturating_sub(core_size);
        let dfork = if forkoff == 0 {
            literal
        } else {
            forkoff.min(literal)
        };
        let mut next = 2usize;
        if fields & (ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT) != 0 {
            let region = item
                .regions
                .get(next)
                .ok_or("inode item lacks its data fork")?;
            let region = region.get(..dsize.min(region.len())).unwrap_or(region);
            let fork = dip
                .get_mut(core_size..core_size.saturating_add(dfork))
                .ok_or("data fork outside the inode")?;
            if fields & ILOG_DBROOT != 0 {
                bmbt_root(region, fork, v3)?;
            } else {
                let dst = fork
                    .get_mut(..region.len())
                    .ok_or_else(|| format!("inode {ino}: {} bytes of data fork", region.len()))?;
                dst.copy_from_slice(region);
            }
            next = next.saturating_add(1);
        } else if fields & ILOG_DEV != 0 {
            if let Some(dst) = dip.get_mut(core_size..core_size.saturating_add(4)) {
                dst.copy_from_slice(&rdev.to_be_bytes());
            }
        }
        if fields & (ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT) != 0 && forkoff != 0 {
            let region = item
                .regions
                .get(next)
                .ok_or("inode item lacks its attr fork")?;
            let region = region.get(..asize.min(region.len())).unwrap_or(region);
            let start = core_size.saturating_add(forkoff);
            let fork = dip.get_mut(start..).ok_or("attr fork outside the inode")?;
            if fields & ILOG_ABROOT != 0 {
                bmbt_root(region, fork, v3)?;
            } else if let Some(dst) = fork.get_mut(..region.len()) {
                dst.copy_from_slice(region);
            }
        }
        if v3 {
            let sum = crc::checksum(dip, CRC_OFFSET);
            if let Some(dst) = dip.get_mut(CRC_OFFSET..CRC_OFFSET.saturating_add(4)) {
                dst.copy_from_slice(&sum.to_le_bytes());
            }
        }
        self.overlay.put(at, buf);
        self.inodes = self.inodes.saturating_add(1);
        Ok(())
    }

    fn icreate(&mut self, item: &super::log::Item) -> Result<(), String> {
        let head = item.regions.first().ok_or("empty icreate item")?;
        let short = || "short icreate item".to_string();
        let ag = u64::from(be32(head, 4).ok_or_else(short)?);
        let agbno = u64::from(be32(head, 8).ok_or_else(short)?);
        let count = u64::from(be32(head, 12).ok_or_else(short)?);
        let isize = u64::from(be32(head, 16).ok_or_else(short)?);
        let length = u64::from(be32(head, 20).ok_or_else(short)?);
        let generation = be32(head, 24).ok_or_else(short)?;
        let sb = self.sb;
        if isize != u64::from(sb.inode_size)
            || length == 0
            || length > u64::from(sb.ag_blocks)
            || count.checked_mul(isize) != length.checked_shl(u32::from(sb.block_log))
        {
            return Err(format!("icreate of {count} inodes in {length} blocks"));
        }
        let per_block = 1u64 << sb.inodes_per_block_log;
        for block in 0..length {
            let agbno = agbno.saturating_add(block);
            let fsbno = ag
                .checked_shl(u32::from(sb.ag_block_log))
                .map(|a| a | agbno)
                .ok_or("icreate block overflows")?;
            let at = sb.fsb_to_byte(fsbno).ok_or_else(|| {
                format!("icreate block {agbno} of AG {ag} is outside the filesystem")
            })?;
            let blkno = at / BB;
            if self.cancels.keys().any(|&(b, _)| b == blkno) {
                continue;
            }
            let (_, mut buf) = self.current(blkno, u64::from(sb.block_size) / BB)?;
            for (i, dip) in buf.chunks_exact_mut(to_usize(isize)).enumerate() {
                let ino = fsbno
                    .checked_shl(u32::from(sb.inodes_per_block_log))
                    .map(|b| b | to_u64(i).checked_rem(per_block).unwrap_or(0))
                    .ok_or("inode number overflows")?;
                dip.fill(0);
                init_inode(dip, ino, generation, &sb.meta_uuid);
            }
            self.overlay.put(at, buf);
        }
        Ok(())
    }
}

/// Write field `value` big-endian at `at` of `dst`.
fn put(dst: &mut [u8], at: usize, value: &[u8]) {
    if let Some(d) = dst.get_mut(at..at.saturating_add(value.len())) {
        d.copy_from_slice(value);
    }
}

/// A free v3 inode as `xfs_ialloc_inode_init` writes it.
fn init_inode(dip: &mut [u8], ino: u64, generation: u32, uuid: &[u8; 16]) {
    put(dip, 0, &0x494eu16.to_be_bytes());
    put(dip, 4, &[3]);
    put(dip, 92, &generation.to_be_bytes());
    put(dip, 96, &u32::MAX.to_be_bytes());
    put(dip, 152, &ino.to_be_bytes());
    put(dip, 160, uuid);
    let sum = crc::checksum(dip, CRC_OFFSET);
    put(dip, CRC_OFFSET, &sum.to_le_bytes());
}

/// Convert a logged inode core (`struct xfs_log_dinode`, host order) to
/// the on-disk core (`xfs_log_dinode_to_disk`).
fn dinode_from_log(log: &[u8], dip: &mut [u8], v3: bool) -> Result<(), String> {
    let need = if v3 { 176 } else { 96 };
    if log.len() < need || dip.len() < need {
        return Err(format!("logged inode core of {} bytes", log.len()));
    }
    // (offset, size) of every field; bytes are copied, wider fields swapped.
    const FIELDS: &[(usize, usize)] = &[
        (0, 2),
        (2, 2),
        (4, 1),
        (5, 1),
        (6, 2),
        (8, 4),
        (12, 4),
        (16, 4),
        (20, 2),
        (22, 2),
        (56, 8),
        (64, 8),
        (72, 4),
        (76, 4),
        (80, 2),
        (82, 1),
        (83, 1),
        (84, 4),
        (88, 2),
        (90, 2),
        (92, 4),
    ];
    const FIELDS_V3: &[(usize, usize)] = &[(96, 4), (104, 8), (120, 8), (128, 4), (152, 8)];
    let swap = |dip: &mut [u8], at: usize, size: usize| {
        if let (Some(src), Some(dst)) = (
            log.get(at..at.saturating_add(size)),
            dip.get_mut(at..at.saturating_add(size)),
        ) {
            dst.copy_from_slice(src);
            dst.reverse();
        }
    };
    for &(at, size) in FIELDS {
        swap(dip, at, size);
    }
    let flags2 = if v3 { le64(log, 120).unwrap_or(0) } else { 0 };
    let bigtime = flags2 & 0x8 != 0;
    // The 8 bytes at 24: a 64-bit extent count (nrext64) or padding, or
    // padding and the flush counter (v2).
    if v3 {
        swap(dip, 24, 8);
    } else {
        put(dip, 24, &[0; 6]);
        swap(dip, 30, 2);
    }
    // Timestamps: one 64-bit count (bigtime) or seconds and nanoseconds.
    for at in [32usize, 40, 48] {
        if bigtime {
            swap(dip, at, 8);
        } else {
            swap(dip, at, 4);
            swap(dip, at.saturating_add(4), 4);
        }
    }
    if v3 {
        for &(at, size) in FIELDS_V3 {
            swap(dip, at, size);
        }
        if bigtime {
            swap(dip, 144, 8);
        } else {
            swap(dip, 144, 4);
            swap(dip, 148, 4);
        }
        if let (Some(src), Some(dst)) = (log.get(132..144), dip.get_mut(132..144)) {
            dst.copy_from_slice(src);
        }
        if let (Some(src), Some(dst)) = (log.get(160..176), dip.get_mut(160..176)) {
            dst.copy_from_slice(src);
        }
    }
    Ok(())
}

/// Convert an in-memory bmbt root block (long-form header) to the
/// on-disk fork root (`xfs_bmbt_to_bmdr`).
fn bmbt_root(block: &[u8], fork: &mut [u8], v3: bool) -> Result<(), String> {
    let header: usize = if v3 { 72 } else { 24 };
    let level = block.get(4..6).ok_or("short bmbt root")?;
    let numrecs = block.get(6..8).ok_or("short bmbt root")?;
    let n = usize::from(u16::from_be_bytes([
        numrecs.first().copied().unwrap_or(0),
        numrecs.get(1).copied().unwrap_or(0),
    ]));
    let src_max = block.len().saturating_sub(header) / 16;
    let dst_max = fork.len().saturating_sub(4) / 16;
    if n > src_max || n > dst_max {
        return Err(format!("bmbt root of {n} records"));
    }
    let (level, numrecs) = (level.to_vec(), numrecs.to_vec());
    fork.fill(0);
    put(fork, 0, &level);
    put(fork, 2, &numrecs);
    let keys = block
        .get(header..header.saturating_add(n.saturating_mul(8)))
        .ok_or("short bmbt root keys")?;
    put(fork, 4, keys);
    let src_ptrs = header.saturating_add(src_max.saturating_mul(8));
    let ptrs = block
        .get(src_ptrs..src_ptrs.saturating_add(n.saturating_mul(8)))
        .ok_or("short bmbt root pointers")?;
    put(fork, 4usize.saturating_add(dst_max.saturating_mul(8)), ptrs);
    Ok(())
}
