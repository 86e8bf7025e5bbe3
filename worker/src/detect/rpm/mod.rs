//! The rpm detector: installed packages from rpm's SQLite database
//! (`rpmdb.sqlite`, rpm ≥ 4.16: RHEL/Rocky/Alma 9, Amazon Linux 2023,
//! Fedora ≥ 33).
//!
//! Where: `/var/lib/rpm/rpmdb.sqlite`, else `/usr/lib/sysimage/rpm/rpmdb.sqlite`
//! (newer Fedora moved it there and left `/var/lib/rpm` as a symlink, which
//! the filesystem follows). The older BerkeleyDB `Packages` (RHEL ≤ 8,
//! Amazon Linux 2) and SUSE's NDB `Packages.db` are recognised and reported
//! as not supported yet, rather than silently listing nothing.
//!
//! How, in three pure steps over bytes (each a fuzz target):
//! 1. [`wal::apply_wal`]: replay the committed frames of `rpmdb.sqlite-wal`
//!    onto the database file's bytes, as SQLite's recovery would.
//! 2. [`read_packages_from_bytes`] ([`sqlite::open_image`] +
//!    [`sqlite::read_rows`]): open the bytes as a read-only in-memory
//!    database (never a host path) and read `SELECT hnum, blob FROM Packages`.
//! 3. [`header::parse_header`]: decode each blob's `NAME`, `VERSION`,
//!    `RELEASE`, `EPOCH`, `ARCH`, `SOURCERPM`.
//!
//! A bad header is one entry in [`Findings::errors`] naming its `hnum`; the
//! other packages are still listed. The result is what `rpm -qa` lists,
//! `gpg-pubkey` entries included: rpm stores imported signing keys as
//! pseudo-packages (no `ARCH`, version = key id, release = creation time,
//! `SOURCERPM` the literal `(none)`, which we read as no source), `rpm -qa`
//! shows them, and so do we, so that the report and the machine agree.
//! Versions read `[EPOCH:]VERSION-RELEASE`, the epoch only when the tag is
//! present (`0:` included), as `%|EPOCH?{%{EPOCH}:}|` prints it.
//!
//! Why hand-written: no maintained pure-Rust crate reads the installed-package
//! database from bytes. The `rpm` crate (rpm-rs) parses and builds package
//! *files* (lead, signature, header with magic); its header parser is
//! crate-private, needs the magic, and it has no notion of `rpmdb.sqlite`.
//! The header format is small, and checking every bound ourselves, the way
//! rpm's `hdrblobVerifyInfo` does, is what a scanner of untrusted disks needs.
//! SQLite itself (b-trees, overflow pages) is left to the bundled SQLite.
//!
//! References: rpm's `lib/header.c` and `lib/backend/sqlite.c` and its
//! `docs/manual/format.md` (header structure); <https://www.sqlite.org/fileformat2.html>
//! (database header, section 1.3; WAL, section 4).
//!
//! Memory: the database is read whole (at most [`MAX_DB_BYTES`]), plus the
//! WAL (at most [`MAX_WAL_BYTES`]) while it is applied, then copied into
//! SQLite and our copy dropped: about twice the database at the peak.

pub mod header;
pub mod sqlite;
pub mod wal;

use rusqlite::Connection;

use super::{DetectError, Detector, Findings, Package, PackageFormat};
use crate::fs::Filesystem;
use sqlite::{RowsEnd, SqliteError};

/// The detector's name.
const NAME: &str = "rpm";

/// Directories that hold the rpm database, in the order looked at.
pub const DB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// Largest `rpmdb.sqlite` read. The database grows with the file lists of
/// the installed packages, to tens of MiB on a typical server; one over this
/// is not one we should hold in memory twice (see "Memory" above).
pub const MAX_DB_BYTES: u64 = 512 * 1024 * 1024;

/// Largest `rpmdb.sqlite-wal` read. rpm checkpoints every 10,000 pages
/// (`wal_autocheckpoint = 10000`, 40 MiB at 4 KiB pages) and on close; a
/// WAL far beyond that is not rpm's.
pub const MAX_WAL_BYTES: u64 = 256 * 1024 * 1024;

/// Most rows of `Packages` read. A full Fedora repository is about 70,000
/// packages; a machine with more installed is a hostile database, and the
/// cap bounds the work SQLite and we do for it.
pub const MAX_ROWS: usize = 100_000;

/// Most bad headers listed one by one in [`Findings::errors`]; the rest are
/// counted in one more entry.
pub const MAX_ERRORS: usize = 100;

/// Finds packages installed by rpm.
pub struct RpmDetector;

impl Detector for RpmDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn detect(&self, fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        let fs_error = |source| DetectError::Fs {
            detector: NAME,
            source,
        };
        for dir in DB_DIRS {
            let path = format!("{dir}/rpmdb.sqlite");
            match fs.read(&path, MAX_DB_BYTES) {
                Ok(db) => return read_database(fs, &path, db),
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(fs_error(err)),
            }
        }
        for dir in DB_DIRS {
            for (file, kind) in [("Packages", "BerkeleyDB"), ("Packages.db", "NDB")] {
                let path = format!("{dir}/{file}");
                match fs.metadata(&path) {
                    Ok(_) => {
                        return Ok(Findings {
                            errors: vec![format!(
                                "{path}: the {kind} rpm database is not supported yet; \
                                 rpm packages are not listed"
                            )],
                            ..Findings::default()
                        });
                    }
                    Err(err) if err.is_not_found() => {}
                    Err(err) => return Err(fs_error(err)),
                }
            }
        }
        Ok(Findings::default())
    }
}

/// Apply the WAL beside `path` if there is one, then read the packages.
fn read_database(
    fs: &dyn Filesystem,
    path: &str,
    mut db: Vec<u8>,
) -> Result<Findings, DetectError> {
    let mut notes = Vec::new();
    let wal_path = format!("{path}-wal");
    match fs.read(&wal_path, MAX_WAL_BYTES) {
        Ok(wal) => match wal::apply_wal(&mut db, &wal, MAX_DB_BYTES) {
            Ok(summary) => {
                tracing::debug!(path = wal_path, ?summary, "applied the rpm database's WAL");
            }
            // SQLite ignores a WAL with a bad header too; say so, since the
            // result may then miss the latest transactions.
            Err(err) => notes.push(format!("{wal_path}: ignored: {err}")),
        },
        Err(err) if err.is_not_found() => {}
        Err(err) => notes.push(format!(
            "{wal_path}: not read, packages are as of the last checkpoint: {err}"
        )),
    }
    let parse_error = |err: SqliteError| DetectError::Parse {
        detector: NAME,
        path: path.to_string(),
        detail: err.to_string(),
    };
    let mut findings = read_packages_from_bytes(db).map_err(parse_error)?;
    findings.errors = notes
        .into_iter()
        .chain(findings.errors.into_iter().map(|e| format!("{path}: {e}")))
        .collect();
    Ok(findings)
}

/// The packages in an `rpmdb.sqlite` image (WAL already applied, see
/// [`wal::apply_wal`]), in `hnum` order, with one error per bad header.
///
/// Pure and bounded: reads only `db` (at most [`MAX_DB_BYTES`]), at most
/// [`MAX_ROWS`] rows, at most [`MAX_ERRORS`] + 2 error strings. Safe on any
/// bytes (a fuzz target). `db` is taken by value so that it is dropped
/// once SQLite holds its own copy. Errors in [`Findings::errors`] start with
/// `hnum N:`; `os` is always `None`.
///
/// # Errors
/// [`SqliteError`] when `db` is not a database SQLite opens or has no
/// `Packages` table as rpm creates it. Corruption met after the first row
/// ends the list early with an entry in `errors` instead.
pub fn read_packages_from_bytes(db: Vec<u8>) -> Result<Findings, SqliteError> {
    let conn = sqlite::open_image(&db, MAX_DB_BYTES)?;
    drop(db);
    read_packages(&conn)
}

/// Read and decode every row of `Packages`.
fn read_packages(conn: &Connection) -> Result<Findings, SqliteError> {
    let mut findings = Findings::default();
    let mut unlisted = 0usize;
    let end = sqlite::read_rows(conn, MAX_ROWS, |row| {
        let error = match row.blob {
            Ok(blob) => match header::parse_header(blob) {
                Ok(info) => {
                    findings.packages.push(Package {
                        version: info.evr(),
                        name: info.name,
                        arch: recorded(info.arch),
                        format: PackageFormat::Rpm,
                        source: recorded(info.source_rpm),
                    });
                    return;
                }
                Err(err) => format!("hnum {}: bad header: {err}", row.hnum),
            },
            Err(kind) => format!("hnum {}: blob is {kind}, not BLOB", row.hnum),
        };
        if findings.errors.len() < MAX_ERRORS {
            findings.errors.push(error);
        } else {
            unlisted = unlisted.saturating_add(1);
        }
    })?;
    if unlisted > 0 {
        findings
            .errors
            .push(format!("{unlisted} more bad headers not listed"));
    }
    if let RowsEnd::Stopped(reason) = end {
        findings.errors.push(reason);
    }
    Ok(findings)
}

/// A string tag's value, unless it is rpm's placeholder `(none)`: rpm
/// writes `SOURCERPM` as the literal `(none)` in `gpg-pubkey` headers, and
/// prints `(none)` for an absent tag too; both mean "not recorded".
fn recorded(value: Option<String>) -> Option<String> {
    value.filter(|v| v != "(none)")
}

#[cfg(test)]
mod tests {
    use super::header::build::{self, Item};
    use super::header::tag;
    use super::*;
    use crate::fs::host::HostFs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// (name, version, arch, source), as compared with `rpm -qa`.
    type Row = (String, String, Option<String>, Option<String>);

    const QUERY_FORMAT: &str =
        "%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\n";

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/build-rpm-root.sh")
    }

    /// A fresh root built by the fixture script. Panics (never skips) when
    /// rpm or rpmbuild is missing: the script says which.
    fn build_root() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let output = Command::new("bash")
            .arg(script())
            .arg(dir.path())
            .output()?;
        assert!(
            output.status.success(),
            "{} failed: {}",
            script().display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(dir)
    }

    /// What `rpm -qa` says is installed in `root`, sorted; rpm's `(none)`
    /// is `None`.
    fn rpm_qa(root: &Path) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
        let output = Command::new("rpm")
            .arg("--root")
            .arg(root)
            .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", QUERY_FORMAT])
            .output()
            .map_err(|err| format!("running rpm (install the Debian package rpm): {err}"))?;
        assert!(
            output.status.success(),
            "rpm -qa: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let optional = |field: &str| (field != "(none)").then(|| field.to_string());
        let mut rows: Vec<Row> = String::from_utf8(output.stdout)?
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 4, "rpm -qa line {line:?}");
                (
                    fields[0].to_string(),
                    fields[1].to_string(),
                    optional(fields[2]),
                    optional(fields[3]),
                )
            })
            .collect();
        rows.sort();
        Ok(rows)
    }

    fn rows(findings: &Findings) -> Vec<Row> {
        let mut rows: Vec<Row> = findings
            .packages
            .iter()
            .map(|p| {
                assert_eq!(p.format, PackageFormat::Rpm);
                (
                    p.name.clone(),
                    p.version.clone(),
                    p.arch.clone(),
                    p.source.clone(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    fn detect(root: &Path) -> Result<Findings, DetectError> {
        RpmDetector.detect(&HostFs::new(root))
    }

    #[test]
    fn fixture_matches_rpm_qa() -> TestResult {
        let root = build_root()?;
        let truth = rpm_qa(root.path())?;
        // The fixture covers what it promises, or this test proves little.
        let versions: Vec<&str> = truth.iter().map(|r| r.1.as_str()).collect();
        assert!(versions.contains(&"2:3.4.5-2"), "{truth:?}");
        assert!(versions.contains(&"0:5.1-3"), "{truth:?}");
        assert!(versions.contains(&"0.9-1.el9"), "{truth:?}");
        assert!(truth.iter().any(|r| r.0 == "gpg-pubkey" && r.2.is_none()));
        assert!(truth.iter().any(|r| r.2.as_deref() == Some("x86_64")));

        let findings = detect(root.path())?;
        assert_eq!(findings.errors, Vec::<String>::new());
        assert_eq!(findings.os, None);
        assert_eq!(rows(&findings), truth);
        Ok(())
    }

    #[test]
    fn sysimage_location_and_symlink() -> TestResult {
        let root = build_root()?;
        let truth = rpm_qa(root.path())?;
        let sysimage = root.path().join("usr/lib/sysimage");
        std::fs::create_dir_all(&sysimage)?;
        std::fs::rename(root.path().join("var/lib/rpm"), sysimage.join("rpm"))?;
        assert_eq!(rows(&detect(root.path())?), truth, "only in sysimage");
        std::os::unix::fs::symlink(
            "../../usr/lib/sysimage/rpm",
            root.path().join("var/lib/rpm"),
        )?;
        assert_eq!(rows(&detect(root.path())?), truth, "through the symlink");
        Ok(())
    }

    /// A snapshot taken while another process keeps a read transaction
    /// open: rpm's commit stays in the WAL (its closing checkpoint cannot
    /// pass the reader; it gives up after its 10 s busy timeout). The file
    /// alone shows the state before; file and WAL, the state after.
    #[test]
    fn committed_wal_is_applied() -> TestResult {
        let live = build_root()?;
        let before = rpm_qa(live.path())?;
        let rpm_dir = live.path().join("var/lib/rpm");
        let db_path = rpm_dir.join("rpmdb.sqlite");

        let reader = rusqlite::Connection::open_with_flags(
            &db_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        reader.execute_batch("BEGIN")?;
        let _: i64 = reader.query_row("SELECT count(*) FROM Packages", [], |r| r.get(0))?;
        let erase = Command::new("rpm")
            .arg("--root")
            .arg(live.path())
            .args(["--dbpath", "/var/lib/rpm", "-e", "--nodeps", "--noscripts"])
            .arg("bravo")
            .output()?;
        assert!(
            erase.status.success(),
            "rpm -e: {}",
            String::from_utf8_lossy(&erase.stderr)
        );
        let db = std::fs::read(&db_path)?;
        let wal = std::fs::read(rpm_dir.join("rpmdb.sqlite-wal"))?;
        reader.execute_batch("COMMIT")?;
        drop(reader);
        assert!(!wal.is_empty(), "rpm left no WAL: the test proves nothing");
        let after = rpm_qa(live.path())?;
        assert_ne!(before, after);

        let snapshot = tempfile::tempdir()?;
        let snapshot_dir = snapshot.path().join("var/lib/rpm");
        std::fs::create_dir_all(&snapshot_dir)?;
        std::fs::write(snapshot_dir.join("rpmdb.sqlite"), &db)?;
        let findings = detect(snapshot.path())?;
        assert_eq!(rows(&findings), before, "the file alone");

        std::fs::write(snapshot_dir.join("rpmdb.sqlite-wal"), &wal)?;
        let findings = detect(snapshot.path())?;
        assert_eq!(findings.errors, Vec::<String>::new());
        assert_eq!(rows(&findings), after, "file and WAL");

        // A WAL of garbage is reported and ignored.
        std::fs::write(
            snapshot_dir.join("rpmdb.sqlite-wal"),
            b"garbage, not a WAL at all!!!!!!!!",
        )?;
        let findings = detect(snapshot.path())?;
        assert_eq!(rows(&findings), before);
        assert_eq!(findings.errors.len(), 1, "{:?}", findings.errors);
        assert!(findings.errors[0].contains("rpmdb.sqlite-wal: ignored: bad WAL magic"));
        Ok(())
    }

    #[test]
    fn other_databases_are_reported_and_absence_is_nothing() -> TestResult {
        let root = tempfile::tempdir()?;
        assert_eq!(detect(root.path())?, Findings::default());
        std::fs::create_dir_all(root.path().join("var/lib/rpm"))?;
        assert_eq!(detect(root.path())?, Findings::default());
        std::fs::write(root.path().join("var/lib/rpm/Packages"), [0u8; 64])?;
        let findings = detect(root.path())?;
        assert!(findings.packages.is_empty());
        assert_eq!(
            findings.errors,
            vec![
                "/var/lib/rpm/Packages: the BerkeleyDB rpm database is not supported yet; \
                 rpm packages are not listed"
                    .to_string()
            ]
        );
        Ok(())
    }

    #[test]
    fn a_database_that_is_not_one_is_a_parse_error() -> TestResult {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("usr/lib/sysimage/rpm");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("rpmdb.sqlite"), b"hello")?;
        let err = detect(root.path()).expect_err("not a database");
        let message = err.to_string();
        assert!(
            message.starts_with("rpm: /usr/lib/sysimage/rpm/rpmdb.sqlite: not an SQLite database"),
            "{message}"
        );
        Ok(())
    }

    /// A `Packages` table built with rusqlite from `blobs`, serialized.
    fn packages_image(blobs: &[Vec<u8>]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)",
        )?;
        for blob in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])?;
        }
        Ok(conn.serialize(rusqlite::MAIN_DB)?.to_vec())
    }

    #[test]
    fn bad_headers_are_errors_and_the_rest_is_listed() -> TestResult {
        let good = build::blob(&build::package("good", "1", "1", "noarch"), true);
        let mut huge_il = good.clone();
        huge_il[..4].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
        let mut far_offset = good.clone();
        // Entry 1 (NAME, after the region entry): offset far out of range.
        far_offset[8 + 16 + 8..8 + 16 + 12].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        let no_release = build::blob(
            &[
                build::string(tag::NAME, "half"),
                build::string(tag::VERSION, "1"),
            ],
            false,
        );
        let unterminated = build::blob(
            &[Item {
                tag: tag::NAME,
                kind: header::kind::STRING,
                count: 1,
                data: b"no-nul".to_vec(),
            }],
            false,
        );
        let image = packages_image(&[
            huge_il,
            good.clone(),
            far_offset,
            Vec::new(),
            no_release,
            unterminated,
            vec![0xff; 3],
        ])?;
        let findings = read_packages_from_bytes(image)?;
        assert_eq!(
            rows(&findings),
            vec![("good".into(), "1-1".into(), Some("noarch".into()), None)]
        );
        let prefixes: Vec<&str> = findings
            .errors
            .iter()
            .map(|e| e.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(
            prefixes,
            ["hnum 1", "hnum 3", "hnum 4", "hnum 5", "hnum 6", "hnum 7"],
            "{:?}",
            findings.errors
        );
        assert!(findings.errors[0].contains("index entry count 16777215"));
        assert!(findings.errors[1].contains("offset past the data store"));
        assert!(findings.errors[3].contains("no RELEASE tag"));
        Ok(())
    }

    #[test]
    fn bad_header_errors_are_capped() -> TestResult {
        let blobs = vec![vec![0u8; 4]; MAX_ERRORS + 25];
        let findings = read_packages_from_bytes(packages_image(&blobs)?)?;
        assert_eq!(findings.errors.len(), MAX_ERRORS + 1);
        assert_eq!(
            findings.errors.last().map(String::as_str),
            Some("25 more bad headers not listed")
        );
        Ok(())
    }

    /// Deterministic pseudo-random bytes (xorshift), no dependency needed.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    fn fixture_db() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let root = build_root()?;
        Ok(std::fs::read(root.path().join("var/lib/rpm/rpmdb.sqlite"))?)
    }

    /// Truncated, corrupted and random database bytes: errors or partial
    /// results, never a panic, never more packages than there were.
    #[test]
    fn hostile_database_bytes() -> TestResult {
        let db = fixture_db()?;
        let complete = read_packages_from_bytes(db.clone())?.packages.len();
        assert_eq!(complete, 5);

        for len in [0, 1, 16, 99, 100, 512, 4096, db.len() / 2, db.len() - 1] {
            if let Ok(findings) = read_packages_from_bytes(db[..len].to_vec()) {
                assert!(findings.packages.len() <= complete, "length {len}");
            }
        }
        for seed in 0..64u64 {
            // Random bytes, and random bytes behind a valid SQLite header.
            let mut bytes = noise(seed, 8192);
            let _ = read_packages_from_bytes(bytes.clone());
            bytes[..100].copy_from_slice(&db[..100]);
            let _ = read_packages_from_bytes(bytes.clone());
            // The real database with a run of pages overwritten.
            let mut corrupt = db.clone();
            let at = usize::try_from(seed).expect("small") * 4096 % db.len();
            let end = (at + 2048).min(corrupt.len());
            corrupt[at..end].copy_from_slice(&noise(seed + 1000, end - at));
            if let Ok(findings) = read_packages_from_bytes(corrupt) {
                assert!(findings.packages.len() <= complete, "seed {seed}");
            }
        }
        Ok(())
    }

    /// Random and corrupted WALs over the real database: the result is the
    /// database's packages or an error, never a panic.
    #[test]
    fn hostile_wal_bytes() -> TestResult {
        let db = fixture_db()?;
        let truth = rows(&read_packages_from_bytes(db.clone())?);
        for seed in 0..32u64 {
            let mut wal = noise(seed, 4096 + 32 + 24);
            if seed % 2 == 0 {
                wal[..4].copy_from_slice(&wal::WAL_MAGIC_LE.to_be_bytes());
                wal[4..8].copy_from_slice(&wal::WAL_FORMAT_VERSION.to_be_bytes());
                wal[8..12].copy_from_slice(&4096u32.to_be_bytes());
            }
            let mut image = db.clone();
            match wal::apply_wal(&mut image, &wal, MAX_DB_BYTES) {
                Ok(summary) => assert_eq!(summary.frames_committed, 0),
                Err(_) => assert_eq!(image, db),
            }
            assert_eq!(rows(&read_packages_from_bytes(image)?), truth);
        }
        Ok(())
    }
}
