//! The Master Boot Record (DOS) partition table and its extended boot
//! record (EBR) chain.
//!
//! Layout (UEFI Specification § 5.2.1 "Legacy Master Boot Record"): four
//! 16-byte entries from byte 446 — status (`0x00`, or `0x80` bootable),
//! CHS start, type, CHS end, first LBA (u32 LE), sector count (u32 LE) — and
//! the signature `0x55 0xAA` at byte 510. LBAs count 512-byte sectors.
//!
//! A primary entry of type `0x05`, `0x0f` or `0x85` is an extended
//! partition: a container, not listed itself, whose first sector is the first
//! EBR. Each EBR is an MBR-shaped sector whose first entry is a logical
//! partition (start relative to that EBR) and whose second entry links the
//! next EBR (start relative to the extended partition). Logical partitions
//! are numbered from 5 in chain order, as the kernel numbers them. The walk
//! stops after [`MAX_EBRS`] records or at the first EBR seen twice.
//!
//! `0x55AA` alone does not make a table: FAT, exFAT and NTFS boot sectors
//! end in it too. A first sector with a filesystem's jump instruction and
//! name, or a status byte other than `0x00`/`0x80` (the kernel's own test),
//! is not a partition table.

use std::collections::BTreeSet;

use super::{MBR_SECTOR, Partition, Scheme, bytes_at, fit_to_disk, le_u32, u64_from};
use crate::block::BlockSource;

/// Bytes per sector in MBR and EBR LBAs.
const SECTOR: u64 = 512;

/// Byte offset of the first of the four entries.
const TABLE_OFFSET: usize = 446;

/// Bytes per entry.
const ENTRY_SIZE: usize = 16;

/// Byte offset of the `0x55 0xAA` signature.
const SIGNATURE_OFFSET: usize = 510;

/// The type of a protective (GPT) entry.
pub(super) const PROTECTIVE: u8 = 0xee;

/// Extended partition types: DOS (CHS), Windows (LBA), Linux.
const EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];

/// Most EBRs followed across all extended partitions of a disk. Linux
/// allows at most 256 partitions per disk (and the classic `sd` driver
/// 15); 128 logical partitions is beyond any real table and bounds the walk
/// to 128 one-sector reads.
const MAX_EBRS: usize = 128;

/// One 16-byte MBR or EBR entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// `0x80` bootable, `0x00` not; anything else means "not a table".
    status: u8,
    /// The partition type byte.
    pub(super) kind: u8,
    /// First sector, relative to the record's base.
    start_lba: u32,
    /// Length in sectors.
    sectors: u32,
}

impl Entry {
    /// Entry `slot` (0–3) of the MBR-shaped `sector`.
    fn parse(sector: &[u8], slot: usize) -> Option<Self> {
        let at = slot.checked_mul(ENTRY_SIZE)?.checked_add(TABLE_OFFSET)?;
        let raw: [u8; ENTRY_SIZE] = bytes_at(sector, at)?;
        let [status, _, _, _, kind, ..] = raw;
        Some(Self {
            status,
            kind,
            start_lba: le_u32(&raw, 8)?,
            sectors: le_u32(&raw, 12)?,
        })
    }

    /// An unused slot: type 0 or no sectors.
    pub(super) fn is_empty(&self) -> bool {
        self.kind == 0 || self.sectors == 0
    }

    fn is_extended(&self) -> bool {
        EXTENDED.contains(&self.kind)
    }
}

/// What the first sector of a disk is, as far as tables go.
#[derive(Debug, Clone, Copy)]
pub(super) enum BootSector {
    /// No `0x55AA` at byte 510.
    Unsigned,
    /// A filesystem's boot sector (FAT, exFAT, NTFS): a bare filesystem.
    Filesystem,
    /// `0x55AA` but a status byte that no table has: boot code or data.
    NotATable,
    /// A partition table's four primary entries.
    Table([Entry; 4]),
}

impl BootSector {
    /// Classify the first 512 bytes of a disk.
    pub(super) fn parse(sector: &[u8; MBR_SECTOR]) -> Self {
        if bytes_at::<2>(sector, SIGNATURE_OFFSET) != Some([0x55, 0xaa]) {
            return Self::Unsigned;
        }
        if is_filesystem_boot_sector(sector) {
            return Self::Filesystem;
        }
        match entries(sector) {
            Some(entries) => Self::Table(entries),
            None => Self::NotATable,
        }
    }

    /// Whether the table has a type `0xee` entry (protective or hybrid MBR).
    pub(super) fn has_protective_entry(&self) -> bool {
        match self {
            Self::Table(entries) => entries
                .iter()
                .any(|entry| !entry.is_empty() && entry.kind == PROTECTIVE),
            _ => false,
        }
    }

    /// Whether this is a plain DOS table: some entries, none of type `0xee`.
    pub(super) fn is_dos_table(&self) -> bool {
        match self {
            Self::Table(entries) => {
                !self.has_protective_entry() && entries.iter().any(|entry| !entry.is_empty())
            }
            _ => false,
        }
    }
}

/// The four entries of an MBR-shaped sector, or `None` when a status byte
/// is neither `0x00` nor `0x80`.
fn entries(sector: &[u8]) -> Option<[Entry; 4]> {
    let parse = |slot| Entry::parse(sector, slot).filter(|e| matches!(e.status, 0x00 | 0x80));
    Some([parse(0)?, parse(1)?, parse(2)?, parse(3)?])
}

/// Whether this is a filesystem's boot sector: an x86 jump
/// (`EB xx 90` or `E9 xx xx`) followed by a filesystem name where FAT12/16
/// (byte 54), FAT32 (byte 82), NTFS or exFAT (byte 3) keep it. An MBR's boot
/// code never carries these names there.
fn is_filesystem_boot_sector(sector: &[u8]) -> bool {
    if !matches!(sector.get(..3), Some([0xeb, _, 0x90] | [0xe9, _, _])) {
        return false;
    }
    let has = |at: usize, name: &[u8]| {
        at.checked_add(name.len())
            .and_then(|end| sector.get(at..end))
            == Some(name)
    };
    has(3, b"NTFS    ") || has(3, b"EXFAT   ") || has(54, b"FAT") || has(82, b"FAT32")
}

/// The partitions of an MBR table: the primary entries by slot (1–4), then
/// the logical partitions of each extended partition (from 5). Protective
/// entries and extended containers are not listed.
pub(super) fn read(
    source: &dyn BlockSource,
    entries: &[Entry; 4],
    warnings: &mut Vec<String>,
) -> Vec<Partition> {
    let disk_size = source.size();
    let mut partitions = Vec::new();
    let mut extended = Vec::new();
    for ((number, entry), at) in (1u32..)
        .zip(entries)
        .zip((TABLE_OFFSET..).step_by(ENTRY_SIZE))
    {
        if entry.is_empty() || entry.kind == PROTECTIVE {
            continue;
        }
        if entry.is_extended() {
            extended.push((number, *entry));
            continue;
        }
        let place = format!("entry at byte {at}");
        partitions.extend(partition(entry, number, 0, disk_size, &place, warnings));
    }

    let mut chain = Chain {
        source,
        disk_size,
        visited: BTreeSet::new(),
        next_number: 5,
    };
    for (number, container) in extended {
        chain.walk(number, &container, &mut partitions, warnings);
    }
    partitions
}

/// The entry as a partition, its start relative to the record at `base_lba`.
fn partition(
    entry: &Entry,
    number: u32,
    base_lba: u64,
    disk_size: u64,
    place: &str,
    warnings: &mut Vec<String>,
) -> Option<Partition> {
    let extent = base_lba
        .checked_add(u64::from(entry.start_lba))
        .and_then(|lba| lba.checked_mul(SECTOR))
        .zip(u64::from(entry.sectors).checked_mul(SECTOR));
    let Some((start, size)) = extent else {
        warnings.push(format!(
            "MBR partition {number} ({place}): start overflows a byte offset; dropped"
        ));
        return None;
    };
    let candidate = Partition {
        scheme: Scheme::Mbr,
        number,
        start,
        size,
        type_id: format!("{:#04x}", entry.kind),
        name: None,
    };
    fit_to_disk(candidate, disk_size, place, warnings)
}

/// A walk along EBR chains, bounded and cycle-checked across every
/// extended partition of the disk.
struct Chain<'a> {
    source: &'a dyn BlockSource,
    disk_size: u64,
    /// LBAs of the EBRs read so far.
    visited: BTreeSet<u64>,
    /// The number the next logical partition gets.
    next_number: u32,
}

impl Chain<'_> {
    /// Follow the chain of the extended partition in primary slot `slot`.
    fn walk(
        &mut self,
        slot: u32,
        container: &Entry,
        partitions: &mut Vec<Partition>,
        warnings: &mut Vec<String>,
    ) {
        let base = u64::from(container.start_lba);
        let mut ebr_lba = base;
        loop {
            let offset = ebr_lba.saturating_mul(SECTOR);
            if self.visited.len() >= MAX_EBRS {
                warnings.push(format!(
                    "extended partition {slot}: stopped at the EBR at byte {offset} after \
                     {MAX_EBRS} EBRs"
                ));
                return;
            }
            if !self.visited.insert(ebr_lba) {
                warnings.push(format!(
                    "extended partition {slot}: the EBR chain loops back to the EBR at byte \
                     {offset}; stopped"
                ));
                return;
            }
            let mut sector = [0u8; MBR_SECTOR];
            if let Err(err) = self.source.read_exact_at(&mut sector, offset) {
                warnings.push(format!(
                    "extended partition {slot}: cannot read the EBR at byte {offset}: {err}"
                ));
                return;
            }
            if bytes_at::<2>(&sector, SIGNATURE_OFFSET) != Some([0x55, 0xaa]) {
                warnings.push(format!(
                    "extended partition {slot}: no 0x55AA signature in the EBR at byte {offset}; \
                     stopped"
                ));
                return;
            }
            let records: Vec<(usize, Entry)> = (0..4)
                .filter_map(|index| Some((index, Entry::parse(&sector, index)?)))
                .filter(|(_, entry)| !entry.is_empty())
                .collect();
            // The first data entry is the logical partition (the kernel reads
            // any slot; tools write slot 0).
            if let Some((index, entry)) = records.iter().find(|(_, entry)| !entry.is_extended()) {
                let number = self.next_number;
                self.next_number = number.saturating_add(1);
                let at = index
                    .checked_mul(ENTRY_SIZE)
                    .and_then(|at| at.checked_add(TABLE_OFFSET))
                    .map_or(u64::MAX, u64_from)
                    .saturating_add(offset);
                let place = format!("EBR entry at byte {at}");
                partitions.extend(partition(
                    entry,
                    number,
                    ebr_lba,
                    self.disk_size,
                    &place,
                    warnings,
                ));
            }
            // The first extended entry links the next EBR.
            let Some((_, link)) = records.iter().find(|(_, entry)| entry.is_extended()) else {
                return;
            };
            match base.checked_add(u64::from(link.start_lba)) {
                Some(next) => ebr_lba = next,
                None => {
                    warnings.push(format!(
                        "extended partition {slot}: the EBR at byte {offset} links past 2^64; \
                         stopped"
                    ));
                    return;
                }
            }
        }
    }
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
    use crate::block::{FileSource, Memory};

    /// Two primaries (one bootable), an extended partition holding three
    /// logical ones, on a 16 MiB disk, made by sfdisk.
    const SFDISK_SCRIPT: &str = "label: dos\n\
                                 ,2MiB,83,*\n\
                                 ,2MiB,b\n\
                                 ,,5\n\
                                 ,2MiB,83\n\
                                 ,1MiB,82\n\
                                 ,,8e\n";

    fn sfdisk_image(dir: &tempfile::TempDir) -> String {
        let image = blank_image(dir.path(), "mbr.img", "16M");
        run("sfdisk", &["-q", &image], Some(SFDISK_SCRIPT));
        image
    }

    /// `(number, start, size, type)` in bytes for every non-extended
    /// partition, as `sfdisk --json` reports them: the ground truth.
    fn sfdisk_truth(image: &str) -> Vec<(u32, u64, u64, String)> {
        let out = run("sfdisk", &["--json", image], None);
        let json: serde_json::Value = serde_json::from_str(&out).expect("sfdisk --json");
        let table = &json["partitiontable"];
        assert_eq!(table["label"], "dos", "{out}");
        let sector = table["sectorsize"].as_u64().unwrap_or(512);
        table["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter_map(|p| {
                let kind = u8::from_str_radix(p["type"].as_str()?, 16).ok()?;
                if EXTENDED.contains(&kind) {
                    return None;
                }
                let number = p["node"].as_str()?.strip_prefix(image)?.parse().ok()?;
                Some((
                    number,
                    p["start"].as_u64()? * sector,
                    p["size"].as_u64()? * sector,
                    format!("0x{kind:02x}"),
                ))
            })
            .collect()
    }

    fn summary(table: &PartitionTable) -> Vec<(u32, u64, u64, String)> {
        table
            .partitions
            .iter()
            .map(|p| (p.number, p.start, p.size, p.type_id.clone()))
            .collect()
    }

    /// Byte offset of the extended partition (slot 3) of the sfdisk image.
    fn extended_start(bytes: &[u8]) -> usize {
        let entry = Entry::parse(bytes, 2).unwrap();
        assert!(entry.is_extended());
        entry.start_lba as usize * 512
    }

    /// Byte offsets of the EBRs of the sfdisk image, in chain order.
    fn ebrs(bytes: &[u8]) -> Vec<usize> {
        let base = extended_start(bytes);
        let mut chain = vec![base];
        loop {
            let ebr = &bytes[*chain.last().unwrap()..];
            let link = Entry::parse(ebr, 1).unwrap();
            if link.is_empty() {
                return chain;
            }
            chain.push(base + link.start_lba as usize * 512);
        }
    }

    #[test]
    fn sfdisk_image_matches_sfdisk_json() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let source = FileSource::open(image.as_ref()).unwrap();
        let table = read_partitions(&source).unwrap();
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        assert_eq!(table.scheme, Some(Scheme::Mbr));
        let truth = sfdisk_truth(&image);
        assert_eq!(summary(&table), truth);
        let numbers: Vec<u32> = truth.iter().map(|t| t.0).collect();
        assert_eq!(numbers, [1, 2, 5, 6, 7], "the container (3) is not listed");
        let types: Vec<&str> = table
            .partitions
            .iter()
            .map(|p| p.type_id.as_str())
            .collect();
        assert_eq!(types, ["0x83", "0x0b", "0x83", "0x82", "0x8e"]);
        assert!(table.partitions.iter().all(|p| p.name.is_none()));
    }

    #[test]
    fn ebr_linking_to_itself_stops_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let mut bytes = load(&image);
        let first = extended_start(&bytes);
        // The first EBR's link, relative to the extended partition: 0 is the
        // first EBR itself.
        bytes[first + 446 + 16 + 8..first + 446 + 16 + 12].fill(0);
        let table = read(bytes);
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 5]);
        assert_eq!(summary(&table)[..3], sfdisk_truth(&image)[..3]);
        let warnings = table.warnings.join("\n");
        assert!(
            warnings.contains(&format!(
                "extended partition 3: the EBR chain loops back to the EBR at byte {first}"
            )),
            "{warnings}"
        );
    }

    #[test]
    fn ebr_chain_looping_back_to_the_start_stops_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let mut bytes = load(&image);
        let chain = ebrs(&bytes);
        assert_eq!(chain.len(), 3);
        let last = chain[2];
        // Give the last EBR a link back to the first (relative start 0).
        let link = last + 446 + 16;
        bytes[link + 4] = 0x05;
        bytes[link + 8..link + 12].copy_from_slice(&0u32.to_le_bytes());
        bytes[link + 12..link + 16].copy_from_slice(&1u32.to_le_bytes());
        let table = read(bytes);
        assert_eq!(summary(&table), sfdisk_truth(&image), "each logical once");
        assert!(
            table.warnings.iter().any(|w| w.contains("loops back")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn ebr_chain_is_bounded() {
        // An extended partition at LBA 2048 with 200 EBRs, each followed by
        // a one-sector logical partition.
        let base = 2048u32;
        let links = 200u32;
        let sectors = base + 2 * links + 2;
        let mut bytes = vec![0u8; sectors as usize * 512];
        let mut put = |sector: u32, slot: usize, kind: u8, start: u32, count: u32| {
            let at = sector as usize * 512 + 446 + slot * 16;
            bytes[at + 4] = kind;
            bytes[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            bytes[at + 12..at + 16].copy_from_slice(&count.to_le_bytes());
            let sig = sector as usize * 512 + 510;
            bytes[sig..sig + 2].copy_from_slice(&[0x55, 0xaa]);
        };
        put(0, 0, 0x0f, base, 2 * links + 2);
        for i in 0..links {
            put(base + 2 * i, 0, 0x83, 1, 1);
            put(base + 2 * i, 1, 0x05, 2 * (i + 1), 2);
        }
        let table = read(bytes);
        assert_eq!(table.scheme, Some(Scheme::Mbr));
        assert_eq!(table.partitions.len(), MAX_EBRS);
        assert_eq!(
            table.partitions.last().unwrap().number,
            5 + MAX_EBRS as u32 - 1
        );
        assert!(
            table.warnings.iter().any(|w| w.contains("after 128 EBRs")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn truncated_image_clamps_and_stops_at_the_missing_ebr() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let mut bytes = load(&image);
        let truth = sfdisk_truth(&image);
        let chain = ebrs(&bytes);
        // Cut the disk inside logical 5, before the second EBR.
        let (_, start5, _, _) = truth[2].clone();
        let cut = start5 + 1024 * 1024;
        assert!((cut as usize) < chain[1]);
        bytes.truncate(cut as usize);
        let table = read(bytes);
        assert_eq!(summary(&table)[..2], truth[..2]);
        assert_eq!(table.partitions.len(), 3);
        assert_eq!(table.partitions[2].size, 1024 * 1024, "clamped");
        let warnings = table.warnings.join("\n");
        assert!(
            warnings.contains("MBR partition 5 (EBR entry at byte"),
            "{warnings}"
        );
        assert!(
            warnings.contains(&format!("cannot read the EBR at byte {}", chain[1])),
            "{warnings}"
        );
    }

    #[test]
    fn primary_entry_past_the_disk_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let mut bytes = load(&image);
        // Slot 2 starts at LBA 4 000 000 000 (≈ 1.9 TB) on a 16 MiB disk.
        bytes[446 + 16 + 8..446 + 16 + 12].copy_from_slice(&4_000_000_000u32.to_le_bytes());
        let table = read(bytes);
        let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 5, 6, 7]);
        assert!(
            table
                .warnings
                .iter()
                .any(|w| w
                    .contains("MBR partition 2 (entry at byte 462): starts at byte 2048000000000")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn bare_fat_filesystem_is_no_table() {
        let dir = tempfile::tempdir().unwrap();
        for fat in ["12", "16", "32"] {
            let image = blank_image(dir.path(), &format!("fat{fat}.img"), "40M");
            run("mkfs.fat", &["-F", fat, &image], None);
            let bytes = load(&image);
            assert_eq!(
                &bytes[510..512],
                &[0x55, 0xaa],
                "FAT ends its boot sector in 55AA"
            );
            let table = read(bytes);
            assert_eq!(table, PartitionTable::default(), "FAT{fat}");
        }
    }

    #[test]
    fn bare_ext4_filesystem_is_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let image = blank_image(dir.path(), "ext4.img", "16M");
        run("mkfs.ext4", &["-q", "-F", &image], None);
        assert_eq!(read(load(&image)), PartitionTable::default());
    }

    #[test]
    fn bad_status_byte_is_not_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let mut bytes = load(&image);
        bytes[446 + 16] = 0x12;
        assert_eq!(read(bytes), PartitionTable::default());
    }

    #[test]
    fn ntfs_and_exfat_boot_sectors_are_not_tables() {
        for name in [&b"NTFS    "[..], &b"EXFAT   "[..]] {
            let mut bytes = vec![0u8; 1 << 20];
            bytes[..3].copy_from_slice(&[0xeb, 0x52, 0x90]);
            bytes[3..11].copy_from_slice(name);
            // Boot code that happens to look like a valid entry.
            bytes[446 + 4] = 0x07;
            bytes[446 + 8] = 1;
            bytes[446 + 12] = 1;
            bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
            assert_eq!(read(bytes), PartitionTable::default());
        }
    }

    #[test]
    fn only_a_protective_entry_without_gpt_is_no_table() {
        let mut bytes = vec![0u8; 1 << 20];
        bytes[446 + 4] = PROTECTIVE;
        bytes[446 + 8] = 1;
        bytes[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
        let table = read(bytes);
        assert_eq!(table.scheme, None);
        assert!(
            table.warnings.iter().any(|w| w.contains("no usable GPT")),
            "{:?}",
            table.warnings
        );
    }

    #[test]
    fn mutated_ebr_chain_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let image = sfdisk_image(&dir);
        let pristine = load(&image);
        let mut sectors = vec![0usize];
        sectors.extend(ebrs(&pristine));
        let mut noise = Noise::new(7);
        for _ in 0..300 {
            let mut bytes = pristine.clone();
            for _ in 0..1 + noise.next() % 6 {
                let sector = sectors[(noise.next() % sectors.len() as u64) as usize];
                let at = sector + 446 + (noise.next() % 64) as usize;
                bytes[at] = noise.next() as u8;
            }
            let len = bytes.len() as u64;
            let table = read_partitions(&Memory::new(bytes)).unwrap();
            assert!(table.partitions.len() <= 4 + MAX_EBRS);
            for partition in &table.partitions {
                assert!(partition.start + partition.size <= len, "{partition:?}");
            }
        }
    }
}
