//! Filesystem shapes a real root has and a naive reader trips on: more
//! than 10,000 files, hash-indexed (htree) directories on the paths the
//! detectors read, relative and absolute symlinks, and symlink loops.

use anyhow::{Context, Result, ensure};
use e2e::image::{self, MIB};
use e2e::run::{HOSTILE_TIMEOUT, Run};
use e2e::{check, tree, truth, workdir};

#[test]
fn htree_directories_symlinks_and_ten_thousand_files() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");

    // /etc/os-release -> ../usr/lib/os-release (relative), whatever the host does.
    let os_release = tree::host_os_release()?;
    tree::write(&root.join("usr/lib/os-release"), &os_release)?;
    tree::symlink("../usr/lib/os-release", &root.join("etc/os-release"))?;
    // /var/lib/dpkg/status -> /srv/e2e/dpkg/status (absolute): it must
    // resolve inside the image, never on the scanning host.
    let status = tree::dpkg_status()?;
    tree::write(&root.join("srv/e2e/dpkg/status"), &status)?;
    tree::symlink("/srv/e2e/dpkg/status", &root.join("var/lib/dpkg/status"))?;
    // Big directories on the detectors' paths, and more elsewhere.
    let mut files = 0;
    files += tree::fill(&root.join("etc"), "e2e-fill-", 5000)?;
    files += tree::fill(&root.join("var/lib/dpkg"), "e2e-info-", 5000)?;
    files += tree::fill(&root.join("usr/lib"), "e2e-lib-", 1000)?;
    for sub in 0..10 {
        files += tree::fill(&root.join(format!("data/d{sub:02}")), "f", 100)?;
    }
    // Symlinks no detector needs, but a walker would meet.
    tree::symlink("../etc/hostname", &root.join("data/rel"))?;
    tree::symlink("/etc/hostname", &root.join("data/abs"))?;
    tree::symlink("loop-b", &root.join("data/loop-a"))?;
    tree::symlink("loop-a", &root.join("data/loop-b"))?;
    tree::symlink("self", &root.join("data/self"))?;
    tree::symlink("..", &root.join("data/up"))?;
    tree::write(&root.join("etc/hostname"), "e2e-shapes\n")?;
    ensure!(files >= 10_000, "only {files} files");

    let img = dir.path().join("shapes.img");
    image::mkfs_ext4(&img, 128 * MIB, Some(&root), &["-N", "32768"])?;
    image::index_directories(&img)?;
    for big in ["/etc", "/var/lib/dpkg", "/usr/lib"] {
        ensure!(
            image::is_htree(&img, big)?,
            "debugfs does not see {big} as an htree directory; the test would not test htrees"
        );
    }
    let header = truth::dumpe2fs_header(&img)?;
    let count = |key: &str| -> Result<u64> {
        header
            .get(key)
            .with_context(|| format!("dumpe2fs: no {key}"))?
            .parse()
            .with_context(|| format!("dumpe2fs: {key}"))
    };
    let used = count("Inode count")? - count("Free inodes")?;
    ensure!(used >= 10_000, "only {used} inodes in use");

    let outcome = Run::scan_json(&img).timeout(HOSTILE_TIMEOUT).run()?;
    let report = outcome.report()?;
    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    let admindir = tree::admindir(&dir.path().join("admin"), &status)?;
    check::debian_volume(&report.volumes[0], &admindir, &os_release)
        .with_context(|| format!("scan took {:?}", outcome.elapsed))
}

#[test]
fn symlink_loops_on_detector_paths_end_cleanly() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::symlink("os-release.loop", &root.join("etc/os-release"))?;
    tree::symlink("/etc/os-release", &root.join("etc/os-release.loop"))?;
    tree::symlink("/usr/lib/os-release", &root.join("usr/lib/os-release"))?;
    tree::symlink("status", &root.join("var/lib/dpkg/status"))?;
    tree::symlink(
        "../../../lib/apk/db/installed",
        &root.join("lib/apk/db/installed"),
    )?;
    tree::symlink("rpm", &root.join("var/lib/rpm"))?;
    tree::write(&root.join("etc/hostname"), "e2e-loops\n")?;
    let img = image::bare_ext4(dir.path(), "loops.img", &root, 32 * MIB)?;

    let outcome = Run::scan_json(&img).timeout(HOSTILE_TIMEOUT).run()?;
    let report = outcome.report()?;
    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    let volume = &report.volumes[0];
    ensure!(
        volume.skipped.is_none(),
        "a readable filesystem with symlink loops is scanned, not skipped: {volume:#?}"
    );
    ensure!(
        volume.os.is_none() && volume.packages.is_empty(),
        "every detector path is a loop: an error or absence is right, a finding is not: {volume:#?}"
    );
    Ok(())
}
