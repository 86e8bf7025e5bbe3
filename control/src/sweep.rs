//! The sweep: delete the snapshots and available volumes the scanner made
//! that are older than a TTL, and terminate its instances (workers) that
//! outlived the instance TTL, in every region — and nothing else.
//!
//! Workers normally scale themselves in when the queue is empty; one still
//! alive a day later is stuck (a hung scan, a lost lifecycle hook) and
//! costs money, so it goes. The instance TTL is `CONTROL_INSTANCE_TTL_HOURS`,
//! or the sweep's TTL when that is shorter (`ttl_hours: 0` removes
//! everything owned, as the stack's deletion needs).
//!
//! Two checks stand between a resource and its deletion:
//! 1. it is listed with the ownership tag as a filter (`DescribeInstances`
//!    not terminated, `DescribeSnapshots` of our account, `DescribeVolumes`
//!    in state `available`), and is older than the TTL;
//! 2. right before the delete it is described again, by id, and the code
//!    checks the ownership tag itself ([`OwnershipTag::is_owned`], an exact
//!    match), its age, and (a volume) that it is still `available`.
//!
//! [`terminate_instance`], [`delete_snapshot`] and [`delete_volume`] are
//! that second check and the delete; they are the only code here that
//! deletes, and they refuse any resource that does not carry the exact tag
//! — whatever id they are handed. (IAM conditions on the tag restrict the
//! same deletes in the template.)

use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InstanceStateName, VolumeState};
use scanner_contract::{OwnershipTag, Pause};
use serde::Serialize;

use crate::calls::{ApiCalls, Counts};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::regions::regions;

/// Resources per describe page (the APIs' maximum).
const PAGE_SIZE: i32 = 1000;

/// What became of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Deleted.
    Deleted,
    /// Kept: it does not carry the ownership tag.
    NotOwned,
    /// Kept: younger than the TTL.
    NotExpired,
    /// Kept: a volume that is not `available` (attached, in use).
    NotAvailable,
    /// An instance terminated.
    Terminated,
    /// Already gone (or not in this account).
    Gone,
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    /// The TTL it applied to snapshots and volumes, in hours.
    pub ttl_hours: f64,
    /// The TTL it applied to instances, in hours.
    pub instance_ttl_hours: f64,
    /// Per region, sorted by name.
    pub regions: Vec<RegionSweep>,
    /// Snapshots deleted, every region.
    pub snapshots_deleted: usize,
    /// Volumes deleted, every region.
    pub volumes_deleted: usize,
    /// Instances terminated, every region.
    pub instances_terminated: usize,
    /// EC2 calls and attempts, per operation.
    pub ec2: Counts,
    /// Throttling outlasted the retries: this sweep paused the fleet
    /// ([`crate::pause`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_started: Option<Pause>,
    /// Why the pause could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_error: Option<String>,
}

/// What a sweep did in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegionSweep {
    /// The region.
    pub region: String,
    /// Snapshots deleted.
    pub snapshots_deleted: Vec<String>,
    /// Volumes deleted.
    pub volumes_deleted: Vec<String>,
    /// Instances terminated.
    pub instances_terminated: Vec<String>,
    /// Owned resources younger than the TTL (left alone, not listed).
    pub not_expired: usize,
    /// Listed as owned and expired but kept on the second look, and why.
    pub kept: Vec<Kept>,
    /// Deletes that failed.
    pub failed: Vec<FailedDelete>,
    /// Why the region stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A resource kept on the second look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// `i-…`, `snap-…` or `vol-…`.
    pub id: String,
    /// Why.
    pub verdict: Verdict,
}

/// A delete that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDelete {
    /// `i-…`, `snap-…` or `vol-…`.
    pub id: String,
    /// Why.
    pub error: String,
}

/// Why a region's sweep stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SweepRegionError {
    /// Owned resources could not be listed.
    #[error("listing owned {what}: {source}")]
    List {
        /// `instances`, `snapshots` or `volumes`.
        what: &'static str,
        /// The call.
        source: ApiError,
    },
    /// Deletes were throttled past the retries.
    #[error("throttled, deletes stopped at {id}: {source}")]
    Throttled {
        /// The resource whose delete was throttled.
        id: String,
        /// The call.
        source: ApiError,
    },
}

impl SweepRegionError {
    /// The region stopped because AWS throttled a call past its retries.
    pub fn is_throttling(&self) -> bool {
        match self {
            Self::List { source, .. } => source.is_throttling(),
            Self::Throttled { .. } => true,
        }
    }
}

/// A region whose sweep stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{region}: {error}")]
pub struct SweepRegionFailure {
    /// The region.
    pub region: String,
    /// Why.
    #[source]
    pub error: SweepRegionError,
}

/// Why a sweep failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SweepError {
    /// The enabled regions could not be listed.
    #[error("listing the enabled regions: {0}")]
    Regions(#[source] ApiError),
    /// Some regions failed; the others were swept.
    #[error(
        "sweep failed in {} of {} regions: {}",
        failures.len(),
        summary.regions.len(),
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Incomplete {
        /// The failed regions.
        failures: Vec<SweepRegionFailure>,
        /// Everything the sweep did.
        summary: Box<SweepSummary>,
    },
}

/// Sweep every configured region: delete owned snapshots and available
/// volumes older than `ttl`, terminate owned instances older than the
/// instance TTL (or `ttl`, when shorter).
///
/// # Errors
/// [`SweepError`]: no region list, or regions that failed (naming each).
pub async fn sweep(ctx: &Ctx, ttl: Duration) -> Result<SweepSummary, SweepError> {
    let calls = ApiCalls::default();
    let regions = regions(ctx, &calls).await.map_err(SweepError::Regions)?;
    let now = SystemTime::now();
    let instance_ttl = ttl.min(ctx.config().instance_ttl);
    let cutoffs = Cutoffs {
        resources: now.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH),
        instances: now
            .checked_sub(instance_ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    };
    let ownership = &ctx.config().ownership;
    let outcomes = futures_util::future::join_all(
        regions
            .iter()
            .map(|region| sweep_region(ctx.ec2(region, &calls), region, ownership, cutoffs)),
    )
    .await;
    let mut summary = SweepSummary {
        ttl_hours: ttl.as_secs_f64() / 3600.0,
        instance_ttl_hours: instance_ttl.as_secs_f64() / 3600.0,
        instances_terminated: 0,
        regions: Vec::with_capacity(outcomes.len()),
        snapshots_deleted: 0,
        volumes_deleted: 0,
        ec2: Counts::default(),
        pause_started: None,
        pause_error: None,
    };
    let mut failures = Vec::new();
    for (region, failure) in outcomes {
        summary.snapshots_deleted += region.snapshots_deleted.len();
        summary.volumes_deleted += region.volumes_deleted.len();
        summary.instances_terminated += region.instances_terminated.len();
        if let Some(error) = failure {
            failures.push(SweepRegionFailure {
                region: region.region.clone(),
                error,
            });
        }
        summary.regions.push(region);
    }
    if let Some(throttled) = failures.iter().find(|f| f.error.is_throttling()) {
        match crate::pause::after_throttling(ctx, &throttled.to_string()).await {
            Ok(pause) => summary.pause_started = pause,
            Err(err) => summary.pause_error = Some(err.to_string()),
        }
    }
    summary.ec2 = calls.counts();
    tracing::info!(
        snapshots_deleted = summary.snapshots_deleted,
        volumes_deleted = summary.volumes_deleted,
        instances_terminated = summary.instances_terminated,
        failed_regions = failures.len(),
        "sweep finished"
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(SweepError::Incomplete {
            failures,
            summary: Box::new(summary),
        })
    }
}

/// What is expired: started (or launched) at or before these.
#[derive(Debug, Clone, Copy)]
struct Cutoffs {
    /// Snapshots and volumes.
    resources: SystemTime,
    /// Instances.
    instances: SystemTime,
}

/// Instance states an owned instance is listed in (not `shutting-down` or
/// `terminated`: already on their way).
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

async fn sweep_region(
    ec2: Client,
    region: &str,
    ownership: &OwnershipTag,
    cutoffs: Cutoffs,
) -> (RegionSweep, Option<SweepRegionError>) {
    let mut summary = RegionSweep {
        region: region.to_string(),
        ..RegionSweep::default()
    };
    let stop = |summary: &mut RegionSweep, error: SweepRegionError| {
        tracing::error!(region, error = %error, "region sweep stopped");
        summary.error = Some(error.to_string());
        Some(error)
    };
    let tag_filter = crate::tags::owned_filter(ownership);

    // Instances first: a terminated worker frees its volumes for the next
    // sweep.
    let mut expired = Vec::new();
    let mut pages = ec2
        .describe_instances()
        .filters(tag_filter.clone())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) => {
                let source = ApiError::new("DescribeInstances", &err);
                let error = SweepRegionError::List {
                    what: "instances",
                    source,
                };
                let failure = stop(&mut summary, error);
                return (summary, failure);
            }
        };
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let Some(id) = instance.instance_id() else {
                continue;
            };
            if is_expired(instance.launch_time(), cutoffs.instances) {
                expired.push(id.to_string());
            } else {
                summary.not_expired += 1;
            }
        }
    }
    if let Err(error) = delete_expired(
        &ec2,
        Owned::Instance,
        expired,
        ownership,
        cutoffs.instances,
        &mut summary,
    )
    .await
    {
        let failure = stop(&mut summary, error);
        return (summary, failure);
    }
    let cutoff = cutoffs.resources;

    // Snapshots.
    let mut expired = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(tag_filter.clone())
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) => {
                let source = ApiError::new("DescribeSnapshots", &err);
                let error = SweepRegionError::List {
                    what: "snapshots",
                    source,
                };
                let failure = stop(&mut summary, error);
                return (summary, failure);
            }
        };
        for snapshot in page.snapshots() {
            let Some(id) = snapshot.snapshot_id() else {
                continue;
            };
            if is_expired(snapshot.start_time(), cutoff) {
                expired.push(id.to_string());
            } else {
                summary.not_expired += 1;
            }
        }
    }
    if let Err(error) = delete_expired(
        &ec2,
        Owned::Snapshot,
        expired,
        ownership,
        cutoff,
        &mut summary,
    )
    .await
    {
        let failure = stop(&mut summary, error);
        return (summary, failure);
    }

    // Volumes.
    let mut expired = Vec::new();
    let mut pages = ec2
        .describe_volumes()
        .filters(tag_filter)
        .filters(Filter::builder().name("status").values("available").build())
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) => {
                let source = ApiError::new("DescribeVolumes", &err);
                let error = SweepRegionError::List {
                    what: "volumes",
                    source,
                };
                let failure = stop(&mut summary, error);
                return (summary, failure);
            }
        };
        for volume in page.volumes() {
            let Some(id) = volume.volume_id() else {
                continue;
            };
            if is_expired(volume.create_time(), cutoff) {
                expired.push(id.to_string());
            } else {
                summary.not_expired += 1;
            }
        }
    }
    if let Err(error) = delete_expired(
        &ec2,
        Owned::Volume,
        expired,
        ownership,
        cutoff,
        &mut summary,
    )
    .await
    {
        let failure = stop(&mut summary, error);
        return (summary, failure);
    }
    for kept in &summary.kept {
        if kept.verdict == Verdict::NotOwned {
            tracing::warn!(
                region,
                id = kept.id,
                "listed with the ownership tag but not owned on the second look: kept"
            );
        }
    }
    tracing::info!(
        region,
        snapshots_deleted = summary.snapshots_deleted.len(),
        volumes_deleted = summary.volumes_deleted.len(),
        instances_terminated = summary.instances_terminated.len(),
        not_expired = summary.not_expired,
        "region swept"
    );
    (summary, None)
}

/// The kinds of resource the sweep deletes.
#[derive(Debug, Clone, Copy)]
enum Owned {
    Instance,
    Snapshot,
    Volume,
}

/// Delete each of `ids` through the tag-checking delete of its kind and
/// record the verdicts; throttling stops the region (returned as its error).
async fn delete_expired(
    ec2: &Client,
    kind: Owned,
    ids: Vec<String>,
    ownership: &OwnershipTag,
    cutoff: SystemTime,
    summary: &mut RegionSweep,
) -> Result<(), SweepRegionError> {
    for id in ids {
        let result = match kind {
            Owned::Instance => terminate_instance(ec2, ownership, &id, cutoff).await,
            Owned::Snapshot => delete_snapshot(ec2, ownership, &id, cutoff).await,
            Owned::Volume => delete_volume(ec2, ownership, &id, cutoff).await,
        };
        match result {
            Ok(Verdict::Deleted) => match kind {
                Owned::Instance => summary.instances_terminated.push(id),
                Owned::Snapshot => summary.snapshots_deleted.push(id),
                Owned::Volume => summary.volumes_deleted.push(id),
            },
            Ok(Verdict::Terminated) => summary.instances_terminated.push(id),
            Ok(verdict) => summary.kept.push(Kept { id, verdict }),
            Err(err) if err.is_throttling() => {
                return Err(SweepRegionError::Throttled { id, source: err });
            }
            Err(err) => summary.failed.push(FailedDelete {
                id,
                error: err.to_string(),
            }),
        }
    }
    Ok(())
}

/// Started (or created) at or before `cutoff`. No time is not expired.
fn is_expired(started: Option<&aws_smithy_types::DateTime>, cutoff: SystemTime) -> bool {
    started
        .and_then(|t| SystemTime::try_from(*t).ok())
        .is_some_and(|started| started <= cutoff)
}

/// Terminate the instance `instance_id` if — described again now — it
/// carries `ownership` exactly, is not already shutting down or terminated,
/// and was launched at or before `cutoff`. Anything else is kept, and the
/// verdict says why.
///
/// # Errors
/// [`ApiError`] when the describe or the terminate fails.
pub async fn terminate_instance(
    ec2: &Client,
    ownership: &OwnershipTag,
    instance_id: &str,
    cutoff: SystemTime,
) -> Result<Verdict, ApiError> {
    let gone = |err: ApiError| {
        if err.is_code("InvalidInstanceID.NotFound") || err.is_code("InvalidInstanceID.Malformed") {
            Ok(Verdict::Gone)
        } else {
            Err(err)
        }
    };
    let described = match ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
    {
        Ok(described) => described,
        Err(err) => {
            return gone(ApiError::new(
                format!("DescribeInstances {instance_id}"),
                &err,
            ));
        }
    };
    let Some(instance) = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
    else {
        return Ok(Verdict::Gone);
    };
    let tags = crate::tags::pairs(instance.tags());
    if !ownership.is_owned(tags) {
        return Ok(Verdict::NotOwned);
    }
    if matches!(
        instance.state().and_then(|s| s.name()),
        Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
    ) {
        return Ok(Verdict::Gone);
    }
    if !is_expired(instance.launch_time(), cutoff) {
        return Ok(Verdict::NotExpired);
    }
    match ec2
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(instance = instance_id, "terminated");
            Ok(Verdict::Terminated)
        }
        Err(err) => gone(ApiError::new(
            format!("TerminateInstances {instance_id}"),
            &err,
        )),
    }
}

/// Delete the snapshot `snapshot_id` if — described again now — it belongs
/// to this account, carries `ownership` exactly, and was started at or
/// before `cutoff`. Anything else is kept, and the verdict says why.
///
/// # Errors
/// [`ApiError`] when the describe or the delete fails.
pub async fn delete_snapshot(
    ec2: &Client,
    ownership: &OwnershipTag,
    snapshot_id: &str,
    cutoff: SystemTime,
) -> Result<Verdict, ApiError> {
    let described = match ec2
        .describe_snapshots()
        .owner_ids("self")
        .snapshot_ids(snapshot_id)
        .send()
        .await
    {
        Ok(described) => described,
        Err(err) => {
            let err = ApiError::new(format!("DescribeSnapshots {snapshot_id}"), &err);
            return if err.is_code("InvalidSnapshot.NotFound") {
                Ok(Verdict::Gone)
            } else {
                Err(err)
            };
        }
    };
    let Some(snapshot) = described
        .snapshots()
        .iter()
        .find(|s| s.snapshot_id() == Some(snapshot_id))
    else {
        return Ok(Verdict::Gone);
    };
    let tags = crate::tags::pairs(snapshot.tags());
    if !ownership.is_owned(tags) {
        return Ok(Verdict::NotOwned);
    }
    if !is_expired(snapshot.start_time(), cutoff) {
        return Ok(Verdict::NotExpired);
    }
    match ec2.delete_snapshot().snapshot_id(snapshot_id).send().await {
        Ok(_) => {
            tracing::info!(snapshot = snapshot_id, "deleted");
            Ok(Verdict::Deleted)
        }
        Err(err) => {
            let err = ApiError::new(format!("DeleteSnapshot {snapshot_id}"), &err);
            if err.is_code("InvalidSnapshot.NotFound") {
                Ok(Verdict::Gone)
            } else {
                Err(err)
            }
        }
    }
}

/// Delete the volume `volume_id` if — described again now — it carries
/// `ownership` exactly, is `available` (attached to nothing), and was
/// created at or before `cutoff`. Anything else is kept, and the verdict
/// says why.
///
/// # Errors
/// [`ApiError`] when the describe or the delete fails.
pub async fn delete_volume(
    ec2: &Client,
    ownership: &OwnershipTag,
    volume_id: &str,
    cutoff: SystemTime,
) -> Result<Verdict, ApiError> {
    let described = match ec2.describe_volumes().volume_ids(volume_id).send().await {
        Ok(described) => described,
        Err(err) => {
            let err = ApiError::new(format!("DescribeVolumes {volume_id}"), &err);
            return if err.is_code("InvalidVolume.NotFound") {
                Ok(Verdict::Gone)
            } else {
                Err(err)
            };
        }
    };
    let Some(volume) = described
        .volumes()
        .iter()
        .find(|v| v.volume_id() == Some(volume_id))
    else {
        return Ok(Verdict::Gone);
    };
    let tags = crate::tags::pairs(volume.tags());
    if !ownership.is_owned(tags) {
        return Ok(Verdict::NotOwned);
    }
    if volume.state() != Some(&VolumeState::Available) || !volume.attachments().is_empty() {
        return Ok(Verdict::NotAvailable);
    }
    if !is_expired(volume.create_time(), cutoff) {
        return Ok(Verdict::NotExpired);
    }
    match ec2.delete_volume().volume_id(volume_id).send().await {
        Ok(_) => {
            tracing::info!(volume = volume_id, "deleted");
            Ok(Verdict::Deleted)
        }
        Err(err) => {
            let err = ApiError::new(format!("DeleteVolume {volume_id}"), &err);
            if err.is_code("InvalidVolume.NotFound") {
                Ok(Verdict::Gone)
            } else {
                Err(err)
            }
        }
    }
}
