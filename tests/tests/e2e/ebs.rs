//! Snapshots read through the EBS direct APIs of the local AWS emulator:
//! images built by the real tools, uploaded with `worker upload-image`,
//! scanned as `ebs://snap-…`, and compared with the local scan of the same
//! image; faults injected into the emulator for throttling, persistent 5xx
//! and corrupted blocks.
//!
//! The emulator's faults are global, so these tests take [`EMULATOR_LOCK`].

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, ensure};
use e2e::emulator::{Emulator, emulator};
use e2e::image::{self, MIB};
use e2e::mount::{LoopMount, mounts_allowed};
use e2e::run::{Outcome, Run};
use e2e::tools::{run, tool};
use e2e::{tree, workdir};
use serde_json::json;
use worker::report::{Report, SkipReason};

static EMULATOR_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn exclusive() -> Result<(MutexGuard<'static, ()>, &'static Emulator)> {
    let guard = EMULATOR_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let emulator = emulator()?;
    emulator.clear_faults()?;
    Ok((guard, emulator))
}

/// `worker upload-image IMAGE`: the new snapshot's id.
pub(crate) fn upload(emulator: &Emulator, image: &Path) -> Result<String> {
    let outcome = Run::new([std::ffi::OsStr::new("upload-image"), image.as_os_str()])
        .envs(emulator.env())
        .run()?;
    ensure!(
        outcome.code == Some(0),
        "upload failed: {}",
        outcome.summary()
    );
    let uploaded = outcome.json()?;
    uploaded["snapshot_id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no snapshot_id in {uploaded}"))
}

/// `worker scan ebs://SNAPSHOT --format json EXTRA…`.
fn scan_snapshot(emulator: &Emulator, snapshot: &str, extra: &[&str]) -> Result<Outcome> {
    let target = format!("ebs://{snapshot}");
    let mut args = vec!["scan", target.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    Run::new(args).envs(emulator.env()).run()
}

fn local_scan(image: &Path) -> Result<Report> {
    e2e::run::scan(image)
}

/// The snapshot's report has exactly the local report's volumes and
/// warnings (target, size and cost differ by nature).
fn same_findings(snapshot: &Report, local: &Report) -> Result<()> {
    ensure!(
        snapshot.volumes == local.volumes,
        "volumes differ:\nsnapshot: {:#?}\nlocal: {:#?}",
        snapshot.volumes,
        local.volumes
    );
    ensure!(
        snapshot.errors == local.errors,
        "warnings differ: {:?} vs {:?}",
        snapshot.errors,
        local.errors
    );
    Ok(())
}

/// Blocks of 512 KiB in `image` holding anything but zeros.
fn nonzero_blocks(image: &Path) -> Result<u64> {
    let bytes = std::fs::read(image)?;
    Ok(bytes
        .chunks(512 * 1024)
        .filter(|block| block.iter().any(|&b| b != 0))
        .count() as u64)
}

/// A bare XFS image in `dir` holding a Debian-like root, filled through the
/// kernel (XFS reads its files' extents ahead through the prefetch hint).
fn debian_on_xfs(dir: &Path) -> Result<std::path::PathBuf> {
    let root = dir.join("xfs-root");
    tree::debian_root(&root)?;
    let img = dir.join("debian-xfs.img");
    image::sparse(&img, 320 * MIB)?;
    run(tool("mkfs.xfs")?.args(["-q", "-f"]).arg(&img))?;
    let mount = LoopMount::new(&img, &dir.join("xfs-mnt"), "rw")?;
    run(tool("cp")?.arg("-a").arg(root.join(".")).arg(mount.path()))?;
    mount.unmount()?;
    Ok(img)
}

/// A GPT Debian disk (EFI + ext4 root) in `dir`.
fn debian_disk(dir: &Path) -> Result<std::path::PathBuf> {
    let root = dir.join("root");
    tree::debian_root(&root)?;
    Ok(image::gpt_disk(dir, &root)?.disk)
}

#[test]
fn snapshot_scan_equals_the_local_scan() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let dir = workdir()?;
    let disk = debian_disk(dir.path())?;
    let alpine_root = dir.path().join("alpine");
    tree::alpine_root(&alpine_root)?;
    let alpine = image::bare_ext4(dir.path(), "alpine.img", &alpine_root, 64 * MIB)?;
    let mut images = vec![disk, alpine];
    if mounts_allowed() {
        images.push(debian_on_xfs(dir.path())?);
    }
    for image in &images {
        let snapshot = upload(emulator, image)?;
        let outcome = scan_snapshot(emulator, &snapshot, &[])?;
        let remote = outcome.report()?;
        same_findings(&remote, &local_scan(image)?)?;
        let stats = remote.stats.remote.context("no EBS stats in the report")?;
        ensure!(
            stats.blocks_allocated == nonzero_blocks(image)?,
            "blocks_allocated {} but the image has {} non-zero blocks",
            stats.blocks_allocated,
            nonzero_blocks(image)?
        );
        ensure!(
            stats.blocks_fetched <= stats.blocks_allocated && stats.blocks_fetched > 0,
            "fetched {} of {} blocks",
            stats.blocks_fetched,
            stats.blocks_allocated
        );
    }
    Ok(())
}

#[test]
fn block_map_pagination_lists_every_block() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    // 80 MiB of incompressible data: 160+ allocated blocks, so pages of 100.
    let mut noise = e2e::corrupt::Noise::new(0x5EED);
    tree::write(&root.join("srv/noise.bin"), noise.bytes(80 * MIB as usize))?;
    let img = image::bare_ext4(dir.path(), "big.img", &root, 160 * MIB)?;
    let snapshot = upload(emulator, &img)?;
    let outcome = scan_snapshot(emulator, &snapshot, &["--list-page-size", "100"])?;
    let remote = outcome.report()?;
    same_findings(&remote, &local_scan(&img)?)?;
    let stats = remote.stats.remote.context("no EBS stats")?;
    let blocks = nonzero_blocks(&img)?;
    ensure!(
        blocks > 150,
        "the image should have over 150 blocks, has {blocks}"
    );
    ensure!(
        stats.blocks_allocated == blocks,
        "listed {} blocks of {blocks}",
        stats.blocks_allocated
    );
    // Pages of 100: at least two list calls, plus the fetches.
    ensure!(
        stats.api_calls >= stats.blocks_fetched + 2,
        "api_calls {} for {} fetches: no pagination?",
        stats.api_calls,
        stats.blocks_fetched
    );
    Ok(())
}

#[test]
fn a_throttling_burst_mid_scan_is_survived() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let dir = workdir()?;
    let disk = debian_disk(dir.path())?;
    let snapshot = upload(emulator, &disk)?;
    // Block 0 (the partition table) reads fine; the next 6 fetches are throttled.
    emulator.inject(&json!({
        "service": "ebs", "action": "GetSnapshotBlock", "count": 6,
        "status": 400, "code": "ThrottlingException",
        "path_regex": "/blocks/[1-9][0-9]*$",
    }))?;
    let remote = scan_snapshot(emulator, &snapshot, &[])?.report()?;
    emulator.clear_faults()?;
    same_findings(&remote, &local_scan(&disk)?)?;
    let stats = remote.stats.remote.context("no EBS stats")?;
    ensure!(
        stats.retries >= 6,
        "only {} retries for 6 throttles",
        stats.retries
    );
    Ok(())
}

#[test]
fn a_persistent_5xx_is_a_clean_per_volume_error() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let dir = workdir()?;
    let disk = debian_disk(dir.path())?;
    let snapshot = upload(emulator, &disk)?;
    emulator.inject(&json!({
        "service": "ebs", "action": "GetSnapshotBlock", "count": 100000,
        "status": 500, "code": "InternalServerException",
        "path_regex": "/blocks/[1-9][0-9]*$",
    }))?;
    let outcome = scan_snapshot(emulator, &snapshot, &["--max-attempts", "3"]);
    emulator.clear_faults()?;
    let report = outcome?.report()?;
    ensure!(
        report.volumes.len() == 2,
        "both partitions listed: {:#?}",
        report.volumes
    );
    for volume in &report.volumes {
        let skipped = volume
            .skipped
            .as_ref()
            .with_context(|| format!("volume not skipped: {volume:#?}"))?;
        ensure!(
            skipped.reason == SkipReason::ReadError,
            "reason {:?}",
            skipped.reason
        );
        ensure!(
            skipped.detail.contains(&snapshot)
                && skipped.detail.contains("block")
                && skipped.detail.contains("InternalServerException"),
            "the error does not name the snapshot, block and cause: {}",
            skipped.detail
        );
    }
    Ok(())
}

#[test]
fn a_corrupted_block_is_detected() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let dir = workdir()?;
    let disk = debian_disk(dir.path())?;
    let snapshot = upload(emulator, &disk)?;
    // Once: the checksum catches it and the retry reads the real block.
    emulator.inject(&json!({
        "service": "ebs", "action": "GetSnapshotBlock", "count": 1, "corrupt": true,
        "path_regex": "/blocks/[1-9][0-9]*$",
    }))?;
    let remote = scan_snapshot(emulator, &snapshot, &[])?.report()?;
    same_findings(&remote, &local_scan(&disk)?)?;
    ensure!(
        remote.stats.remote.is_some_and(|s| s.retries >= 1),
        "the corrupted block was not retried: {:?}",
        remote.stats
    );
    // Always: an error that says so, never wrong data.
    emulator.inject(&json!({
        "service": "ebs", "action": "GetSnapshotBlock", "count": 100000, "corrupt": true,
        "path_regex": "/blocks/[1-9][0-9]*$",
    }))?;
    let outcome = scan_snapshot(emulator, &snapshot, &["--max-attempts", "2"]);
    emulator.clear_faults()?;
    let report = outcome?.report()?;
    let details: Vec<String> = report
        .volumes
        .iter()
        .filter_map(|v| v.skipped.as_ref().map(|s| s.detail.clone()))
        .collect();
    ensure!(
        details.len() == report.volumes.len()
            && details
                .iter()
                .all(|d| d.contains("checksum mismatch") && d.contains(&snapshot)),
        "expected checksum errors naming the snapshot: {details:#?}"
    );
    Ok(())
}

#[test]
fn a_missing_snapshot_is_a_clear_error() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let missing = "snap-0123456789abcdef0";
    let outcome = scan_snapshot(emulator, missing, &[])?;
    ensure!(
        outcome.code == Some(1) && !outcome.panicked(),
        "expected exit 1: {}",
        outcome.summary()
    );
    ensure!(
        outcome.stderr.contains(missing) && outcome.stderr.contains("ResourceNotFoundException"),
        "the error does not name the snapshot and the cause: {}",
        outcome.stderr
    );
    Ok(())
}
