//! SQLite's write-ahead log, applied in memory to a database image.
//!
//! rpm opens `rpmdb.sqlite` in WAL mode: committed transactions land in
//! `rpmdb.sqlite-wal` first and reach the database file only at a
//! checkpoint. rpm checkpoints when it closes the database, but a disk
//! snapshot taken while rpm (or anything else) had it open, or after a
//! crash, holds committed packages only in the WAL. We never hand SQLite a
//! path (the bytes come from a disk image, not the host), so we replay the
//! WAL ourselves, as SQLite's recovery does, into the bytes we then
//! deserialize.
//!
//! Format reference: <https://www.sqlite.org/fileformat2.html>, section
//! 4 "The Write-Ahead Log", and `walIndexRecover`/`walDecodeFrame` in
//! SQLite's `wal.c`:
//!
//! ```text
//! header, 32 bytes, big-endian:
//!   magic 0x377f0682 (checksums little-endian) or 0x377f0683 (big-endian)
//!   format version 3007000, page size, checkpoint sequence,
//!   salt-1, salt-2, checksum-1, checksum-2 (over the first 24 bytes)
//! frames, each 24 bytes + one page:
//!   page number, database size in pages after commit (0 unless a commit),
//!   salt-1, salt-2, checksum-1, checksum-2 (cumulative: they continue
//!   from the previous frame's, over this header's first 8 bytes and page)
//! ```
//!
//! A frame counts only if its salts equal the header's and the running
//! checksum matches; the first frame that fails ends the log (a torn write,
//! or frames left from before the log was restarted). Of the valid frames,
//! only those up to the last commit frame are applied; for each page the
//! last such frame wins, and the image takes the last commit's size.

// Sizes and page numbers come from the file: no unchecked arithmetic or
// indexing on them.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use thiserror::Error;

/// `magic` of a WAL whose checksums read words little-endian.
pub const WAL_MAGIC_LE: u32 = 0x377f_0682;
/// `magic` of a WAL whose checksums read words big-endian.
pub const WAL_MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version SQLite has written (3.7.0).
pub const WAL_FORMAT_VERSION: u32 = 3_007_000;
/// Bytes of the WAL header.
const HEADER_LEN: usize = 32;
/// Bytes of a frame header.
const FRAME_HEADER_LEN: usize = 24;
/// SQLite's page sizes: powers of two in this range.
const PAGE_SIZES: std::ops::RangeInclusive<u32> = 512..=65536;

/// What [`apply_wal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalSummary {
    /// The WAL's page size (0 when the WAL was empty).
    pub page_size: u32,
    /// Frames in the file, by its length.
    pub frames_in_file: u64,
    /// Frames whose salts and checksums verified (a prefix of the file).
    pub frames_valid: u64,
    /// Valid frames up to and including the last commit: those applied.
    pub frames_committed: u64,
    /// The database size in pages after the last applied commit.
    pub database_pages: Option<u32>,
}

/// Why a WAL could not be applied. The image is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WalError {
    /// The header's magic is neither WAL magic.
    #[error("bad WAL magic {found:#010x}")]
    BadMagic {
        /// The first 4 bytes, big-endian.
        found: u32,
    },
    /// The header names a format version SQLite does not write.
    #[error("unsupported WAL format version {found}")]
    BadVersion {
        /// The version field.
        found: u32,
    },
    /// The page size is not a power of two in 512..=65536.
    #[error("bad WAL page size {page_size}")]
    BadPageSize {
        /// The page size field.
        page_size: u32,
    },
    /// The header's own checksum does not match.
    #[error("WAL header checksum mismatch")]
    BadHeaderChecksum,
    /// The database file's page size differs from the WAL's.
    #[error("WAL page size {wal} differs from the database's {database}")]
    PageSizeMismatch {
        /// The WAL's page size.
        wal: u32,
        /// The database header's page size.
        database: u32,
    },
    /// The committed database would be larger than the caller allows.
    #[error(
        "the WAL makes the database {pages} pages of {page_size} bytes, over the limit of {limit} bytes"
    )]
    TooLarge {
        /// Database size in pages after the last commit.
        pages: u32,
        /// Page size.
        page_size: u32,
        /// The caller's limit in bytes.
        limit: u64,
    },
}

/// Apply the committed frames of `wal` to the database image `db`.
///
/// `db` is the content of the database file (possibly empty); `max_len`
/// caps the image's size after the WAL grows it, so nothing larger is
/// allocated. A WAL shorter than its header, or without a valid commit, is
/// not an error: SQLite reads such a database as the file alone, and so
/// `db` is left unchanged and the summary says no frame was applied.
///
/// Pure and bounded: work is linear in `wal.len()`, memory is `max_len`
/// plus one map entry per page in the WAL. Safe on any bytes (a fuzz target).
///
/// # Errors
/// [`WalError`] when the header is invalid (SQLite would then ignore the
/// whole WAL), when the page sizes of WAL and database disagree, or when the
/// result would be over `max_len`. `db` is unchanged then.
pub fn apply_wal(db: &mut Vec<u8>, wal: &[u8], max_len: u64) -> Result<WalSummary, WalError> {
    let Some(header) = wal.get(..HEADER_LEN) else {
        return Ok(WalSummary::default());
    };
    let magic = be_u32(header, 0);
    let big_endian = match magic {
        WAL_MAGIC_BE => true,
        WAL_MAGIC_LE => false,
        found => return Err(WalError::BadMagic { found }),
    };
    let version = be_u32(header, 4);
    if version != WAL_FORMAT_VERSION {
        return Err(WalError::BadVersion { found: version });
    }
    let page_size = be_u32(header, 8);
    if !page_size.is_power_of_two() || !PAGE_SIZES.contains(&page_size) {
        return Err(WalError::BadPageSize { page_size });
    }
    let salts = header.get(16..24).unwrap_or_default();
    let mut sum = checksum(big_endian, (0, 0), header.get(..24).unwrap_or_default());
    if sum != (be_u32(header, 24), be_u32(header, 28)) {
        return Err(WalError::BadHeaderChecksum);
    }
    match database_page_size(db) {
        Some(database) if database != page_size => {
            return Err(WalError::PageSizeMismatch {
                wal: page_size,
                database,
            });
        }
        _ => {}
    }

    // page_size ≤ 65536, so this cannot overflow.
    let page_len = usize::try_from(page_size).unwrap_or(usize::MAX);
    let frame_len = FRAME_HEADER_LEN.saturating_add(page_len);
    let frames = wal
        .get(HEADER_LEN..)
        .unwrap_or_default()
        .chunks_exact(frame_len);
    let mut summary = WalSummary {
        page_size,
        frames_in_file: u64::try_from(frames.len()).unwrap_or(u64::MAX),
        ..WalSummary::default()
    };
    // Page number → the page's bytes in the last committed frame for it.
    let mut committed: HashMap<u32, &[u8]> = HashMap::new();
    // Frames since the last commit.
    let mut pending: Vec<(u32, &[u8])> = Vec::new();
    for frame in frames {
        let (frame_header, page) = frame.split_at(FRAME_HEADER_LEN);
        let page_number = be_u32(frame_header, 0);
        let commit_size = be_u32(frame_header, 4);
        if page_number == 0 || frame_header.get(8..16) != Some(salts) {
            break;
        }
        sum = checksum(big_endian, sum, frame_header.get(..8).unwrap_or_default());
        sum = checksum(big_endian, sum, page);
        if sum != (be_u32(frame_header, 16), be_u32(frame_header, 20)) {
            break;
        }
        summary.frames_valid = summary.frames_valid.saturating_add(1);
        pending.push((page_number, page));
        if commit_size != 0 {
            committed.extend(pending.drain(..));
            summary.frames_committed = summary.frames_valid;
            summary.database_pages = Some(commit_size);
        }
    }

    let Some(pages) = summary.database_pages else {
        return Ok(summary);
    };
    let too_large = WalError::TooLarge {
        pages,
        page_size,
        limit: max_len,
    };
    let new_len = u64::from(pages).saturating_mul(u64::from(page_size));
    if new_len > max_len {
        return Err(too_large);
    }
    let new_len = usize::try_from(new_len).map_err(|_| too_large)?;
    db.resize(new_len, 0);
    for (page_number, page) in committed {
        // Pages past the committed size were truncated away.
        if page_number > pages {
            continue;
        }
        let start = usize::try_from(page_number.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(page_len);
        if let Some(target) = db.get_mut(start..start.saturating_add(page_len)) {
            target.copy_from_slice(page);
        }
    }
    Ok(summary)
}

/// The page size a database image's header declares, if it has a header.
fn database_page_size(db: &[u8]) -> Option<u32> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    if db.get(..16)? != MAGIC {
        return None;
    }
    let raw = u16::from_be_bytes(db.get(16..18)?.try_into().ok()?);
    // The value 1 stands for 65536, which does not fit in 16 bits.
    Some(if raw == 1 { 65536 } else { u32::from(raw) })
}

/// SQLite's WAL checksum: over 32-bit word pairs in the WAL's byte order,
/// continuing from `sum`. `data.len()` is a multiple of 8 (24-byte header,
/// 8 bytes of a frame header, a page).
fn checksum(big_endian: bool, sum: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = sum;
    for pair in data.chunks_exact(8) {
        let word = |at: usize| {
            let bytes: [u8; 4] = pair
                .get(at..at.saturating_add(4))
                .and_then(|w| w.try_into().ok())
                .unwrap_or_default();
            if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    (s0, s1)
}

/// The big-endian u32 at `at`, or 0 past the end (callers pass slices long
/// enough).
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|w| w.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::detect::rpm::sqlite::open_image;
    use rusqlite::Connection;

    const LIMIT: u64 = 64 * 1024 * 1024;

    /// A database file and its WAL, copied while the writer still had them
    /// open: `committed` transactions, each adding `rows` rows to `t`.
    struct Pair {
        db: Vec<u8>,
        wal: Vec<u8>,
    }

    fn wal_pair(transactions: usize, rows: usize) -> Result<Pair, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("test.sqlite");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "page_size", 1024)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")?;
        // Checkpoint so the file holds the table and the WAL starts over.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        for t in 0..transactions {
            let tx = conn.unchecked_transaction()?;
            for r in 0..rows {
                tx.execute(
                    "INSERT INTO t (v) VALUES (?1)",
                    [vec![u8::try_from((t * rows + r) % 251)?; 700]],
                )?;
            }
            tx.commit()?;
        }
        let pair = Pair {
            db: std::fs::read(&path)?,
            wal: std::fs::read(dir.path().join("test.sqlite-wal"))?,
        };
        drop(conn);
        Ok(pair)
    }

    fn count_rows(image: &[u8]) -> Result<i64, Box<dyn std::error::Error>> {
        let conn = open_image(image, LIMIT)?;
        Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
    }

    fn frame_len(wal: &[u8]) -> usize {
        FRAME_HEADER_LEN + usize::try_from(be_u32(wal, 8)).expect("small")
    }

    #[test]
    fn applied_wal_shows_committed_rows() -> Result<(), Box<dyn std::error::Error>> {
        let pair = wal_pair(3, 20)?;
        assert_eq!(count_rows(&pair.db)?, 0, "the file alone predates the WAL");
        let mut image = pair.db.clone();
        let summary = apply_wal(&mut image, &pair.wal, LIMIT)?;
        assert!(summary.frames_committed > 0);
        assert_eq!(summary.frames_committed, summary.frames_in_file);
        assert_eq!(count_rows(&image)?, 60);
        Ok(())
    }

    #[test]
    fn a_bad_checksum_ends_the_log() -> Result<(), Box<dyn std::error::Error>> {
        let pair = wal_pair(2, 20)?;
        // Where does the first transaction end? Apply a WAL cut after each
        // frame until the first commit shows.
        let frame = frame_len(&pair.wal);
        let frames = (pair.wal.len() - HEADER_LEN) / frame;
        let first_commit = (1..=frames)
            .find(|&n| {
                let mut image = pair.db.clone();
                apply_wal(&mut image, &pair.wal[..HEADER_LEN + n * frame], LIMIT)
                    .map(|s| s.database_pages.is_some())
                    .unwrap_or(false)
            })
            .expect("a commit frame");
        assert!(first_commit < frames, "two transactions, two commits");

        // Corrupt one byte of the page of the frame after the first commit:
        // only the first transaction survives.
        let mut wal = pair.wal.clone();
        wal[HEADER_LEN + first_commit * frame + FRAME_HEADER_LEN + 100] ^= 0xff;
        let mut image = pair.db.clone();
        let summary = apply_wal(&mut image, &wal, LIMIT)?;
        assert_eq!(summary.frames_valid, u64::try_from(first_commit)?);
        assert_eq!(count_rows(&image)?, 20);

        // Corrupt the first frame: nothing is applied.
        let mut wal = pair.wal.clone();
        wal[HEADER_LEN + FRAME_HEADER_LEN + 5] ^= 0x01;
        let mut image = pair.db.clone();
        let summary = apply_wal(&mut image, &wal, LIMIT)?;
        assert_eq!(summary.frames_committed, 0);
        assert_eq!(image, pair.db);
        Ok(())
    }

    #[test]
    fn frames_with_other_salts_are_ignored() -> Result<(), Box<dyn std::error::Error>> {
        let pair = wal_pair(1, 20)?;
        let mut wal = pair.wal.clone();
        // A new salt in the header: every frame is from an older log.
        wal[16] ^= 0x55;
        let sum = checksum(wal[3] == 0x83, (0, 0), &wal[..24]);
        wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
        wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
        let mut image = pair.db.clone();
        let summary = apply_wal(&mut image, &wal, LIMIT)?;
        assert_eq!(summary.frames_valid, 0);
        assert_eq!(image, pair.db);
        Ok(())
    }

    #[test]
    fn uncommitted_frames_are_not_applied() -> Result<(), Box<dyn std::error::Error>> {
        let pair = wal_pair(1, 20)?;
        let frame = frame_len(&pair.wal);
        // Drop the last frame, the commit.
        let wal = &pair.wal[..pair.wal.len() - frame];
        let mut image = pair.db.clone();
        let summary = apply_wal(&mut image, wal, LIMIT)?;
        assert!(summary.frames_valid > 0);
        assert_eq!(summary.frames_committed, 0);
        assert_eq!(image, pair.db);
        Ok(())
    }

    #[test]
    fn bad_headers_are_errors_and_leave_the_image() -> Result<(), Box<dyn std::error::Error>> {
        let pair = wal_pair(1, 5)?;
        type Expected = fn(&WalError) -> bool;
        let cases: [(usize, u8, Expected); 4] = [
            (0, 0x12, |e| matches!(e, WalError::BadMagic { .. })),
            (5, 0x01, |e| matches!(e, WalError::BadVersion { .. })),
            (10, 0x01, |e| matches!(e, WalError::BadPageSize { .. })),
            (13, 0x01, |e| matches!(e, WalError::BadHeaderChecksum)),
        ];
        for (at, flip, expected) in cases {
            let mut wal = pair.wal.clone();
            wal[at] ^= flip;
            let mut image = pair.db.clone();
            let err = apply_wal(&mut image, &wal, LIMIT).expect_err("bad header");
            assert!(expected(&err), "byte {at}: {err}");
            assert_eq!(image, pair.db);
        }
        let mut image = pair.db.clone();
        assert!(matches!(
            apply_wal(&mut image, &pair.wal, 1024),
            Err(WalError::TooLarge { .. })
        ));
        // A WAL shorter than its header is no WAL.
        assert_eq!(
            apply_wal(&mut image, &pair.wal[..31], LIMIT),
            Ok(WalSummary::default())
        );
        assert_eq!(image, pair.db);
        Ok(())
    }

    #[test]
    fn random_wal_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let len = usize::try_from(next() % 5000).expect("small");
            let mut wal: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if round % 2 == 0 && wal.len() >= 12 {
                // A plausible header, to get past the magic.
                wal[..4].copy_from_slice(&WAL_MAGIC_BE.to_be_bytes());
                wal[4..8].copy_from_slice(&WAL_FORMAT_VERSION.to_be_bytes());
                wal[8..12].copy_from_slice(&512u32.to_be_bytes());
                if round % 4 == 0 && wal.len() >= 32 {
                    // And a valid header checksum, to get to the frames.
                    let sum = checksum(true, (0, 0), &wal[..24]);
                    wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
                    wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
                }
            }
            let mut image = Vec::new();
            let before = image.clone();
            match apply_wal(&mut image, &wal, LIMIT) {
                Ok(summary) => assert_eq!(summary.frames_committed, 0),
                Err(_) => assert_eq!(image, before),
            }
        }
    }
}
