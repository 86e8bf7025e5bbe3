//! The command line: exit codes (0 report produced, 1 target unreadable,
//! 2 usage error), `--output`, `--format table`, several targets.

use anyhow::{Result, ensure};
use e2e::image::{self, MIB};
use e2e::run::Outcome;
use e2e::run::{parse_reports, run_worker};
use e2e::{tree, truth, workdir};
use std::path::{Path, PathBuf};

/// A Debian-like root tree under `dir` and a 64 MiB bare ext4 image of it:
/// `(root, image)`. The root's dpkg database is the ground truth.
fn debian_disk(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = dir.join("root");
    tree::debian_root(&root)?;
    let img = image::bare_ext4(dir, "debian.img", &root, 64 * MIB)?;
    Ok((root, img))
}

/// `worker scan IMG --format json --output OUT`.
fn scan_json_to(img: &Path, out: &Path) -> Result<Outcome> {
    run_worker([
        "scan".as_ref(),
        img.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ])
}

#[test]
fn usage_errors_exit_2() -> Result<()> {
    let cases: [&[&str]; 5] = [
        &[],
        &["scan"],
        &["frobnicate", "disk.img"],
        &["scan", "--format", "yaml", "disk.img"],
        &["scan", "--no-such-flag", "disk.img"],
    ];
    for args in cases {
        let outcome = run_worker(args)?;
        ensure!(
            outcome.code == Some(2) && !outcome.stderr.is_empty() && !outcome.panicked(),
            "usage error {args:?} should exit 2 with a message: {}",
            outcome.summary()
        );
    }
    for args in [["--help"], ["--version"]] {
        let outcome = run_worker(args)?;
        ensure!(
            outcome.code == Some(0) && !outcome.stdout.is_empty(),
            "{args:?} should print to stdout and exit 0: {}",
            outcome.summary()
        );
    }
    Ok(())
}

#[test]
fn a_missing_or_unreadable_target_exits_1_naming_it() -> Result<()> {
    let dir = workdir()?;
    let missing = dir.path().join("no-such-disk.img");
    let outcome = run_worker(["scan".as_ref(), missing.as_os_str()])?;
    ensure!(
        outcome.code == Some(1) && outcome.stderr.contains("no-such-disk.img"),
        "a missing file should exit 1 naming it: {}",
        outcome.summary()
    );
    let outcome = run_worker(["scan".as_ref(), dir.path().as_os_str()])?;
    ensure!(
        outcome.code == Some(1) && !outcome.panicked(),
        "a directory is not a disk: {}",
        outcome.summary()
    );

    // One good target and one missing: the missing one still fails the run.
    let (_, img) = debian_disk(dir.path())?;
    let outcome = run_worker(["scan".as_ref(), img.as_os_str(), missing.as_os_str()])?;
    ensure!(
        outcome.code == Some(1) && outcome.stderr.contains("no-such-disk.img"),
        "a missing target among good ones exits 1 naming it: {}",
        outcome.summary()
    );
    Ok(())
}

#[test]
fn output_file_gets_the_report_and_stdout_stays_empty() -> Result<()> {
    let dir = workdir()?;
    let (_, img) = debian_disk(dir.path())?;
    let out = dir.path().join("report.json");

    let outcome = scan_json_to(&img, &out)?;
    ensure!(outcome.code == Some(0), "{}", outcome.summary());
    ensure!(
        outcome.stdout.is_empty(),
        "stdout should be empty: {}",
        outcome.summary()
    );
    let reports = parse_reports(&std::fs::read_to_string(&out)?)?;
    ensure!(
        reports.len() == 1 && reports[0].target == img.display().to_string(),
        "the file should hold one report for {}: {reports:#?}",
        img.display()
    );
    Ok(())
}

#[test]
fn several_targets_give_an_array_of_reports_in_order() -> Result<()> {
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let first = image::bare_ext4(dir.path(), "first.img", &root, 32 * MIB)?;
    let second = image::bare_ext4(dir.path(), "second.img", &root, 48 * MIB)?;
    let outcome = run_worker([
        "scan".as_ref(),
        first.as_os_str(),
        second.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ])?;
    ensure!(outcome.code == Some(0), "{}", outcome.summary());
    ensure!(
        outcome.json()?.is_array(),
        "several targets give a JSON array"
    );
    let reports = parse_reports(&outcome.stdout)?;
    let targets: Vec<_> = reports
        .iter()
        .map(|r| (r.target.clone(), r.target_size))
        .collect();
    ensure!(
        targets
            == [
                (first.display().to_string(), 32 * MIB),
                (second.display().to_string(), 48 * MIB),
            ],
        "reports out of order or wrong: {targets:?}"
    );
    Ok(())
}

#[test]
fn table_format_prints_a_table_for_people() -> Result<()> {
    let dir = workdir()?;
    let (_, img) = debian_disk(dir.path())?;
    let outcome = run_worker([
        "scan".as_ref(),
        img.as_os_str(),
        "--format".as_ref(),
        "table".as_ref(),
    ])?;
    ensure!(outcome.code == Some(0), "{}", outcome.summary());
    let table = &outcome.stdout;
    ensure!(
        serde_json::from_str::<serde_json::Value>(table).is_err(),
        "--format table printed JSON"
    );
    let os = truth::os_info(&tree::host_os_release()?);
    let pretty = os.pretty_name.unwrap_or_default();
    for needle in [
        img.display().to_string(),
        "ext4".to_string(),
        pretty,
        "dpkg".to_string(),
    ] {
        ensure!(
            table.contains(&needle),
            "the table does not mention {needle:?}:\n{table}"
        );
    }
    ensure!(
        table.lines().any(|l| l.contains('│') || l.contains('|')),
        "no table rows:\n{table}"
    );
    Ok(())
}

#[test]
fn show_prints_a_saved_report_as_tables_with_at_most_n_packages() -> Result<()> {
    let dir = workdir()?;
    let (root, img) = debian_disk(dir.path())?;
    let saved = dir.path().join("report.json");
    let outcome = scan_json_to(&img, &saved)?;
    ensure!(outcome.code == Some(0), "{}", outcome.summary());
    let installed = truth::dpkg_query(&root.join("var/lib/dpkg"))?;
    ensure!(
        installed.len() > 3,
        "the tree has {} packages",
        installed.len()
    );

    let all = run_worker(["show".as_ref(), saved.as_os_str()])?;
    ensure!(all.code == Some(0), "{}", all.summary());
    for (name, version, _) in &installed {
        ensure!(
            all.stdout
                .lines()
                .any(|line| line.contains(&format!(" {name} ")) && line.contains(version.as_str())),
            "{name} {version} is not in the table:\n{}",
            all.stdout
        );
    }
    let few = run_worker([
        "show".as_ref(),
        "--packages".as_ref(),
        "2".as_ref(),
        saved.as_os_str(),
    ])?;
    ensure!(few.code == Some(0), "{}", few.summary());
    let more = format!("… and {} more", installed.len() - 2);
    ensure!(few.stdout.contains(&more), "no {more:?}:\n{}", few.stdout);

    // Not a report: exit 1 naming the file, and nothing half-printed.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"hello\": 1}")?;
    let bad = run_worker(["show".as_ref(), junk.as_os_str()])?;
    ensure!(
        bad.code == Some(1) && bad.stderr.contains("junk.json") && !bad.panicked(),
        "{}",
        bad.summary()
    );
    Ok(())
}
