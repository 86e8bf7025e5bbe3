//! The agentless scanner's library: read a disk image, block device or
//! snapshot, find its partitions and filesystems, parse them in user space,
//! run the detectors in parallel and produce one report.
//!
//! Data flows one way, and the modules follow it:
//! [`block`] → [`partition`] → [`fs`] → [`detect`] → [`report`], tied
//! together by [`scan()`]. [`daemon`] is `worker run`: scan jobs from SQS.
#![deny(missing_docs)]

pub mod block;
pub mod daemon;
pub mod detect;
pub mod fs;
pub mod partition;
pub mod report;
mod scan;
pub mod upload;
pub mod walk;

pub use scan::{
    DEFAULT_MAX_FILE_SIZE, Region, ScanError, ScanOptions, ScanProgress, detect_mounted, regions,
    scan,
};
