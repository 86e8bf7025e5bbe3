//! PLACEHOLDER: the rpm detector.

use super::{DetectError, Detector, Findings};
use crate::fs::Filesystem;

/// The rpm detector.
pub struct RpmDetector;

impl Detector for RpmDetector {
    fn name(&self) -> &'static str {
        "rpm"
    }

    fn detect(&self, _fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        Ok(Findings::default())
    }
}
