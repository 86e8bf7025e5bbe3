//! Hostile input from real images: byte patches that are undone after each
//! use, the on-disk locations of the structures worth damaging (found with
//! `dumpe2fs` and `debugfs`, not guessed), GPT CRC repair so damaged fields
//! pass the checksum and reach the parser, and deterministic noise.
//!
//! Layouts followed: the UEFI specification, chapter 5 (GPT header and
//! entries); the kernel's `Documentation/filesystems/ext4` (superblock,
//! group descriptors, inodes, directory blocks, htree roots).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::tools::{run, tool};

/// Bytes per sector in the GPT images the kit builds.
pub const SECTOR: u64 = 512;

/// Read `len` bytes of `path` at `offset`.
///
/// # Errors
/// On I/O failure or a short file.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .with_context(|| format!("reading {len} bytes of {} at {offset}", path.display()))?;
    Ok(buf)
}

/// Write `bytes` into `path` at `offset`.
///
/// # Errors
/// On I/O failure.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    file.write_all_at(bytes, offset).with_context(|| {
        format!(
            "writing {} bytes of {} at {offset}",
            bytes.len(),
            path.display()
        )
    })
}

/// Write `bytes` at `offset`, run `f`, then put the old bytes back.
///
/// # Errors
/// When reading, patching or restoring fails.
pub fn with_patch<T>(path: &Path, offset: u64, bytes: &[u8], f: impl FnOnce() -> T) -> Result<T> {
    let saved = read_at(path, offset, bytes.len())?;
    write_at(path, offset, bytes)?;
    let result = f();
    write_at(path, offset, &saved)?;
    Ok(result)
}

/// The bytes at `offset` with every bit inverted (a patch for
/// [`with_patch`]).
///
/// # Errors
/// When reading fails.
pub fn inverted(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    Ok(read_at(path, offset, len)?.iter().map(|b| !b).collect())
}

fn le_u32(bytes: &[u8], at: usize) -> Result<u32> {
    let slice = bytes.get(at..at + 4).context("short buffer")?;
    Ok(u32::from_le_bytes(slice.try_into()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Result<u64> {
    let slice = bytes.get(at..at + 8).context("short buffer")?;
    Ok(u64::from_le_bytes(slice.try_into()?))
}

/// GPT header field offsets (UEFI 2.10, table 5.5).
pub mod gpt {
    /// `EFI PART`.
    pub const SIGNATURE: u64 = 0x00;
    /// Header size (92).
    pub const HEADER_SIZE: u64 = 0x0C;
    /// CRC32 of the header.
    pub const HEADER_CRC: u64 = 0x10;
    /// LBA of this header.
    pub const MY_LBA: u64 = 0x18;
    /// LBA of the other header.
    pub const ALTERNATE_LBA: u64 = 0x20;
    /// First usable LBA.
    pub const FIRST_USABLE: u64 = 0x28;
    /// Last usable LBA.
    pub const LAST_USABLE: u64 = 0x30;
    /// LBA of the entry array.
    pub const ENTRIES_LBA: u64 = 0x48;
    /// Number of entries.
    pub const ENTRY_COUNT: u64 = 0x50;
    /// Size of one entry (128).
    pub const ENTRY_SIZE: u64 = 0x54;
    /// CRC32 of the entry array.
    pub const ENTRIES_CRC: u64 = 0x58;
    /// In an entry: first LBA.
    pub const ENTRY_FIRST_LBA: u64 = 0x20;
    /// In an entry: last LBA (inclusive).
    pub const ENTRY_LAST_LBA: u64 = 0x28;
}

/// The fields of a GPT header needed to find and re-checksum its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    /// Byte offset of the header.
    pub offset: u64,
    /// Header size field.
    pub header_size: u32,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// LBA of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub entry_count: u32,
    /// Size of one entry.
    pub entry_size: u32,
}

impl GptHeader {
    /// Byte offset of entry `index` (0-based).
    pub fn entry_offset(&self, index: u64) -> u64 {
        self.entries_lba * SECTOR + index * u64::from(self.entry_size)
    }
}

/// Read the GPT header at `lba` of `disk`.
///
/// # Errors
/// When it is unreadable or has no `EFI PART` signature.
pub fn gpt_header(disk: &Path, lba: u64) -> Result<GptHeader> {
    let offset = lba * SECTOR;
    let bytes = read_at(disk, offset, 92)?;
    if &bytes[..8] != b"EFI PART" {
        bail!("no GPT header at LBA {lba} of {}", disk.display());
    }
    Ok(GptHeader {
        offset,
        header_size: le_u32(&bytes, 0x0C)?,
        alternate_lba: le_u64(&bytes, 0x20)?,
        entries_lba: le_u64(&bytes, 0x48)?,
        entry_count: le_u32(&bytes, 0x50)?,
        entry_size: le_u32(&bytes, 0x54)?,
    })
}

/// Recompute the entry-array CRC (when the array is a sane size) and the
/// header CRC of the GPT header at `lba`, so that edited fields pass the
/// checksums and reach the parser's bounds checks.
///
/// # Errors
/// On I/O failure.
pub fn fix_gpt_crcs(disk: &Path, lba: u64) -> Result<()> {
    let offset = lba * SECTOR;
    let header = read_at(disk, offset, 512)?;
    let entries_lba = le_u64(&header, 0x48)?;
    let entry_count = u64::from(le_u32(&header, 0x50)?);
    let entry_size = u64::from(le_u32(&header, 0x54)?);
    let array_len = entry_count.saturating_mul(entry_size);
    let disk_len = std::fs::metadata(disk)?.len();
    let array_start = entries_lba.saturating_mul(SECTOR);
    if array_len <= 4 * 1024 * 1024 && array_start.saturating_add(array_len) <= disk_len {
        let entries = read_at(disk, array_start, usize::try_from(array_len)?)?;
        write_at(
            disk,
            offset + gpt::ENTRIES_CRC,
            &crc32(&entries).to_le_bytes(),
        )?;
    }
    let mut header = read_at(disk, offset, 512)?;
    let size = usize::try_from(le_u32(&header, 0x0C)?)?.clamp(92, 512);
    header[0x10..0x14].fill(0);
    let crc = crc32(&header[..size]);
    write_at(disk, offset + gpt::HEADER_CRC, &crc.to_le_bytes())
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses), bit by bit: the kit checksums
/// a few KiB, so no table and no dependency (the lockfile stays the
/// workspace's).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Where the ext4 structures worth damaging are in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Layout {
    /// Block size in bytes.
    pub block_size: u64,
    /// Byte offset of the primary superblock (always 1024).
    pub superblock: u64,
    /// Byte offset of group 0's descriptor.
    pub group_descriptors: u64,
    /// Byte offset of the first inode table.
    pub inode_table: u64,
}

/// Find the structures of the ext4 filesystem in `image` with `dumpe2fs`.
///
/// # Errors
/// When dumpe2fs fails or prints something unexpected.
pub fn ext4_layout(image: &Path) -> Result<Ext4Layout> {
    let text = run(tool("dumpe2fs")?.arg(image))?;
    let number_after = |marker: &str| -> Result<u64> {
        let start = text
            .find(marker)
            .with_context(|| format!("dumpe2fs printed no `{marker}`"))?
            + marker.len();
        let digits: String = text[start..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .with_context(|| format!("dumpe2fs: no number after `{marker}`"))
    };
    let block_size = number_after("Block size:")?;
    Ok(Ext4Layout {
        block_size,
        superblock: 1024,
        group_descriptors: number_after("Group descriptors at")? * block_size,
        inode_table: number_after("Inode table at")? * block_size,
    })
}

/// Byte offset of the inode of `path` (or `<N>`) in `image`, from
/// `debugfs -R 'imap PATH'`.
///
/// # Errors
/// When debugfs cannot find it.
pub fn inode_offset(image: &Path, path: &str, block_size: u64) -> Result<u64> {
    let out = run(tool("debugfs")?
        .arg("-R")
        .arg(format!("imap {path}"))
        .arg(image))?;
    // "Inode 12 is part of block group 0\n\tlocated at block 1059, offset 0x0b00"
    let located = out
        .split("located at block")
        .nth(1)
        .with_context(|| format!("debugfs imap {path}: {out}"))?;
    let (block, offset) = located
        .split_once(", offset 0x")
        .with_context(|| format!("debugfs imap {path}: {out}"))?;
    let block: u64 = block.trim().parse()?;
    let offset = u64::from_str_radix(offset.trim(), 16)?;
    Ok(block * block_size + offset)
}

/// The data blocks of `path` in `image`, from `debugfs -R 'blocks PATH'`.
///
/// # Errors
/// When debugfs cannot find it.
pub fn file_blocks(image: &Path, path: &str) -> Result<Vec<u64>> {
    let out = run(tool("debugfs")?
        .arg("-R")
        .arg(format!("blocks {path}"))
        .arg(image))?;
    let blocks = out
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
        .with_context(|| format!("debugfs blocks {path}: {out}"))?;
    if blocks.is_empty() {
        bail!("debugfs lists no blocks for {path}");
    }
    Ok(blocks)
}

/// Deterministic noise (xorshift64*): the same "random" images every run,
/// so a failure reproduces.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// A generator from `seed` (zero is replaced: xorshift has no zero state).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{MIB, sparse};

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// The "CRCs fixed" hostile cases only reach the parser's bounds checks
    /// if sgdisk agrees the checksums are right.
    #[test]
    fn fixed_gpt_crcs_satisfy_sgdisk() -> Result<()> {
        let dir = crate::workdir()?;
        let disk = dir.path().join("disk.img");
        sparse(&disk, 8 * MIB)?;
        run(tool("sgdisk")?
            .args(["-n", "1:2048:+1M", "-c", "1:before"])
            .arg(&disk))?;
        let primary = gpt_header(&disk, 1)?;
        let backup = gpt_header(&disk, primary.alternate_lba)?;
        for header in [primary, backup] {
            // Rename partition 1 ("before" -> "after!") in UTF-16LE.
            let name: Vec<u8> = "after!".encode_utf16().flat_map(u16::to_le_bytes).collect();
            write_at(&disk, header.entry_offset(0) + 0x38, &name)?;
            fix_gpt_crcs(&disk, header.offset / SECTOR)?;
        }
        let verify = run(tool("sgdisk")?.arg("-v").arg(&disk))?;
        assert!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");
        let info = run(tool("sgdisk")?.args(["-i", "1"]).arg(&disk))?;
        assert!(info.contains("after!"), "sgdisk -i 1:\n{info}");
        Ok(())
    }
}
