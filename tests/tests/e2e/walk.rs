//! `worker walk`: a full read of every directory, counted, against the
//! kernel's view of the same image, and bounded on directories that contain
//! themselves.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::image::{self, MIB};
use e2e::mount::{LoopMount, mounts_allowed};
use e2e::run::{HOSTILE_TIMEOUT, Run};
use e2e::tools::{run, tool};
use e2e::{tree, workdir};

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

#[test]
fn walk_of_directories_linked_into_themselves_ends() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let img = image::bare_ext4(dir.path(), "loops.img", &root, 64 * MIB)?;
    // Two links back up the tree: a naive walk would visit 2^depth paths.
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
    let walk = walk_counts(&img, HOSTILE_TIMEOUT)?;
    ensure!(
        walk["truncated"] == true,
        "the loop was not noticed: {walk:#}"
    );
    let errors = walk["errors"].to_string();
    ensure!(
        errors.contains("over the limit"),
        "no error says why the walk stopped: {walk:#}"
    );
    Ok(())
}
