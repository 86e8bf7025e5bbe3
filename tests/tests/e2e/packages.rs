//! Bare filesystems (no partition table) holding other package managers'
//! databases: apk (Alpine) and rpm with an sqlite rpmdb.

use anyhow::{Context, Result, ensure};
use e2e::image::{self, MIB};
use e2e::{run, tree, truth, workdir};
use worker::detect::PackageFormat;

#[test]
fn alpine_root_on_bare_ext4_reports_exactly_the_apk_database() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    let expected = tree::alpine_root(&root)?;
    let img = image::bare_ext4(dir.path(), "alpine.img", &root, 32 * MIB)?;

    let outcome = run::Run::scan_json(&img).run()?;
    let report = outcome.report()?;
    let json = outcome.json()?;

    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    ensure!(
        json["volumes"][0]["partition"].is_null(),
        "a disk without a table has `partition: null`, got {}",
        json["volumes"][0]["partition"]
    );
    let volume = &report.volumes[0];
    ensure!(
        volume.filesystem.as_ref().map(|f| f.fs_type.as_str()) == Some("ext4"),
        "filesystem: {:?}",
        volume.filesystem
    );
    let os = truth::os_info(tree::ALPINE_OS_RELEASE);
    ensure!(
        volume.os.as_ref() == Some(&os),
        "os {:?}, expected {os:?}",
        volume.os
    );
    let mut actual = volume.packages.clone();
    actual.sort();
    ensure!(
        actual == expected,
        "apk packages (name, version, arch, origin as source) differ:\nreport: {actual:#?}\nwritten: {expected:#?}"
    );
    ensure!(volume.errors.is_empty(), "errors: {:?}", volume.errors);
    Ok(())
}

#[test]
fn rpm_root_on_bare_ext4_matches_rpm_qa() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::rpm_root(&root)?;
    let expected = truth::rpm_qa(&root)?;
    ensure!(
        expected.iter().any(|(_, version, _)| version.contains(':'))
            && expected
                .iter()
                .any(|(_, version, _)| !version.contains(':')),
        "the rpm fixture needs packages with and without an epoch to test both: {expected:?}"
    );
    let img = image::bare_ext4(dir.path(), "rpm.img", &root, 128 * MIB)?;

    let report = run::scan(&img)?;

    ensure!(
        report.volumes.len() == 1,
        "one volume: {:#?}",
        report.volumes
    );
    let volume = &report.volumes[0];
    ensure!(volume.partition.is_none(), "no table, no partition");
    let actual = truth::reported(volume, PackageFormat::Rpm);
    ensure!(
        actual == expected,
        "rpm packages differ from `rpm -qa` (epoch shown only when present): {}",
        truth::set_diff(&expected, &actual)
    );
    let others = volume
        .packages
        .iter()
        .find(|p| p.format != PackageFormat::Rpm);
    ensure!(
        others.is_none(),
        "non-rpm package on an rpm root: {others:?}"
    );
    ensure!(volume.errors.is_empty(), "errors: {:?}", volume.errors);
    let _ = volume.filesystem.as_ref().context("no filesystem")?;
    Ok(())
}
