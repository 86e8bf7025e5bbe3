//! The apk detector: Alpine (and Wolfi) packages from apk's installed
//! database.
//!
//! Format reference: the Alpine wiki's "Apk spec"
//! (<https://wiki.alpinelinux.org/wiki/Apk_spec>), "Installed Database"
//! section, and apk-tools' reader it describes (`apk_db_fdb_read` in
//! `src/database.c`). The file is text: one record per package, records
//! separated by blank lines (apk: any line shorter than two bytes), every
//! other line `K:value` with a one-letter key.
//! Of the keys we keep `P:` (name), `V:` (version), `A:` (architecture) and
//! `o:` (origin, the source package); the rest (`C:` checksum, `T:`
//! description, `L:` license, `D:` dependencies, `F:`/`R:`/`Z:`/`a:`/`M:`
//! the file list, …) are skipped.
//!
//! Hand-written because the format is a few lines of code to read and no
//! crate reads it with line numbers in errors, bounds on untrusted input,
//! and one bad record reported while the others are kept.
//!
//! Lenient on purpose where apk refuses the whole database: CRLF reads as
//! LF, a line of only spaces and tabs ends a record, a line that is not
//! `K:value` is reported and skipped, and a second `P:` in a record starts
//! the next one (a lost blank line), reported. A one-character line ends a
//! record, as in apk, and is reported.
//!
//! Wolfi merged `/lib` into `/usr/lib`, so the database may be only at
//! `/usr/lib/apk/db/installed` when the `/lib` symlink is missing.

use super::error_log::{ErrorLog, excerpt};
use super::{DetectError, Detector, Findings, Package, PackageFormat};
use crate::fs::Filesystem;

/// Where the installed database is, in the order looked at; the first that
/// exists is read.
pub const INSTALLED_PATHS: &[&str] = &["/lib/apk/db/installed", "/usr/lib/apk/db/installed"];

/// The largest database read. It lists every installed file, about 100 bytes
/// each, so a system with a million files is about 100 MiB; 256 MiB leaves
/// room for any real system while bounding memory.
pub const MAX_DATABASE_SIZE: u64 = 256 * 1024 * 1024;

const NAME: &str = "apk";

/// The apk detector: packages from `/lib/apk/db/installed` (or
/// `/usr/lib/apk/db/installed`), read up to 256 MiB.
pub struct ApkDetector;

impl Detector for ApkDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Packages from the first of `/lib/apk/db/installed` and
    /// `/usr/lib/apk/db/installed` that exists, in file order. A record that cannot be parsed is one entry in
    /// [`Findings::errors`].
    ///
    /// # Errors
    /// [`DetectError::Fs`] when the database exists but cannot be read,
    /// including when it is larger than 256 MiB.
    fn detect(&self, fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        for path in INSTALLED_PATHS {
            match fs.read(path, MAX_DATABASE_SIZE) {
                Ok(bytes) => {
                    let (packages, errors) = parse_installed(&bytes);
                    return Ok(Findings {
                        os: None,
                        packages,
                        errors: errors.into_iter().map(|e| format!("{path}: {e}")).collect(),
                    });
                }
                Err(err) if err.is_not_found() => {}
                Err(source) => {
                    return Err(DetectError::Fs {
                        detector: NAME,
                        source,
                    });
                }
            }
        }
        Ok(Findings::default())
    }
}

/// A kept value and the line it is on.
#[derive(Debug)]
struct Field {
    value: String,
    line: usize,
}

/// The fields of one record that we keep.
#[derive(Debug, Default)]
struct Record {
    /// Line of the record's first line; 0 while there is none.
    start_line: usize,
    name: Option<Field>,
    version: Option<Field>,
    arch: Option<Field>,
    origin: Option<Field>,
}

impl Record {
    fn slot(&mut self, key: char) -> Option<&mut Option<Field>> {
        match key {
            'P' => Some(&mut self.name),
            'V' => Some(&mut self.version),
            'A' => Some(&mut self.arch),
            'o' => Some(&mut self.origin),
            _ => None,
        }
    }
}

/// Parse apk's installed database (`/lib/apk/db/installed`): its packages
/// in file order, and the problems found, each starting with `line N:`
/// (1-based).
///
/// `V:` is kept as written (surrounding whitespace trimmed); `A:` and `o:`
/// are `None` when absent or empty. A record without `P:` or `V:` is
/// reported and skipped; a line that is not `K:value` is reported and the
/// record goes on.
///
/// Never panics, on any input; invalid UTF-8 is replaced. At most
/// [`MAX_ERRORS_PER_FILE`](crate::detect::MAX_ERRORS_PER_FILE) errors are returned, then one saying how many
/// more there were. Memory is linear in the input.
pub fn parse_installed(bytes: &[u8]) -> (Vec<Package>, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let mut packages = Vec::new();
    let mut errors = ErrorLog::default();
    let mut record = Record::default();

    for (index, raw) in text.split('\n').enumerate() {
        let line_no = index.saturating_add(1);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let blank = line.trim_matches([' ', '\t']).is_empty();
        let mut chars = line.chars();
        if blank || chars.clone().nth(1).is_none() {
            if !blank {
                errors.push(format!(
                    "line {line_no}: a one-character line {}, read as the end of a record as apk does",
                    excerpt(line)
                ));
            }
            finish(std::mem::take(&mut record), &mut packages, &mut errors);
            continue;
        }
        let (Some(key), Some(':')) = (chars.next(), chars.next()) else {
            errors.push(format!(
                "line {line_no}: not a 'K:value' line: {}",
                excerpt(line)
            ));
            continue;
        };
        let value = chars.as_str().trim();
        if key == 'P' && record.name.is_some() {
            errors.push(format!(
                "line {line_no}: a second P: in one record; \
                 reading it as the start of the next (blank line missing?)"
            ));
            finish(std::mem::take(&mut record), &mut packages, &mut errors);
        }
        if record.start_line == 0 {
            record.start_line = line_no;
        }
        let Some(slot) = record.slot(key) else {
            continue;
        };
        if slot.is_some() {
            errors.push(format!(
                "line {line_no}: a second {key}: in one record; the first is kept"
            ));
        } else {
            *slot = Some(Field {
                value: value.to_string(),
                line: line_no,
            });
        }
    }
    finish(record, &mut packages, &mut errors);
    (packages, errors.into_vec())
}

/// Turn a finished record into a package, or an error, or nothing.
fn finish(record: Record, packages: &mut Vec<Package>, errors: &mut ErrorLog) {
    if record.start_line == 0 {
        return; // blank lines only
    }
    let start = record.start_line;
    let Some(name) = record.name.filter(|n| !n.value.is_empty()) else {
        errors.push(format!("line {start}: record has no P: (name); skipped"));
        return;
    };
    let Some(version) = record.version.filter(|v| !v.value.is_empty()) else {
        errors.push(format!(
            "line {}: package {}: record has no V: (version); skipped",
            name.line,
            excerpt(&name.value)
        ));
        return;
    };
    packages.push(Package {
        name: name.value,
        version: version.value,
        arch: record.arch.map(|a| a.value).filter(|a| !a.is_empty()),
        format: PackageFormat::Apk,
        source: record.origin.map(|o| o.value).filter(|o| !o.is_empty()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::MAX_ERRORS_PER_FILE;
    use crate::fs::host::HostFs;
    use std::error::Error;

    type TestResult = Result<(), Box<dyn Error>>;

    const FIXTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests-data/detect/apk/installed"
    ));

    fn package(name: &str, version: &str, arch: Option<&str>, origin: Option<&str>) -> Package {
        Package {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.map(str::to_string),
            format: PackageFormat::Apk,
            source: origin.map(str::to_string),
        }
    }

    fn write_root(path: &str, content: &[u8]) -> Result<tempfile::TempDir, Box<dyn Error>> {
        let root = tempfile::tempdir()?;
        let host = root.path().join(path.trim_start_matches('/'));
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(host, content)?;
        Ok(root)
    }

    #[test]
    fn reads_the_fixture_database() -> TestResult {
        let root = write_root("/lib/apk/db/installed", FIXTURE)?;
        let findings = ApkDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(findings.errors, Vec::<String>::new());
        assert_eq!(findings.os, None);
        assert_eq!(
            findings.packages,
            vec![
                package("musl", "1.2.4_git20230717-r4", Some("x86_64"), Some("musl")),
                package("busybox", "1.36.1-r15", Some("x86_64"), Some("busybox")),
                package("ssl_client", "1.36.1-r15", Some("x86_64"), Some("busybox")),
                package(
                    "alpine-baselayout-data",
                    "3.4.3-r2",
                    Some("x86_64"),
                    Some("alpine-baselayout")
                ),
                package(
                    "ca-certificates-bundle",
                    "20230506-r0",
                    Some("x86_64"),
                    Some("ca-certificates")
                ),
                package("alpine-keys", "2.4-r1", Some("noarch"), Some("alpine-keys")),
                // The fixture's scanelf record has no o: line.
                package("scanelf", "1.3.7-r2", Some("x86_64"), None),
            ]
        );
        Ok(())
    }

    #[test]
    fn reads_the_usr_merged_location() -> TestResult {
        let root = write_root("/usr/lib/apk/db/installed", b"P:zlib\nV:1.3.1-r0\n")?;
        let findings = ApkDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(
            findings.packages,
            vec![package("zlib", "1.3.1-r0", None, None)]
        );
        Ok(())
    }

    #[test]
    fn a_volume_without_apk_has_nothing() -> TestResult {
        let root = tempfile::tempdir()?;
        assert_eq!(
            ApkDetector.detect(&HostFs::new(root.path()))?,
            Findings::default()
        );
        Ok(())
    }

    #[test]
    fn malformed_records_are_reported_and_the_others_kept() {
        let text = "\
P:good1
V:1.0-r0
A:x86_64

V:2.0-r0
A:x86_64

P:no-version
A:x86_64
F:usr

P:good2
this is not a field
V:2.0-r1
X
V:9.9

P:
V:1
";
        let (packages, errors) = parse_installed(text.as_bytes());
        assert_eq!(
            packages,
            vec![
                package("good1", "1.0-r0", Some("x86_64"), None),
                package("good2", "2.0-r1", None, None)
            ]
        );
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(
            errors[0].starts_with("line 5: record has no P:"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("line 8: package \"no-version\": record has no V:"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 13: not a 'K:value' line"),
            "{errors:?}"
        );
        // "X" ends good2's record, as in apk, so V:9.9 has a record of its own.
        assert!(
            errors[3].starts_with("line 15: a one-character line"),
            "{errors:?}"
        );
        assert!(
            errors[4].starts_with("line 16: record has no P:"),
            "{errors:?}"
        );
        assert!(
            errors[5].starts_with("line 18: record has no P:"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_missing_blank_line_splits_at_the_second_name() {
        let (packages, errors) = parse_installed(b"P:a\nV:1\nP:b\nV:2\no:bsrc\n");
        assert_eq!(
            packages,
            vec![
                package("a", "1", None, None),
                package("b", "2", None, Some("bsrc"))
            ]
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 3: a second P:"));
    }

    #[test]
    fn crlf_whitespace_lines_and_empty_input() {
        let (packages, errors) =
            parse_installed(b"P:a\r\nV:1-r0\r\n\r\nP:b\r\nV:2-r0\r\n \t\nP:c\nV:3-r0");
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            packages,
            vec![
                package("a", "1-r0", None, None),
                package("b", "2-r0", None, None),
                package("c", "3-r0", None, None)
            ]
        );
        for input in ["", "\n", "\n\n\n", "\r\n"] {
            assert_eq!(
                parse_installed(input.as_bytes()),
                (vec![], vec![]),
                "{input:?}"
            );
        }
    }

    #[test]
    fn huge_lines_and_capped_errors() {
        let long = "y".repeat(8 * 1024 * 1024);
        let text = format!("P:a\nV:{long}\nT:{long}\n{long}\n");
        let (packages, errors) = parse_installed(text.as_bytes());
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].version.len(), long.len());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].len() < 200, "the message quotes an excerpt");

        let (_, errors) = parse_installed("bad\n".repeat(1_000).as_bytes());
        assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1);
        assert_eq!(errors[MAX_ERRORS_PER_FILE], "900 more errors not shown");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"PVAoCF:R:\n\n \t\r\xff\xc3\xa4x";
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
            let _ = parse_installed(&bytes);
        }
    }

    #[test]
    fn a_database_over_the_limit_is_an_error() -> TestResult {
        let root = write_root("/lib/apk/db/installed", b"")?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.path().join("lib/apk/db/installed"))?
            .set_len(MAX_DATABASE_SIZE + 1)?;
        let result = ApkDetector.detect(&HostFs::new(root.path()));
        assert!(
            matches!(
                result,
                Err(DetectError::Fs {
                    detector: "apk",
                    source: crate::fs::FsError::TooLarge { .. }
                })
            ),
            "{result:?}"
        );
        Ok(())
    }
}
