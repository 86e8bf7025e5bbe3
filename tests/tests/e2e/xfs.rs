//! XFS end to end: the `worker` binary on XFS images filled the way an
//! instance fills its disk (through the kernel), against the real tools.

use anyhow::{Result, ensure};
use e2e::image::{self, MIB};
use e2e::mount::{LoopMount, mounts_allowed};
use e2e::run::scan;
use e2e::tools::{run, tool};
use e2e::{check, tree, workdir};

#[test]
fn debian_tree_copied_onto_xfs_lists_what_dpkg_query_lists() -> Result<()> {
    if !mounts_allowed() {
        eprintln!("SCANNER_NO_MOUNT=1: filling an XFS image needs a read-write kernel mount");
        return Ok(());
    }
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let img = dir.path().join("debian-xfs.img");
    image::sparse(&img, 320 * MIB)?;
    run(tool("mkfs.xfs")?.args(["-q", "-f"]).arg(&img))?;
    let mount = LoopMount::new(&img, &dir.path().join("mnt"), "rw")?;
    run(tool("cp")?.arg("-a").arg(root.join(".")).arg(mount.path()))?;
    mount.unmount()?;

    let report = scan(&img)?;
    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    let volume = &report.volumes[0];
    ensure!(
        volume.notes.is_empty(),
        "a cleanly unmounted XFS has nothing to replay: {:?}",
        volume.notes
    );
    check::debian_volume_on(
        "xfs",
        volume,
        &root.join("var/lib/dpkg"),
        &tree::host_os_release()?,
    )
}
