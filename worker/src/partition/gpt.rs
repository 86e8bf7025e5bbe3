//! The GUID Partition Table, after the UEFI Specification chapter 5 "GUID
//! Partition Table (GPT) Disk Layout": § 5.3.2 (header) and § 5.3.3
//! (partition entry array).
//!
//! Layout, in logical blocks (LBAs) of 512 or 4096 bytes:
//! LBA 0 protective MBR, LBA 1 primary header, then the entry array
//! (normally LBA 2, 128 entries of 128 bytes); the backup array and header
//! sit at the end of the disk, the backup header in the last LBA.
//!
//! A header is trusted only after the checks of § 5.3.2: signature
//! `EFI PART`, header CRC32 over `HeaderSize` bytes with the CRC field
//! zeroed, `MyLBA` equal to where it was read, and the entry array's CRC32.
//! Before anything is allocated, `HeaderSize` must lie in `92..=sector`,
//! `SizeOfPartitionEntry` must be a multiple of 128 in `128..=4096` (the spec
//! says 128·2ⁿ), and the whole array at most [`MAX_ARRAY_BYTES`]. When the
//! primary header or its array fails, the backup (at the primary's
//! `AlternateLBA` when that is inside the disk, else the last LBA) is used
//! and a warning says why.

use super::{Partition, Scheme, bytes_at, fit_to_disk, le_u16, le_u32, le_u64};
use crate::block::{BlockError, BlockSource};

/// `EFI PART`, the header signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// Logical sector sizes tried, in order: 512 (nearly every disk, EBS
/// volumes included) and 4096 (4Kn disks, whose header is at byte 4096).
const SECTOR_SIZES: [u64; 2] = [512, 4096];

/// The header's defined fields end at byte 92; `HeaderSize` may not be less.
const MIN_HEADER_SIZE: u32 = 92;

/// Bytes of one entry's defined fields; `SizeOfPartitionEntry` is a multiple.
const MIN_ENTRY_SIZE: u32 = 128;

/// Largest `SizeOfPartitionEntry` accepted. The spec allows any 128·2ⁿ, but
/// every tool writes 128; 4096 keeps one entry within one 4Kn sector.
const MAX_ENTRY_SIZE: u32 = 4096;

/// Largest partition entry array read, in bytes (4 MiB). The spec's minimum
/// and every partitioning tool's default is 16 KiB (128 × 128 bytes);
/// `sgdisk --resize-table` grows it in place but nobody needs 32768 entries.
/// This caps what a hostile header can make us allocate and read, twice at
/// most (primary and backup).
const MAX_ARRAY_BYTES: u64 = 4 * 1024 * 1024;

/// What [`read`] found.
#[derive(Debug)]
pub(super) enum Gpt {
    /// A valid GPT, from the primary header or the backup.
    Found {
        /// Used entries, in entry order.
        partitions: Vec<Partition>,
        /// Problems met on the way (a bad primary, clamped entries, …).
        warnings: Vec<String>,
        /// Byte offset of the header used.
        header_offset: u64,
    },
    /// No usable GPT. `warnings` explain what was found and rejected; it is
    /// empty when there was no sign of a GPT at all.
    Absent {
        /// What was wrong, with byte offsets.
        warnings: Vec<String>,
    },
}

/// The fields of a checked header that the reader uses.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Logical sector size this header was read with.
    sector_size: u64,
    /// Byte offset of the header.
    offset: u64,
    alternate_lba: u64,
    last_usable_lba: u64,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Why a header was not used.
#[derive(Debug)]
enum Rejected {
    /// No `EFI PART` there: not a GPT header at all.
    NoSignature,
    /// A GPT header, but unusable for the reason given.
    Bad(String),
}

/// Look for a GPT on `source`: the primary header at LBA 1 for each sector
/// size, then the backup. `protective_mbr` says the MBR has a type `0xee`
/// entry, so a GPT is expected even when no primary signature is found.
pub(super) fn read(source: &dyn BlockSource, protective_mbr: bool) -> Gpt {
    let mut problems = Vec::new();
    // Sector sizes with a primary signature, and the primary's AlternateLBA
    // where its header checked out (only its array was bad).
    let mut seen: Vec<(u64, Option<u64>)> = Vec::new();
    for sector_size in SECTOR_SIZES {
        match read_header(source, sector_size, 1) {
            Err(Rejected::NoSignature) => {}
            Err(Rejected::Bad(why)) => {
                problems.push(format!("primary GPT header at byte {sector_size}: {why}"));
                seen.push((sector_size, None));
            }
            Ok(header) => match read_array(source, &header) {
                Ok(array) => {
                    let mut warnings = problems;
                    let partitions = entries(source.size(), &header, &array, &mut warnings);
                    return Gpt::Found {
                        partitions,
                        warnings,
                        header_offset: header.offset,
                    };
                }
                Err(why) => {
                    problems.push(format!(
                        "primary GPT partition entry array (header at byte {}): {why}",
                        header.offset
                    ));
                    seen.push((sector_size, Some(header.alternate_lba)));
                }
            },
        }
    }
    if seen.is_empty() {
        if !protective_mbr {
            return Gpt::Absent { warnings: problems };
        }
        problems.push(
            "protective MBR (type 0xee) at byte 446 but no GPT header at LBA 1 for 512- or \
             4096-byte sectors"
                .to_string(),
        );
        seen = SECTOR_SIZES.iter().map(|&size| (size, None)).collect();
    }

    for (sector_size, alternate) in seen {
        let Some(last_lba) = source
            .size()
            .checked_div(sector_size)
            .and_then(|lbas| lbas.checked_sub(1))
        else {
            continue;
        };
        let mut candidates = Vec::with_capacity(2);
        if let Some(lba) = alternate.filter(|&lba| lba > 1 && lba <= last_lba) {
            candidates.push(lba);
        }
        if !candidates.contains(&last_lba) && last_lba > 1 {
            candidates.push(last_lba);
        }
        for lba in candidates {
            let offset = lba.saturating_mul(sector_size);
            match read_header(source, sector_size, lba) {
                Err(Rejected::NoSignature) => {
                    problems.push(format!("no backup GPT header at byte {offset}"));
                }
                Err(Rejected::Bad(why)) => {
                    problems.push(format!("backup GPT header at byte {offset}: {why}"));
                }
                Ok(header) => match read_array(source, &header) {
                    Ok(array) => {
                        let mut warnings = problems;
                        warnings.push(format!("using the backup GPT header at byte {offset}"));
                        let partitions = entries(source.size(), &header, &array, &mut warnings);
                        return Gpt::Found {
                            partitions,
                            warnings,
                            header_offset: offset,
                        };
                    }
                    Err(why) => problems.push(format!(
                        "backup GPT partition entry array (header at byte {offset}): {why}"
                    )),
                },
            }
        }
    }
    problems.push("no usable GPT: neither the primary nor the backup header checks out".into());
    Gpt::Absent { warnings: problems }
}

/// Read and check the header at `lba` for `sector_size`-byte sectors.
fn read_header(source: &dyn BlockSource, sector_size: u64, lba: u64) -> Result<Header, Rejected> {
    let offset = lba
        .checked_mul(sector_size)
        .ok_or_else(|| Rejected::Bad(format!("LBA {lba} overflows a byte offset")))?;
    let mut block = vec![0u8; usize::try_from(sector_size).unwrap_or(usize::MAX).min(4096)];
    match source.read_exact_at(&mut block, offset) {
        Ok(()) => {}
        // Off the end of a small disk: no header there.
        Err(BlockError::OutOfRange { .. }) => return Err(Rejected::NoSignature),
        Err(err) => return Err(Rejected::Bad(format!("cannot read the header: {err}"))),
    }
    if block.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err(Rejected::NoSignature);
    }
    let field = |at| le_u32(&block, at).ok_or_else(|| Rejected::Bad("short header".to_string()));
    let header_size = field(12)?;
    let sector = u32::try_from(sector_size).unwrap_or(u32::MAX);
    if !(MIN_HEADER_SIZE..=sector).contains(&header_size) {
        return Err(Rejected::Bad(format!(
            "header size {header_size} outside {MIN_HEADER_SIZE}..={sector}"
        )));
    }
    let stored_crc = field(16)?;
    let mut covered = block
        .get(..usize::try_from(header_size).unwrap_or(usize::MAX))
        .ok_or_else(|| Rejected::Bad("header size past the sector".to_string()))?
        .to_vec();
    if let Some(crc) = covered.get_mut(16..20) {
        crc.fill(0);
    }
    let crc = crc32fast::hash(&covered);
    if crc != stored_crc {
        return Err(Rejected::Bad(format!(
            "header CRC32 is {crc:#010x}, header says {stored_crc:#010x}"
        )));
    }

    let wide = |at| le_u64(&block, at).ok_or_else(|| Rejected::Bad("short header".to_string()));
    let my_lba = wide(24)?;
    if my_lba != lba {
        return Err(Rejected::Bad(format!(
            "header says it is at LBA {my_lba}, but was read from LBA {lba}"
        )));
    }
    let first_usable_lba = wide(40)?;
    let last_usable_lba = wide(48)?;
    if first_usable_lba > last_usable_lba {
        return Err(Rejected::Bad(format!(
            "first usable LBA {first_usable_lba} is after last usable LBA {last_usable_lba}"
        )));
    }
    let entry_size = field(84)?;
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&entry_size)
        || entry_size.checked_rem(MIN_ENTRY_SIZE) != Some(0)
    {
        return Err(Rejected::Bad(format!(
            "partition entry size {entry_size} is not a multiple of {MIN_ENTRY_SIZE} in \
             {MIN_ENTRY_SIZE}..={MAX_ENTRY_SIZE}"
        )));
    }
    let entry_count = field(80)?;
    let array_bytes = u64::from(entry_count).checked_mul(u64::from(entry_size));
    if array_bytes.is_none_or(|bytes| bytes > MAX_ARRAY_BYTES) {
        return Err(Rejected::Bad(format!(
            "{entry_count} entries of {entry_size} bytes exceed the {MAX_ARRAY_BYTES}-byte limit \
             on the partition entry array"
        )));
    }
    Ok(Header {
        sector_size,
        offset,
        alternate_lba: wide(32)?,
        last_usable_lba,
        entries_lba: wide(72)?,
        entry_count,
        entry_size,
        entries_crc: field(88)?,
    })
}

/// Read the partition entry array a checked header names, and check its CRC.
fn read_array(source: &dyn BlockSource, header: &Header) -> Result<Vec<u8>, String> {
    let offset = header
        .entries_lba
        .checked_mul(header.sector_size)
        .ok_or_else(|| format!("entry array LBA {} overflows", header.entries_lba))?;
    // Bounded by MAX_ARRAY_BYTES in read_header, so the allocation is too.
    let len = u64::from(header.entry_count)
        .checked_mul(u64::from(header.entry_size))
        .filter(|&len| len <= MAX_ARRAY_BYTES)
        .and_then(|len| usize::try_from(len).ok())
        .ok_or_else(|| "entry array size out of bounds".to_string())?;
    let mut array = vec![0u8; len];
    source
        .read_exact_at(&mut array, offset)
        .map_err(|err| format!("cannot read {len} bytes at byte {offset}: {err}"))?;
    let crc = crc32fast::hash(&array);
    if crc != header.entries_crc {
        return Err(format!(
            "CRC32 of the {len} bytes at byte {offset} is {crc:#010x}, header says {:#010x}",
            header.entries_crc
        ));
    }
    Ok(array)
}

/// The used entries of a checked array, numbered from 1 by slot, as the
/// kernel numbers them; unused slots (zero type GUID) are skipped.
fn entries(
    disk_size: u64,
    header: &Header,
    array: &[u8],
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    let disk_lbas = disk_size.checked_div(header.sector_size).unwrap_or(0);
    if header.last_usable_lba >= disk_lbas {
        warnings.push(format!(
            "GPT header at byte {}: last usable LBA {} is past the end of the disk ({disk_lbas} \
             sectors of {} bytes); the image may be truncated",
            header.offset, header.last_usable_lba, header.sector_size
        ));
    }
    let array_offset = header.entries_lba.saturating_mul(header.sector_size);
    let stride = usize::try_from(header.entry_size).unwrap_or(usize::MAX);
    let mut partitions = Vec::new();
    for ((index, number), entry) in (0u64..).zip(1u32..).zip(array.chunks_exact(stride)) {
        let Some(type_guid) = bytes_at::<16>(entry, 0) else {
            continue;
        };
        if type_guid == [0; 16] {
            continue;
        }
        let entry_offset = index
            .checked_mul(u64::from(header.entry_size))
            .and_then(|at| at.checked_add(array_offset))
            .unwrap_or(u64::MAX);
        let place = format!("entry at byte {entry_offset}");
        let (Some(first_lba), Some(last_lba)) = (le_u64(entry, 32), le_u64(entry, 40)) else {
            continue;
        };
        if first_lba > last_lba {
            warnings.push(format!(
                "GPT partition {number} ({place}): first LBA {first_lba} is after last LBA \
                 {last_lba}; dropped"
            ));
            continue;
        }
        let extent = first_lba.checked_mul(header.sector_size).and_then(|start| {
            let sectors = last_lba.checked_sub(first_lba)?.checked_add(1)?;
            Some((start, sectors.checked_mul(header.sector_size)?))
        });
        let Some((start, size)) = extent else {
            warnings.push(format!(
                "GPT partition {number} ({place}): LBAs {first_lba}..={last_lba} overflow a \
                 byte offset; dropped"
            ));
            continue;
        };
        let candidate = Partition {
            scheme: Scheme::Gpt,
            number,
            start,
            size,
            type_id: format_guid(&type_guid),
            name: name(entry),
        };
        partitions.extend(fit_to_disk(candidate, disk_size, &place, warnings));
    }
    partitions
}

/// A GUID as stored on disk (first three fields little-endian), in the
/// usual lowercase dashed form.
fn format_guid(guid: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *guid;
    let [d0, d1, e @ ..] = rest;
    let e: String = e.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{:08x}-{:04x}-{:04x}-{d0:02x}{d1:02x}-{e}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
    )
}

/// The entry's name: 36 UTF-16LE code units at byte 56, up to the first NUL;
/// `None` when empty.
fn name(entry: &[u8]) -> Option<String> {
    const NAME_OFFSET: usize = 56;
    const NAME_UNITS: usize = 36;
    let units: Vec<u16> = (0..NAME_UNITS)
        .map_while(|unit| {
            let at = unit.checked_mul(2)?.checked_add(NAME_OFFSET)?;
            le_u16(entry, at)
        })
        .take_while(|&unit| unit != 0)
        .collect();
    let name = String::from_utf16_lossy(&units);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod tests {
    use super::super::tests::{Noise, blank_image, load, read, run};
    use super::super::{PartitionTable, read_partitions};
    use super::*;
    use crate::block::FileSource;

    const MIB: u64 = 1024 * 1024;

    /// What `sgdisk -i N` reports for one partition: the ground truth.
    #[derive(Debug)]
    struct SgdiskInfo {
        type_guid: String,
        first: u64,
        last: u64,
        name: Option<String>,
    }

    fn sgdisk_info(image: &str, number: u32) -> SgdiskInfo {
        let out = run("sgdisk", &["-i", &number.to_string(), image], None);
        let field = |label: &str| {
            out.lines()
                .find_map(|line| line.strip_prefix(label))
                .unwrap_or_else(|| panic!("no `{label}` in sgdisk -i output:\n{out}"))
                .trim()
                .to_string()
        };
        let sector = |label: &str| -> u64 {
            field(label)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad `{label}` in sgdisk -i output:\n{out}"))
        };
        let type_guid = field("Partition GUID code:")
            .split_whitespace()
            .next()
            .expect("a GUID")
            .to_lowercase();
        let name = field("Partition name:");
        let name = name.trim_matches('\'');
        SgdiskInfo {
            type_guid,
            first: sector("First sector:"),
            last: sector("Last sector:"),
            name: (!name.is_empty()).then(|| name.to_string()),
        }
    }

    /// A 64 MiB GPT disk made by sgdisk: an EFI system partition and a
    /// named Linux root.
    fn sgdisk_image(dir: &tempfile::TempDir) -> String {
        let image = blank_image(dir.path(), "gpt.img", "64M");
        run(
            "sgdisk",
            &[
                "-n",
                "1:2048:+32M",
                "-t",
                "1:ef00",
                "-c",
                "1:EFI system",
                "-n",
                "2:0:0",
                "-t",
                "2:8300",
                "-c",
                "2:Linux root",
                &image,
            ],
            None,
        );
        image
    }

    /// Recompute the entry-array CRC and then the header CRC of the header
    /// at byte `header`, after a test edited them.
    fn fix_crcs(image: &mut [u8], sector_size: u64, header: usize) {
        let field = |image: &[u8], at: usize| le_u32(image, header + at).unwrap() as usize;
        let entries_lba = le_u64(image, header + 72).unwrap();
        let array = (entries_lba * sector_size) as usize;
        let len = field(image, 80) * field(image, 84);
        let crc = crc32fast::hash(&image[array..array + len]);
        image[header + 88..header + 92].copy_from_slice(&crc.to_le_bytes());
        let size = field(image, 12);
        image[header + 16..header + 20].fill(0);
        let crc = crc32fast::hash(&image[header..header + size]);
        image[header + 16..header + 20].copy_from_slice(&crc.to_le_bytes());
    }

    fn assert_matches_sgdisk(table: &PartitionTable, image: &str) {
        assert_eq!(table.scheme, Some(Scheme::Gpt));
        assert_eq!(table.partitions.len(), 2, "{table:?}");
        for partition in &table.partitions {
            let truth = sgdisk_info(image, partition.number);
            assert_eq!(partition.scheme, Scheme::Gpt);
            assert_eq!(partition.start, truth.first * 512, "{truth:?}");
            assert_eq!(partition.size, (truth.last - truth.first + 1) * 512);
            assert_eq!(partition.type_id, truth.type_guid);
            assert_eq!(partition.name, truth.name);
        }
    }

    #[test]
    fn sgdisk_image_matches_sgdisk_info() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let source = FileSource::open(image.as_ref()).unwrap();
        let table = read_partitions(&source).unwrap();
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        assert_matches_sgdisk(&table, &image);
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(
            table.partitions[0].type_id,
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(table.partitions[0].start, MIB);
        assert_eq!(table.partitions[0].size, 32 * MIB);
        assert_eq!(table.partitions[0].name.as_deref(), Some("EFI system"));
        assert_eq!(
            table.partitions[1].type_id,
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        assert_eq!(table.partitions[1].name.as_deref(), Some("Linux root"));
    }

    #[test]
    fn corrupt_primary_header_uses_backup_with_warning() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[512 + 40] ^= 0x01; // FirstUsableLBA: header CRC now wrong
        let table = read(bytes);
        assert_matches_sgdisk(&table, &image);
        let warnings = table.warnings.join("\n");
        assert!(
            warnings.contains("primary GPT header at byte 512: header CRC32"),
            "{warnings}"
        );
        let backup = 64 * MIB - 512;
        assert!(
            warnings.contains(&format!("using the backup GPT header at byte {backup}")),
            "{warnings}"
        );
    }

    #[test]
    fn corrupt_primary_signature_still_finds_backup_through_protective_mbr() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[512] = b'X'; // "XFI PART": no primary signature at all
        let table = read(bytes);
        assert_matches_sgdisk(&table, &image);
        assert!(
            table.warnings.iter().any(|w| w.contains("protective MBR")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn corrupt_primary_entry_array_uses_backup_with_warning() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[1024 + 128 + 60] ^= 0xff; // entry 2's name
        let table = read(bytes);
        assert_matches_sgdisk(&table, &image);
        let warnings = table.warnings.join("\n");
        assert!(
            warnings.contains("primary GPT partition entry array (header at byte 512)")
                && warnings.contains("at byte 1024"),
            "{warnings}"
        );
    }

    #[test]
    fn corrupt_primary_and_backup_is_no_table_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[512 + 40] ^= 0x01;
        let backup = (64 * MIB - 512) as usize;
        bytes[backup + 40] ^= 0x01;
        let table = read(bytes);
        assert_eq!(table.scheme, None, "{table:?}");
        assert!(table.partitions.is_empty());
        let warnings = table.warnings.join("\n");
        assert!(warnings.contains("byte 512"), "{warnings}");
        assert!(warnings.contains(&format!("byte {backup}")), "{warnings}");
        assert!(warnings.contains("no usable GPT"), "{warnings}");
    }

    #[test]
    fn hybrid_mbr_is_used_when_both_gpt_headers_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        // A hybrid MBR: the 0xee entry plus partition 1 as MBR type 0xef.
        run("sgdisk", &["-h", "1", &image], None);
        let intact = read(load(&image));
        assert_matches_sgdisk(&intact, &image);

        let mut bytes = load(&image);
        bytes[512 + 40] ^= 0x01;
        bytes[(64 * MIB - 512) as usize + 40] ^= 0x01;
        let table = read(bytes);
        assert_eq!(table.scheme, Some(Scheme::Mbr), "{table:?}");
        assert_eq!(table.partitions.len(), 1);
        let truth = sgdisk_info(&image, 1);
        let partition = &table.partitions[0];
        assert_eq!(partition.start, truth.first * 512);
        assert_eq!(partition.size, (truth.last - truth.first + 1) * 512);
        assert_eq!(partition.type_id, "0xef");
        assert!(
            table.warnings.iter().any(|w| w.contains("hybrid MBR")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn entries_past_the_disk_or_backwards_are_clamped_or_dropped_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let image = blank_image(dir.path(), "gpt.img", "8M");
        run(
            "sgdisk",
            &[
                "-n",
                "1:2048:+1M",
                "-n",
                "2:0:+1M",
                "-n",
                "3:0:+1M",
                "-n",
                "4:0:+1M",
                &image,
            ],
            None,
        );
        let mut bytes = load(&image);
        let entry = |number: usize| 1024 + (number - 1) * 128;
        let disk_lbas = 8 * MIB / 512;
        // 1: ends far past the disk → clamped.
        bytes[entry(1) + 40..entry(1) + 48].copy_from_slice(&(disk_lbas * 4).to_le_bytes());
        // 2: starts past the disk → dropped.
        bytes[entry(2) + 32..entry(2) + 40].copy_from_slice(&(disk_lbas + 10).to_le_bytes());
        bytes[entry(2) + 40..entry(2) + 48].copy_from_slice(&(disk_lbas + 20).to_le_bytes());
        // 3: first LBA after last LBA → dropped.
        bytes[entry(3) + 32..entry(3) + 40].copy_from_slice(&9000u64.to_le_bytes());
        bytes[entry(3) + 40..entry(3) + 48].copy_from_slice(&8000u64.to_le_bytes());
        // 4: LBAs that overflow a byte offset → dropped.
        bytes[entry(4) + 32..entry(4) + 40].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
        bytes[entry(4) + 40..entry(4) + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        fix_crcs(&mut bytes, 512, 512);

        let table = read(bytes);
        assert_eq!(table.scheme, Some(Scheme::Gpt));
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1], "{table:?}");
        assert_eq!(table.partitions[0].start, MIB);
        assert_eq!(table.partitions[0].size, 7 * MIB, "clamped to the disk");
        let warnings = table.warnings.join("\n");
        for expected in [
            "GPT partition 1 (entry at byte 1024): ends at byte",
            "clamped to 7340032 bytes",
            "GPT partition 2 (entry at byte 1152): starts at byte",
            "GPT partition 3 (entry at byte 1280): first LBA 9000 is after last LBA 8000",
            "GPT partition 4 (entry at byte 1408)",
        ] {
            assert!(
                warnings.contains(expected),
                "no `{expected}` in:\n{warnings}"
            );
        }
    }

    #[test]
    fn truncated_image_keeps_the_primary_and_clamps_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes.truncate((48 * MIB) as usize);
        let table = read(bytes);
        assert_eq!(table.scheme, Some(Scheme::Gpt));
        assert_eq!(table.partitions.len(), 2);
        assert_eq!(table.partitions[0].size, 32 * MIB);
        let second = &table.partitions[1];
        assert_eq!(second.start + second.size, 48 * MIB);
        let warnings = table.warnings.join("\n");
        assert!(warnings.contains("last usable LBA"), "{warnings}");
        assert!(
            warnings.contains("GPT partition 2 (entry at byte 1152): ends"),
            "{warnings}"
        );
    }

    #[test]
    fn hostile_header_sizes_are_rejected_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let pristine = load(&image);
        let cases: [(usize, u32, &str); 5] = [
            (80, u32::MAX, "exceed the 4194304-byte limit"),
            (84, 100, "partition entry size 100"),
            (84, 8192, "partition entry size 8192"),
            (12, 4096, "header size 4096 outside 92..=512"),
            (12, 91, "header size 91 outside"),
        ];
        for (at, value, expected) in cases {
            let mut bytes = pristine.clone();
            bytes[512 + at..512 + at + 4].copy_from_slice(&value.to_le_bytes());
            // A valid header CRC, so only the bounds checks can reject it.
            bytes[512 + 16..512 + 20].fill(0);
            let crc = crc32fast::hash(&bytes[512..512 + 92]);
            bytes[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
            let table = read(bytes);
            assert_matches_sgdisk(&table, &image);
            let warnings = table.warnings.join("\n");
            assert!(
                warnings.contains("primary GPT header at byte 512") && warnings.contains(expected),
                "no `{expected}` in:\n{warnings}"
            );
        }
    }

    #[test]
    fn fdisk_4096_byte_sectors_match_fdisk_list() {
        let dir = tempfile::tempdir().unwrap();
        let image = blank_image(dir.path(), "4kn.img", "64M");
        // g: new GPT; n 1 +8M; t 1 (EFI System); n 2 rest; w.
        run(
            "fdisk",
            &["-b", "4096", &image],
            Some("g\nn\n1\n\n+8M\nt\n1\nn\n2\n\n\nw\n"),
        );
        let listing = run(
            "fdisk",
            &[
                "-b",
                "4096",
                "-l",
                "-o",
                "Device,Start,Sectors,Type-UUID",
                &image,
            ],
            None,
        );
        let truth: Vec<(u32, u64, u64, String)> = listing
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(image.as_str())?;
                let mut fields = rest.split_whitespace();
                let number = fields.next()?.parse().ok()?;
                let start = fields.next()?.parse().ok()?;
                let sectors = fields.next()?.parse().ok()?;
                Some((number, start, sectors, fields.next()?.to_lowercase()))
            })
            .collect();
        assert_eq!(truth.len(), 2, "fdisk -l output:\n{listing}");

        let bytes = load(&image);
        assert_eq!(
            &bytes[4096..4104],
            b"EFI PART",
            "a 4Kn header is at byte 4096"
        );
        let table = read(bytes.clone());
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        assert_eq!(table.scheme, Some(Scheme::Gpt));
        let got: Vec<(u32, u64, u64, String)> = table
            .partitions
            .iter()
            .map(|p| (p.number, p.start / 4096, p.size / 4096, p.type_id.clone()))
            .collect();
        assert_eq!(got, truth);
        assert_eq!(got[0].3, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");

        // The same disk with its primary header broken, then with its
        // primary signature gone: the 4096-byte backup in the last LBA.
        for (at, flip) in [(4096 + 40, 0x01), (4096, 0xff)] {
            let mut broken = bytes.clone();
            broken[at] ^= flip;
            let table = read(broken);
            assert_eq!(table.scheme, Some(Scheme::Gpt), "{table:?}");
            assert_eq!(table.partitions, read(bytes.clone()).partitions);
            let backup = 64 * MIB - 4096;
            assert!(
                table
                    .warnings
                    .iter()
                    .any(|w| w.contains(&format!("using the backup GPT header at byte {backup}"))),
                "{:?}",
                table.warnings
            );
        }
    }

    #[test]
    fn dos_mbr_wins_over_a_stale_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        // Turn the protective entry into a Linux one, as an old MBR tool
        // rewriting the table (but not wiping the GPT) would leave it.
        assert_eq!(bytes[446 + 4], 0xee);
        bytes[446 + 4] = 0x83;
        let table = read(bytes);
        assert_eq!(table.scheme, Some(Scheme::Mbr), "{table:?}");
        assert_eq!(table.partitions.len(), 1);
        assert_eq!(table.partitions[0].type_id, "0x83");
        assert!(
            table
                .warnings
                .iter()
                .any(|w| w.contains("ignoring the GPT at byte 512")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn gpt_without_protective_mbr_is_used_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let image = sgdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[..512].fill(0);
        let table = read(bytes);
        assert_matches_sgdisk(&table, &image);
        assert!(
            table
                .warnings
                .iter()
                .any(|w| w.contains("no protective MBR")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn mutated_gpt_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let image = blank_image(dir.path(), "gpt.img", "1M");
        run("sgdisk", &["-n", "1:34:+100K", "-n", "2:0:0", &image], None);
        let pristine = load(&image);
        let mut noise = Noise::new(42);
        for _ in 0..300 {
            let mut bytes = pristine.clone();
            for _ in 0..1 + noise.next() % 8 {
                // Mutate the header or the array, then re-seal the CRCs so
                // the mutation reaches the entry parser.
                let at = 512 + (noise.next() % (512 + 4 * 128)) as usize;
                bytes[at] = noise.next() as u8;
            }
            if noise.next() % 2 == 0 {
                let count = le_u32(&bytes, 512 + 80).unwrap();
                let size = le_u32(&bytes, 512 + 84).unwrap();
                let lba = le_u64(&bytes, 512 + 72).unwrap();
                let header = le_u32(&bytes, 512 + 12).unwrap();
                let fits = u64::from(count) * u64::from(size) <= 64 * 1024
                    && lba.checked_mul(512).is_some_and(|at| {
                        at + u64::from(count) * u64::from(size) <= bytes.len() as u64
                    })
                    && (92..=512).contains(&header);
                if fits {
                    fix_crcs(&mut bytes, 512, 512);
                }
            }
            let len = bytes.len() as u64;
            let table = read(bytes);
            for partition in &table.partitions {
                assert!(partition.start + partition.size <= len, "{partition:?}");
            }
        }
    }

    #[test]
    fn guid_is_formatted_mixed_endian() {
        let on_disk = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(
            format_guid(&on_disk),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }

    #[test]
    fn name_stops_at_the_first_nul_and_empty_is_none() {
        let mut entry = [0u8; 128];
        assert_eq!(name(&entry), None);
        for (i, unit) in "root\u{e9}".encode_utf16().enumerate() {
            entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        entry[56 + 2 * 6] = b'x'; // after the NUL: ignored
        assert_eq!(name(&entry).as_deref(), Some("root\u{e9}"));
    }
}
