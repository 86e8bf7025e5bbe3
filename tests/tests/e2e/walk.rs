//! `worker walk`: a full read of every directory, counted, against the
//! kernel's view of the same image, and bounded on directories that contain
//! themselves.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::image::{self, MIB};
use e2e::mount::{LoopMount, dirty_snapshot, mounts_allowed, replace_durably};
use e2e::run::{HOSTILE_TIMEOUT, Run};
use e2e::tools::{run, tool};
use e2e::{corrupt, tree, workdir};

/// The walk counts of the only volume of a `worker walk` run.
fn walk_counts(image: &Path, timeout: Duration) -> Result<serde_json::Value> {
    let outcome = Run::new([std::ffi::OsStr::new("walk"), image.as_os_str()])
        .timeout(timeout)
        .run()?;
    ensure!(
        outcome.code == Some(0) && !outcome.panicked(),
        "expected exit 0: {}",
        outcome.summary()
    );
    let output = outcome.json()?;
    let walk = output["volumes"][0]["walk"].clone();
    ensure!(walk.is_object(), "no walk in {output:#}");
    Ok(walk)
}

/// `find MOUNT -mindepth 1 -type T | wc -l` as a number.
fn find_count(mount: &Path, kind: &str) -> Result<u64> {
    let listing = run(tool("find")?
        .arg(mount)
        .args(["-mindepth", "1", "-type", kind]))?;
    Ok(listing.lines().count() as u64)
}

#[test]
fn walk_counts_what_find_sees_on_a_kernel_mount() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    // Depth, a wide directory (indexed as an htree below), links of each kind.
    let mut nested = root.join("deep");
    for depth in 0..12 {
        nested = nested.join(format!("d{depth}"));
        tree::fill(&nested, "f", 3)?;
    }
    tree::fill(&root.join("wide"), "entry", 3000)?;
    tree::symlink("../usr/lib/os-release", &root.join("wide/relative"))?;
    tree::symlink("/etc", &root.join("wide/absolute"))?;
    tree::symlink("loop", &root.join("wide/loop"))?;
    let img = image::bare_ext4(dir.path(), "walk.img", &root, 64 * MIB)?;
    image::index_directories(&img)?;
    ensure!(image::is_htree(&img, "/wide")?, "/wide is not an htree");

    let walk = walk_counts(&img, Duration::from_secs(60))?;
    ensure!(walk["truncated"] == false, "walk truncated: {walk:#}");
    ensure!(
        walk["errors"].as_array().is_some_and(Vec::is_empty),
        "walk errors: {walk:#}"
    );
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: counts not compared with a kernel mount");
        return Ok(());
    }
    let mount = LoopMount::new(&img, &dir.path().join("mnt"), "ro,noload")?;
    // The root itself counts as a directory in the walk; find -mindepth 1
    // leaves it out, and lost+found is a directory like any other.
    let expected = [
        ("directories", find_count(mount.path(), "d")? + 1),
        ("files", find_count(mount.path(), "f")?),
        ("symlinks", find_count(mount.path(), "l")?),
    ];
    mount.unmount()?;
    for (field, want) in expected {
        let got = walk[field]
            .as_u64()
            .with_context(|| format!("no {field} in {walk:#}"))?;
        ensure!(got == want, "{field}: walk counted {got}, find {want}");
    }
    Ok(())
}

/// A Debian-like bare ext4 image in `dir` with directories hard-linked into
/// themselves: two links back up from /etc and one from /var to the root,
/// so a naive walk would visit 2^depth paths.
fn looping_image(dir: &Path) -> Result<std::path::PathBuf> {
    let root = dir.join("root");
    tree::debian_root(&root)?;
    let img = image::bare_ext4(dir, "loops.img", &root, 64 * MIB)?;
    for (target, link) in [
        ("/etc", "/etc/self"),
        ("/etc", "/etc/again"),
        ("/", "/var/up"),
    ] {
        run(tool("debugfs")?
            .arg("-w")
            .arg("-R")
            .arg(format!("link {target} {link}"))
            .arg(&img))?;
    }
    Ok(img)
}

#[test]
fn walk_by_inode_enters_each_directory_once() -> Result<()> {
    let dir = workdir()?;
    let img = looping_image(dir.path())?;
    let walk = walk_counts(&img, HOSTILE_TIMEOUT)?;
    ensure!(walk["method"] == "inode", "not listed by inode: {walk:#}");
    ensure!(
        walk["truncated"] == false,
        "a clean walk was cut short: {walk:#}"
    );
    let errors = walk["errors"].as_array().context("no errors array")?;
    ensure!(
        errors.len() == 3
            && errors
                .iter()
                .all(|e| e.as_str().is_some_and(|e| e.contains("already walked"))),
        "expected the three links reported and not entered: {walk:#}"
    );
    Ok(())
}

#[test]
fn walk_through_a_journal_to_replay_is_bounded_on_loops() -> Result<()> {
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: a dirty journal needs a read-write kernel mount to make");
        return Ok(());
    }
    let dir = workdir()?;
    let live = looping_image(dir.path())?;
    // A journal that needs recovery sends the walk through ext4-view (which
    // replays it) and its path-based listing, where only the cap on
    // directories (the inodes in use) can end the loop.
    let img = dir.path().join("dirty.img");
    dirty_snapshot(&live, &dir.path().join("mnt"), &img, |mnt| {
        replace_durably(&mnt.join("etc/hostname"), "dirty\n")
    })?;
    let walk = walk_counts(&img, HOSTILE_TIMEOUT)?;
    ensure!(walk["method"] == "path", "not listed by path: {walk:#}");
    ensure!(
        walk["truncated"] == true,
        "the loop was not noticed: {walk:#}"
    );
    ensure!(
        walk["errors"].to_string().contains("over the limit"),
        "no error says why the walk stopped: {walk:#}"
    );
    Ok(())
}

#[test]
fn walk_of_damaged_directories_ends_cleanly() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    tree::fill(&root.join("wide"), "entry", 2000)?;
    let img = image::bare_ext4(dir.path(), "damaged.img", &root, 64 * MIB)?;
    image::index_directories(&img)?;
    let block_size = corrupt::ext4_layout(&img)?.block_size;
    let mut damages = Vec::new();
    for path in ["/", "/etc", "/wide"] {
        let inode = corrupt::inode_offset(&img, path, block_size)?;
        // i_mode, i_size_lo, i_flags, the extent header and first extent.
        for (field, offset, len) in [
            ("i_mode", 0x00, 2),
            ("i_size_lo", 0x04, 4),
            ("i_flags", 0x20, 4),
            ("eh_magic", 0x28, 2),
            ("eh_entries", 0x2A, 2),
            ("eh_depth", 0x2E, 2),
            ("ee_len", 0x38, 2),
            ("ee_start_lo", 0x3C, 4),
        ] {
            damages.push((format!("{path} {field}"), inode + offset, len));
        }
        for block in corrupt::file_blocks(&img, path)?.into_iter().take(2) {
            for (field, offset, len) in [("inode", 0, 4), ("rec_len", 4, 2), ("name_len", 6, 1)] {
                damages.push((
                    format!("{path} block {block} {field}"),
                    block * block_size + offset,
                    len,
                ));
            }
        }
    }
    let mut failures = Vec::new();
    for (label, offset, len) in damages {
        let patch = corrupt::inverted(&img, offset, len)?;
        let outcome = corrupt::with_patch(&img, offset, &patch, || {
            Run::new([std::ffi::OsStr::new("walk"), img.as_os_str()])
                .timeout(HOSTILE_TIMEOUT)
                .run()
        })??;
        let clean = !outcome.panicked()
            && matches!(outcome.code, Some(0 | 1))
            && (outcome.code != Some(0) || outcome.json().is_ok());
        if !clean {
            failures.push(format!("{label}: {}", outcome.summary()));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} damaged walks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
