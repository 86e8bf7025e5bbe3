//! The pipeline: a block source in, one report out.
//!
//! bytes → partitions → filesystem probe → detectors (in parallel) → report.
//! Volumes are scanned in parallel and each volume's detectors run in
//! parallel too; results are collected in disk order and packages sorted, so
//! parallel output equals sequential output. One bad volume is a finding in
//! the report, never an abort.

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::block::{BlockSource, Counted, Slice};
use crate::detect::{DETECTORS, Findings};
use crate::fs::{self, FsError, FsKind, Volume};
use crate::partition::{self, Partition, PartitionError};
use crate::report::{
    FilesystemInfo, PartitionInfo, Report, SCHEMA_VERSION, SkipReason, Skipped, Stats, VolumeReport,
};

/// Default cap on one file read by a detector (package databases of large
/// RHEL hosts reach a few hundred MiB; nothing larger is ever allocated).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 512 * 1024 * 1024;

/// Bytes at the start of each volume announced to the source before probing
/// (a no-op for local disks; 4 MiB is 8 EBS blocks).
const VOLUME_HEAD_BYTES: u64 = 4 * 1024 * 1024;

/// A step of a scan, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanProgress {
    /// The partition table was read: `steps` units of work follow.
    Planned {
        /// Number of volumes.
        volumes: usize,
        /// Total steps (one per volume probe plus one per detector run).
        steps: u64,
    },
    /// One step finished.
    Step {
        /// What was done, for a status line.
        message: String,
    },
}

/// How to scan.
#[derive(Clone)]
pub struct ScanOptions {
    /// Largest file a detector may read, in bytes.
    pub max_file_size: u64,
    /// Called from any thread as the scan advances.
    pub on_progress: Option<Arc<dyn Fn(ScanProgress) + Send + Sync>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            on_progress: None,
        }
    }
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("max_file_size", &self.max_file_size)
            .finish_non_exhaustive()
    }
}

impl ScanOptions {
    fn progress(&self, event: ScanProgress) {
        if let Some(callback) = &self.on_progress {
            callback(event);
        }
    }
}

/// Why a target could not be scanned at all (per-volume problems are in the
/// report instead).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The partition table (or first sectors) could not be read.
    #[error("{target}: {source}")]
    Unreadable {
        /// The target.
        target: String,
        /// Why.
        source: PartitionError,
    },
}

/// Scan `source`, named `target` in the report.
///
/// # Errors
/// [`ScanError::Unreadable`] when not even the partition table can be read.
pub fn scan(
    source: Arc<dyn BlockSource>,
    target: &str,
    options: &ScanOptions,
) -> Result<Report, ScanError> {
    let started = Instant::now();
    let counted = Arc::new(Counted::new(source));
    let disk: Arc<dyn BlockSource> = counted.clone();

    let (regions, warnings) = regions(&disk).map_err(|source| ScanError::Unreadable {
        target: target.to_string(),
        source,
    })?;
    // Every filesystem reads its head first (superblock, group descriptors
    // or AG headers, the first inodes): a remote source fetches those of all
    // volumes at once instead of one round trip after another.
    let heads: Vec<(u64, u64)> = regions
        .iter()
        .map(|(partition, region)| {
            let start = partition.as_ref().map_or(0, |p| p.start);
            (start, region.size().min(VOLUME_HEAD_BYTES))
        })
        .collect();
    disk.prefetch(&heads);
    let steps = u64::try_from(
        regions
            .len()
            .saturating_mul(DETECTORS.len().saturating_add(1)),
    )
    .unwrap_or(u64::MAX);
    options.progress(ScanProgress::Planned {
        volumes: regions.len(),
        steps,
    });

    let volumes = regions
        .into_par_iter()
        .map(|(partition, region)| scan_volume(partition.as_ref(), region, options))
        .collect();

    Ok(Report {
        schema_version: SCHEMA_VERSION,
        target: target.to_string(),
        target_size: disk.size(),
        volumes,
        errors: warnings,
        stats: Stats {
            bytes_read: counted.bytes_read(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            remote: disk.remote_stats(),
        },
    })
}

/// A partition (or the whole disk when it has no table) and its bytes.
pub type Region = (Option<Partition>, Arc<dyn BlockSource>);

/// The regions of `disk` that may hold a filesystem, in disk order, and the
/// partition table's warnings.
///
/// # Errors
/// [`PartitionError`] when the partition table cannot be read at all.
pub fn regions(disk: &Arc<dyn BlockSource>) -> Result<(Vec<Region>, Vec<String>), PartitionError> {
    let table = partition::read_partitions(&**disk)?;
    let regions = if table.scheme.is_none() {
        vec![(None, Arc::clone(disk))]
    } else {
        table
            .partitions
            .into_iter()
            .map(|p| {
                let slice: Arc<dyn BlockSource> =
                    Arc::new(Slice::new(Arc::clone(disk), p.start, p.size));
                (Some(p), slice)
            })
            .collect()
    };
    Ok((regions, table.warnings))
}

/// Probe one region and, when it holds a filesystem we read, run every
/// detector on it.
fn scan_volume(
    partition: Option<&Partition>,
    region: Arc<dyn BlockSource>,
    options: &ScanOptions,
) -> VolumeReport {
    let where_ =
        partition.map_or_else(|| "disk".to_string(), |p| format!("partition {}", p.number));
    let mut report = VolumeReport {
        partition: partition.map(|p| PartitionInfo {
            scheme: match p.scheme {
                partition::Scheme::Gpt => "gpt".to_string(),
                partition::Scheme::Mbr => "mbr".to_string(),
            },
            number: p.number,
            start: p.start,
            size: p.size,
            type_id: p.type_id.clone(),
            name: p.name.clone(),
        }),
        filesystem: None,
        os: None,
        packages: Vec::new(),
        skipped: None,
        errors: Vec::new(),
        notes: Vec::new(),
    };
    let skip = |report: &mut VolumeReport, reason, detail: String| {
        report.skipped = Some(Skipped { reason, detail });
    };

    let probed = fs::probe(&*region);
    options.progress(ScanProgress::Step {
        message: format!("probed {where_}"),
    });
    let probe = match probed {
        Ok(Some(probe)) => probe,
        Ok(None) => {
            let (reason, detail) = classify_unknown(&*region);
            skip(&mut report, reason, detail);
            return report;
        }
        Err(err) => {
            skip(
                &mut report,
                SkipReason::ReadError,
                format!("{where_}: {err}"),
            );
            return report;
        }
    };
    report.filesystem = Some(FilesystemInfo {
        fs_type: probe.variant.unwrap_or(probe.kind.name()).to_string(),
        uuid: probe.uuid.clone(),
        label: probe.label.clone(),
    });
    let skip_reason = match probe.kind {
        FsKind::Luks => Some(SkipReason::Encrypted),
        FsKind::Swap => Some(SkipReason::Swap),
        FsKind::Lvm2 => Some(SkipReason::VolumeManager),
        _ => None,
    };
    if let Some(reason) = skip_reason {
        skip(
            &mut report,
            reason,
            format!("{where_}: {}", probe.kind.name()),
        );
        return report;
    }

    let volume = Volume::new(region, probe.kind);
    // Open once here so a volume we cannot read is one skip reason, not one
    // error per detector, and to hear what the reader found at open time (a
    // dirty log replayed, or not).
    match volume.open() {
        Ok(fs) => {
            report.notes = fs
                .notes()
                .into_iter()
                .map(|n| format!("{where_}: {n}"))
                .collect()
        }
        Err(err) => {
            let reason = match err {
                FsError::Unsupported { .. } if !probe.kind.has_reader() => {
                    SkipReason::UnsupportedFilesystem
                }
                FsError::Unsupported { .. } => SkipReason::UnsupportedFeature,
                FsError::Encrypted { .. } => SkipReason::Encrypted,
                FsError::Io { .. } => SkipReason::ReadError,
                _ => SkipReason::Corrupt,
            };
            skip(&mut report, reason, format!("{where_}: {err}"));
            return report;
        }
    }

    let results: Vec<(&'static str, Result<Findings, String>)> = DETECTORS
        .par_iter()
        .map_init(
            || volume.open(),
            |fs, detector| {
                let result = match fs {
                    Ok(fs) => detector
                        .detect(&fs::Capped::new(fs.as_ref(), options.max_file_size))
                        .map_err(|err| err.to_string()),
                    Err(err) => Err(format!(
                        "{}: opening the filesystem: {err}",
                        detector.name()
                    )),
                };
                options.progress(ScanProgress::Step {
                    message: format!("{} on {where_}", detector.name()),
                });
                (detector.name(), result)
            },
        )
        .collect();

    for (name, result) in results {
        match result {
            Ok(findings) => {
                if report.os.is_none() {
                    report.os = findings.os;
                }
                report.packages.extend(findings.packages);
                report.errors.extend(
                    findings
                        .errors
                        .into_iter()
                        .map(|e| format!("{where_}: {name}: {e}")),
                );
            }
            Err(err) => report.errors.push(format!("{where_}: {err}")),
        }
    }
    report.packages.sort();
    report
}

/// Run every detector, one after another, on a filesystem the kernel
/// mounted (the attach mode's fallback for filesystems not parsed in user
/// space, whose host-directory reader need not be `Sync`). `where_` names
/// the volume in errors. Returns the OS, the packages (sorted) and the
/// errors, as [`scan()`] puts them in a volume's report.
pub fn detect_mounted(
    fs: &dyn fs::Filesystem,
    where_: &str,
    options: &ScanOptions,
) -> (
    Option<crate::detect::OsInfo>,
    Vec<crate::detect::Package>,
    Vec<String>,
) {
    let mut os = None;
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    let capped = fs::Capped::new(fs, options.max_file_size);
    for detector in DETECTORS {
        match detector.detect(&capped) {
            Ok(findings) => {
                if os.is_none() {
                    os = findings.os;
                }
                packages.extend(findings.packages);
                errors.extend(
                    findings
                        .errors
                        .into_iter()
                        .map(|e| format!("{where_}: {}: {e}", detector.name())),
                );
            }
            Err(err) => errors.push(format!("{where_}: {}: {err}", detector.name())),
        }
    }
    packages.sort();
    (os, packages, errors)
}

/// Tell an all-zero region (never written) from unknown content.
fn classify_unknown(region: &dyn BlockSource) -> (SkipReason, String) {
    const LOOK: u64 = 1024 * 1024;
    let len = usize::try_from(LOOK.min(region.size())).unwrap_or(0);
    let mut head = vec![0u8; len];
    match region.read_exact_at(&mut head, 0) {
        Ok(()) if head.iter().all(|&b| b == 0) => (
            SkipReason::Empty,
            format!("first {len} bytes are all zeros"),
        ),
        Ok(()) => (
            SkipReason::UnknownFilesystem,
            "no known filesystem signature".to_string(),
        ),
        Err(err) => (SkipReason::ReadError, err.to_string()),
    }
}
