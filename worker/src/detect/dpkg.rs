//! The dpkg detector: the Debian and Ubuntu packages whose files are on
//! disk, from dpkg's status database.
//!
//! Format reference: deb822(5) and Debian Policy §5.1 "Syntax of control
//! files" for the paragraphs, dpkg-query(1) and dpkg's `lib/dpkg/parse.c` for
//! how the `Status` field (`want flag status`) reads. The tests compare this
//! parser with `dpkg-query --admindir` on a copy of a real database.
//!
//! Hand-written rather than a deb822 crate because we need five fields out
//! of a file that may be hundreds of megabytes, line numbers in every error,
//! hard bounds on what untrusted input can make us allocate, and a parser
//! that reports one bad paragraph and keeps the others (dpkg refuses the whole
//! database at the first error; a scanner must not).
//!
//! Where dpkg is strict and we are lenient, on purpose:
//! - lines ending in CRLF are read as if they ended in LF (dpkg rejects the
//!   file), so a `\r` never ends up in a version;
//! - a line of only spaces and tabs separates paragraphs, as Policy allows
//!   (dpkg reads it as a blank line inside a field and fails);
//! - a `Package` field in a paragraph that already has one starts a new
//!   paragraph (a lost blank line), reported as an error;
//! - a paragraph without `Package`, or an installed one without `Version`,
//!   is reported and skipped, and the rest of the file is still read.
//!
//! Distroless images keep `status.d/` instead: one paragraph file per
//! package (plus `<name>.md5sums` files, skipped); both are read when both
//! exist. There a missing
//! `Status` field means installed (the file exists because the package is);
//! in `status` it means not installed, as dpkg reads it.

use super::error_log::{ErrorLog, excerpt};
use super::{DetectError, Detector, Findings, Package, PackageFormat};
use crate::fs::{FileType, Filesystem};

/// dpkg's status database.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";

/// One paragraph file per package, as distroless images have.
pub const STATUS_D_PATH: &str = "/var/lib/dpkg/status.d";

/// The largest status file read, and the most bytes read from `status.d/`
/// altogether. A status file takes about 1 KiB per package, so even 10,000
/// packages is about 10 MiB; 256 MiB leaves room for any real system while
/// bounding memory.
pub const MAX_DATABASE_SIZE: u64 = 256 * 1024 * 1024;

/// The most entries of `status.d/` looked at; a real one has a few hundred.
pub const MAX_STATUS_D_FILES: usize = 100_000;

/// The third word of `Status` for packages whose files are (at least partly)
/// on disk.
const ON_DISK_STATUSES: &[&str] = &[
    "installed",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
];

/// The third word of `Status` for packages whose files are gone.
const GONE_STATUSES: &[&str] = &["not-installed", "config-files"];

const NAME: &str = "dpkg";

/// The dpkg detector: packages from `/var/lib/dpkg/status` (read up to
/// 256 MiB) and `/var/lib/dpkg/status.d/*` (up to 256 MiB altogether).
pub struct DpkgDetector;

impl Detector for DpkgDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Packages from `/var/lib/dpkg/status` and every file in
    /// `/var/lib/dpkg/status.d/`, sorted, exact duplicates removed. A
    /// paragraph or `status.d/` file that cannot be read or parsed is one
    /// entry in [`Findings::errors`].
    ///
    /// # Errors
    /// [`DetectError::Fs`] when the status file exists but cannot be read,
    /// including when it is larger than 256 MiB.
    fn detect(&self, fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        let mut findings = Findings::default();
        match fs.read(STATUS_PATH, MAX_DATABASE_SIZE) {
            Ok(bytes) => {
                let (packages, errors) = parse_status(&bytes);
                findings.packages.extend(packages);
                findings
                    .errors
                    .extend(errors.into_iter().map(|e| format!("{STATUS_PATH}: {e}")));
            }
            Err(err) if err.is_not_found() => {}
            Err(source) => {
                return Err(DetectError::Fs {
                    detector: NAME,
                    source,
                });
            }
        }
        read_status_d(fs, &mut findings);
        findings.packages.sort();
        findings.packages.dedup();
        Ok(findings)
    }
}

/// Read every package file in [`STATUS_D_PATH`] into `findings`, within
/// [`MAX_DATABASE_SIZE`] bytes and [`MAX_STATUS_D_FILES`] entries in all.
fn read_status_d(fs: &dyn Filesystem, findings: &mut Findings) {
    let entries = match fs.read_dir(STATUS_D_PATH) {
        Ok(entries) => entries,
        Err(err) if err.is_not_found() => return,
        Err(err) => {
            findings.errors.push(err.to_string());
            return;
        }
    };
    if entries.len() > MAX_STATUS_D_FILES {
        findings.errors.push(format!(
            "{STATUS_D_PATH}: {} entries, only the first {MAX_STATUS_D_FILES} are read",
            entries.len()
        ));
    }
    let mut budget = MAX_DATABASE_SIZE;
    for entry in entries.iter().take(MAX_STATUS_D_FILES) {
        if entry.name.ends_with(".md5sums") || entry.name.starts_with('.') {
            continue;
        }
        if !matches!(entry.file_type, FileType::File | FileType::Symlink) {
            continue;
        }
        let path = format!("{STATUS_D_PATH}/{}", entry.name);
        match fs.read(&path, budget) {
            Ok(bytes) => {
                let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                budget = budget.saturating_sub(len);
                let (packages, errors) = parse(&bytes, MissingStatus::Installed);
                findings.packages.extend(packages);
                findings
                    .errors
                    .extend(errors.into_iter().map(|e| format!("{path}: {e}")));
            }
            // Not found: removed between the listing and the read, or a
            // dangling symlink. Nothing installed there.
            Err(err) if err.is_not_found() => {}
            Err(err) => findings.errors.push(format!(
                "{err} (reading {STATUS_D_PATH}, {budget} bytes of its budget left)"
            )),
        }
    }
}

/// Parse a dpkg status file (`/var/lib/dpkg/status`): the packages whose
/// files are on disk, in file order, and the problems found, each starting
/// with `line N:` (1-based).
///
/// A package is kept when the third word of its `Status` is one of
/// `installed`, `half-installed`, `unpacked`, `half-configured`,
/// `triggers-awaited` or `triggers-pending`; `not-installed`, `config-files`
/// and a missing `Status` are skipped silently, as `dpkg-query` reads them.
/// `Version` and `Architecture` are kept as written (surrounding whitespace
/// trimmed); `Source: name (version)` keeps only the name, and a package
/// without `Source` has `source: None`.
///
/// Never panics, on any input; invalid UTF-8 is replaced. At most
/// [`MAX_ERRORS_PER_FILE`](crate::detect::MAX_ERRORS_PER_FILE) errors are returned, then one saying how many
/// more there were. Memory is linear in the input.
pub fn parse_status(bytes: &[u8]) -> (Vec<Package>, Vec<String>) {
    parse(bytes, MissingStatus::NotInstalled)
}

/// What a paragraph without a `Status` field means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingStatus {
    /// dpkg's reading, for the status file.
    NotInstalled,
    /// For `status.d/` files, which exist only for installed packages.
    Installed,
}

/// A field's value and the line it starts on.
#[derive(Debug, Default)]
struct Field {
    value: String,
    line: usize,
}

/// The fields of one paragraph that we keep.
#[derive(Debug, Default)]
struct Paragraph {
    /// Line of the paragraph's first field; 0 while no field was seen.
    start_line: usize,
    package: Option<Field>,
    status: Option<Field>,
    version: Option<Field>,
    architecture: Option<Field>,
    source: Option<Field>,
}

/// The fields we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Package,
    Status,
    Version,
    Architecture,
    Source,
}

impl FieldKind {
    /// The kept field named `name` (field names are case-insensitive).
    fn of(name: &str) -> Option<Self> {
        [
            ("Package", Self::Package),
            ("Status", Self::Status),
            ("Version", Self::Version),
            ("Architecture", Self::Architecture),
            ("Source", Self::Source),
        ]
        .into_iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|(_, kind)| kind)
    }
}

impl Paragraph {
    fn slot(&mut self, kind: FieldKind) -> &mut Option<Field> {
        match kind {
            FieldKind::Package => &mut self.package,
            FieldKind::Status => &mut self.status,
            FieldKind::Version => &mut self.version,
            FieldKind::Architecture => &mut self.architecture,
            FieldKind::Source => &mut self.source,
        }
    }
}

fn parse(bytes: &[u8], missing_status: MissingStatus) -> (Vec<Package>, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let mut packages = Vec::new();
    let mut errors = ErrorLog::default();
    let mut paragraph = Paragraph::default();

    for (index, raw) in text.split('\n').enumerate() {
        let line_no = index.saturating_add(1);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim_matches([' ', '\t']).is_empty() {
            finish(
                std::mem::take(&mut paragraph),
                missing_status,
                &mut packages,
                &mut errors,
            );
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of a multi-line field (Description, Conffiles…),
            // none of which we keep.
            if paragraph.start_line == 0 {
                errors.push(format!(
                    "line {line_no}: continuation line before any field"
                ));
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            errors.push(format!(
                "line {line_no}: not a field (no ':'): {}",
                excerpt(line)
            ));
            continue;
        };
        let value = value.trim();
        let Some(kind) = FieldKind::of(name) else {
            if paragraph.start_line == 0 {
                paragraph.start_line = line_no;
            }
            continue;
        };
        if kind == FieldKind::Package && paragraph.package.is_some() {
            errors.push(format!(
                "line {line_no}: a second Package field in one paragraph; \
                 reading it as the start of the next (blank line missing?)"
            ));
            finish(
                std::mem::take(&mut paragraph),
                missing_status,
                &mut packages,
                &mut errors,
            );
        }
        if paragraph.start_line == 0 {
            paragraph.start_line = line_no;
        }
        let slot = paragraph.slot(kind);
        if slot.is_some() {
            errors.push(format!(
                "line {line_no}: a second {name} field in one paragraph; the first is kept"
            ));
        } else {
            *slot = Some(Field {
                value: value.to_string(),
                line: line_no,
            });
        }
    }
    finish(paragraph, missing_status, &mut packages, &mut errors);
    (packages, errors.into_vec())
}

/// Turn a finished paragraph into a package, or an error, or nothing.
fn finish(
    paragraph: Paragraph,
    missing_status: MissingStatus,
    packages: &mut Vec<Package>,
    errors: &mut ErrorLog,
) {
    if paragraph.start_line == 0 {
        return; // no field at all: blank lines
    }
    let start = paragraph.start_line;
    let Some(name) = paragraph.package.filter(|p| !p.value.is_empty()) else {
        errors.push(format!(
            "line {start}: paragraph has no Package field; skipped"
        ));
        return;
    };
    let name = name.value;
    match &paragraph.status {
        None if missing_status == MissingStatus::NotInstalled => return,
        None => {}
        Some(status) => {
            // Four at most: three are expected, a fourth means malformed.
            let words: Vec<&str> = status.value.split_whitespace().take(4).collect();
            let Some(&state) = words.get(2).filter(|_| words.len() == 3) else {
                errors.push(format!(
                    "line {}: package {}: Status is not 'want flag status': {}; skipped",
                    status.line,
                    excerpt(&name),
                    excerpt(&status.value)
                ));
                return;
            };
            if GONE_STATUSES.contains(&state) {
                return;
            }
            if !ON_DISK_STATUSES.contains(&state) {
                errors.push(format!(
                    "line {}: package {}: unknown package state {}; skipped",
                    status.line,
                    excerpt(&name),
                    excerpt(state)
                ));
                return;
            }
        }
    }
    let Some(version) = paragraph.version.filter(|v| !v.value.is_empty()) else {
        errors.push(format!(
            "line {start}: package {}: installed but has no Version field; skipped",
            excerpt(&name)
        ));
        return;
    };
    let arch = paragraph
        .architecture
        .map(|a| a.value)
        .filter(|a| !a.is_empty());
    // `Source: name (version)` when the source version differs.
    let source = paragraph
        .source
        .and_then(|s| s.value.split_whitespace().next().map(str::to_string));
    packages.push(Package {
        name,
        version: version.value,
        arch,
        format: PackageFormat::Deb,
        source,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::MAX_ERRORS_PER_FILE;
    use crate::fs::host::HostFs;
    use std::collections::BTreeSet;
    use std::error::Error;
    use std::path::Path;
    use std::process::Command;

    type TestResult = Result<(), Box<dyn Error>>;

    /// (name, version, arch, source package) as dpkg-query prints them:
    /// arch "" when absent, source the package's own name when absent.
    type Row = (String, String, String, String);

    const FIXTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests-data/detect/dpkg/status"
    ));

    /// What `dpkg-query` lists under `admindir` with files on disk.
    fn dpkg_query(admindir: &Path) -> Result<BTreeSet<Row>, Box<dyn Error>> {
        let output = Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args(["-W", "-f"])
            .arg("${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\t${source:Package}\\n")
            .output()
            .map_err(|err| {
                format!("this test needs dpkg-query (apt-get install dpkg) and could not run it: {err}")
            })?;
        if !output.status.success() {
            return Err(format!(
                "dpkg-query failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let mut rows = BTreeSet::new();
        for line in String::from_utf8(output.stdout)?.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [status, name, version, arch, source] = fields[..] else {
                return Err(format!("unexpected dpkg-query line: {line:?}").into());
            };
            if status != "not-installed" && status != "config-files" {
                rows.insert((
                    name.to_string(),
                    version.to_string(),
                    arch.to_string(),
                    source.to_string(),
                ));
            }
        }
        Ok(rows)
    }

    fn rows(packages: &[Package]) -> BTreeSet<Row> {
        packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.version.clone(),
                    p.arch.clone().unwrap_or_default(),
                    p.source.clone().unwrap_or_else(|| p.name.clone()),
                )
            })
            .collect()
    }

    /// A root with `status` at /var/lib/dpkg/status, through the detector.
    fn detect_status(status: &[u8]) -> Result<(tempfile::TempDir, Findings), Box<dyn Error>> {
        let root = tempfile::tempdir()?;
        let admindir = root.path().join("var/lib/dpkg");
        std::fs::create_dir_all(&admindir)?;
        std::fs::write(admindir.join("status"), status)?;
        let findings = DpkgDetector.detect(&HostFs::new(root.path()))?;
        Ok((root, findings))
    }

    fn package(name: &str, version: &str, arch: Option<&str>, source: Option<&str>) -> Package {
        Package {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.map(str::to_string),
            format: PackageFormat::Deb,
            source: source.map(str::to_string),
        }
    }

    #[test]
    fn matches_dpkg_query_on_this_machines_database() -> TestResult {
        let status = std::fs::read("/var/lib/dpkg/status")?;
        let (root, findings) = detect_status(&status)?;
        let truth = dpkg_query(&root.path().join("var/lib/dpkg"))?;
        assert!(truth.len() > 10, "a Debian machine has packages");
        assert_eq!(findings.errors, Vec::<String>::new());
        assert_eq!(rows(&findings.packages), truth);
        assert_eq!(findings.packages.len(), truth.len(), "no duplicates");
        let libc6 = findings
            .packages
            .iter()
            .find(|p| p.name == "libc6")
            .ok_or("libc6 is installed on Debian")?;
        assert_eq!(libc6.source.as_deref(), Some("glibc"));
        assert!(
            findings
                .packages
                .iter()
                .all(|p| p.format == PackageFormat::Deb)
        );
        Ok(())
    }

    #[test]
    fn matches_dpkg_query_on_every_package_state() -> TestResult {
        let (root, findings) = detect_status(FIXTURE)?;
        let truth = dpkg_query(&root.path().join("var/lib/dpkg"))?;
        assert_eq!(findings.errors, Vec::<String>::new());
        assert_eq!(rows(&findings.packages), truth);
        let names: BTreeSet<&str> = findings.packages.iter().map(|p| p.name.as_str()).collect();
        for gone in ["old-kernel", "purged-tool"] {
            assert!(!names.contains(gone), "{gone} has no files on disk");
        }
        for state in [
            "broken-upgrade",
            "just-unpacked",
            "config-failed",
            "waits-trigger",
            "man-db",
            "held-editor",
        ] {
            assert!(names.contains(state), "{state} has files on disk");
        }
        Ok(())
    }

    #[test]
    fn keeps_versions_as_written_and_source_names_only() {
        let (packages, errors) = parse_status(FIXTURE);
        assert_eq!(errors, Vec::<String>::new());
        assert!(packages.contains(&package(
            "bsdutils",
            "1:2.38.1-5+b1",
            Some("amd64"),
            Some("util-linux")
        )));
        assert!(packages.contains(&package("base-files", "12.4+deb12u5", Some("amd64"), None)));
        assert!(packages.contains(&package(
            "libc6",
            "2.36-9+deb12u4",
            Some("i386"),
            Some("glibc")
        )));
        assert!(packages.contains(&package(
            "libc6",
            "2.36-9+deb12u4",
            Some("amd64"),
            Some("glibc")
        )));
    }

    #[test]
    fn continuation_lines_belong_to_their_field() {
        let text = "Package: a\nStatus: install ok installed\nDescription: first\n Version: 9.9\n\tPackage: b\n .\nVersion: 1.0\n";
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(packages, vec![package("a", "1.0", None, None)]);
    }

    #[test]
    fn a_malformed_paragraph_is_reported_and_the_others_kept() {
        let text = "\
Package: good1
Status: install ok installed
Version: 1

Status: install ok installed
Version: 2

Package: no-version
Status: install ok installed
Architecture: amd64

Package: bad-status
Status: installed
Version: 3

Package: odd-state
Status: install ok floating
Version: 3

this line has no colon
Package: good2
Status: install ok installed
Version: 4
";
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(
            packages,
            vec![
                package("good1", "1", None, None),
                package("good2", "4", None, None)
            ]
        );
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors[0].starts_with("line 5: paragraph has no Package field"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("line 8: package \"no-version\": installed but has no Version"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 13: package \"bad-status\": Status is not"),
            "{errors:?}"
        );
        assert!(
            errors[3].starts_with("line 17: package \"odd-state\": unknown package state"),
            "{errors:?}"
        );
        assert!(errors[4].starts_with("line 20: not a field"), "{errors:?}");
    }

    #[test]
    fn a_missing_blank_line_splits_at_the_second_package() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\nPackage: b\nStatus: install ok installed\nVersion: 2\nVersion: 3\n";
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(
            packages,
            vec![package("a", "1", None, None), package("b", "2", None, None)]
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("line 4: a second Package field"));
        assert!(errors[1].starts_with("line 7: a second Version field"));
    }

    #[test]
    fn field_names_are_case_insensitive_and_values_trimmed() {
        let text = "package: a\nSTATUS:  install  ok  installed \nversion:\t1.0-1  \narchitecture: amd64\nsource: src (0.9)\n";
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            packages,
            vec![package("a", "1.0-1", Some("amd64"), Some("src"))]
        );
    }

    /// Decision: CRLF is read as LF (dpkg refuses such a file), so no `\r`
    /// reaches a version, and whitespace-only lines separate paragraphs.
    #[test]
    fn crlf_and_whitespace_only_lines() {
        let text = "Package: a\r\nStatus: install ok installed\r\nVersion: 1.0\r\n\r\nPackage: b\r\nStatus: install ok installed\r\nVersion: 2.0\r\n \t\r\nPackage: c\nStatus: install ok installed\nVersion: 3.0\n";
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            packages,
            vec![
                package("a", "1.0", None, None),
                package("b", "2.0", None, None),
                package("c", "3.0", None, None)
            ]
        );
    }

    /// dpkg-query lists a paragraph without Status as not installed; a
    /// status.d/ file exists only for an installed package.
    #[test]
    fn a_missing_status_depends_on_the_file() {
        let text = b"Package: a\nVersion: 1\n";
        assert_eq!(parse_status(text), (vec![], vec![]));
        assert_eq!(
            parse(text, MissingStatus::Installed),
            (vec![package("a", "1", None, None)], vec![])
        );
    }

    #[test]
    fn empty_and_blank_inputs_have_nothing() {
        for input in ["", "\n", "\n\n \n\t\n", "\r\n"] {
            assert_eq!(
                parse_status(input.as_bytes()),
                (vec![], vec![]),
                "{input:?}"
            );
        }
    }

    #[test]
    fn huge_lines_are_read_and_quoted_briefly() {
        let long = "x".repeat(8 * 1024 * 1024);
        let text = format!(
            "Package: a\nStatus: install ok installed\nVersion: 1\nDescription: {long}\n {long}\n\n{long}\nPackage: b\nStatus: install ok installed\nVersion: {long}\n"
        );
        let (packages, errors) = parse_status(text.as_bytes());
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[1].version.len(), long.len());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 7: not a field"));
        assert!(errors[0].len() < 200, "the message quotes an excerpt");
    }

    #[test]
    fn errors_are_capped_per_file() {
        let text = "garbage\n".repeat(10_000);
        let (packages, errors) = parse_status(text.as_bytes());
        assert!(packages.is_empty());
        assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1);
        assert_eq!(errors[MAX_ERRORS_PER_FILE], "9900 more errors not shown");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"Package:Status: install ok Version:Source: ( )\n\n \t\r\xff\xc3x";
        for round in 0..2_000 {
            let len = usize::try_from(next() % 600).unwrap_or(0);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if round % 2 == 0 {
                        alphabet[usize::try_from(r % alphabet.len() as u64).unwrap_or(0)]
                    } else {
                        r.to_le_bytes()[0]
                    }
                })
                .collect();
            let _ = parse_status(&bytes);
            let _ = parse(&bytes, MissingStatus::Installed);
        }
    }

    #[test]
    fn status_d_files_one_per_package() -> TestResult {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("var/lib/dpkg/status.d");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("base-files"),
            "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
        )?;
        // No Status: in status.d/ the file exists because the package does.
        std::fs::write(
            dir.join("libssl3"),
            "Package: libssl3\nSource: openssl\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n",
        )?;
        std::fs::write(
            dir.join("libssl3.md5sums"),
            "d41d8cd98f00b204e9800998ecf8427e  usr/lib/x.so\n",
        )?;
        std::fs::write(
            dir.join("netbase"),
            "Package: netbase\nStatus: install ok installed\n",
        )?;
        std::fs::create_dir(dir.join("subdir"))?;
        let findings = DpkgDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(
            findings.packages,
            vec![
                package("base-files", "12.4+deb12u5", Some("amd64"), None),
                package(
                    "libssl3",
                    "3.0.11-1~deb12u2",
                    Some("amd64"),
                    Some("openssl")
                ),
            ]
        );
        assert_eq!(findings.errors.len(), 1, "{:?}", findings.errors);
        assert!(findings.errors[0].starts_with(
            "/var/lib/dpkg/status.d/netbase: line 1: package \"netbase\": installed but has no Version"
        ));
        Ok(())
    }

    #[test]
    fn status_and_status_d_together_sorted_without_duplicates() -> TestResult {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("var/lib/dpkg/status.d");
        std::fs::create_dir_all(&dir)?;
        let zlib = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n";
        std::fs::write(
            root.path().join("var/lib/dpkg/status"),
            format!("{zlib}\nPackage: tzdata\nStatus: install ok installed\nVersion: 2024a\n"),
        )?;
        std::fs::write(dir.join("zlib1g"), zlib)?;
        let findings = DpkgDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(
            findings.packages,
            vec![
                package("tzdata", "2024a", None, None),
                package("zlib1g", "1:1.2.13", None, None)
            ]
        );
        Ok(())
    }

    #[test]
    fn a_volume_without_dpkg_has_nothing() -> TestResult {
        let root = tempfile::tempdir()?;
        let findings = DpkgDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(findings, Findings::default());
        Ok(())
    }

    #[test]
    fn a_status_file_over_the_limit_is_an_error() -> TestResult {
        let root = tempfile::tempdir()?;
        let admindir = root.path().join("var/lib/dpkg");
        std::fs::create_dir_all(&admindir)?;
        // Sparse: no disk space used, but its length is over the limit.
        std::fs::File::create(admindir.join("status"))?.set_len(MAX_DATABASE_SIZE + 1)?;
        let result = DpkgDetector.detect(&HostFs::new(root.path()));
        assert!(
            matches!(
                result,
                Err(DetectError::Fs {
                    detector: "dpkg",
                    source: crate::fs::FsError::TooLarge { .. }
                })
            ),
            "{result:?}"
        );
        Ok(())
    }
}
