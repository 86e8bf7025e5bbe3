//! Detectors: each reads a few paths from a filesystem and tells what it
//! found. They are independent and run in parallel on one volume.

pub mod apk;
pub mod dpkg;
mod error_log;
pub mod os_release;
pub mod rpm;

use crate::fs::{Filesystem, FsError};

pub use apk::ApkDetector;
pub use dpkg::DpkgDetector;
pub use error_log::MAX_ERRORS_PER_FILE;
pub use os_release::OsReleaseDetector;
pub use rpm::RpmDetector;

/// The operating system a volume holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OsInfo {
    /// `ID` from os-release (`debian`, `amzn`, `rhel`, `alpine`, …).
    pub id: Option<String>,
    /// `VERSION_ID` from os-release.
    pub version_id: Option<String>,
    /// `NAME` from os-release.
    pub name: Option<String>,
    /// `PRETTY_NAME` from os-release.
    pub pretty_name: Option<String>,
}

/// Which package manager recorded a package.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    /// dpkg (Debian, Ubuntu).
    Deb,
    /// rpm (RHEL, Amazon Linux, Fedora, SUSE).
    Rpm,
    /// apk (Alpine).
    Apk,
}

/// One installed package, its version written as its package manager writes it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Version: dpkg's `Version` as is; rpm `[EPOCH:]VERSION-RELEASE`; apk's `V:`.
    pub version: String,
    /// Architecture (`amd64`, `x86_64`, `noarch`, …), where recorded.
    pub arch: Option<String>,
    /// The package manager.
    pub format: PackageFormat,
    /// Source package (dpkg `Source`, rpm `SOURCERPM`, apk `o:`), where known.
    pub source: Option<String>,
}

/// What one detector found on one volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    /// The OS, if this detector identifies one.
    pub os: Option<OsInfo>,
    /// Installed packages.
    pub packages: Vec<Package>,
    /// Problems that did not stop the detector (one bad record of many),
    /// each naming what and where.
    pub errors: Vec<String>,
}

/// Why a detector could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Reading from the filesystem failed.
    #[error("{detector}: {source}")]
    Fs {
        /// The detector's name.
        detector: &'static str,
        /// What the filesystem reported.
        source: FsError,
    },
    /// A database or file could not be parsed.
    #[error("{detector}: {path}: {detail}")]
    Parse {
        /// The detector's name.
        detector: &'static str,
        /// The file in the scanned filesystem.
        path: String,
        /// What is wrong and where in the file.
        detail: String,
    },
}

/// Reads a few paths from a filesystem and returns findings.
pub trait Detector: Sync {
    /// Short stable name (`os-release`, `dpkg`, …), used in logs and errors.
    fn name(&self) -> &'static str;

    /// Look at `fs`. A volume without this detector's files is
    /// `Ok(Findings::default())`, not an error.
    ///
    /// # Errors
    /// [`DetectError`] when the files exist but cannot be read or parsed.
    fn detect(&self, fs: &dyn Filesystem) -> Result<Findings, DetectError>;
}

/// Every detector, in the order their findings are merged.
pub static DETECTORS: &[&dyn Detector] = &[
    &OsReleaseDetector,
    &DpkgDetector,
    &RpmDetector,
    &ApkDetector,
];
