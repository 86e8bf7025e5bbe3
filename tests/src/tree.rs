//! Fixture trees: small root filesystems built in a temporary directory,
//! which [`crate::image`] turns into images with `mkfs.ext4 -d`.
//!
//! - a Debian-like root: this machine's os-release (the `/etc/os-release`
//!   symlink kept as a symlink) and its real dpkg status database, plus a few
//!   paragraphs in states dpkg does not count as installed;
//! - an Alpine-like root: `/etc/alpine-release`, os-release and an apk
//!   installed database written to the documented format;
//! - an rpm root, built by `tests/fixtures/build-rpm-root.sh` with rpmbuild.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use worker::detect::{Package, PackageFormat};

use crate::tools::{run, tool};

/// Create `path`'s parent directories and write `contents`.
///
/// # Errors
/// On I/O failure.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Create a symlink at `link` (and its parent directories) pointing at `target`.
///
/// # Errors
/// On I/O failure.
pub fn symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("symlinking {} -> {target}", link.display()))
}

/// Create `count` small files named `{prefix}{index:05}` in `dir`.
///
/// # Errors
/// On I/O failure.
pub fn fill(dir: &Path, prefix: &str, count: usize) -> Result<usize> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for index in 0..count {
        let path = dir.join(format!("{prefix}{index:05}"));
        fs::write(&path, format!("{index}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(count)
}

/// Paragraphs appended to the copied dpkg status: states dpkg-query lists
/// but does not count as installed (`config-files`, `not-installed`), one it
/// does (`half-configured`), and a foreign-architecture multi-arch package
/// with an epoch and a `Source` with its own version.
pub const EXTRA_DPKG_STATUS: &str = "
Package: e2e-removed
Status: deinstall ok config-files
Priority: optional
Section: misc
Maintainer: e2e <e2e@example.invalid>
Architecture: amd64
Version: 1.0-1
Conffiles:
 /etc/e2e-removed.conf 0123456789abcdef0123456789abcdef
Description: removed package whose configuration files remain

Package: e2e-purged
Status: purge ok not-installed
Priority: optional
Section: misc
Maintainer: e2e <e2e@example.invalid>
Architecture: amd64

Package: e2e-halfconf
Status: install reinstreq half-configured
Priority: optional
Section: misc
Maintainer: e2e <e2e@example.invalid>
Architecture: all
Version: 0.9~rc1-2
Description: package whose configuration failed

Package: e2e-multiarch
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 1
Maintainer: e2e <e2e@example.invalid>
Architecture: i386
Multi-Arch: same
Source: e2e-src (1:2.0-3)
Version: 1:2.0-3+b1
Description: multi-arch library of a foreign architecture
";

/// The dpkg status database of this machine plus [`EXTRA_DPKG_STATUS`].
///
/// # Errors
/// When this machine has no dpkg database.
pub fn dpkg_status() -> Result<String> {
    let mut status = fs::read_to_string("/var/lib/dpkg/status")
        .context("reading this machine's /var/lib/dpkg/status (the tests need a Debian host)")?;
    if !status.ends_with('\n') {
        status.push('\n');
    }
    status.push_str(EXTRA_DPKG_STATUS);
    Ok(status)
}

/// Copy this machine's os-release into `root`: `/usr/lib/os-release`, and
/// `/etc/os-release` as the same symlink when it is one, else as a copy.
///
/// # Errors
/// On I/O failure.
pub fn copy_os_release(root: &Path) -> Result<()> {
    let usr = Path::new("/usr/lib/os-release");
    if usr.is_file() {
        write(&root.join("usr/lib/os-release"), fs::read(usr)?)?;
    }
    let etc = Path::new("/etc/os-release");
    let meta = fs::symlink_metadata(etc).context("this machine has no /etc/os-release")?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(etc)?;
        symlink(&target.to_string_lossy(), &root.join("etc/os-release"))
    } else {
        write(&root.join("etc/os-release"), fs::read(etc)?)
    }
}

/// This machine's os-release text (following the symlink), which a scan of
/// a Debian-like root must report.
///
/// # Errors
/// When it cannot be read.
pub fn host_os_release() -> Result<String> {
    fs::read_to_string("/etc/os-release").context("reading /etc/os-release")
}

/// Build a Debian-like root at `root`: os-release as on this machine and
/// [`dpkg_status`] at `/var/lib/dpkg/status`.
///
/// # Errors
/// On I/O failure.
pub fn debian_root(root: &Path) -> Result<()> {
    copy_os_release(root)?;
    write(&root.join("var/lib/dpkg/status"), dpkg_status()?)?;
    fs::create_dir_all(root.join("var/lib/dpkg/info"))?;
    write(&root.join("etc/hostname"), "e2e-debian\n")?;
    Ok(())
}

/// A dpkg admin directory holding only `status`, for `dpkg-query
/// --admindir` when the status in the image is not a plain file on the host
/// (behind an absolute symlink, or modified inside a mounted image).
///
/// # Errors
/// On I/O failure.
pub fn admindir(dir: &Path, status: &str) -> Result<PathBuf> {
    write(&dir.join("status"), status)?;
    Ok(dir.to_path_buf())
}

/// os-release of the Alpine-like root.
pub const ALPINE_OS_RELEASE: &str = "NAME=\"Alpine Linux\"
ID=alpine
VERSION_ID=3.20.3
PRETTY_NAME=\"Alpine Linux v3.20\"
HOME_URL=\"https://alpinelinux.org/\"
BUG_REPORT_URL=\"https://gitlab.alpinelinux.org/alpine/aports/-/issues\"
";

/// One package of the Alpine-like root: name, version, arch, origin (`o:`).
const APK_PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("musl", "1.2.5-r0", "x86_64", "musl"),
    ("busybox", "1.36.1-r29", "x86_64", "busybox"),
    (
        "alpine-baselayout-data",
        "3.6.5-r0",
        "x86_64",
        "alpine-baselayout",
    ),
    ("libcrypto3", "3.3.2-r0", "x86_64", "openssl"),
    ("libssl3", "3.3.2-r0", "x86_64", "openssl"),
    ("apk-tools", "2.14.4-r1", "x86_64", "apk-tools"),
    ("py3-packaging", "24.0-r1", "noarch", "py3-packaging"),
    ("tzdata", "2024b-r0", "x86_64", "tzdata"),
];

/// Build an Alpine-like root at `root` and return the packages its apk
/// database lists, as the report should carry them.
///
/// The database follows the apk "installed database" format (Alpine wiki,
/// "Apk spec"): one paragraph per package, one `X:value` line per field
/// (`P` name, `V` version, `A` arch, `o` origin, `F`/`R` directories and
/// files with their `a`/`Z` attributes and checksums), paragraphs separated
/// by a blank line.
///
/// # Errors
/// On I/O failure.
pub fn alpine_root(root: &Path) -> Result<Vec<Package>> {
    write(&root.join("etc/alpine-release"), "3.20.3\n")?;
    write(&root.join("etc/os-release"), ALPINE_OS_RELEASE)?;
    let mut db = String::new();
    let mut expected = Vec::new();
    for (index, (name, version, arch, origin)) in APK_PACKAGES.iter().enumerate() {
        db.push_str(&format!(
            "C:Q1{index:027}=\n\
             P:{name}\n\
             V:{version}\n\
             A:{arch}\n\
             S:{size}\n\
             I:{installed}\n\
             T:{name} for the e2e fixture\n\
             U:https://example.invalid/{name}\n\
             L:MIT\n\
             o:{origin}\n\
             m:e2e <e2e@example.invalid>\n\
             t:1717000000\n\
             c:0123456789abcdef0123456789abcdef0123456{index}\n\
             D:so:libc.musl-x86_64.so.1\n\
             p:cmd:{name}={version}\n\
             F:usr/share/{name}\n\
             R:README\n\
             a:0:0:644\n\
             Z:Q1{index:027}=\n\n",
            size = 1000 + index,
            installed = 4096 * (index + 1),
        ));
        expected.push(Package {
            name: (*name).to_string(),
            version: (*version).to_string(),
            arch: Some((*arch).to_string()),
            format: PackageFormat::Apk,
            source: Some((*origin).to_string()),
        });
    }
    write(&root.join("lib/apk/db/installed"), db)?;
    write(&root.join("etc/apk/world"), "alpine-base\n")?;
    expected.sort();
    Ok(expected)
}

/// The script (written with the rpm detector) that builds small rpms with
/// rpmbuild and installs them into a root with an sqlite rpmdb at
/// `ROOT/var/lib/rpm/rpmdb.sqlite`.
pub fn rpm_root_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/build-rpm-root.sh")
}

/// Build an rpm root at `root` with [`rpm_root_script`].
///
/// # Errors
/// When the script is absent (it lands with the rpm detector) or fails, or
/// leaves no sqlite rpmdb.
pub fn rpm_root(root: &Path) -> Result<()> {
    let script = rpm_root_script();
    if !script.is_file() {
        bail!(
            "{} is missing: the rpm fixture builder lands with the rpm detector; \
             this test cannot build an rpm root without it",
            script.display()
        );
    }
    fs::create_dir_all(root)?;
    run(tool("bash")?.arg(&script).arg(root))?;
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    if !db.is_file() {
        bail!("{} left no {}", script.display(), db.display());
    }
    Ok(())
}
