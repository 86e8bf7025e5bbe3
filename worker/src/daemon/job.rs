//! One job: wait for the job's snapshots to be `completed`, scan each, and
//! build one report for the instance carrying the job's ids.
//!
//! The scan itself is the synchronous pipeline ([`crate::scan()`]) on a
//! blocking thread: the EBS direct source owns its own runtime and blocks
//! on it, which must never happen on a tokio worker thread (nor may that
//! runtime be dropped on one, so the source is opened, used and dropped
//! inside the blocking closure).

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::SnapshotState;
use scanner_contract::{JobSnapshot, ScanJob};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::Ctx;
use super::config::ReadMode;
use crate::block::{BlockSource, EbsOptions, EbsSource};
use crate::report::Report;
use crate::{ScanOptions, scan};

/// The job report's schema version.
pub const JOB_REPORT_VERSION: u32 = 1;

/// What the worker delivers for one job: the job's ids and one scan report
/// per snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Always [`JOB_REPORT_VERSION`].
    pub schema_version: u32,
    /// The scan run (the job's `scan_id`).
    pub scan_id: String,
    /// The scanned instance.
    pub instance_id: String,
    /// Its region.
    pub region: String,
    /// When the scan run started (the job's `created_at`).
    pub job_created_at: String,
    /// The worker instance that scanned it.
    pub worker_instance_id: String,
    /// `direct` or `attach`.
    pub read_mode: String,
    /// How many times the queue had delivered the job, this time included.
    pub attempt: u32,
    /// One per snapshot of the job, in the job's order.
    pub snapshots: Vec<SnapshotReport>,
    /// Why the job as a whole failed; empty when every snapshot was scanned.
    /// A report with errors is delivered only on the job's last attempt,
    /// before the message moves to the dead-letter queue.
    pub errors: Vec<String>,
}

/// One snapshot of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The snapshot.
    pub snapshot_id: String,
    /// The volume it was taken from.
    pub volume_id: String,
    /// The instance's device name for the volume, where known.
    pub device_name: Option<String>,
    /// The scan, when it ran.
    pub report: Option<Report>,
    /// Why it did not, naming the snapshot and what failed.
    pub error: Option<String>,
}

impl JobReport {
    /// Whether every snapshot was scanned.
    pub fn complete(&self) -> bool {
        self.errors.is_empty() && self.snapshots.iter().all(|s| s.error.is_none())
    }

    /// Every error of the job, for the log.
    pub fn reasons(&self) -> Vec<String> {
        self.errors
            .iter()
            .cloned()
            .chain(self.snapshots.iter().filter_map(|s| s.error.clone()))
            .collect()
    }
}

/// Run `job` (delivered for the `attempt`-th time) to a report. Never
/// fails as a whole: what went wrong is in the report's errors.
pub async fn execute(ctx: &Ctx, job: &ScanJob, attempt: u32) -> JobReport {
    let mut report = JobReport {
        schema_version: JOB_REPORT_VERSION,
        scan_id: job.scan_id.clone(),
        instance_id: job.instance_id.clone(),
        region: job.region.clone(),
        job_created_at: job.created_at.clone(),
        worker_instance_id: ctx.config.instance_id.clone(),
        read_mode: match ctx.config.settings.read_mode {
            ReadMode::Direct => "direct",
            ReadMode::Attach => "attach",
        }
        .to_string(),
        attempt,
        snapshots: Vec::new(),
        errors: Vec::new(),
    };
    let ec2 = ctx.ec2(&job.region);
    if let Err(reason) = wait_completed(ctx, &ec2, job).await {
        report.errors.push(reason);
        return report;
    }
    for snapshot in &job.snapshots {
        let span = tracing::info_span!("snapshot", snapshot = %snapshot.snapshot_id, volume = %snapshot.volume_id);
        let result = scan_snapshot(ctx, &ec2, job, snapshot)
            .instrument(span.clone())
            .await;
        let (report_of, error) = span.in_scope(|| match result {
            Ok(scanned) => {
                tracing::info!(
                    volumes = scanned.volumes.len(),
                    bytes_read = scanned.stats.bytes_read,
                    duration_ms = scanned.stats.duration_ms,
                    "snapshot scanned"
                );
                (Some(scanned), None)
            }
            Err(reason) => {
                tracing::warn!(error = %reason, "snapshot not scanned");
                (None, Some(reason))
            }
        });
        report.snapshots.push(SnapshotReport {
            snapshot_id: snapshot.snapshot_id.clone(),
            volume_id: snapshot.volume_id.clone(),
            device_name: snapshot.device_name.clone(),
            report: report_of,
            error,
        });
    }
    report
}

/// Wait until every snapshot of `job` is `completed`.
///
/// # Errors
/// A reason naming the snapshot: it does not exist, is in `error` state, or
/// is not completed within the configured wait.
async fn wait_completed(ctx: &Ctx, ec2: &aws_sdk_ec2::Client, job: &ScanJob) -> Result<(), String> {
    let ids: Vec<String> = job
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    let started = Instant::now();
    loop {
        let answer = ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(|err| {
                format!(
                    "describing snapshots {} in {}: {}",
                    ids.join(","),
                    job.region,
                    DisplayErrorContext(&err)
                )
            })?;
        let mut pending = Vec::new();
        for id in &ids {
            let found = answer
                .snapshots()
                .iter()
                .find(|s| s.snapshot_id() == Some(id.as_str()));
            match found.and_then(|s| s.state()) {
                None => return Err(format!("snapshot {id} not found in {}", job.region)),
                Some(SnapshotState::Completed) => {}
                Some(SnapshotState::Error) => {
                    let message = found
                        .and_then(|s| s.state_message())
                        .unwrap_or("no message");
                    return Err(format!("snapshot {id} is in state error: {message}"));
                }
                Some(_) => pending.push(id.as_str()),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= ctx.config.timing.snapshot_wait {
            return Err(format!(
                "snapshots {} not completed after {:?}",
                pending.join(","),
                ctx.config.timing.snapshot_wait
            ));
        }
        tracing::info!(
            pending = pending.join(","),
            "waiting for snapshots to complete"
        );
        tokio::time::sleep(ctx.config.timing.snapshot_poll).await;
    }
}

/// Scan one snapshot in the configured read mode.
async fn scan_snapshot(
    ctx: &Ctx,
    ec2: &aws_sdk_ec2::Client,
    job: &ScanJob,
    snapshot: &JobSnapshot,
) -> Result<Report, String> {
    match ctx.config.settings.read_mode {
        ReadMode::Direct => {
            let id = snapshot.snapshot_id.clone();
            let region = job.region.clone();
            let options = ctx.scan_options.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let source = EbsSource::open(
                    &id,
                    EbsOptions {
                        region: Some(region),
                        ..EbsOptions::default()
                    },
                )
                .map_err(|err| err.to_string())?;
                let source: Arc<dyn BlockSource> = Arc::new(source);
                scan(source, &id, &options).map_err(|err| format!("scanning {id}: {err}"))
            })
            .await
            .map_err(|err| {
                format!(
                    "scanning {}: the scan task failed: {err}",
                    snapshot.snapshot_id
                )
            })?
        }
        ReadMode::Attach => super::attach::scan_attached(ctx, ec2, snapshot).await,
    }
}

/// Default scan options of the daemon: the library's defaults, no progress
/// callback (the log has one event per snapshot).
pub fn scan_options() -> ScanOptions {
    ScanOptions::default()
}
