//! Assertions shared by several tests: a report's volume against the
//! ground truth for the tree it was built from.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use worker::detect::PackageFormat;
use worker::report::{Report, VolumeReport};

use crate::truth;

/// A volume holding a Debian-like root: an ext4 filesystem that was
/// scanned without errors, the OS os-release `os_release` describes, and
/// exactly the deb packages `dpkg-query --admindir=ADMINDIR` counts as
/// present (as `(name, version, arch)` sets), and no other packages.
///
/// # Errors
/// Naming the first difference.
pub fn debian_volume(volume: &VolumeReport, admindir: &Path, os_release: &str) -> Result<()> {
    debian_volume_on("ext4", volume, admindir, os_release)
}

/// [`debian_volume`] on a filesystem of type `fs_type` (`ext4`, `xfs`, …).
///
/// # Errors
/// Naming the first difference.
pub fn debian_volume_on(
    fs_type: &str,
    volume: &VolumeReport,
    admindir: &Path,
    os_release: &str,
) -> Result<()> {
    let fs = volume
        .filesystem
        .as_ref()
        .with_context(|| format!("no filesystem found: {volume:#?}"))?;
    ensure!(
        fs.fs_type == fs_type,
        "filesystem type {:?}, expected {fs_type}",
        fs.fs_type
    );
    ensure!(
        volume.skipped.is_none(),
        "the root volume was skipped: {:?}",
        volume.skipped
    );
    let expected_os = truth::os_info(os_release);
    ensure!(
        volume.os.as_ref() == Some(&expected_os),
        "os: report says {:?}, os-release says {expected_os:?}",
        volume.os
    );
    let expected = truth::dpkg_query(admindir)?;
    let actual = truth::reported(volume, PackageFormat::Deb);
    ensure!(
        actual == expected,
        "deb packages differ from dpkg-query: {}",
        truth::set_diff(&expected, &actual)
    );
    let others: Vec<_> = volume
        .packages
        .iter()
        .filter(|p| p.format != PackageFormat::Deb)
        .take(5)
        .collect();
    ensure!(
        others.is_empty(),
        "non-deb packages on a Debian root: {others:?}"
    );
    ensure!(
        volume.errors.is_empty(),
        "errors on a clean Debian root: {:?}",
        volume.errors
    );
    Ok(())
}

/// `report` with its run-dependent fields (timing) cleared, to compare two
/// scans of the same image.
pub fn without_timing(report: &Report) -> Report {
    let mut report = report.clone();
    report.stats.duration_ms = 0;
    report
}
