//! A GPT disk as a cloud image has it: an EFI System partition with FAT and
//! an ext4 root holding a Debian-like tree.

use anyhow::{Context, Result, ensure};
use e2e::image::{self, GPT_DISK_SIZE};
use e2e::mount::{LoopMount, mounts_allowed};
use e2e::{check, run, tree, truth, workdir};

#[test]
fn gpt_partitions_filesystems_os_and_deb_packages_match_the_tools() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let gpt = image::gpt_disk(dir.path(), &root)?;

    let report = run::scan(&gpt.disk)?;

    ensure!(
        report.target_size == GPT_DISK_SIZE,
        "target_size {}",
        report.target_size
    );
    ensure!(
        report.errors.is_empty(),
        "errors on a valid GPT: {:?}",
        report.errors
    );
    ensure!(
        report.volumes.len() == 2,
        "expected 2 volumes (ESP, root), got {}: {:#?}",
        report.volumes.len(),
        report.volumes
    );
    for (volume, expected) in report.volumes.iter().zip(&gpt.table.partitions) {
        let partition = volume
            .partition
            .as_ref()
            .with_context(|| format!("volume without a partition: {volume:#?}"))?;
        ensure!(
            partition.scheme == "gpt"
                && partition.number == expected.number
                && partition.start == expected.start
                && partition.size == expected.size
                && partition.type_id == expected.type_id
                && partition.name == expected.name,
            "partition {partition:?} differs from sfdisk's {expected:?}"
        );
    }

    let esp = &report.volumes[0];
    let esp_fs = esp
        .filesystem
        .as_ref()
        .context("no filesystem on the ESP")?;
    let blkid = truth::blkid(&gpt.disk, gpt.esp.start)?;
    ensure!(
        esp_fs.fs_type == "vfat",
        "ESP filesystem {:?}",
        esp_fs.fs_type
    );
    ensure!(
        esp_fs.uuid.as_deref() == blkid.get("UUID").map(String::as_str)
            && esp_fs.label.as_deref() == blkid.get("LABEL").map(String::as_str),
        "ESP uuid/label {:?}/{:?}, blkid says {blkid:?}",
        esp_fs.uuid,
        esp_fs.label
    );
    ensure!(
        esp.packages.is_empty() && esp.os.is_none(),
        "the ESP has no OS or packages: {esp:#?}"
    );

    let root_volume = &report.volumes[1];
    let root_fs = root_volume
        .filesystem
        .as_ref()
        .context("no root filesystem")?;
    let blkid = truth::blkid(&gpt.disk, gpt.root.start)?;
    ensure!(
        root_fs.uuid.as_deref() == blkid.get("UUID").map(String::as_str)
            && root_fs.label.as_deref() == blkid.get("LABEL").map(String::as_str),
        "root uuid/label {:?}/{:?}, blkid says {blkid:?}",
        root_fs.uuid,
        root_fs.label
    );
    check::debian_volume(
        root_volume,
        &root.join("var/lib/dpkg"),
        &tree::host_os_release()?,
    )
}

#[test]
fn gpt_scan_is_deterministic() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let gpt = image::gpt_disk(dir.path(), &root)?;
    let first = check::without_timing(&run::scan(&gpt.disk)?);
    let second = check::without_timing(&run::scan(&gpt.disk)?);
    ensure!(
        first == second,
        "two scans of one image differ (parallel output must equal sequential):\n{first:#?}\n{second:#?}"
    );
    Ok(())
}

#[test]
fn gpt_root_matches_the_kernel_mount() -> Result<()> {
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: not cross-checking with a kernel mount");
        return Ok(());
    }
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let gpt = image::gpt_disk(dir.path(), &root)?;
    let report = run::scan(&gpt.disk)?;
    let volume = report
        .volumes
        .iter()
        .find(|v| v.partition.as_ref().is_some_and(|p| p.number == 2))
        .with_context(|| format!("no volume for partition 2: {report:#?}"))?;

    let mounted = LoopMount::partition_ro(
        &gpt.disk,
        &dir.path().join("mnt"),
        gpt.root.start,
        gpt.root.size,
    )?;
    // The kernel resolves /etc/os-release (a symlink on Debian) inside the
    // mounted filesystem; the scanner must resolve it the same way.
    let os_release = std::fs::read_to_string(mounted.path().join("etc/os-release"))
        .context("reading os-release through the kernel mount")?;
    let result = check::debian_volume(volume, &mounted.path().join("var/lib/dpkg"), &os_release);
    mounted.unmount()?;
    result
}
