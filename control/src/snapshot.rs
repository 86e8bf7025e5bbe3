//! Snapshots of one instance's volumes: reuse what a recent scan made, make
//! the rest.
//!
//! - Reuse: the owned snapshots of the region are listed once per scan
//!   (`DescribeSnapshots`, our account, the ownership tag as a filter and
//!   checked again in code); a volume with one younger than the configured
//!   age gets that one (the newest), not another.
//! - Every volume uncovered: one `CreateSnapshots` for the instance — a
//!   crash-consistent set, taken at one moment, in one call.
//! - Some volumes covered (a volume attached since the last scan): one
//!   `CreateSnapshot` per uncovered volume.
//!
//! Everything made here carries the ownership tag, `Mondoo:Instance` and
//! `Mondoo:ScanId` from the moment it exists (`TagSpecifications`, not a
//! later `CreateTags`), so nothing the scanner makes is ever untagged; a
//! snapshot made per volume also carries `Mondoo:Volume` (a set made by
//! `CreateSnapshots` shares one tag list; each snapshot names its volume in
//! its own `VolumeId`, which is what reuse matches).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    InstanceSpecification, ResourceType, SnapshotState, Tag, TagSpecification,
};
use scanner_contract::{JobSnapshot, OwnershipTag, TAG_INSTANCE, TAG_SCAN_ID, TAG_VOLUME};

use crate::discover::Instance;
use crate::error::ApiError;
use crate::pace::Pacer;

/// Snapshots per `DescribeSnapshots` page (the API's maximum).
const PAGE_SIZE: i32 = 1000;

/// An owned snapshot young enough to reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reusable {
    /// `snap-…`.
    pub snapshot_id: String,
    /// When it was started.
    pub started: SystemTime,
}

/// What one instance got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// One per volume, in block-device order.
    pub snapshots: Vec<JobSnapshot>,
    /// Snapshots made now.
    pub created: usize,
    /// Snapshots reused.
    pub reused: usize,
}

/// Why an instance's volumes could not be snapshotted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// A call failed.
    #[error("snapshotting {instance_id}: {source}")]
    Call {
        /// The instance.
        instance_id: String,
        /// The call.
        source: ApiError,
    },
    /// The call succeeded but made no snapshot (the volumes were detached).
    #[error("snapshotting {instance_id}: CreateSnapshots made no snapshot")]
    Nothing {
        /// The instance.
        instance_id: String,
    },
}

impl SnapshotError {
    /// The failure was throttling that outlasted the retries.
    pub fn is_throttling(&self) -> bool {
        matches!(self, Self::Call { source, .. } if source.is_throttling())
    }
}

/// The newest owned snapshot per volume younger than `max_age` at `now`,
/// by volume id, and how many owned snapshots were listed (`None`: no
/// call). A zero `max_age` reuses nothing and makes no call.
///
/// # Errors
/// [`ApiError`] when the snapshots cannot be listed.
pub async fn reusable(
    ec2: &Client,
    ownership: &OwnershipTag,
    max_age: Duration,
    now: SystemTime,
) -> Result<(HashMap<String, Reusable>, Option<u64>), ApiError> {
    let mut newest: HashMap<String, Reusable> = HashMap::new();
    if max_age.is_zero() {
        return Ok((newest, None));
    }
    let mut listed = 0;
    let oldest = now.checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(crate::tags::owned_filter(ownership))
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| ApiError::new("DescribeSnapshots", &err))?;
        for snapshot in page.snapshots() {
            let owned = ownership.is_owned(crate::tags::pairs(snapshot.tags()));
            if owned {
                listed += 1;
            }
            let usable = !matches!(snapshot.state(), Some(SnapshotState::Error) | None);
            let (Some(snapshot_id), Some(volume_id), Some(started)) = (
                snapshot.snapshot_id(),
                snapshot.volume_id(),
                snapshot
                    .start_time()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            ) else {
                continue;
            };
            if !owned || !usable || started < oldest {
                continue;
            }
            let candidate = Reusable {
                snapshot_id: snapshot_id.to_string(),
                started,
            };
            newest
                .entry(volume_id.to_string())
                .and_modify(|kept| {
                    if candidate.started > kept.started {
                        *kept = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    Ok((newest, Some(listed)))
}

/// Snapshots of every volume of `instance`: reused from `reusable` where it
/// has one, made now (tagged with `ownership` and `scan_id`) otherwise;
/// every snapshot call waits for its slot from `pacer`.
///
/// # Errors
/// [`SnapshotError`] naming the instance.
pub async fn snapshot_instance(
    ec2: &Client,
    instance: &Instance,
    reusable: &HashMap<String, Reusable>,
    ownership: &OwnershipTag,
    scan_id: &str,
    pacer: &Pacer,
) -> Result<Taken, SnapshotError> {
    let call_error = |source| SnapshotError::Call {
        instance_id: instance.id.clone(),
        source,
    };
    let uncovered: Vec<_> = instance
        .volumes
        .iter()
        .filter(|v| !reusable.contains_key(&v.volume_id))
        .collect();
    let tags = |volume: Option<&str>| {
        let mut tags = vec![
            tag(&ownership.key, &ownership.value),
            tag(TAG_INSTANCE, &instance.id),
            tag(TAG_SCAN_ID, scan_id),
        ];
        if let Some(volume) = volume {
            tags.push(tag(TAG_VOLUME, volume));
        }
        TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .set_tags(Some(tags))
            .build()
    };
    // volume id → snapshot made now
    let mut made: HashMap<String, String> = HashMap::new();
    if uncovered.len() == instance.volumes.len() {
        pacer.wait().await;
        let answer = ec2
            .create_snapshots()
            .instance_specification(
                InstanceSpecification::builder()
                    .instance_id(&instance.id)
                    .exclude_boot_volume(false)
                    .build(),
            )
            .description(format!("Mondoo scan {scan_id} of {}", instance.id))
            .tag_specifications(tags(None))
            .send()
            .await
            .map_err(|err| {
                call_error(ApiError::new(
                    format!("CreateSnapshots {}", instance.id),
                    &err,
                ))
            })?;
        for info in answer.snapshots() {
            if let (Some(volume), Some(snapshot)) = (info.volume_id(), info.snapshot_id()) {
                made.insert(volume.to_string(), snapshot.to_string());
            }
        }
        if made.is_empty() {
            return Err(SnapshotError::Nothing {
                instance_id: instance.id.clone(),
            });
        }
    } else {
        for volume in uncovered {
            pacer.wait().await;
            let answer = ec2
                .create_snapshot()
                .volume_id(&volume.volume_id)
                .description(format!(
                    "Mondoo scan {scan_id} of {} {}",
                    instance.id, volume.volume_id
                ))
                .tag_specifications(tags(Some(&volume.volume_id)))
                .send()
                .await
                .map_err(|err| {
                    call_error(ApiError::new(
                        format!("CreateSnapshot {}", volume.volume_id),
                        &err,
                    ))
                })?;
            if let Some(snapshot) = answer.snapshot_id() {
                made.insert(volume.volume_id.clone(), snapshot.to_string());
            }
        }
    }

    let mut taken = Taken {
        snapshots: Vec::with_capacity(instance.volumes.len()),
        created: made.len(),
        reused: 0,
    };
    for volume in &instance.volumes {
        let snapshot_id = match (
            made.remove(&volume.volume_id),
            reusable.get(&volume.volume_id),
        ) {
            (Some(made), _) => made,
            (None, Some(reused)) => {
                taken.reused += 1;
                reused.snapshot_id.clone()
            }
            // Detached between the describe and the snapshot: nothing to scan.
            (None, None) => continue,
        };
        taken.snapshots.push(JobSnapshot {
            snapshot_id,
            volume_id: volume.volume_id.clone(),
            device_name: volume.device_name.clone(),
        });
    }
    // Attached between the describe and the snapshot: scanned all the same.
    let mut extra: Vec<_> = made.into_iter().collect();
    extra.sort();
    taken.snapshots.extend(
        extra
            .into_iter()
            .map(|(volume_id, snapshot_id)| JobSnapshot {
                snapshot_id,
                volume_id,
                device_name: None,
            }),
    );
    Ok(taken)
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}
