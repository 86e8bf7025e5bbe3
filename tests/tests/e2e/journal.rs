//! A dirty journal, as in a crash-consistent snapshot of a running machine:
//! the last dpkg status update is committed to the journal but not yet
//! written to its home location. The scan must replay the journal in memory,
//! and must not write to the image.

use anyhow::{Context, Result, ensure};
use e2e::image::{self, MIB};
use e2e::mount::{LoopMount, dirty_snapshot, mounts_allowed, replace_durably};
use e2e::tools::{self, run, tool};
use e2e::{check, run as scan, tree, truth, workdir};

/// A status paragraph that exists only in the journal.
const JOURNAL_PACKAGE: &str = "Package: journal-test
Status: install ok installed
Priority: optional
Section: misc
Installed-Size: 1
Maintainer: e2e <e2e@example.invalid>
Architecture: all
Version: 2.0-1
Description: written after the last checkpoint
";

#[test]
fn dirty_journal_is_replayed_in_memory_and_the_image_is_untouched() -> Result<()> {
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: a dirty journal needs a read-write kernel mount to make");
        return Ok(());
    }
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let live = image::bare_ext4(dir.path(), "live.img", &root, 64 * MIB)?;

    // Update the status file the way dpkg does, in a crash-consistent
    // snapshot: drop the first package and add journal-test.
    let old_status = std::fs::read_to_string(root.join("var/lib/dpkg/status"))?;
    let (first, rest) = old_status
        .split_once("\n\n")
        .context("the status file has one paragraph only")?;
    let removed = first
        .lines()
        .find_map(|l| l.strip_prefix("Package: "))
        .context("first paragraph has no Package")?
        .to_string();
    let new_status = format!("{rest}\n{JOURNAL_PACKAGE}");

    let snapshot = dir.path().join("snapshot.img");
    dirty_snapshot(&live, &dir.path().join("mnt"), &snapshot, |mnt| {
        replace_durably(&mnt.join("var/lib/dpkg/status"), &new_status)
    })?;

    // Preconditions: the journal needs recovery, and without replay the
    // home location still has the old status.
    let features = truth::ext4_features(&snapshot)?;
    ensure!(
        features.contains("needs_recovery"),
        "the snapshot should need journal recovery; features: {features:?}"
    );
    let unreplayed = run(tool("debugfs")?
        .args(["-R", "cat /var/lib/dpkg/status"])
        .arg(&snapshot))?;
    ensure!(
        !unreplayed.contains("Package: journal-test"),
        "the update reached its home location before the snapshot; the test would not test replay"
    );

    // The kernel's replay of a copy is the truth.
    let replayed = dir.path().join("replayed.img");
    tools::copy_sparse(&snapshot, &replayed)?;
    let kernel = LoopMount::new(&replayed, &dir.path().join("kernel"), "rw")?;
    let kernel_status = std::fs::read_to_string(kernel.path().join("var/lib/dpkg/status"))?;
    kernel.unmount()?;
    ensure!(
        kernel_status == new_status,
        "the kernel's journal replay does not give the status written"
    );

    let before = tools::sha256(&snapshot)?;
    let report = scan::scan(&snapshot)?;
    let after = tools::sha256(&snapshot)?;
    ensure!(
        before == after,
        "the scan changed the image ({before} -> {after})"
    );

    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    let volume = &report.volumes[0];
    let names: Vec<&str> = volume.packages.iter().map(|p| p.name.as_str()).collect();
    ensure!(
        names.contains(&"journal-test") && !names.contains(&removed.as_str()),
        "the report shows the status before the journal's transactions (journal-test missing \
         or {removed} still present)"
    );
    let admindir = tree::admindir(&dir.path().join("admin"), &new_status)?;
    check::debian_volume(volume, &admindir, &tree::host_os_release()?)
}
