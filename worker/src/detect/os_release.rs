//! PLACEHOLDER: the os-release detector.

use super::{DetectError, Detector, Findings};
use crate::fs::Filesystem;

/// The os-release detector.
pub struct OsReleaseDetector;

impl Detector for OsReleaseDetector {
    fn name(&self) -> &'static str {
        "os-release"
    }

    fn detect(&self, _fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        Ok(Findings::default())
    }
}
