//! Hostile input: empty and random files, truncated disks, damaged
//! partition tables and ext4 metadata (with checksums repaired where that
//! lets the damage reach the parser), partitions past the end of the disk,
//! extended-partition chains that loop, directories that contain
//! themselves.
//!
//! Every case: the binary exits 0 or 1 within [`HOSTILE_TIMEOUT`], under a
//! 2 GiB address-space limit, without a panic, and prints a valid report
//! when it exits 0. A test runs all its cases and then lists every failure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use e2e::corrupt::{self, Noise, SECTOR, gpt, with_patch};
use e2e::image::{self, GptDisk, MIB};
use e2e::mount::{dirty_snapshot, mounts_allowed, replace_durably};
use e2e::run::{HOSTILE_TIMEOUT, Outcome, Run};
use e2e::tools::{copy_sparse, run, tool};
use e2e::{check, tree, workdir};
use worker::report::Report;

/// The cases of one test, and what went wrong in them.
#[derive(Default)]
struct Cases {
    ran: usize,
    failures: Vec<String>,
}

impl Cases {
    /// Scan `image` as case `label`; record a failure unless it ends cleanly.
    /// Returns the report when the scan exited 0.
    fn scan(&mut self, label: &str, image: &Path) -> Option<Report> {
        self.ran += 1;
        match scan_bounded(image) {
            Ok(outcome) => match outcome.check_clean_exit() {
                Ok(()) if outcome.code == Some(0) => outcome.report().ok(),
                Ok(()) => None,
                Err(err) => {
                    self.failures.push(format!("{label}: {err:#}"));
                    None
                }
            },
            Err(err) => {
                self.failures.push(format!("{label}: {err:#}"));
                None
            }
        }
    }

    /// Record the result of an extra check of case `label`.
    fn expect(&mut self, label: &str, result: Result<()>) {
        if let Err(err) = result {
            self.failures.push(format!("{label}: {err:#}"));
        }
    }

    /// Scan `image` with `bytes` written at `offset`, then restore it.
    fn patched(&mut self, label: &str, image: &Path, offset: u64, bytes: &[u8]) -> Result<()> {
        with_patch(image, offset, bytes, || self.scan(label, image))?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if self.failures.is_empty() {
            eprintln!("{} hostile cases ended cleanly", self.ran);
            return Ok(());
        }
        bail!(
            "{} of {} hostile cases failed:\n\n{}",
            self.failures.len(),
            self.ran,
            self.failures.join("\n\n")
        )
    }
}

fn scan_bounded(image: &Path) -> Result<Outcome> {
    Run::scan_json(image).timeout(HOSTILE_TIMEOUT).run()
}

/// A Debian-like GPT disk in `dir`.
fn gpt_fixture(dir: &Path) -> Result<GptDisk> {
    let root = dir.join("root");
    tree::debian_root(&root)?;
    image::gpt_disk(dir, &root)
}

/// The ESP of a GPT fixture must survive damage elsewhere: other volumes go on.
fn esp_still_found(report: Option<&Report>, disk: &GptDisk) -> Result<()> {
    let Some(report) = report else {
        return Ok(());
    };
    let esp = report
        .volumes
        .iter()
        .find(|v| {
            v.partition
                .as_ref()
                .is_some_and(|p| p.number == 1 && p.start == disk.esp.start)
        })
        .with_context(|| format!("the intact ESP is no longer reported: {report:#?}"))?;
    ensure!(
        esp.filesystem.as_ref().map(|f| f.fs_type.as_str()) == Some("vfat"),
        "the intact ESP is not read as vfat: {esp:#?}"
    );
    Ok(())
}

#[test]
fn empty_and_random_files_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let mut cases = Cases::default();
    let path = dir.path().join("hostile.img");

    std::fs::write(&path, b"")?;
    cases.scan("empty file", &path);

    let mut noise = Noise::new(0x0E2E);
    std::fs::write(&path, noise.bytes(MIB as usize))?;
    cases.scan("1 MiB of random bytes", &path);

    // Random bytes behind the magic numbers each parser looks for first.
    let mut gpt_like = noise.bytes(MIB as usize);
    gpt_like[0x1C2] = 0xEE;
    gpt_like[510..512].copy_from_slice(&[0x55, 0xAA]);
    gpt_like[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&path, &gpt_like)?;
    cases.scan("random bytes behind a protective MBR and `EFI PART`", &path);

    let mut mbr_like = noise.bytes(MIB as usize);
    mbr_like[510..512].copy_from_slice(&[0x55, 0xAA]);
    for entry in 0..4 {
        mbr_like[0x1BE + entry * 16] = 0;
        mbr_like[0x1C2 + entry * 16] = [0x83, 0x05, 0x0F, 0x85][entry];
    }
    std::fs::write(&path, &mbr_like)?;
    cases.scan("random MBR entries, extended types included", &path);

    let mut ext4_like = noise.bytes(MIB as usize);
    ext4_like[..1024].fill(0);
    ext4_like[1024 + 0x38..1024 + 0x3A].copy_from_slice(&[0x53, 0xEF]);
    ext4_like[1024 + 0x18..1024 + 0x1C].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &ext4_like)?;
    cases.scan("random bytes behind an ext4 superblock magic", &path);

    // Random bytes where the first extended-partition chain points into
    // more random bytes, four levels deep.
    let mut sectors = noise.bytes(4 * MIB as usize);
    sectors[..512].fill(0);
    sectors[510..512].copy_from_slice(&[0x55, 0xAA]);
    sectors[0x1C2] = 0x05;
    sectors[0x1C6..0x1CA].copy_from_slice(&2048u32.to_le_bytes());
    sectors[0x1CA..0x1CE].copy_from_slice(&4096u32.to_le_bytes());
    std::fs::write(&path, &sectors)?;
    cases.scan("extended partition over random EBRs", &path);

    cases.finish()
}

#[test]
fn truncated_gpt_disks_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let disk = gpt_fixture(dir.path())?;
    let size = std::fs::metadata(&disk.disk)?.len();
    let truncated = dir.path().join("truncated.img");
    let mut cases = Cases::default();
    let points = [
        ("512 B (protective MBR only)", 512),
        ("17 KiB (inside the entry array)", 17 * 1024),
        ("1 MiB (before the first partition)", MIB),
        ("the ESP's first 4 KiB", disk.esp.start + 4096),
        ("the root's superblock", disk.root.start + 2048),
        ("half", size / 2),
        ("the backup header's sector", size - SECTOR),
    ];
    for (label, len) in points {
        copy_sparse(&disk.disk, &truncated)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated)?
            .set_len(len)?;
        cases.scan(
            &format!("GPT disk truncated to {label} ({len} bytes)"),
            &truncated,
        );
    }
    cases.finish()
}

#[test]
fn damaged_gpt_headers_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let disk = gpt_fixture(dir.path())?;
    let img = &disk.disk;
    let primary = corrupt::gpt_header(img, 1)?;
    let backup = corrupt::gpt_header(img, primary.alternate_lba)?;
    let mut cases = Cases::default();

    let fields: [(&str, u64, usize); 11] = [
        ("signature", gpt::SIGNATURE, 8),
        ("header size", gpt::HEADER_SIZE, 4),
        ("header CRC", gpt::HEADER_CRC, 4),
        ("my LBA", gpt::MY_LBA, 8),
        ("alternate LBA", gpt::ALTERNATE_LBA, 8),
        ("first usable LBA", gpt::FIRST_USABLE, 8),
        ("last usable LBA", gpt::LAST_USABLE, 8),
        ("entries LBA", gpt::ENTRIES_LBA, 8),
        ("entry count", gpt::ENTRY_COUNT, 4),
        ("entry size", gpt::ENTRY_SIZE, 4),
        ("entries CRC", gpt::ENTRIES_CRC, 4),
    ];

    // Damage the primary header only: its CRC no longer matches, the backup
    // is intact, and the report must come from the backup, with a warning.
    for (name, field, len) in fields {
        let label = format!("primary GPT header: {name} inverted");
        let bytes = corrupt::inverted(img, primary.offset + field, len)?;
        let report = with_patch(img, primary.offset + field, &bytes, || {
            cases.scan(&label, img)
        })?;
        cases.expect(&label, read_from_backup(report.as_ref(), &disk));
    }

    // Damage with the CRCs repaired: insane values that pass the checksum.
    let insane: [(&str, u64, Vec<u8>); 14] = [
        (
            "entry count 0xffffffff",
            gpt::ENTRY_COUNT,
            u32::MAX.to_le_bytes().to_vec(),
        ),
        (
            "entry count 0x00100000",
            gpt::ENTRY_COUNT,
            0x0010_0000u32.to_le_bytes().to_vec(),
        ),
        ("entry size 0", gpt::ENTRY_SIZE, 0u32.to_le_bytes().to_vec()),
        ("entry size 1", gpt::ENTRY_SIZE, 1u32.to_le_bytes().to_vec()),
        (
            "entry size 0xffffffff",
            gpt::ENTRY_SIZE,
            u32::MAX.to_le_bytes().to_vec(),
        ),
        (
            "entries LBA 0",
            gpt::ENTRIES_LBA,
            0u64.to_le_bytes().to_vec(),
        ),
        (
            "entries LBA 1 (the header)",
            gpt::ENTRIES_LBA,
            1u64.to_le_bytes().to_vec(),
        ),
        (
            "entries LBA u64::MAX",
            gpt::ENTRIES_LBA,
            u64::MAX.to_le_bytes().to_vec(),
        ),
        (
            "entries LBA past the end",
            gpt::ENTRIES_LBA,
            (1u64 << 40).to_le_bytes().to_vec(),
        ),
        (
            "header size 0",
            gpt::HEADER_SIZE,
            0u32.to_le_bytes().to_vec(),
        ),
        (
            "header size 0xffffffff",
            gpt::HEADER_SIZE,
            u32::MAX.to_le_bytes().to_vec(),
        ),
        (
            "first usable u64::MAX",
            gpt::FIRST_USABLE,
            u64::MAX.to_le_bytes().to_vec(),
        ),
        (
            "last usable u64::MAX",
            gpt::LAST_USABLE,
            u64::MAX.to_le_bytes().to_vec(),
        ),
        (
            "alternate LBA u64::MAX",
            gpt::ALTERNATE_LBA,
            u64::MAX.to_le_bytes().to_vec(),
        ),
    ];
    let pristine = dir.path().join("pristine.img");
    copy_sparse(img, &pristine)?;
    for (name, field, bytes) in &insane {
        for (which, header) in [("primary", primary), ("primary and backup", backup)] {
            copy_sparse(&pristine, img)?;
            if which == "primary and backup" {
                corrupt::write_at(img, primary.offset + field, bytes)?;
                corrupt::fix_gpt_crcs(img, 1)?;
            }
            corrupt::write_at(img, header.offset + field, bytes)?;
            corrupt::fix_gpt_crcs(img, header.offset / SECTOR)?;
            cases.scan(&format!("{which} GPT header, CRCs fixed: {name}"), img);
        }
    }
    copy_sparse(&pristine, img)?;

    // Both headers gone.
    let primary_sig = corrupt::inverted(img, primary.offset, 8)?;
    let backup_sig = corrupt::inverted(img, backup.offset, 8)?;
    with_patch(img, primary.offset, &primary_sig, || {
        with_patch(img, backup.offset, &backup_sig, || {
            cases.scan("both GPT signatures inverted", img)
        })
    })??;

    // The primary entry array damaged without fixing its CRC: the backup
    // array is intact, so the table still comes from it.
    let entry = primary.entry_offset(0);
    let label = "first entry of the primary GPT array inverted";
    let bytes = corrupt::inverted(img, entry, 128)?;
    let report = with_patch(img, entry, &bytes, || cases.scan(label, img))?;
    cases.expect(label, read_from_backup(report.as_ref(), &disk));

    cases.finish()
}

/// With only the primary GPT header damaged, both partitions still come
/// from the backup header, and the report says so in `errors`.
fn read_from_backup(report: Option<&Report>, disk: &GptDisk) -> Result<()> {
    let report = report.context("no report (exit 1) although the backup GPT header is intact")?;
    let found: Vec<_> = report
        .volumes
        .iter()
        .filter_map(|v| v.partition.as_ref())
        .map(|p| (p.number, p.start, p.size))
        .collect();
    let expected: Vec<_> = disk
        .table
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.size))
        .collect();
    ensure!(
        found == expected,
        "partitions {found:?}, the backup header has {expected:?}"
    );
    ensure!(
        !report.errors.is_empty(),
        "the report does not say the primary GPT header was damaged"
    );
    Ok(())
}

#[test]
fn gpt_entries_past_the_end_of_the_disk_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let disk = gpt_fixture(dir.path())?;
    let img = &disk.disk;
    let primary = corrupt::gpt_header(img, 1)?;
    let backup = corrupt::gpt_header(img, primary.alternate_lba)?;
    let sectors = std::fs::metadata(img)?.len() / SECTOR;
    let pristine = dir.path().join("pristine.img");
    copy_sparse(img, &pristine)?;
    let mut cases = Cases::default();

    // Edit entry 2 (index 1) in both arrays and fix every CRC, so the table
    // is valid and only the geometry is wrong.
    let edits: [(&str, u64, u64); 4] = [
        (
            "root ends 1000 sectors past the end",
            gpt::ENTRY_LAST_LBA,
            sectors + 1000,
        ),
        ("root ends at u64::MAX", gpt::ENTRY_LAST_LBA, u64::MAX),
        (
            "root starts past the end",
            gpt::ENTRY_FIRST_LBA,
            sectors + 10,
        ),
        (
            "root starts after it ends",
            gpt::ENTRY_FIRST_LBA,
            sectors - 24,
        ),
    ];
    for (name, field, value) in edits {
        copy_sparse(&pristine, img)?;
        for header in [primary, backup] {
            corrupt::write_at(img, header.entry_offset(1) + field, &value.to_le_bytes())?;
            corrupt::fix_gpt_crcs(img, header.offset / SECTOR)?;
        }
        let label = format!("GPT entry, CRCs fixed: {name}");
        let report = cases.scan(&label, img);
        cases.expect(&label, esp_still_found(report.as_ref(), &disk));
    }

    // Partitioned at 128 MiB, then cut to 96 MiB: the root runs past the
    // end and the backup header is gone.
    copy_sparse(&pristine, img)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)?
        .set_len(96 * MIB)?;
    let label = "GPT disk cut to 96 MiB after partitioning";
    let report = cases.scan(label, img);
    cases.expect(label, esp_still_found(report.as_ref(), &disk));

    cases.finish()
}

#[test]
fn looping_extended_partition_chains_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let mbr = image::mbr_disk(dir.path(), &root)?;
    let img = &mbr.disk;
    let mut cases = Cases::default();

    // The first EBR sits at the start of the extended partition; its second
    // entry links to the next EBR, relative to the extended partition.
    let ext_start = mbr.extended.start / SECTOR;
    let first_ebr = mbr.extended.start;
    let link = corrupt::read_at(img, first_ebr + 0x1CE, 16)?;
    let next_rel = u64::from(u32::from_le_bytes(link[8..12].try_into()?));
    ensure!(
        next_rel != 0,
        "the first EBR links to no second EBR: {link:?}"
    );
    let second_ebr = (ext_start + next_rel) * SECTOR;

    let entry = |kind: u8, start: u32, size: u32| -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&size.to_le_bytes());
        e
    };
    let links: [(&str, u64, Vec<u8>); 5] = [
        (
            "second EBR links back to the first",
            second_ebr + 0x1CE,
            entry(0x05, 0, 2048),
        ),
        (
            "first EBR links to itself",
            first_ebr + 0x1CE,
            entry(0x05, 0, 2048),
        ),
        (
            "EBR link past the end of the disk",
            second_ebr + 0x1CE,
            entry(0x05, u32::MAX - 1, 2048),
        ),
        (
            "logical partition of 2^32-1 sectors",
            first_ebr + 0x1BE,
            entry(0x83, 2048, u32::MAX),
        ),
        (
            "second EBR links back to the first as 0x0f, 2^32-1 sectors",
            second_ebr + 0x1CE,
            entry(0x0F, 0, u32::MAX),
        ),
    ];
    for (name, offset, bytes) in &links {
        let report = with_patch(img, *offset, bytes, || cases.scan(name, img))?;
        cases.expect(name, fat_still_found(report.as_ref()));
    }
    // A primary entry that is a second extended partition over the first.
    let primary4 = 0x1BE + 3 * 16;
    let ext = entry(0x05, u32::try_from(ext_start)?, 4096);
    cases.patched(
        "two extended partitions over one chain",
        img,
        primary4,
        &ext,
    )?;
    cases.finish()
}

fn fat_still_found(report: Option<&Report>) -> Result<()> {
    let Some(report) = report else {
        return Ok(());
    };
    ensure!(
        report.volumes.iter().any(|v| {
            v.partition.as_ref().is_some_and(|p| p.number == 1)
                && v.filesystem.as_ref().is_some_and(|f| f.fs_type == "vfat")
        }),
        "primary partition 1 (vfat) is no longer reported: {report:#?}"
    );
    Ok(())
}

/// A Debian-like bare ext4 image with a few hundred files in /etc, which
/// `e2fsck -D` turns into an htree directory.
fn ext4_fixture(dir: &Path, name: &str, extra: &[&str]) -> Result<PathBuf> {
    let root = dir.join(format!("{name}-root"));
    tree::debian_root(&root)?;
    tree::fill(&root.join("etc"), "e2e-fill-", 600)?;
    let img = dir.join(format!("{name}.img"));
    image::mkfs_ext4(&img, 64 * MIB, Some(&root), extra)?;
    image::index_directories(&img)?;
    ensure!(
        image::is_htree(&img, "/etc")?,
        "/etc is not an htree in {name}"
    );
    Ok(img)
}

/// Superblock fields (offset, length) worth damaging.
const SUPERBLOCK_FIELDS: &[(&str, u64, usize)] = &[
    ("s_inodes_count", 0x00, 4),
    ("s_blocks_count_lo", 0x04, 4),
    ("s_first_data_block", 0x14, 4),
    ("s_log_block_size", 0x18, 4),
    ("s_log_cluster_size", 0x1C, 4),
    ("s_blocks_per_group", 0x20, 4),
    ("s_inodes_per_group", 0x28, 4),
    ("s_magic", 0x38, 2),
    ("s_rev_level", 0x4C, 4),
    ("s_first_ino", 0x54, 4),
    ("s_inode_size", 0x58, 2),
    ("s_feature_compat", 0x5C, 4),
    ("s_feature_incompat", 0x60, 4),
    ("s_feature_ro_compat", 0x64, 4),
    ("s_journal_inum", 0xE0, 4),
    ("s_desc_size", 0xFE, 2),
    ("s_blocks_count_hi", 0x150, 4),
    ("s_min_extra_isize", 0x15C, 2),
    ("s_log_groups_per_flex", 0x174, 1),
    ("s_checksum", 0x3FC, 4),
];

/// Group descriptor fields (64-byte descriptors).
const GROUP_DESCRIPTOR_FIELDS: &[(&str, u64, usize)] = &[
    ("bg_block_bitmap_lo", 0x00, 4),
    ("bg_inode_bitmap_lo", 0x04, 4),
    ("bg_inode_table_lo", 0x08, 4),
    ("bg_flags", 0x12, 2),
    ("bg_itable_unused_lo", 0x1C, 2),
    ("bg_checksum", 0x1E, 2),
    ("bg_inode_table_hi", 0x28, 4),
];

/// Inode fields, including the extent header and first extent in `i_block`.
const INODE_FIELDS: &[(&str, u64, usize)] = &[
    ("i_mode", 0x00, 2),
    ("i_size_lo", 0x04, 4),
    ("i_links_count", 0x1A, 2),
    ("i_flags", 0x20, 4),
    ("eh_magic", 0x28, 2),
    ("eh_entries", 0x2A, 2),
    ("eh_max", 0x2C, 2),
    ("eh_depth", 0x2E, 2),
    ("ee_block", 0x34, 4),
    ("ee_len", 0x38, 2),
    ("ee_start_hi", 0x3A, 2),
    ("ee_start_lo", 0x3C, 4),
    ("i_size_high", 0x6C, 4),
    ("i_extra_isize", 0x80, 2),
];

/// Fields of a directory's first block: the `.` and `..` entries, and for an
/// htree the dx_root info, count/limit and first index entry.
const DIR_BLOCK_FIELDS: &[(&str, u64, usize)] = &[
    (". inode", 0x00, 4),
    (". rec_len", 0x04, 2),
    (". name_len", 0x06, 1),
    (".. rec_len", 0x10, 2),
    (".. name_len", 0x12, 1),
    ("third entry inode / dx hash_version", 0x18, 4),
    ("third entry rec_len / dx info_length", 0x1C, 2),
    ("dx indirect_levels", 0x1E, 1),
    ("dx limit", 0x20, 2),
    ("dx count", 0x22, 2),
    ("dx first block", 0x24, 4),
    ("dx entry hash", 0x28, 4),
    ("dx entry block", 0x2C, 4),
];

/// Damage every field of `fields` at `base` of `img`: inverted, and (when
/// `thorough`) all ones and all zeros.
fn damage_fields(
    cases: &mut Cases,
    what: &str,
    img: &Path,
    base: u64,
    fields: &[(&str, u64, usize)],
    thorough: bool,
) -> Result<()> {
    for (name, offset, len) in fields {
        let at = base + offset;
        let mut patches = vec![("inverted", corrupt::inverted(img, at, *len)?)];
        if thorough {
            patches.push(("all ones", vec![0xFF; *len]));
            patches.push(("zero", vec![0; *len]));
        }
        for (how, bytes) in patches {
            cases.patched(&format!("{what}: {name} {how}"), img, at, &bytes)?;
        }
    }
    Ok(())
}

/// Damage the superblock, group descriptors, inodes and directory blocks
/// of an ext4 image. With checksums on, most damage is caught by them; with
/// `^metadata_csum` it reaches the parser, so every field gets three values.
fn damage_ext4(variant: &str, extra: &[&str]) -> Result<()> {
    let dir = workdir()?;
    let img = ext4_fixture(dir.path(), variant, extra)?;
    let thorough = extra.contains(&"^metadata_csum");
    let layout = corrupt::ext4_layout(&img)?;
    let bs = layout.block_size;
    let mut cases = Cases::default();

    damage_fields(
        &mut cases,
        "superblock",
        &img,
        layout.superblock,
        SUPERBLOCK_FIELDS,
        thorough,
    )?;
    damage_fields(
        &mut cases,
        "group descriptor 0",
        &img,
        layout.group_descriptors,
        GROUP_DESCRIPTOR_FIELDS,
        thorough,
    )?;
    for path in [
        "<2>",
        "/etc",
        "/var/lib/dpkg",
        "/var/lib/dpkg/status",
        "/etc/os-release",
        "<8>",
    ] {
        let at = corrupt::inode_offset(&img, path, bs)?;
        damage_fields(
            &mut cases,
            &format!("inode {path}"),
            &img,
            at,
            INODE_FIELDS,
            thorough,
        )?;
    }
    for path in ["/", "/etc", "/var/lib/dpkg"] {
        let blocks = corrupt::file_blocks(&img, path)?;
        damage_fields(
            &mut cases,
            &format!("first directory block of {path}"),
            &img,
            blocks[0] * bs,
            DIR_BLOCK_FIELDS,
            thorough,
        )?;
        // An htree's leaf blocks, or a linear directory's later blocks.
        if let Some(last) = blocks.last().filter(|_| blocks.len() > 1) {
            damage_fields(
                &mut cases,
                &format!("last directory block of {path}"),
                &img,
                last * bs,
                &DIR_BLOCK_FIELDS[..5],
                thorough,
            )?;
        }
    }
    // A block of the inode table and a block of the status file, wholesale.
    let inode_block = corrupt::inverted(&img, layout.inode_table, bs as usize)?;
    cases.patched(
        "first inode table block inverted",
        &img,
        layout.inode_table,
        &inode_block,
    )?;
    let status = corrupt::file_blocks(&img, "/var/lib/dpkg/status")?;
    let middle = status[status.len() / 2] * bs;
    let mut noise = Noise::new(0xD9C6);
    cases.patched(
        "a dpkg status block of random bytes",
        &img,
        middle,
        &noise.bytes(bs as usize),
    )?;
    cases.finish()
}

#[test]
fn damaged_ext4_metadata_ends_cleanly() -> Result<()> {
    damage_ext4("csum", &[])
}

#[test]
fn damaged_ext4_metadata_without_checksums_ends_cleanly() -> Result<()> {
    damage_ext4("nocsum", &["-O", "^metadata_csum"])
}

#[test]
fn damaged_journal_of_a_dirty_filesystem_ends_cleanly() -> Result<()> {
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: a dirty journal needs a read-write kernel mount to make");
        return Ok(());
    }
    let dir = workdir()?;
    let live = ext4_fixture(dir.path(), "journal", &["-O", "^metadata_csum"])?;
    let img = dir.path().join("dirty.img");
    dirty_snapshot(&live, &dir.path().join("mnt"), &img, |mnt| {
        let status = mnt.join("var/lib/dpkg/status");
        let mut text = std::fs::read_to_string(&status)?;
        text.push_str("\nPackage: journal-test\nStatus: install ok installed\nVersion: 1\n");
        replace_durably(&status, &text)?;
        replace_durably(&mnt.join("etc/hostname"), "dirty\n")
    })?;
    let layout = corrupt::ext4_layout(&img)?;
    let bs = layout.block_size;
    let journal = corrupt::file_blocks(&img, "<8>")?;
    let mut cases = Cases::default();

    // The journal superblock (big-endian): blocksize, maxlen, first, sequence, start.
    let jsb = journal[0] * bs;
    let jsb_fields: &[(&str, u64, usize)] = &[
        ("s_blocksize", 0x0C, 4),
        ("s_maxlen", 0x10, 4),
        ("s_first", 0x14, 4),
        ("s_sequence", 0x18, 4),
        ("s_start", 0x1C, 4),
        ("s_feature_incompat", 0x28, 4),
    ];
    damage_fields(
        &mut cases,
        "journal superblock",
        &img,
        jsb,
        jsb_fields,
        true,
    )?;

    // Every block the log uses (descriptor, data, commit), from debugfs logdump.
    let logdump = run(tool("debugfs")?.args(["-R", "logdump"]).arg(&img))?;
    // "Found expected sequence 2, type 1 (descriptor block) at block 1", …,
    // "No magic number at block 19: end of journal."
    let marked: Vec<u64> = logdump
        .lines()
        .filter_map(|line| line.rsplit_once(" at block ").map(|(_, b)| b.trim()))
        .filter_map(|b| {
            b.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .collect();
    let (Some(first), Some(last)) = (marked.iter().min(), marked.iter().max()) else {
        bail!("debugfs logdump shows no transactions:\n{logdump}");
    };
    ensure!(
        last > first,
        "debugfs logdump shows no transactions:\n{logdump}"
    );
    let log_blocks = *first..=*last;
    let header_fields: &[(&str, u64, usize)] = &[
        ("h_magic", 0x00, 4),
        ("h_blocktype", 0x04, 4),
        ("h_sequence", 0x08, 4),
        ("first tag / commit field", 0x0C, 4),
        ("tag flags", 0x10, 4),
        ("second tag", 0x14, 4),
    ];
    for block in log_blocks {
        let physical = journal
            .get(usize::try_from(block)?)
            .with_context(|| format!("journal block {block} beyond the journal"))?;
        damage_fields(
            &mut cases,
            &format!("journal block {block}"),
            &img,
            physical * bs,
            header_fields,
            false,
        )?;
    }
    cases.finish()
}

#[test]
fn directories_that_contain_themselves_still_scan() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let img = image::bare_ext4(dir.path(), "loops.img", &root, 64 * MIB)?;
    // Hard links to directories, which only debugfs can make: /etc/self is
    // /etc, /var/lib/dpkg/root is /, /var/lib/dpkg/info/up is /var/lib/dpkg.
    for (target, link) in [
        ("/etc", "/etc/self"),
        ("/", "/var/lib/dpkg/root"),
        ("/var/lib/dpkg", "/var/lib/dpkg/info/up"),
    ] {
        run(tool("debugfs")?
            .arg("-w")
            .arg("-R")
            .arg(format!("link {target} {link}"))
            .arg(&img))?;
    }
    let listing = run(tool("debugfs")?
        .args(["-R", "ls -l /etc/self/self/self"])
        .arg(&img))?;
    ensure!(
        listing.contains("hostname"),
        "debugfs does not see /etc/self as /etc:\n{listing}"
    );

    let outcome = scan_bounded(&img)?;
    outcome.check_clean_exit()?;
    let report = outcome.report()?;
    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    check::debian_volume(
        &report.volumes[0],
        &root.join("var/lib/dpkg"),
        &tree::host_os_release()?,
    )
}
