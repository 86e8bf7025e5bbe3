//! PLACEHOLDER: the apk detector.

use super::{DetectError, Detector, Findings};
use crate::fs::Filesystem;

/// The apk detector.
pub struct ApkDetector;

impl Detector for ApkDetector {
    fn name(&self) -> &'static str {
        "apk"
    }

    fn detect(&self, _fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        Ok(Findings::default())
    }
}
