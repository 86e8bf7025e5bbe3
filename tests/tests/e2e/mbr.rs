//! An MBR disk with an extended partition: two primaries (FAT, swap) and
//! two logical partitions, the OS in the second logical one.

use anyhow::{Context, Result, ensure};
use e2e::image;
use e2e::{check, run, tree, workdir};
use worker::report::SkipReason;

#[test]
fn mbr_logical_partitions_are_numbered_from_5_and_hold_the_os() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let mbr = image::mbr_disk(dir.path(), &root)?;

    let report = run::scan(&mbr.disk)?;

    // Whether the extended container itself is listed is the scanner's
    // choice; every other partition must match sfdisk exactly, in order.
    let reported: Vec<_> = report
        .volumes
        .iter()
        .filter_map(|v| v.partition.as_ref())
        .filter(|p| !matches!(p.type_id.as_str(), "0x05" | "0x0f" | "0x85"))
        .map(|p| {
            (
                p.scheme.clone(),
                p.number,
                p.start,
                p.size,
                p.type_id.clone(),
            )
        })
        .collect();
    let expected: Vec<_> = mbr
        .table
        .partitions
        .iter()
        .filter(|p| !p.is_extended_container())
        .map(|p| {
            (
                "mbr".to_string(),
                p.number,
                p.start,
                p.size,
                p.type_id.clone(),
            )
        })
        .collect();
    ensure!(
        reported == expected,
        "partitions differ from sfdisk:\nreport: {reported:?}\nsfdisk: {expected:?}\n{report:#?}"
    );
    ensure!(
        report.volumes.len() == expected.len() || report.volumes.len() == expected.len() + 1,
        "unexpected volumes: {:#?}",
        report.volumes
    );

    let volume = |number: u32| {
        report
            .volumes
            .iter()
            .find(|v| v.partition.as_ref().is_some_and(|p| p.number == number))
            .with_context(|| format!("no volume for partition {number}"))
    };

    let fat = volume(mbr.fat.number)?;
    ensure!(
        fat.filesystem.as_ref().map(|f| f.fs_type.as_str()) == Some("vfat"),
        "partition 1 should be vfat: {fat:#?}"
    );
    let swap = volume(mbr.swap.number)?;
    ensure!(
        swap.skipped.as_ref().map(|s| s.reason) == Some(SkipReason::Swap),
        "partition 2 is swap and should be skipped as such: {swap:#?}"
    );
    let data = volume(mbr.data.number)?;
    ensure!(
        data.filesystem.as_ref().and_then(|f| f.label.as_deref()) == Some("e2e-data")
            && data.os.is_none()
            && data.packages.is_empty()
            && data.skipped.is_none(),
        "logical partition 5 is an ext4 data volume without an OS: {data:#?}"
    );

    let with_os: Vec<u32> = report
        .volumes
        .iter()
        .filter(|v| v.os.is_some())
        .filter_map(|v| v.partition.as_ref().map(|p| p.number))
        .collect();
    ensure!(
        with_os == [6],
        "the OS is in logical partition 6 only, report finds one on {with_os:?}"
    );
    check::debian_volume(
        volume(mbr.root.number)?,
        &root.join("var/lib/dpkg"),
        &e2e::tree::host_os_release()?,
    )
}
