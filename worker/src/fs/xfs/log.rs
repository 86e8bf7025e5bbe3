//! The XFS journal (XFS on-disk format reference, "Journaling Log";
//! `xfs_log_format.h`; the kernel's `xfs_log_recover.c`), read to answer one
//! question: what would the filesystem look like after the kernel mounted
//! it? A snapshot of a running instance nearly always has a dirty log.
//!
//! # Layout
//! The internal log is `sb_logblocks` blocks from `sb_logstart`, a ring of
//! 512-byte basic blocks (BBs). Records are written at increasing block
//! numbers, wrapping at the end, each stamped with the ring's *cycle*
//! number (incremented at every wrap): a record is a header BB (`FEEDBABE`,
//! cycle, length, LSN = cycle << 32 | block, the tail LSN at write time, a
//! CRC32c, the number of operations, and the first word of each data BB,
//! which is overwritten on disk by the cycle), extended header BBs for
//! records over 32 KiB, then the data BBs.
//!
//! # Finding the live part
//! As `xlog_find_head` and `xlog_find_tail`: the head is where the cycle
//! stamps drop (binary search), moved back over out-of-order writes within
//! the in-flight window (8 records of 256 KiB) and over a torn last record;
//! the last complete record names the tail. The log is clean when that
//! record is an unmount record directly before the head.
//!
//! # Replay
//! Records from tail to head are parsed into operations (12-byte headers:
//! transaction id, length, client, flags), regions that were split across
//! records are joined, and operations are grouped into transactions by id.
//! Only transactions whose commit record was written are replayed, in log
//! order, by [`recover`](super::recover) into an in-memory overlay: the
//! source is never written. A record whose CRC does not match ends the log
//! there (a torn write), as in the kernel.
//!
//! The result is computed once per block source and shared by every
//! thread's reader (a process-wide table keyed by the source's address,
//! holding only weak references).
//!
//! Bounded: the log is at most [`MAX_LOG_BYTES`], a record at most 256 KiB
//! of data, the search windows fixed, the replay's memory capped by
//! [`MAX_HELD_BYTES`], and the record walk visits each block once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::bytes::{be32, be64, byte, le16, le32, to_u64, to_usize};
use super::crc::Crc32c;
use super::device::Overlay;
use super::recover;
use super::superblock::Superblock;
use crate::block::BlockSource;

/// Bytes in a basic block.
pub(super) const BB: u64 = 512;
const BB_USIZE: usize = 512;

/// `XLOG_HEADER_MAGIC_NUM`.
const HEADER_MAGIC: u32 = 0xFEED_BABE;

/// Largest log accepted (the format's limit is 2 GiB).
const MAX_LOG_BYTES: u64 = 2 << 30;

/// Largest record data (`XLOG_MAX_RECORD_BSIZE`).
const MAX_RECORD: u64 = 256 * 1024;

/// Bytes of cycle data one header holds (`XLOG_HEADER_CYCLE_SIZE`).
const CYCLE_SIZE: u64 = 32 * 1024;

/// The window of possibly out-of-order writes before the head, in BBs
/// (`XLOG_TOTAL_REC_SHIFT`: 8 in-core logs of 256 KiB).
const WINDOW_BBS: u64 = 8 * MAX_RECORD / BB;

/// Most transaction data held while replaying.
pub(super) const MAX_HELD_BYTES: u64 = 512 << 20;

/// Most regions in one log item (`XLOG_MAX_REGIONS_IN_ITEM`).
const MAX_REGIONS: usize = 16 * 1024 / 128 / 2 + 1 + 2 + 2;

/// Size of `struct xlog_rec_header` as the CRC covers it (324 bytes of
/// fields padded to 8) and of an extended header.
const HEADER_SIZE: usize = 328;
const EXT_HEADER_SIZE: usize = 260;

/// Operation header flags.
const START_TRANS: u8 = 0x01;
const COMMIT_TRANS: u8 = 0x02;
const CONTINUE_TRANS: u8 = 0x04;
const WAS_CONT_TRANS: u8 = 0x08;
const END_TRANS: u8 = 0x10;
const UNMOUNT_TRANS: u8 = 0x20;

/// Operation clients.
const CLIENT_TRANSACTION: u8 = 0x69;
const CLIENT_LOG: u8 = 0xaa;

/// `TRAN`, the transaction header's magic.
const TRANS_MAGIC: u32 = 0x5452_414e;

/// `h_fmt` of a log written by a big-endian host (items in host order).
const FMT_LINUX_BE: u32 = 2;

/// What log recovery produced for one source.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// Replayed metadata, when the log was dirty and replayed.
    pub overlay: Option<Arc<Overlay>>,
    /// What to tell the caller.
    pub notes: Vec<String>,
}

/// One log item: its regions, the first being its format structure.
#[derive(Debug, Default)]
pub(super) struct Item {
    pub regions: Vec<Vec<u8>>,
    /// Regions announced by the format structure.
    total: usize,
}

/// One committed transaction.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// LSN of the record it started in (kept for diagnostics).
    #[allow(dead_code)]
    pub lsn: u64,
    pub items: Vec<Item>,
    /// The transaction header has been seen.
    header: bool,
}

/// The log replay of one volume, done by the first reader that opens it
/// and shared by every other (the [`Volume`](crate::fs::Volume) holds it).
#[derive(Debug, Default)]
pub struct SharedRecovery(OnceLock<Arc<Recovery>>);

/// Recover the log of `source` once per `shared` and hand every reader of
/// the volume the same result.
pub(super) fn recover_shared(
    shared: &SharedRecovery,
    source: &dyn BlockSource,
    sb: &Superblock,
) -> Arc<Recovery> {
    Arc::clone(shared.0.get_or_init(|| Arc::new(recover(source, sb))))
}

/// Recover the log of `source` (not shared: tests and fuzzing).
pub(super) fn recover(source: &dyn BlockSource, sb: &Superblock) -> Recovery {
    let log = match Log::new(source, sb) {
        Ok(log) => log,
        Err(why) => {
            return Recovery {
                overlay: None,
                notes: vec![format!("log not checked: {why}: results may be stale")],
            };
        }
    };
    let state = match log.find_head_and_tail() {
        Ok(state) => state,
        Err(why) => {
            return Recovery {
                overlay: None,
                notes: vec![format!(
                    "dirty log not replayed: results may be stale ({why})"
                )],
            };
        }
    };
    let State::Dirty { head, tail } = state else {
        return Recovery::default();
    };
    let mut notes = Vec::new();
    let transactions = match log.transactions(tail, head, &mut notes) {
        Ok(transactions) => transactions,
        Err(why) => {
            notes.push(format!(
                "dirty log not replayed: results may be stale ({why})"
            ));
            return Recovery {
                overlay: None,
                notes,
            };
        }
    };
    match recover::replay(source, sb, &transactions) {
        Ok((overlay, summary)) => {
            notes.insert(
                0,
                format!(
                    "dirty log replayed in memory: {} transactions ({summary})",
                    transactions.len()
                ),
            );
            Recovery {
                overlay: Some(Arc::new(overlay)),
                notes,
            }
        }
        Err(why) => {
            notes.push(format!(
                "dirty log not replayed: results may be stale ({why})"
            ));
            Recovery {
                overlay: None,
                notes,
            }
        }
    }
}

/// Where the live part of the log is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Cleanly unmounted: nothing to replay.
    Clean,
    /// Records from `tail` up to (not including) `head`, in BBs.
    Dirty { head: u64, tail: u64 },
}

/// The internal log of a filesystem.
struct Log<'a> {
    source: &'a dyn BlockSource,
    /// Byte offset of the log's first BB.
    start: u64,
    /// Length in BBs.
    bbs: u64,
    uuid: [u8; 16],
    crc: bool,
}

impl<'a> Log<'a> {
    fn new(source: &'a dyn BlockSource, sb: &Superblock) -> Result<Self, String> {
        if sb.log_start == 0 {
            return Err("external log device".to_string());
        }
        let start = sb.fsb_to_byte(sb.log_start).ok_or_else(|| {
            format!(
                "log start block {:#x} is outside the filesystem",
                sb.log_start
            )
        })?;
        let bytes = u64::from(sb.log_blocks)
            .checked_shl(u32::from(sb.block_log))
            .filter(|&b| b > 0 && b <= MAX_LOG_BYTES)
            .ok_or_else(|| format!("log of {} blocks", sb.log_blocks))?;
        let end = start.checked_add(bytes).ok_or("log end overflows")?;
        if end > source.size() {
            return Err(format!(
                "log ends at byte {end}, past the end of the volume"
            ));
        }
        Ok(Self {
            source,
            start,
            bbs: bytes / BB,
            uuid: sb.uuid,
            crc: sb.has_crc(),
        })
    }

    /// `bb` taken around the ring.
    fn wrap(&self, bb: u64) -> u64 {
        bb.checked_rem(self.bbs).unwrap_or(0)
    }

    /// Read `count` BBs from `bb`, wrapping at the end of the log.
    fn read(&self, bb: u64, count: u64) -> Result<Vec<u8>, String> {
        let len = count
            .checked_mul(BB)
            .filter(|&len| len <= MAX_RECORD.saturating_mul(2) || count <= self.bbs)
            .ok_or("read too long")?;
        let mut out = vec![0u8; to_usize(len)];
        let mut done = 0u64;
        let mut at = self.wrap(bb);
        while done < count {
            let now = (self.bbs.saturating_sub(at)).min(count.saturating_sub(done));
            let from = to_usize(done.saturating_mul(BB));
            let dst = out
                .get_mut(from..from.saturating_add(to_usize(now.saturating_mul(BB))))
                .ok_or("read out of range")?;
            let offset = self.start.saturating_add(at.saturating_mul(BB));
            self.source
                .read_exact_at(dst, offset)
                .map_err(|err| format!("reading the log at byte {offset}: {err}"))?;
            done = done.saturating_add(now);
            at = 0;
        }
        Ok(out)
    }

    /// The cycle stamped on `bb` (a record header keeps it in `h_cycle`).
    fn cycle(&self, bb: u64) -> Result<u32, String> {
        let block = self.read(bb, 1)?;
        Ok(cycle_of(&block))
    }

    /// The smallest block in `lo..=hi` whose cycle is `cycle`, when the
    /// blocks before it have another (binary search, as
    /// `xlog_find_cycle_start`). `hi` must have it.
    fn first_with_cycle(&self, mut lo: u64, mut hi: u64, cycle: u32) -> Result<u64, String> {
        while lo < hi {
            let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
            if self.cycle(mid)? == cycle {
                hi = mid;
            } else {
                lo = mid.saturating_add(1);
            }
        }
        Ok(hi)
    }

    fn find_head_and_tail(&self) -> Result<State, String> {
        let last_bb = self.bbs.checked_sub(1).ok_or("empty log")?;
        let first = self.cycle(0)?;
        let last = self.cycle(last_bb)?;
        if first == 0 {
            return Err("the log has never been written (cycle 0 at its start)".to_string());
        }
        // `head` may equal `bbs`: the next write wraps to block 0.
        let mut head = if last == 0 {
            // Not yet wrapped: the rest of the log is zeroed.
            self.first_with_cycle(0, last_bb, 0)?
        } else if first == last {
            self.bbs
        } else {
            self.first_with_cycle(1, last_bb, last)?
        };
        let head_cycle = if head == 0 { last } else { first };
        // Out-of-order writes: an older cycle inside the window before the
        // head moves it back to there.
        let window = WINDOW_BBS.min(head);
        if window > 0 {
            let from = head.saturating_sub(window);
            let blocks = self.read(from, window)?;
            if let Some(i) = blocks
                .chunks_exact(BB_USIZE)
                .position(|b| cycle_of(b) != head_cycle)
            {
                head = from.saturating_add(to_u64(i));
            }
        }
        let head = self.wrap(head);
        // The last record header before the head.
        let search = (WINDOW_BBS.saturating_add(64)).min(self.bbs);
        let mut found = None;
        for back in 1..=search {
            let bb = head
                .checked_add(self.bbs)
                .and_then(|h| h.checked_sub(back))
                .map(|b| self.wrap(b))
                .ok_or("log position overflows")?;
            let block = self.read(bb, 1)?;
            if be32(&block, 0) == Some(HEADER_MAGIC) {
                found = Some((bb, block));
                break;
            }
        }
        let (rec_bb, header) = found.ok_or("no log record header before the head")?;
        let record = RecordHeader::parse(&header)
            .map_err(|why| format!("log record at BB {rec_bb}: {why}"))?;
        let rec_end = self.wrap(
            rec_bb
                .saturating_add(record.header_bbs)
                .saturating_add(record.data_bbs),
        );
        // A torn last record (shorter than it says) ends the log before it.
        let (head, last_record) = if rec_end == head {
            (head, Some((rec_bb, record)))
        } else {
            (rec_bb, None)
        };
        let (tail, clean) = match last_record {
            Some((rec_bb, record)) => {
                let tail = record.tail_lsn & 0xffff_ffff;
                let clean = record.num_ops == 1 && self.is_unmount(rec_bb, &record)?;
                (tail, clean)
            }
            None => {
                // Take the tail from the record before the torn one.
                let prev = self.previous_header(head)?;
                (prev.tail_lsn & 0xffff_ffff, false)
            }
        };
        if tail >= self.bbs {
            return Err(format!("tail block {tail} is outside the log"));
        }
        if clean {
            return Ok(State::Clean);
        }
        if tail == head {
            // Nothing between tail and head: the last record covered all.
            return Ok(State::Clean);
        }
        Ok(State::Dirty { head, tail })
    }

    /// The header of the last record that starts before `bb`.
    fn previous_header(&self, bb: u64) -> Result<RecordHeader, String> {
        let search = (WINDOW_BBS.saturating_add(64)).min(self.bbs);
        for back in 1..=search {
            let at = bb
                .checked_add(self.bbs)
                .and_then(|h| h.checked_sub(back))
                .map(|b| self.wrap(b))
                .ok_or("log position overflows")?;
            let block = self.read(at, 1)?;
            if be32(&block, 0) == Some(HEADER_MAGIC) {
                return RecordHeader::parse(&block);
            }
        }
        Err("no complete log record before the head".to_string())
    }

    /// True when the record at `bb` is an unmount record.
    fn is_unmount(&self, bb: u64, record: &RecordHeader) -> Result<bool, String> {
        if record.data_bbs == 0 {
            return Ok(false);
        }
        let data = self.read(bb.saturating_add(record.header_bbs), 1)?;
        Ok(byte(&data, 9).is_some_and(|flags| flags & UNMOUNT_TRANS != 0))
    }

    /// The committed transactions of the records from `tail` to `head`.
    fn transactions(
        &self,
        tail: u64,
        head: u64,
        notes: &mut Vec<String>,
    ) -> Result<Vec<Transaction>, String> {
        let mut open: HashMap<u32, Transaction> = HashMap::new();
        let mut committed = Vec::new();
        let mut held = 0u64;
        let mut bb = tail;
        let distance = |from: u64| self.wrap(head.saturating_add(self.bbs).saturating_sub(from));
        let mut left = distance(tail);
        while left > 0 {
            let block = self.read(bb, 1)?;
            let record = RecordHeader::parse(&block)
                .map_err(|why| format!("log record at BB {bb}: {why}"))?;
            if record.uuid != self.uuid {
                return Err(format!(
                    "log record at BB {bb} belongs to another filesystem"
                ));
            }
            if record.fmt == FMT_LINUX_BE {
                return Err("log written by a big-endian host".to_string());
            }
            let len = record.header_bbs.saturating_add(record.data_bbs);
            if len > left {
                return Err(format!("log record at BB {bb} runs past the head"));
            }
            let raw = self.read(bb, len)?;
            let (headers, data) = raw.split_at(to_usize(record.header_bbs.saturating_mul(BB)));
            let data = data.get(..to_usize(u64::from(record.len))).unwrap_or(data);
            if self.crc || record.crc != 0 {
                let mut crc = Crc32c::new();
                crc.update(headers.get(..32).unwrap_or_default());
                crc.zeros(4);
                crc.update(headers.get(36..HEADER_SIZE).unwrap_or_default());
                for ext in headers.chunks_exact(BB_USIZE).skip(1) {
                    crc.update(ext.get(..EXT_HEADER_SIZE).unwrap_or_default());
                }
                crc.update(data);
                if crc.finish() != record.crc {
                    notes.push(format!(
                        "log record at BB {bb} has a bad CRC: replay stops there (a torn write)"
                    ));
                    break;
                }
            }
            let data = unpack(headers, data);
            parse_ops(
                &data,
                record.num_ops,
                record.lsn,
                &mut open,
                &mut committed,
                &mut held,
            )
            .map_err(|why| format!("log record at BB {bb}: {why}"))?;
            if held > MAX_HELD_BYTES {
                return Err(format!("more than {MAX_HELD_BYTES} bytes of log items"));
            }
            bb = self.wrap(bb.saturating_add(len));
            left = left.saturating_sub(len);
        }
        Ok(committed)
    }
}

/// The cycle of a block: its first word, or `h_cycle` in a record header.
fn cycle_of(block: &[u8]) -> u32 {
    match be32(block, 0) {
        Some(HEADER_MAGIC) => be32(block, 4).unwrap_or(0),
        other => other.unwrap_or(0),
    }
}

/// The fields of a record header used here.
#[derive(Debug)]
struct RecordHeader {
    len: u32,
    lsn: u64,
    tail_lsn: u64,
    crc: u32,
    num_ops: u32,
    fmt: u32,
    uuid: [u8; 16],
    header_bbs: u64,
    data_bbs: u64,
}

impl RecordHeader {
    fn parse(block: &[u8]) -> Result<Self, String> {
        let short = || "short record header".to_string();
        if be32(block, 0) != Some(HEADER_MAGIC) {
            return Err("bad magic".to_string());
        }
        let version = be32(block, 8).ok_or_else(short)?;
        if version != 1 && version != 2 {
            return Err(format!("version {version}"));
        }
        let len = be32(block, 12).ok_or_else(short)?;
        if u64::from(len) > MAX_RECORD {
            return Err(format!("record length {len}"));
        }
        let size = be32(block, 320).ok_or_else(short)?;
        let header_bbs = if version == 2 && u64::from(size) > CYSIZE_GUARD {
            u64::from(size).div_ceil(CYCLE_SIZE)
        } else {
            1
        };
        if header_bbs > MAX_RECORD / CYCLE_SIZE {
            return Err(format!("record size {size}"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(block.get(304..320).ok_or_else(short)?);
        Ok(Self {
            len,
            lsn: be64(block, 16).ok_or_else(short)?,
            tail_lsn: be64(block, 24).ok_or_else(short)?,
            crc: le32(block, 32).ok_or_else(short)?,
            num_ops: be32(block, 40).ok_or_else(short)?,
            fmt: be32(block, 300).ok_or_else(short)?,
            uuid,
            header_bbs,
            data_bbs: u64::from(len).div_ceil(BB),
        })
    }
}

/// Records up to this size need only the one header's cycle data.
const CYSIZE_GUARD: u64 = CYCLE_SIZE;

/// The record data with each BB's first word restored from the headers'
/// cycle data.
fn unpack(headers: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let per_header = to_usize(CYCLE_SIZE / BB);
    for (i, block) in out.chunks_mut(BB_USIZE).enumerate() {
        let (h, slot) = (
            i.checked_div(per_header).unwrap_or(0),
            i.checked_rem(per_header).unwrap_or(0),
        );
        // Header 0 keeps its cycle data at byte 44; extended ones at 4.
        let at = if h == 0 {
            44usize.saturating_add(slot.saturating_mul(4))
        } else {
            h.saturating_mul(BB_USIZE)
                .saturating_add(4)
                .saturating_add(slot.saturating_mul(4))
        };
        if let (Some(word), Some(dst)) = (headers.get(at..at.saturating_add(4)), block.get_mut(..4))
            && dst.len() == word.len()
        {
            dst.copy_from_slice(word);
        }
    }
    out
}

/// Parse the operations of one record's (unpacked) data.
fn parse_ops(
    data: &[u8],
    num_ops: u32,
    lsn: u64,
    open: &mut HashMap<u32, Transaction>,
    committed: &mut Vec<Transaction>,
    held: &mut u64,
) -> Result<(), String> {
    let mut pos = 0usize;
    for op in 0..num_ops {
        let tid =
            be32(data, pos).ok_or_else(|| format!("operation {op} header past the record"))?;
        let len = to_usize(u64::from(be32(data, pos.saturating_add(4)).unwrap_or(0)));
        let client = byte(data, pos.saturating_add(8)).unwrap_or(0);
        let flags = byte(data, pos.saturating_add(9)).unwrap_or(0);
        let from = pos.saturating_add(12);
        let body = data
            .get(from..from.saturating_add(len))
            .ok_or_else(|| format!("operation {op} of {len} bytes runs past the record"))?;
        pos = from.saturating_add(len);
        if client != CLIENT_TRANSACTION && client != CLIENT_LOG {
            return Err(format!("operation {op} has client id {client:#x}"));
        }
        if flags & UNMOUNT_TRANS != 0 {
            open.remove(&tid);
            continue;
        }
        if flags & START_TRANS != 0 {
            open.entry(tid).or_insert_with(|| Transaction {
                lsn,
                ..Transaction::default()
            });
            continue;
        }
        // Operations of transactions that began before the tail.
        let Some(trans) = open.get_mut(&tid) else {
            continue;
        };
        let mut kind = flags & !END_TRANS;
        if kind & WAS_CONT_TRANS != 0 {
            kind &= !CONTINUE_TRANS;
        }
        *held = held.saturating_add(to_u64(body.len()));
        match kind {
            0 | CONTINUE_TRANS => add_region(trans, body)?,
            WAS_CONT_TRANS => {
                if let Some(region) = trans.items.last_mut().and_then(|i| i.regions.last_mut()) {
                    region.extend_from_slice(body);
                }
                // A continued transaction header: nothing kept.
            }
            COMMIT_TRANS => {
                if let Some(trans) = open.remove(&tid) {
                    committed.push(trans);
                }
            }
            other => return Err(format!("operation {op} has flags {other:#x}")),
        }
    }
    Ok(())
}

/// Add one region to `trans` (`xlog_recover_add_to_trans`).
fn add_region(trans: &mut Transaction, body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    if !trans.header {
        if be32(body, 0)
            .is_some_and(|m| m != TRANS_MAGIC && u32::from_le_bytes(m.to_be_bytes()) != TRANS_MAGIC)
        {
            return Err("transaction without a TRAN header".to_string());
        }
        trans.header = true;
        return Ok(());
    }
    let start_new = trans
        .items
        .last()
        .is_none_or(|item| item.total != 0 && item.regions.len() >= item.total);
    if start_new {
        let total = usize::from(le16(body, 2).unwrap_or(0));
        if total == 0 || total > MAX_REGIONS {
            return Err(format!(
                "log item of type {:#x} with {total} regions",
                le16(body, 0).unwrap_or(0)
            ));
        }
        trans.items.push(Item {
            regions: Vec::with_capacity(total),
            total,
        });
    }
    if let Some(item) = trans.items.last_mut() {
        item.regions.push(body.to_vec());
    }
    Ok(())
}
