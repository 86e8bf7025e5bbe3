//! The attach read mode: a volume created from the snapshot in this
//! worker's Availability Zone, attached to this instance and read in user
//! space as a block device, then detached and deleted.
//!
//! - Everything is tagged at creation (`TagSpecifications`): the ownership
//!   tag, so the control Lambda's sweep removes what a crash leaves, and
//!   `Mondoo:Snapshot` / `Mondoo:Worker` for people reading the console.
//! - The device is found by the volume's NVMe serial (the volume id without
//!   its dash, `vol0123…`), under `/dev/disk/by-id` (`--device-dir`) or in
//!   sysfs, never by the requested device name: on Nitro instances the
//!   kernel names NVMe devices in discovery order, not after the request.
//! - Reading goes through the file/block-device source, so untrusted bytes
//!   never reach the kernel's filesystem code — except for a volume whose
//!   filesystem we do not parse (vfat, btrfs, NTFS, …: skipped as
//!   `unsupported_filesystem`): that one is mounted by the kernel
//!   (`sys-mount`) with `ro,nodev,noexec,nosuid` and no log replay
//!   (`norecovery`/`noload`/`nologreplay` where the filesystem has one),
//!   the detectors read the mounted tree ([`crate::fs::host::HostFs`]), and
//!   it is unmounted before the volume is detached.
//! - Clean-up always runs, also after a failed scan: detach, wait until the
//!   volume is `available`, re-read its tags and delete it only when the
//!   ownership tag is on it. Volumes of jobs interrupted by a signal are
//!   cleaned when the daemon stops ([`cleanup_all`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VolumeState, VolumeType};
use scanner_contract::JobSnapshot;

use super::Ctx;
use crate::block::{BlockSource, FileSource};
use crate::report::Report;
use crate::scan;

/// Longest wait for a volume to change state (creating → available,
/// attaching → in-use, detaching → available).
const STATE_WAIT: Duration = Duration::from_secs(300);
/// Longest wait for the attached volume's device to appear.
const DEVICE_WAIT: Duration = Duration::from_secs(120);
/// Interval between checks while waiting.
const POLL: Duration = Duration::from_millis(500);
/// Device names requested for attachments (the kernel's name differs on
/// Nitro; the request only has to be free on this instance).
const DEVICE_LETTERS: &str = "fghijklmnopqrstuvwxyz";
/// The sysfs directory of block devices, for the serial fallback.
const SYS_BLOCK: &str = "/sys/block";

/// Volumes this worker created and has not deleted yet, so a signal can
/// clean them up.
#[derive(Debug, Default)]
pub struct Attached {
    volumes: Mutex<BTreeSet<String>>,
    devices: Mutex<BTreeSet<String>>,
}

impl Attached {
    fn add(&self, volume: &str) {
        self.volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(volume.to_string());
    }

    fn remove(&self, volume: &str) {
        self.volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(volume);
    }

    /// A free device name to request, taken until [`Self::free_device`].
    fn take_device(&self) -> Option<String> {
        let mut taken = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let name = DEVICE_LETTERS
            .chars()
            .map(|c| format!("/dev/sd{c}"))
            .find(|name| !taken.contains(name))?;
        taken.insert(name.clone());
        Some(name)
    }

    fn free_device(&self, name: &str) {
        self.devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// Scan `snapshot` through an attached volume, and clean it up.
///
/// # Errors
/// A reason naming the snapshot (and the volume, once there is one).
pub async fn scan_attached(
    ctx: &Ctx,
    ec2: &aws_sdk_ec2::Client,
    snapshot: &JobSnapshot,
) -> Result<Report, String> {
    let volume = create(ctx, ec2, &snapshot.snapshot_id).await?;
    let result = attach_and_scan(ctx, ec2, snapshot, &volume).await;
    let cleaned = cleanup(ctx, ec2, &volume).await;
    match (result, cleaned) {
        (Ok(report), Ok(())) => Ok(report),
        (Err(reason), _) => Err(reason),
        (Ok(_), Err(reason)) => Err(reason),
    }
}

async fn attach_and_scan(
    ctx: &Ctx,
    ec2: &aws_sdk_ec2::Client,
    snapshot: &JobSnapshot,
    volume: &str,
) -> Result<Report, String> {
    let id = &snapshot.snapshot_id;
    wait_state(ec2, volume, VolumeState::Available).await?;
    let device = ctx
        .attached
        .take_device()
        .ok_or_else(|| format!("{volume}: no free device name to attach it as"))?;
    let attached = ec2
        .attach_volume()
        .volume_id(volume)
        .instance_id(&ctx.config.instance_id)
        .device(&device)
        .send()
        .await;
    ctx.attached.free_device(&device);
    attached.map_err(|err| {
        format!(
            "attaching {volume} (from {id}) to {}: {}",
            ctx.config.instance_id,
            DisplayErrorContext(&err)
        )
    })?;
    wait_state(ec2, volume, VolumeState::InUse).await?;
    let path = find_device(&ctx.config.device_dir, volume).await?;
    tracing::info!(volume = %volume, device = %path.display(), "volume attached");
    let options = ctx.scan_options.clone();
    let name = id.clone();
    let span = tracing::Span::current();
    let mount_dir = std::env::temp_dir().join(format!("mondoo-scanner-{volume}"));
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let source: Arc<dyn BlockSource> =
            Arc::new(FileSource::open(&path).map_err(|err| err.to_string())?);
        let mut report =
            scan(source, &name, &options).map_err(|err| format!("scanning {name}: {err}"))?;
        mount_fallback(&mut report, &path, &mount_dir, &options);
        Ok(report)
    })
    .await
    .map_err(|err| format!("scanning {id}: the scan task failed: {err}"))?
}

/// For every volume the scan skipped as `unsupported_filesystem`: mount it
/// read-only under `mount_dir`, run the detectors on the mounted tree,
/// unmount. A failure is an error in that volume's report, not the job's.
fn mount_fallback(
    report: &mut Report,
    device: &Path,
    mount_dir: &Path,
    options: &crate::ScanOptions,
) {
    for (index, volume) in report.volumes.iter_mut().enumerate() {
        let unsupported = volume
            .skipped
            .as_ref()
            .is_some_and(|s| s.reason == crate::report::SkipReason::UnsupportedFilesystem);
        let Some(fs_type) = volume.filesystem.as_ref().map(|f| f.fs_type.clone()) else {
            continue;
        };
        if !unsupported {
            continue;
        }
        let source = match &volume.partition {
            None => device.to_path_buf(),
            Some(partition) => partition_device(device, partition.number),
        };
        let target = mount_dir.join(index.to_string());
        let where_ = match &volume.partition {
            None => "disk".to_string(),
            Some(p) => format!("partition {}", p.number),
        };
        match mounted(&source, &target, &fs_type, |root| {
            crate::detect_mounted(&crate::fs::host::HostFs::new(root), &where_, options)
        }) {
            Ok((os, packages, errors)) => {
                volume.os = os;
                volume.packages = packages;
                volume.errors.extend(errors);
                volume.skipped = None;
                volume.notes.push(format!(
                    "{where_}: {fs_type} is not parsed in user space; read through a read-only kernel mount"
                ));
            }
            Err(reason) => volume
                .errors
                .push(format!("{where_}: mount fallback: {reason}")),
        }
    }
    let _ = std::fs::remove_dir(mount_dir);
}

/// The device of partition `number` of `disk`: `LINK-partN` for a by-id
/// link, `/dev/nvme1n1pN` for an NVMe device name.
fn partition_device(disk: &Path, number: u32) -> PathBuf {
    let text = disk.display().to_string();
    if text.starts_with("/dev/nvme") || text.starts_with("/dev/loop") {
        PathBuf::from(format!("{text}p{number}"))
    } else {
        PathBuf::from(format!("{text}-part{number}"))
    }
}

/// Mount `source` read-only at `target`, run `read` on it, unmount (lazily
/// if busy) and remove `target`.
fn mounted<T>(
    source: &Path,
    target: &Path,
    fs_type: &str,
    read: impl FnOnce(&Path) -> T,
) -> Result<T, String> {
    use sys_mount::{Mount, MountFlags, UnmountFlags};
    // No log replay: a read-only mount must not write to the volume.
    let data = match fs_type {
        "xfs" | "ext4" => "norecovery",
        "ext3" | "ext2" => "noload",
        "btrfs" => "rescue=nologreplay",
        _ => "",
    };
    std::fs::create_dir_all(target)
        .map_err(|err| format!("creating {}: {err}", target.display()))?;
    let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOSUID;
    let mut builder = Mount::builder().fstype(fs_type).flags(flags);
    if !data.is_empty() {
        builder = builder.data(data);
    }
    let mount = builder
        .mount(source, target)
        .map_err(|err| format!("mounting {} ({fs_type}) read-only: {err}", source.display()));
    let result = mount.map(|_| read(target));
    if result.is_ok() {
        if let Err(err) = sys_mount::unmount(target, UnmountFlags::empty()) {
            tracing::warn!(target = %target.display(), error = %err, "unmount failed; detaching lazily");
            let _ = sys_mount::unmount(target, UnmountFlags::DETACH);
        }
    }
    let _ = std::fs::remove_dir(target);
    result
}

/// `CreateVolume` from the snapshot in this worker's zone, tagged at
/// creation; registered for clean-up.
async fn create(ctx: &Ctx, ec2: &aws_sdk_ec2::Client, snapshot: &str) -> Result<String, String> {
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    let answer = ec2
        .create_volume()
        .snapshot_id(snapshot)
        .availability_zone(&ctx.config.availability_zone)
        .volume_type(VolumeType::Gp3)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .tags(tag(
                    &ctx.config.settings.ownership.key,
                    &ctx.config.settings.ownership.value,
                ))
                .tags(tag("Mondoo:Snapshot", snapshot))
                .tags(tag("Mondoo:Worker", &ctx.config.instance_id))
                .build(),
        )
        .send()
        .await
        .map_err(|err| {
            format!(
                "creating a volume from {snapshot} in {}: {}",
                ctx.config.availability_zone,
                DisplayErrorContext(&err)
            )
        })?;
    let volume = answer
        .volume_id()
        .ok_or_else(|| format!("creating a volume from {snapshot}: no volume id in the answer"))?
        .to_string();
    ctx.attached.add(&volume);
    tracing::info!(volume = %volume, "volume created");
    Ok(volume)
}

/// `volume` as EC2 describes it now; `None` when it is gone.
async fn describe_volume(
    ec2: &aws_sdk_ec2::Client,
    volume: &str,
) -> Result<Option<aws_sdk_ec2::types::Volume>, String> {
    let answer = ec2
        .describe_volumes()
        .volume_ids(volume)
        .send()
        .await
        .map_err(|err| format!("describing {volume}: {}", DisplayErrorContext(&err)))?;
    Ok(answer
        .volumes
        .and_then(|volumes| volumes.into_iter().next()))
}

/// Wait until `volume` is in `state`.
async fn wait_state(
    ec2: &aws_sdk_ec2::Client,
    volume: &str,
    state: VolumeState,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let described = describe_volume(ec2, volume).await?;
        let described = described.as_ref();
        let current = described.and_then(|v| v.state());
        let attached = described
            .map(|v| v.attachments())
            .unwrap_or_default()
            .iter()
            .any(|a| a.state().is_some_and(|s| s.as_str() == "attached"));
        let done = match &state {
            // In use is not enough: the attachment itself must be complete.
            VolumeState::InUse => current == Some(&VolumeState::InUse) && attached,
            other => current == Some(other),
        };
        if done {
            return Ok(());
        }
        if current == Some(&VolumeState::Error) {
            return Err(format!("{volume} is in state error"));
        }
        if started.elapsed() > STATE_WAIT {
            return Err(format!(
                "{volume} not {} after {STATE_WAIT:?} (it is {current:?})",
                state.as_str()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The NVMe serial of an EBS volume: its id without the dash.
pub fn serial(volume: &str) -> String {
    volume.replace('-', "")
}

/// The device of `volume`: a link in `device_dir` whose name carries the
/// serial (`nvme-Amazon_Elastic_Block_Store_vol0123…`, not a `-partN`
/// one), else a `/sys/block/*/device/serial` that equals it.
async fn find_device(device_dir: &Path, volume: &str) -> Result<PathBuf, String> {
    let serial = serial(volume);
    let started = Instant::now();
    loop {
        if let Some(found) =
            by_id(device_dir, &serial).or_else(|| by_sysfs(Path::new(SYS_BLOCK), &serial))
        {
            return Ok(found);
        }
        if started.elapsed() > DEVICE_WAIT {
            return Err(format!(
                "{volume}: no device with serial {serial} under {} or {SYS_BLOCK} after {DEVICE_WAIT:?}",
                device_dir.display()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn by_id(dir: &Path, serial: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // udev names the whole disk `…_vol0123` (older rules) or
            // `…_vol0123_1` / `…_vol0123-ns-1` (namespace 1); partitions
            // end in `-partN` and are not the disk.
            [String::new(), "_1".to_string(), "-ns-1".to_string()]
                .iter()
                .any(|suffix| name.ends_with(&format!("{serial}{suffix}")))
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

fn by_sysfs(sys_block: &Path, serial: &str) -> Option<PathBuf> {
    std::fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let text = std::fs::read_to_string(entry.path().join("device/serial")).ok()?;
            (text.trim() == serial).then(|| Path::new("/dev").join(entry.file_name()))
        })
}

/// Detach `volume`, wait until it is free, re-check the ownership tag and
/// delete it.
///
/// # Errors
/// A reason naming the volume; it stays registered, and the sweep removes
/// it later if this worker cannot.
pub async fn cleanup(ctx: &Ctx, ec2: &aws_sdk_ec2::Client, volume: &str) -> Result<(), String> {
    let Some(current) = describe_volume(ec2, volume).await? else {
        ctx.attached.remove(volume);
        return Ok(());
    };
    // Detached from the instance it is attached to, named: a volume is
    // only ever attached to this worker, and naming it keeps the call from
    // touching anything else.
    if let Some(attachment) = current.attachments().first() {
        let instance = attachment
            .instance_id()
            .unwrap_or(ctx.config.instance_id.as_str());
        let mut detach = ec2.detach_volume().volume_id(volume).instance_id(instance);
        if let Some(device) = attachment.device() {
            detach = detach.device(device);
        }
        detach
            .send()
            .await
            .map_err(|err| format!("detaching {volume}: {}", DisplayErrorContext(&err)))?;
        wait_state(ec2, volume, VolumeState::Available).await?;
    }
    // Right before the delete: only what carries the ownership tag goes.
    let owned = describe_volume(ec2, volume).await?.is_some_and(|v| {
        ctx.config
            .settings
            .ownership
            .is_owned(v.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
    });
    if !owned {
        ctx.attached.remove(volume);
        return Err(format!(
            "{volume} does not carry the ownership tag {}={}: not deleting it",
            ctx.config.settings.ownership.key, ctx.config.settings.ownership.value
        ));
    }
    ec2.delete_volume()
        .volume_id(volume)
        .send()
        .await
        .map_err(|err| format!("deleting {volume}: {}", DisplayErrorContext(&err)))?;
    ctx.attached.remove(volume);
    tracing::info!(volume = %volume, "volume deleted");
    Ok(())
}

/// Clean up every volume still registered (jobs interrupted by a signal).
pub async fn cleanup_all(ctx: &Ctx) {
    let volumes: Vec<String> = ctx
        .attached
        .volumes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    // Volumes are created in the worker's own region.
    let ec2 = aws_sdk_ec2::Client::new(&ctx.sdk);
    for volume in volumes {
        if let Err(reason) = cleanup(ctx, &ec2, &volume).await {
            tracing::error!(volume = %volume, error = %reason, "cleaning up a volume failed; the sweep will remove it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_is_found_by_serial_not_by_name() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let serial = serial("vol-0abc");
        assert_eq!(serial, "vol0abc");
        std::os::unix::fs::symlink(
            "/dev/null",
            dir.path()
                .join("nvme-Amazon_Elastic_Block_Store_vol0abc-part1"),
        )
        .expect("a link");
        std::os::unix::fs::symlink(
            "/dev/null",
            dir.path().join("nvme-Amazon_Elastic_Block_Store_vol0abcd"),
        )
        .expect("a link");
        assert_eq!(by_id(dir.path(), &serial), None);
        std::os::unix::fs::symlink(
            "/dev/null",
            dir.path().join("nvme-Amazon_Elastic_Block_Store_vol0abc"),
        )
        .expect("a link");
        assert_eq!(
            by_id(dir.path(), &serial),
            Some(dir.path().join("nvme-Amazon_Elastic_Block_Store_vol0abc"))
        );
    }
}
