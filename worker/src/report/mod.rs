//! The scan report: one versioned serde model, written as JSON by default, as
//! a table on a terminal, or as a CycloneDX SBOM on request.
//!
//! Field names are a public contract (`schema_version` 1); add fields, never
//! rename or remove them without raising the version.

pub mod cyclonedx;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::block::RemoteStats;
use crate::detect::{OsInfo, Package};

/// The report's schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// What a scan of one target found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What was scanned (a path, device or snapshot id).
    pub target: String,
    /// Size of the target in bytes.
    pub target_size: u64,
    /// One per partition or bare filesystem, in disk order.
    pub volumes: Vec<VolumeReport>,
    /// Problems with the target as a whole that did not stop the scan
    /// (a damaged partition table that was read from its backup, …).
    pub errors: Vec<String>,
    /// What the scan cost.
    pub stats: Stats,
}

/// One partition or bare filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    /// The partition, or `None` for a disk with no table.
    pub partition: Option<PartitionInfo>,
    /// The filesystem found by probing its content, or `None`.
    pub filesystem: Option<FilesystemInfo>,
    /// The operating system, when this volume holds one.
    pub os: Option<OsInfo>,
    /// Installed packages, sorted by format, name, version and architecture.
    pub packages: Vec<Package>,
    /// Why the volume was not scanned, or `None` when it was.
    pub skipped: Option<Skipped>,
    /// Problems met while scanning, each naming what failed and where.
    pub errors: Vec<String>,
    /// What the filesystem reader found worth knowing that is no error: a
    /// dirty log replayed in memory, or one that could not be (results may
    /// then be stale).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// `gpt` or `mbr`.
    pub scheme: String,
    /// The kernel's partition number (logical MBR partitions start at 5).
    pub number: u32,
    /// Byte offset.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// GPT type GUID or MBR type byte (`0x83`).
    #[serde(rename = "type")]
    pub type_id: String,
    /// GPT partition name, where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A filesystem found by its magic numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemInfo {
    /// `ext4`, `ext3`, `ext2`, `xfs`, `vfat`, …
    #[serde(rename = "type")]
    pub fs_type: String,
    /// UUID as `blkid` shows it.
    pub uuid: Option<String>,
    /// Volume label.
    pub label: Option<String>,
}

/// Why a volume was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// A stable machine-readable reason.
    pub reason: SkipReason,
    /// Details for a person: the feature, the structure and its offset, …
    pub detail: String,
}

/// The stable reasons a volume is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Nothing recognisable: all zeros, or an unknown format.
    Empty,
    /// An unknown format that is not all zeros.
    UnknownFilesystem,
    /// A known filesystem this scanner does not read yet.
    UnsupportedFilesystem,
    /// A known filesystem using a feature this scanner does not read.
    UnsupportedFeature,
    /// An encrypted container (LUKS, BitLocker).
    Encrypted,
    /// Swap space: nothing to inventory.
    Swap,
    /// A volume manager container (LVM2) whose volumes are not read yet.
    VolumeManager,
    /// The filesystem's metadata is damaged beyond reading.
    Corrupt,
    /// The volume could not be read.
    ReadError,
}

/// What the scan cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Bytes actually read from the target.
    pub bytes_read: u64,
    /// Wall time of the scan in milliseconds.
    pub duration_ms: u64,
    /// For a snapshot read through the EBS direct APIs: `blocks_allocated`,
    /// `blocks_fetched`, `api_calls`, `retries`, `cache_hits` (absent for
    /// local targets).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStats>,
}
