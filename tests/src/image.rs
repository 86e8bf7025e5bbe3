//! Disk images built at test time with the real tools, into a temporary
//! directory (never committed): sparse files formatted with `mkfs.ext4 -d`,
//! `mkfs.vfat` and `mkswap`, partitioned with `sgdisk` (GPT) or `sfdisk`
//! (MBR), each filesystem written in at its partition's byte offset with
//! `dd conv=notrunc`. Offsets come from `sfdisk --json` of the same disk.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::tools::{run, run_allowing, run_with_input, tool};
use crate::truth::{self, Table, TablePartition};

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// UUID given to the ext4 root filesystems, so the report can be checked
/// against `blkid`.
pub const ROOT_UUID: &str = "e2e00000-0000-4000-8000-000000000001";

/// Label of the ext4 root filesystems.
pub const ROOT_LABEL: &str = "e2e-root";

/// Volume id of the FAT filesystems (`blkid` shows it as `0E2E-0001`).
pub const VFAT_ID: &str = "0E2E0001";

/// Label of the FAT filesystems.
pub const VFAT_LABEL: &str = "E2E-ESP";

/// GPT type GUID of an EFI System partition (sgdisk `ef00`).
pub const GPT_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// GPT type GUID of a Linux filesystem partition (sgdisk `8300`).
pub const GPT_LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// Create (or truncate) `path` as a sparse file of `size` bytes.
///
/// # Errors
/// On I/O failure.
pub fn sparse(path: &Path, size: u64) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(size)
        .with_context(|| format!("sizing {} to {size}", path.display()))
}

/// `mkfs.ext4 -q -F [-d TREE] EXTRA… IMAGE` on a new sparse file of `size`
/// bytes, labelled [`ROOT_LABEL`] with uuid [`ROOT_UUID`] unless `extra`
/// says otherwise (later options win).
///
/// # Errors
/// When mkfs fails.
pub fn mkfs_ext4(image: &Path, size: u64, tree: Option<&Path>, extra: &[&str]) -> Result<()> {
    sparse(image, size)?;
    let mut cmd = tool("mkfs.ext4")?;
    cmd.args(["-q", "-F", "-L", ROOT_LABEL, "-U", ROOT_UUID]);
    if let Some(tree) = tree {
        cmd.arg("-d").arg(tree);
    }
    cmd.args(extra).arg(image);
    run(&mut cmd)?;
    Ok(())
}

/// `e2fsck -fyD IMAGE`: rebuild every directory, which turns the large ones
/// into hash-indexed (htree) directories (`mkfs.ext4 -d` writes linear ones).
///
/// # Errors
/// When e2fsck finds errors it cannot fix (exit status above 1).
pub fn index_directories(image: &Path) -> Result<()> {
    run_allowing(tool("e2fsck")?.arg("-fyD").arg(image), &[0, 1])?;
    Ok(())
}

/// Whether `debugfs` sees `dir` in `image` as a hash-indexed directory.
///
/// # Errors
/// When debugfs cannot open the image.
pub fn is_htree(image: &Path, dir: &str) -> Result<bool> {
    let out = run_allowing(
        tool("debugfs")?
            .arg("-R")
            .arg(format!("htree {dir}"))
            .arg(image),
        &[0],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("Root node dump"))
}

/// `mkfs.vfat` on a new sparse file of `size` bytes, with [`VFAT_ID`] and
/// [`VFAT_LABEL`].
///
/// # Errors
/// When mkfs fails.
pub fn mkfs_vfat(image: &Path, size: u64) -> Result<()> {
    sparse(image, size)?;
    run(tool("mkfs.vfat")?
        .args(["-i", VFAT_ID, "-n", VFAT_LABEL])
        .arg(image))?;
    Ok(())
}

/// `mksquashfs TREE IMAGE` (no root, no mount), padded to a whole MiB so
/// it uploads as whole snapshot blocks.
///
/// # Errors
/// When mksquashfs fails or the image cannot be padded.
pub fn mksquashfs(image: &Path, tree: &Path) -> Result<()> {
    run(tool("mksquashfs")?.arg(tree).arg(image).args([
        "-noappend",
        "-quiet",
        "-all-root",
        "-no-progress",
    ]))?;
    let len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let padded = len.div_ceil(MIB).max(1) * MIB;
    OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|file| file.set_len(padded))
        .with_context(|| format!("padding {} to {padded}", image.display()))
}

/// `mkswap` on a new sparse file of `size` bytes.
///
/// # Errors
/// When mkswap fails.
pub fn mkswap(image: &Path, size: u64) -> Result<()> {
    sparse(image, size)?;
    run(tool("mkswap")?.arg(image))?;
    Ok(())
}

/// Write `source` into `disk` at byte `offset` with `dd conv=notrunc`
/// (holes stay holes).
///
/// # Errors
/// When dd fails.
pub fn write_into(source: &Path, disk: &Path, offset: u64) -> Result<()> {
    run(tool("dd")?
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", disk.display()))
        .args([
            "bs=1M",
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ])
        .arg(format!("seek={offset}")))?;
    Ok(())
}

/// Build `name` in `dir` as a bare ext4 image (no partition table) of
/// `size` bytes from `tree`.
///
/// # Errors
/// When mkfs fails.
pub fn bare_ext4(dir: &Path, name: &str, tree: &Path, size: u64) -> Result<PathBuf> {
    let image = dir.join(name);
    mkfs_ext4(&image, size, Some(tree), &[])?;
    Ok(image)
}

/// A GPT disk: an EFI System partition with FAT, and an ext4 root.
#[derive(Debug, Clone)]
pub struct GptDisk {
    /// The disk image.
    pub disk: PathBuf,
    /// What `sfdisk --json` says about it.
    pub table: Table,
    /// Partition 1: EFI System, FAT.
    pub esp: TablePartition,
    /// Partition 2: Linux filesystem, ext4 made from the root tree.
    pub root: TablePartition,
}

/// Size of the GPT test disk.
pub const GPT_DISK_SIZE: u64 = 128 * MIB;

/// Build a 128 MiB GPT disk in `dir`: partition 1 an EFI System partition
/// (`ef00`, 32 MiB, FAT), partition 2 a Linux filesystem (`8300`, the rest)
/// holding ext4 made from `root_tree`.
///
/// # Errors
/// When a tool fails.
pub fn gpt_disk(dir: &Path, root_tree: &Path) -> Result<GptDisk> {
    let disk = dir.join("gpt.img");
    sparse(&disk, GPT_DISK_SIZE)?;
    run(tool("sgdisk")?
        .args(["-n", "1:2048:+32M", "-t", "1:ef00", "-c", "1:EFI System"])
        .args(["-n", "2:0:0", "-t", "2:8300", "-c", "2:e2e root"])
        .arg(&disk))?;
    let table = truth::sfdisk(&disk)?;
    if table.label != "gpt" || table.partitions.len() != 2 {
        bail!("sgdisk made an unexpected table: {table:?}");
    }
    let esp = table.partition(1)?.clone();
    let root = table.partition(2)?.clone();

    let esp_image = dir.join("esp.part");
    mkfs_vfat(&esp_image, esp.size)?;
    write_into(&esp_image, &disk, esp.start)?;
    let root_image = dir.join("root.part");
    mkfs_ext4(&root_image, root.size, Some(root_tree), &[])?;
    write_into(&root_image, &disk, root.start)?;
    std::fs::remove_file(&esp_image)?;
    std::fs::remove_file(&root_image)?;
    Ok(GptDisk {
        disk,
        table,
        esp,
        root,
    })
}

/// An MBR disk with primaries and logical partitions.
#[derive(Debug, Clone)]
pub struct MbrDisk {
    /// The disk image.
    pub disk: PathBuf,
    /// What `sfdisk --json` says about it.
    pub table: Table,
    /// Partition 1: primary, type 0x0c, FAT.
    pub fat: TablePartition,
    /// Partition 2: primary, type 0x82, swap.
    pub swap: TablePartition,
    /// Partition 3: the extended container (type 0x05).
    pub extended: TablePartition,
    /// Partition 5: logical, type 0x83, ext4 with no OS.
    pub data: TablePartition,
    /// Partition 6: logical, type 0x83, ext4 made from the root tree.
    pub root: TablePartition,
}

/// The sfdisk script of [`mbr_disk`].
const MBR_SCRIPT: &str = "label: dos
label-id: 0x0e2e0001

size=8MiB, type=c
size=16MiB, type=82
type=5
size=16MiB, type=83
type=83
";

/// Build a 128 MiB MBR disk in `dir`: two primaries (FAT, swap), an
/// extended partition holding two logical ones: 5 an ext4 data volume with
/// no OS, 6 ext4 made from `root_tree`.
///
/// # Errors
/// When a tool fails.
pub fn mbr_disk(dir: &Path, root_tree: &Path) -> Result<MbrDisk> {
    let disk = dir.join("mbr.img");
    sparse(&disk, 128 * MIB)?;
    run_with_input(
        tool("sfdisk")?.arg("--quiet").arg(&disk),
        MBR_SCRIPT.as_bytes(),
    )?;
    let table = truth::sfdisk(&disk)?;
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    if table.label != "dos" || numbers != [1, 2, 3, 5, 6] {
        bail!("sfdisk made an unexpected table: {table:?}");
    }
    let part = |n| table.partition(n).cloned();
    let (fat, swap, extended, data, root) = (part(1)?, part(2)?, part(3)?, part(5)?, part(6)?);

    let scratch = dir.join("part.tmp");
    mkfs_vfat(&scratch, fat.size)?;
    write_into(&scratch, &disk, fat.start)?;
    mkswap(&scratch, swap.size)?;
    write_into(&scratch, &disk, swap.start)?;
    let empty = dir.join("empty-tree");
    std::fs::create_dir_all(empty.join("srv/data"))?;
    std::fs::write(empty.join("srv/data/README"), "a data volume, no OS\n")?;
    mkfs_ext4(
        &scratch,
        data.size,
        Some(&empty),
        &[
            "-L",
            "e2e-data",
            "-U",
            "e2e00000-0000-4000-8000-000000000005",
        ],
    )?;
    write_into(&scratch, &disk, data.start)?;
    mkfs_ext4(&scratch, root.size, Some(root_tree), &[])?;
    write_into(&scratch, &disk, root.start)?;
    std::fs::remove_file(&scratch)?;
    Ok(MbrDisk {
        disk,
        table,
        fat,
        swap,
        extended,
        data,
        root,
    })
}
