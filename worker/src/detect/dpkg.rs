//! PLACEHOLDER: the dpkg detector.

use super::{DetectError, Detector, Findings};
use crate::fs::Filesystem;

/// The dpkg detector.
pub struct DpkgDetector;

impl Detector for DpkgDetector {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn detect(&self, _fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        Ok(Findings::default())
    }
}
