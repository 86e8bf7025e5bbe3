//! Running the real tools the tests build images with and take ground truth
//! from (`mkfs.ext4`, `sgdisk`, `sfdisk`, `dpkg-query`, `rpm`, …).
//!
//! A missing tool is an error naming the Debian package that provides it,
//! never a skipped test: `scripts/test` installs them all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Every tool the kit runs, and the Debian package `scripts/test` installs it from.
const PACKAGES: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("mkfs.vfat", "dosfstools"),
    ("rpm", "rpm"),
    ("rpmbuild", "rpm"),
    ("xfs_io", "xfsprogs"),
    ("mksquashfs", "squashfs-tools"),
    ("dpkg-query", "dpkg"),
    ("mkswap", "util-linux"),
    ("blkid", "util-linux"),
    ("prlimit", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("sha256sum", "coreutils"),
    ("dd", "coreutils"),
    ("cp", "coreutils"),
    ("sync", "coreutils"),
    ("bash", "bash"),
];

/// Directories searched after `PATH`: a non-root `PATH` often lacks the
/// sbin directories where `mkfs.*`, `sgdisk` and `debugfs` live.
const SBIN: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The path of tool `name`.
///
/// # Errors
/// When it is not installed, naming the package to install.
pub fn find(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(SBIN.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let package = PACKAGES
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or("?", |(_, package)| package);
    bail!(
        "required tool `{name}` is not installed (Debian package `{package}`); \
         run scripts/test, which installs every tool the tests need"
    )
}

/// A [`Command`] for tool `name`.
///
/// # Errors
/// When the tool is not installed.
pub fn tool(name: &str) -> Result<Command> {
    Ok(Command::new(find(name)?))
}

/// A command line for messages: program and arguments.
pub fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Run `cmd` with no input and require exit status 0.
///
/// # Errors
/// When it cannot start or fails; the error carries its output.
pub fn run_output(cmd: &mut Command) -> Result<Output> {
    run_allowing(cmd, &[0])
}

/// Run `cmd` with no input and return its standard output as text.
///
/// # Errors
/// As [`run_output`].
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = run_output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `cmd` with no input, accepting any exit code in `codes`.
///
/// # Errors
/// When it cannot start, is killed, or exits with another code.
pub fn run_allowing(cmd: &mut Command, codes: &[i32]) -> Result<Output> {
    let described = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{described}`"))?;
    check(&described, out, codes)
}

/// Run `cmd` with `input` on its standard input; require exit status 0.
///
/// # Errors
/// When it cannot start or fails; the error carries its output.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String> {
    let described = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{described}`"))?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{described}`"))?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("stdin writer for `{described}` panicked"))?
        .with_context(|| format!("writing the input of `{described}`"))?;
    let out = check(&described, out, &[0])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(described: &str, out: Output, codes: &[i32]) -> Result<Output> {
    match out.status.code() {
        Some(code) if codes.contains(&code) => Ok(out),
        _ => bail!(
            "`{described}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `sha256sum PATH`: the hex digest.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256(path: &Path) -> Result<String> {
    let out = run(tool("sha256sum")?.arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum printed nothing for {}", path.display()))
}

/// Copy `from` to `to` keeping holes (images are sparse files).
///
/// # Errors
/// When `cp` fails.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    run(tool("cp")?.arg("--sparse=always").arg(from).arg(to))?;
    Ok(())
}
