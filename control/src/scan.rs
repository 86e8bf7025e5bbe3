//! The scan: in every region at once, discover the instances, snapshot
//! their volumes (reusing recent owned snapshots), and enqueue one job per
//! instance; then size the worker group to the queue.
//!
//! One region's failure (throttled past the retries, no permission) does
//! not stop the others: their jobs are enqueued, and the scan ends in an
//! error naming each failed region. One instance's failure is reported in
//! its region's summary and the region goes on — unless it was throttling,
//! which stops that region's snapshots (more calls would be throttled too);
//! the jobs of the instances already snapshotted are enqueued all the same.
//!
//! EC2 calls: per region, `DescribeInstances` (a page per 1000 instances)
//! and `DescribeSnapshots` (a page per 1000 owned snapshots); per instance,
//! one `CreateSnapshots` (or none, when every volume's snapshot is reused).
//! The summary counts them ([`crate::calls`]).

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use futures_util::StreamExt;
use futures_util::stream;
use scanner_contract::{JOB_VERSION, Pause, ScanJob};
use serde::Serialize;

use crate::calls::{ApiCalls, Counts};
use crate::config::ENV_QUEUE_URL;
use crate::ctx::Ctx;
use crate::discover::{self, SkipReason};
use crate::enqueue::{self, EnqueueError, FailedJob};
use crate::error::ApiError;
use crate::inventory::{self, Inventory};
use crate::pace::Pacer;
use crate::pause::{self, PauseError};
use crate::quota::{self, Deferral, Planner};
use crate::regions::regions;
use crate::scale::{self, ScaleSummary};
use crate::snapshot::{self, SnapshotError};

/// Instances snapshotted at once in one region: `CreateSnapshots` is a
/// mutating call, rate-limited per region far below the describe calls.
const SNAPSHOT_CONCURRENCY: usize = 4;

/// What a scan did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanSummary {
    /// The run's id (`Mondoo:ScanId` on what it made, `scan_id` in its jobs).
    pub scan_id: String,
    /// Per region, sorted by name.
    pub regions: Vec<RegionScan>,
    /// Instances snapshotted (or tried), every region.
    pub instances: usize,
    /// Jobs enqueued, every region.
    pub jobs: usize,
    /// Snapshots made, every region.
    pub snapshots_created: usize,
    /// Snapshots reused, every region.
    pub snapshots_reused: usize,
    /// Instances deferred to the next scan by a snapshot quota, every region.
    pub deferred: usize,
    /// Requested instances not found running (or stopped, when those are
    /// scanned) in any region.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
    /// EC2 calls and attempts, per operation.
    pub ec2: Counts,
    /// EC2 calls per instance snapshotted (the target is at most 3).
    pub ec2_calls_per_instance: Option<f64>,
    /// The worker group's resize, when a group is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSummary>,
    /// Why the resize failed (the jobs are queued; the next scale retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_error: Option<String>,
    /// The scan did nothing: the fleet is paused until then
    /// ([`crate::pause`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Throttling outlasted the retries: this scan paused the fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_started: Option<Pause>,
    /// Why the pause could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_error: Option<String>,
}

impl ScanSummary {
    fn empty(scan_id: String) -> Self {
        Self {
            scan_id,
            regions: Vec::new(),
            instances: 0,
            jobs: 0,
            snapshots_created: 0,
            snapshots_reused: 0,
            deferred: 0,
            not_found: Vec::new(),
            ec2: Counts::default(),
            ec2_calls_per_instance: None,
            scale: None,
            scale_error: None,
            paused: None,
            pause_started: None,
            pause_error: None,
        }
    }
}

/// What a scan did in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegionScan {
    /// The region.
    pub region: String,
    /// Instances snapshotted (or tried).
    pub instances: usize,
    /// Jobs enqueued.
    pub jobs: usize,
    /// Snapshots made.
    pub snapshots_created: usize,
    /// Snapshots reused.
    pub snapshots_reused: usize,
    /// Instances not scanned, and why.
    pub skipped: Vec<SkippedInstance>,
    /// Instances left to the next scan by a snapshot quota ([`crate::quota`]):
    /// no snapshot, no job.
    pub deferred: Vec<DeferredInstance>,
    /// Instances whose snapshots or job failed.
    pub failed: Vec<FailedJob>,
    /// Counts from the pages the scan fetched ([`crate::inventory`]).
    pub inventory: Inventory,
    /// Why the region stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An instance not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedInstance {
    /// The instance.
    pub instance_id: String,
    /// Why.
    pub reason: SkipReason,
}

/// An instance left to the next scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeferredInstance {
    /// The instance.
    pub instance_id: String,
    /// The quota it would break.
    pub reason: Deferral,
}

/// Why a region's scan stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegionError {
    /// Instances could not be listed.
    #[error("discovering instances: {0}")]
    Discover(#[source] ApiError),
    /// Owned snapshots could not be listed.
    #[error("listing reusable snapshots: {0}")]
    Reuse(#[source] ApiError),
    /// Pending snapshots could not be listed.
    #[error("listing pending snapshots (the quotas): {0}")]
    Quota(#[source] ApiError),
    /// Snapshots were throttled past the retries.
    #[error("throttled, snapshots stopped: {0}")]
    Throttled(#[source] SnapshotError),
    /// Jobs could not be enqueued.
    #[error("{0}")]
    Enqueue(#[source] EnqueueError),
}

impl RegionError {
    /// The region stopped because AWS throttled a call past its retries.
    pub fn is_throttling(&self) -> bool {
        match self {
            Self::Discover(api) | Self::Reuse(api) | Self::Quota(api) => api.is_throttling(),
            Self::Throttled(_) => true,
            Self::Enqueue(err) => err.source.is_throttling(),
        }
    }
}

/// A region whose scan stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{region}: {error}")]
pub struct RegionFailure {
    /// The region.
    pub region: String,
    /// Why.
    #[source]
    pub error: RegionError,
}

/// Why a scan failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScanError {
    /// The queue is not configured.
    #[error("a scan needs {var}, which is not set")]
    NotConfigured {
        /// The variable.
        var: &'static str,
    },
    /// The enabled regions could not be listed.
    #[error("listing the enabled regions: {0}")]
    Regions(#[source] ApiError),
    /// Whether the fleet is paused could not be told.
    #[error("{0}")]
    Pause(#[source] PauseError),
    /// Some regions failed; the others' jobs are enqueued.
    #[error(
        "scan {} failed in {} of {} regions ({} jobs enqueued elsewhere): {}",
        summary.scan_id,
        failures.len(),
        summary.regions.len(),
        summary.jobs,
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Incomplete {
        /// The failed regions.
        failures: Vec<RegionFailure>,
        /// Everything the scan did.
        summary: Box<ScanSummary>,
    },
}

/// Scan every configured region, or only the instances `instance_ids`.
///
/// # Errors
/// [`ScanError`]: nothing to enqueue to, no region list, or regions that
/// failed (naming each).
pub async fn scan(ctx: &Ctx, instance_ids: Option<&[String]>) -> Result<ScanSummary, ScanError> {
    let queue_url = ctx
        .config()
        .queue_url
        .clone()
        .ok_or(ScanError::NotConfigured { var: ENV_QUEUE_URL })?;
    let started = Instant::now();
    let scan_id = uuid::Uuid::new_v4().to_string();
    if let Some(paused) = pause::active(ctx).await.map_err(ScanError::Pause)? {
        tracing::warn!(
            until = paused.until,
            reason = paused.reason,
            "paused: not scanning"
        );
        return Ok(ScanSummary {
            paused: Some(paused),
            ..ScanSummary::empty(scan_id)
        });
    }
    let calls = ApiCalls::default();
    let regions = match regions(ctx, &calls).await {
        Ok(regions) => regions,
        Err(err) => {
            if err.is_throttling() {
                // Best effort: the scan's error says what failed.
                let _ = pause::after_throttling(ctx, &format!("DescribeRegions throttled: {err}"))
                    .await;
            }
            return Err(ScanError::Regions(err));
        }
    };
    let now = SystemTime::now();
    tracing::info!(scan_id, regions = regions.len(), "scan started");

    let run = Run {
        queue_url: &queue_url,
        scan_id: &scan_id,
        calls: &calls,
        now,
        started,
    };
    let outcomes = futures_util::future::join_all(
        regions
            .iter()
            .map(|region| scan_region(ctx, region, instance_ids, &run)),
    )
    .await;

    let mut summary = ScanSummary::empty(scan_id);
    let mut failures = Vec::new();
    let mut found = BTreeSet::new();
    for (region, seen, failure) in outcomes {
        summary.instances += region.instances;
        summary.jobs += region.jobs;
        summary.snapshots_created += region.snapshots_created;
        summary.snapshots_reused += region.snapshots_reused;
        summary.deferred += region.deferred.len();
        found.extend(seen);
        if let Some(error) = failure {
            failures.push(RegionFailure {
                region: region.region.clone(),
                error,
            });
        }
        summary.regions.push(region);
    }
    if let Some(ids) = instance_ids {
        summary.not_found = ids
            .iter()
            .filter(|id| !found.contains(*id))
            .cloned()
            .collect();
    }
    if let Some(throttled) = failures.iter().find(|f| f.error.is_throttling()) {
        match pause::after_throttling(ctx, &throttled.to_string()).await {
            Ok(pause) => summary.pause_started = pause,
            Err(err) => summary.pause_error = Some(err.to_string()),
        }
    }
    summary.ec2 = calls.counts();
    if summary.instances > 0 {
        summary.ec2_calls_per_instance =
            Some(summary.ec2.total_calls() as f64 / summary.instances as f64);
    }
    if ctx.config().asg_name.is_some() {
        match scale::scale(ctx).await {
            Ok(scaled) => summary.scale = Some(scaled),
            Err(err) => {
                tracing::error!(error = %err, "scaling after the scan failed");
                summary.scale_error = Some(err.to_string());
            }
        }
    }
    tracing::info!(
        scan_id = summary.scan_id,
        instances = summary.instances,
        jobs = summary.jobs,
        snapshots_created = summary.snapshots_created,
        snapshots_reused = summary.snapshots_reused,
        ec2_calls = summary.ec2.total_calls(),
        failed_regions = failures.len(),
        "scan finished"
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(ScanError::Incomplete {
            failures,
            summary: Box::new(summary),
        })
    }
}

/// What every region of one scan shares.
struct Run<'a> {
    queue_url: &'a str,
    scan_id: &'a str,
    calls: &'a ApiCalls,
    /// The scan's start, on the wall clock (ages, quotas, `created_at`).
    now: SystemTime,
    /// The scan's start, on the monotonic clock (the time budget).
    started: Instant,
}

/// One region: its summary, the ids of every instance seen (scanned or
/// skipped), and why it stopped, if it did.
async fn scan_region(
    ctx: &Ctx,
    region: &str,
    instance_ids: Option<&[String]>,
    run: &Run<'_>,
) -> (RegionScan, Vec<String>, Option<RegionError>) {
    let Run {
        queue_url,
        scan_id,
        calls,
        now,
        started,
    } = *run;
    let config = ctx.config();
    let ec2 = ctx.ec2(region, calls);
    let mut summary = RegionScan {
        region: region.to_string(),
        ..RegionScan::default()
    };
    let stop = |summary: &mut RegionScan, error: RegionError| {
        tracing::error!(region, error = %error, "region scan stopped");
        summary.error = Some(match summary.error.take() {
            Some(earlier) => format!("{earlier}; {error}"),
            None => error.to_string(),
        });
        Some(error)
    };

    let states: &[&str] = if config.include_stopped {
        &["running", "stopped"]
    } else {
        &["running"]
    };
    let instances = match discover::instances(&ec2, states, instance_ids).await {
        Ok(instances) => instances,
        Err(err) => {
            let failure = stop(&mut summary, RegionError::Discover(err));
            return (summary, Vec::new(), failure);
        }
    };
    let seen: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    summary
        .inventory
        .count_instances(&instances, &config.ownership);
    let mut targets = Vec::new();
    for instance in instances {
        let reason = instance
            .skip_reason(&config.opt_out, &config.ownership)
            .or_else(|| instance.filter_reason(&config.include_tags, &config.exclude_tags));
        match reason {
            Some(reason) => summary.skipped.push(SkippedInstance {
                instance_id: instance.id,
                reason,
            }),
            None => targets.push(instance),
        }
    }
    if targets.is_empty() {
        return (summary, seen, None);
    }
    let reusable =
        match snapshot::reusable(&ec2, &config.ownership, config.snapshot_max_age, now).await {
            Ok((reusable, owned)) => {
                summary.inventory.scanner_snapshots = owned;
                reusable
            }
            Err(err) => {
                let failure = stop(&mut summary, RegionError::Reuse(err));
                return (summary, seen, failure);
            }
        };

    // The quotas, for the volumes that need a snapshot (none: no call).
    let uncovered = |instance: &discover::Instance| -> Vec<String> {
        instance
            .volumes
            .iter()
            .filter(|v| !reusable.contains_key(&v.volume_id))
            .map(|v| v.volume_id.clone())
            .collect()
    };
    if targets
        .iter()
        .any(|instance| !uncovered(instance).is_empty())
    {
        let load = match quota::pending(&ec2).await {
            Ok(load) => {
                summary.inventory.pending_snapshots = Some(inventory::count(load.pending));
                load
            }
            Err(err) => {
                let failure = stop(&mut summary, RegionError::Quota(err));
                return (summary, seen, failure);
            }
        };
        let mut planner = Planner::new(load, config.max_pending_snapshots, now);
        if config.snapshot_calls_per_second > 0 {
            let rate = u64::from(config.snapshot_calls_per_second);
            let calls = rate.saturating_mul(config.scan_budget.as_secs());
            planner = planner.with_call_budget(usize::try_from(calls).unwrap_or(usize::MAX));
        }
        let mut admitted = Vec::with_capacity(targets.len());
        for instance in targets {
            let volumes = uncovered(&instance);
            let volumes: Vec<&str> = volumes.iter().map(String::as_str).collect();
            // One CreateSnapshots for a whole set, else a call per volume.
            let calls = if volumes.len() == instance.volumes.len() {
                1
            } else {
                volumes.len()
            };
            match planner.admit(&volumes, calls) {
                Ok(()) => admitted.push(instance),
                Err(reason) => {
                    tracing::info!(region, instance = instance.id, %reason, "deferred to the next scan");
                    summary.deferred.push(DeferredInstance {
                        instance_id: instance.id,
                        reason,
                    });
                }
            }
        }
        targets = admitted;
    }

    let created_at = DateTime::from(now)
        .fmt(Format::DateTime)
        .unwrap_or_default();
    let mut failure = None;
    let mut jobs = Vec::with_capacity(targets.len());
    let pacer = Pacer::per_second(config.snapshot_calls_per_second);
    let mut taken = stream::iter(&targets)
        .map(|instance| {
            let (ec2, reusable, pacer) = (&ec2, &reusable, &pacer);
            async move {
                // Past the budget (a slow endpoint): the rest waits for the
                // next scan rather than for Lambda's timeout.
                if started.elapsed() > config.scan_budget {
                    return (instance, None);
                }
                let taken = snapshot::snapshot_instance(
                    ec2,
                    instance,
                    reusable,
                    &config.ownership,
                    scan_id,
                    pacer,
                )
                .await;
                (instance, Some(taken))
            }
        })
        .buffered(SNAPSHOT_CONCURRENCY);
    while let Some((instance, taken)) = taken.next().await {
        let Some(taken) = taken else {
            summary.deferred.push(DeferredInstance {
                instance_id: instance.id.clone(),
                reason: Deferral::OutOfTime {
                    budget_seconds: config.scan_budget.as_secs(),
                },
            });
            continue;
        };
        summary.instances += 1;
        match taken {
            Ok(taken) => {
                summary.snapshots_created += taken.created;
                summary.snapshots_reused += taken.reused;
                jobs.push(ScanJob {
                    version: JOB_VERSION,
                    scan_id: scan_id.to_string(),
                    region: region.to_string(),
                    instance_id: instance.id.clone(),
                    snapshots: taken.snapshots,
                    created_at: created_at.clone(),
                });
            }
            Err(err) if err.is_throttling() => {
                failure = stop(&mut summary, RegionError::Throttled(err));
                break;
            }
            Err(err) => {
                tracing::warn!(region, instance = instance.id, error = %err, "instance not snapshotted");
                summary.failed.push(FailedJob {
                    instance_id: instance.id.clone(),
                    error: err.to_string(),
                });
            }
        }
    }
    // Snapshots still in flight when a throttle stopped the region are
    // abandoned: any that were made are owned, reused by the next scan or
    // swept.
    drop(taken);

    match enqueue::enqueue(&ctx.sqs(), queue_url, &jobs, config.job_spread).await {
        Ok(sent) => {
            summary.jobs = sent.sent;
            summary.failed.extend(sent.failed);
        }
        Err(err) => {
            let error = stop(&mut summary, RegionError::Enqueue(err));
            failure = failure.or(error);
        }
    }
    tracing::info!(
        region,
        instances = summary.instances,
        jobs = summary.jobs,
        skipped = summary.skipped.len(),
        deferred = summary.deferred.len(),
        failed = summary.failed.len(),
        "region scanned"
    );
    (summary, seen, failure)
}
