//! Partition tables: GPT and MBR (with extended/logical partitions), or a
//! bare filesystem with no table.
//!
//! A hand-written, bounded reader. We looked at the `gptman` and `mbrman`
//! crates and rejected them for untrusted disks: both allocate from the
//! entry count and entry size that the header supplies, and `mbrman` follows
//! the EBR chain without a bound or cycle check. Here every allocation is
//! capped by a constant known up front, every chain walk is bounded and
//! cycle-checked, and all arithmetic on disk values is checked.
//!
//! Formats followed:
//! - GPT: UEFI Specification, chapter 5 "GUID Partition Table (GPT) Disk
//!   Layout" — § 5.3.2 the GPT header, § 5.3.3 the partition entry array,
//!   and the validation rules there (signature, header CRC32, MyLBA,
//!   entry-array CRC32, falling back to the backup header), in `gpt.rs`.
//! - MBR: the classic DOS layout — four 16-byte entries at byte 446 and the
//!   `0x55 0xAA` signature at byte 510 (UEFI spec § 5.2.1 "Legacy Master Boot
//!   Record", § 5.2.3 "Protective MBR") — and the extended boot record (EBR)
//!   chain for logical partitions, in `mbr.rs`.
//!
//! Which table wins follows the Linux kernel (`block/partitions/efi.c`,
//! `msdos.c`): a valid GPT is used when the MBR is protective or hybrid (has
//! a type `0xee` entry) or absent; a DOS table without a `0xee` entry wins
//! over a stale GPT. A first sector that is a FAT/NTFS/exFAT boot sector is
//! a bare filesystem, not a table, even though it also ends in `0x55AA`.
//!
//! Problems that leave something readable (a bad primary GPT header replaced
//! by the backup, an entry past the end of the disk, an EBR loop) become
//! [`PartitionTable::warnings`], each naming what was wrong and its byte
//! offset; only an unreadable first sector is an error.

#![warn(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]

mod gpt;
mod mbr;

use crate::block::{BlockError, BlockSource};

/// Which kind of table a partition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// GUID Partition Table.
    Gpt,
    /// Master Boot Record (DOS) table.
    Mbr,
}

impl Scheme {
    /// The name used in warnings.
    fn label(self) -> &'static str {
        match self {
            Scheme::Gpt => "GPT",
            Scheme::Mbr => "MBR",
        }
    }
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The table it came from.
    pub scheme: Scheme,
    /// The number the kernel would give it (`sda1` is 1; logical partitions start at 5).
    pub number: u32,
    /// Byte offset from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type: the GPT type GUID (lowercase, dashed) or the MBR type byte as `0x83`.
    pub type_id: String,
    /// The GPT partition name, where set.
    pub name: Option<String>,
}

/// What a disk holds at the partition level.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionTable {
    /// The table found, or `None` for a bare filesystem (or unknown content).
    pub scheme: Option<Scheme>,
    /// The partitions, in table order (GPT: entry order; MBR: primary slots
    /// 1–4, then logical partitions in chain order).
    pub partitions: Vec<Partition>,
    /// Problems that did not stop reading (a bad primary GPT header replaced
    /// by the backup, an entry past the end of the disk, …).
    pub warnings: Vec<String>,
}

/// Why a partition table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The disk could not be read.
    #[error("reading the partition table: {0}")]
    Read(#[source] BlockError),
}

/// Bytes in the first sector we read: the MBR is 512 bytes whatever the
/// logical sector size.
const MBR_SECTOR: usize = 512;

/// Read the partition table of `source`.
///
/// Reads at most: the first sector, LBA 1 for 512- and 4096-byte sectors,
/// one partition entry array of at most 4 MiB (twice when the backup GPT is
/// needed), and at most 128 EBR sectors. A disk smaller than one sector, or
/// with no recognisable table, is `scheme: None`.
///
/// # Errors
/// [`PartitionError::Read`] when the first sector of a disk at least one
/// sector long cannot be read. Everything after that is best effort and
/// ends up in [`PartitionTable::warnings`].
pub fn read_partitions(source: &dyn BlockSource) -> Result<PartitionTable, PartitionError> {
    let disk_size = source.size();
    let mut table = PartitionTable::default();
    if disk_size == 0 {
        return Ok(table);
    }
    if disk_size < u64_from(MBR_SECTOR) {
        table.warnings.push(format!(
            "disk is {disk_size} bytes, smaller than one {MBR_SECTOR}-byte sector: no partition table"
        ));
        return Ok(table);
    }
    let mut sector = [0u8; MBR_SECTOR];
    source
        .read_exact_at(&mut sector, 0)
        .map_err(PartitionError::Read)?;
    let boot = mbr::BootSector::parse(&sector);
    if let mbr::BootSector::Filesystem = boot {
        return Ok(table);
    }

    match gpt::read(source, boot.has_protective_entry()) {
        gpt::Gpt::Found {
            partitions,
            warnings,
            header_offset,
        } => {
            if boot.is_dos_table() {
                // The kernel does the same: without a 0xee entry the MBR is
                // authoritative and a GPT header is a leftover.
                table.warnings.push(format!(
                    "ignoring the GPT at byte {header_offset}: the MBR at byte 0 has partitions \
                     but no protective (type 0xee) entry, so the GPT is taken as stale"
                ));
            } else {
                if !boot.has_protective_entry() {
                    table.warnings.push(format!(
                        "no protective MBR (type 0xee entry at byte 446) in front of the GPT at \
                         byte {header_offset}; using the GPT anyway"
                    ));
                }
                table.warnings.extend(warnings);
                table.scheme = Some(Scheme::Gpt);
                table.partitions = partitions;
                return Ok(table);
            }
        }
        gpt::Gpt::Absent { warnings } => table.warnings.extend(warnings),
    }

    let mbr::BootSector::Table(entries) = boot else {
        return Ok(table);
    };
    let partitions = mbr::read(source, &entries, &mut table.warnings);
    let listed = entries
        .iter()
        .any(|entry| !entry.is_empty() && entry.kind != mbr::PROTECTIVE);
    if partitions.is_empty() {
        if listed {
            table.warnings.push(
                "MBR at byte 0 has entries but none is usable; treating the disk as having no \
                 partition table"
                    .to_string(),
            );
        }
        return Ok(table);
    }
    if boot.has_protective_entry() {
        table.warnings.push(
            "no usable GPT behind the hybrid MBR; using the MBR's own entries instead".to_string(),
        );
    }
    table.scheme = Some(Scheme::Mbr);
    table.partitions = partitions;
    Ok(table)
}

/// Turn a table entry into a partition checked against the end of the disk:
/// kept, clamped to the disk (an image cut short), or dropped when it starts
/// at or past the end. `entry` names the entry and where it was read, for
/// the warning.
fn fit_to_disk(
    candidate: Partition,
    disk_size: u64,
    entry: &str,
    warnings: &mut Vec<String>,
) -> Option<Partition> {
    let what = format!(
        "{} partition {} ({entry})",
        candidate.scheme.label(),
        candidate.number
    );
    if candidate.start >= disk_size {
        warnings.push(format!(
            "{what}: starts at byte {}, at or past the end of the disk ({disk_size} bytes); dropped",
            candidate.start
        ));
        return None;
    }
    // start < disk_size, so this cannot underflow.
    let available = disk_size.saturating_sub(candidate.start);
    if candidate.size > available {
        let end = candidate
            .start
            .checked_add(candidate.size)
            .map_or_else(|| "beyond 2^64".to_string(), |end| end.to_string());
        warnings.push(format!(
            "{what}: ends at byte {end}, past the end of the disk ({disk_size} bytes); clamped \
             to {available} bytes"
        ));
        return Some(Partition {
            size: available,
            ..candidate
        });
    }
    Some(candidate)
}

/// `N` bytes of `bytes` at `at`, or `None` when they are not all there.
fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// A little-endian `u16` at `at`.
fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes_at(bytes, at).map(u16::from_le_bytes)
}

/// A little-endian `u32` at `at`.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes_at(bytes, at).map(u32::from_le_bytes)
}

/// A little-endian `u64` at `at`.
fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes_at(bytes, at).map(u64::from_le_bytes)
}

/// A buffer length as a disk offset (lossless on every target we build).
fn u64_from(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod tests {
    //! Shared kit for the partition tests: run the real tools, load images.

    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::block::Memory;

    /// Run `program` with `args`, feeding `stdin`; panic with the tool's
    /// output (or a clear "not installed" message) on failure. Tests never
    /// skip silently when a tool is missing.
    pub(super) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        use std::process::Stdio;

        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot run `{program}` ({err}); these tests need it installed \
                 (Debian: apt-get install gdisk fdisk)"
            )
        });
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin was piped")
                .write_all(input.as_bytes())
                .expect("write the tool's stdin");
        }
        let output = child.wait_with_output().expect("wait for the tool");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`{program} {}` failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// A sparse, zeroed image file of `size` bytes (made with `truncate`,
    /// as a user would).
    pub(super) fn blank_image(dir: &Path, name: &str, size: &str) -> String {
        let path = dir.join(name);
        let path = path.to_str().expect("temp path is UTF-8").to_string();
        run("truncate", &["-s", size, &path], None);
        path
    }

    /// The whole image in memory, so tests can corrupt it.
    pub(super) fn load(path: &str) -> Vec<u8> {
        std::fs::read(path).expect("read the image back")
    }

    pub(super) fn read(bytes: Vec<u8>) -> PartitionTable {
        read_partitions(&Memory::new(bytes)).expect("first sector is readable")
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    pub(super) struct Noise(u64);

    impl Noise {
        pub(super) fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(super) fn fill(&mut self, bytes: &mut [u8]) {
            for byte in bytes {
                *byte = self.next().to_le_bytes()[0];
            }
        }
    }

    #[test]
    fn empty_disk_is_no_table() {
        let table = read(Vec::new());
        assert_eq!(table, PartitionTable::default());
    }

    #[test]
    fn disk_smaller_than_a_sector_is_no_table_with_a_warning() {
        for size in [1, 100, 511] {
            let table = read(vec![0x55; size]);
            assert_eq!(table.scheme, None);
            assert!(table.partitions.is_empty());
            assert_eq!(table.warnings.len(), 1, "{size}: {:?}", table.warnings);
        }
    }

    #[test]
    fn zeroed_disk_is_no_table_without_warnings() {
        let table = read(vec![0; 1 << 20]);
        assert_eq!(table, PartitionTable::default());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut noise = Noise::new(0x5eed);
        for round in 0..300 {
            let len = [512, 1000, 4096, 8192, 65536][round % 5];
            let mut bytes = vec![0u8; len];
            noise.fill(&mut bytes);
            // Make later rounds look more like tables, to get past the
            // signature checks into the entry parsers.
            if round % 3 != 0 {
                bytes[510] = 0x55;
                bytes[511] = 0xaa;
                for slot in 0..4 {
                    bytes[446 + slot * 16] = if noise.next() % 2 == 0 { 0 } else { 0x80 };
                }
            }
            if round % 3 == 1 && len >= 1024 {
                bytes[512..520].copy_from_slice(b"EFI PART");
            }
            if round % 6 == 2 {
                bytes[446 + 4] = [0x05, 0x0f, 0x85, 0xee][round % 4];
            }
            let table = read(bytes);
            for partition in &table.partitions {
                assert!(partition.start.saturating_add(partition.size) <= len as u64);
            }
        }
    }

    #[test]
    fn unreadable_first_sector_is_an_error() {
        #[derive(Debug)]
        struct Broken;
        impl BlockSource for Broken {
            fn size(&self) -> u64 {
                1 << 20
            }
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
                Err(BlockError::Read {
                    offset,
                    len: buf.len(),
                    source: std::io::Error::other("bad sector"),
                })
            }
        }
        let err = read_partitions(&Broken).expect_err("an unreadable disk is an error");
        assert!(err.to_string().contains("offset 0"), "{err}");
    }
}
