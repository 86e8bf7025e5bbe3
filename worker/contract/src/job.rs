//! The scan job: one message on the scan queue per instance, written by the
//! control Lambda (`control/src/enqueue.rs`) and read by the worker's daemon.
//!
//! JSON on the wire (SQS message body, at most 256 KiB — a job is a few
//! hundred bytes per volume). The message carries a [`JOB_VERSION`]; a reader
//! refuses a version it does not know rather than guess, and ignores fields it
//! does not know, so a field can be added without a new version.

use serde::{Deserialize, Serialize};

/// The version of the job message this crate writes and reads.
pub const JOB_VERSION: u32 = 1;

/// One instance to scan: the snapshots of its EBS volumes, taken (or reused)
/// by one scan run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanJob {
    /// Message format version, [`JOB_VERSION`].
    pub version: u32,
    /// The scan run that made the job (also the `Mondoo:ScanId` tag of the
    /// snapshots it created).
    pub scan_id: String,
    /// The region of the instance and its snapshots.
    pub region: String,
    /// The instance whose volumes these are.
    pub instance_id: String,
    /// One entry per EBS volume attached to the instance when it was
    /// discovered, in the instance's block-device order.
    pub snapshots: Vec<JobSnapshot>,
    /// When the scan run that made the job started: RFC 3339 in UTC
    /// (`2024-05-01T12:00:00Z`).
    pub created_at: String,
}

/// One volume's snapshot in a [`ScanJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// The snapshot to read (it may still be `pending`: the reader waits for
    /// `completed`).
    pub snapshot_id: String,
    /// The volume it was taken from.
    pub volume_id: String,
    /// The device the volume is attached as (`/dev/xvda`), where known.
    pub device_name: Option<String>,
}

/// Why a message is not a job this crate can read.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not JSON, or not the shape of a job.
    #[error("malformed scan job: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A version this crate does not know.
    #[error("scan job version {found} is not supported (this reader knows version {JOB_VERSION})")]
    Version {
        /// The message's version.
        found: u32,
    },
    /// A job that names no snapshot, or a snapshot without an id.
    #[error("scan job for instance {instance_id} names no snapshot to scan")]
    Empty {
        /// The job's instance.
        instance_id: String,
    },
}

impl ScanJob {
    /// The message body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ScanJob is plain strings and numbers")
    }

    /// Read a message body.
    ///
    /// # Errors
    /// [`JobError`] when it is not JSON of this shape, has another version,
    /// or names no snapshot.
    pub fn from_json(body: &str) -> Result<Self, JobError> {
        let job: Self = serde_json::from_str(body).map_err(JobError::Malformed)?;
        if job.version != JOB_VERSION {
            return Err(JobError::Version { found: job.version });
        }
        if job.snapshots.is_empty() || job.snapshots.iter().any(|s| s.snapshot_id.is_empty()) {
            return Err(JobError::Empty {
                instance_id: job.instance_id,
            });
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ScanJob {
        ScanJob {
            version: JOB_VERSION,
            scan_id: "0f4e".to_string(),
            region: "eu-west-1".to_string(),
            instance_id: "i-0123".to_string(),
            snapshots: vec![JobSnapshot {
                snapshot_id: "snap-1".to_string(),
                volume_id: "vol-1".to_string(),
                device_name: Some("/dev/xvda".to_string()),
            }],
            created_at: "2024-05-01T12:00:00Z".to_string(),
        }
    }

    #[test]
    fn a_job_survives_the_wire() {
        let job = job();
        assert_eq!(ScanJob::from_json(&job.to_json()).ok(), Some(job));
    }

    #[test]
    fn the_wire_format_is_snake_case_json() {
        let value: serde_json::Value = serde_json::from_str(&job().to_json()).expect("valid JSON");
        assert_eq!(value["instance_id"], "i-0123");
        assert_eq!(value["snapshots"][0]["device_name"], "/dev/xvda");
        assert_eq!(value["version"], 1);
    }

    #[test]
    fn unknown_fields_are_ignored_unknown_versions_refused() {
        let mut value: serde_json::Value =
            serde_json::from_str(&job().to_json()).expect("valid JSON");
        value["priority"] = serde_json::json!(3);
        assert!(ScanJob::from_json(&value.to_string()).is_ok());
        value["version"] = serde_json::json!(2);
        assert!(matches!(
            ScanJob::from_json(&value.to_string()),
            Err(JobError::Version { found: 2 })
        ));
    }

    #[test]
    fn malformed_and_empty_jobs_are_refused() {
        assert!(matches!(
            ScanJob::from_json("{\"version\": 1"),
            Err(JobError::Malformed(_))
        ));
        let mut empty = job();
        empty.snapshots.clear();
        assert!(matches!(
            ScanJob::from_json(&empty.to_json()),
            Err(JobError::Empty { .. })
        ));
    }
}
