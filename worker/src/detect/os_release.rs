//! The os-release detector: which operating system a volume holds.
//!
//! Format reference: os-release(5) (systemd), "Syntax": newline-separated
//! `KEY=value` shell-compatible assignments; values in double or single
//! quotes or unquoted; in double quotes `\"`, `\\`, `` \` `` and `\$` are
//! escapes and a backslash before anything else stays; `#` lines are
//! comments; blank lines are ignored. `/etc/os-release` is read, and
//! `/usr/lib/os-release` only when the former does not exist, as that page
//! says. The tests compare this parser with what bash makes of the same file.
//!
//! Hand-written because we need four keys, and the parsing must be bounded
//! and lenient where a shell is not: no expansion (`$X` and `` `…` `` are
//! kept as text, os-release(5) requires them escaped), concatenated quoted
//! pieces are joined as a shell joins them, CRLF ends a line, and an
//! assignment with an unterminated quote is reported and skipped, not left
//! to swallow the rest of the file.
//!
//! Systems older than os-release (RHEL and CentOS 6, early Amazon Linux AMI,
//! Debian 6, old Alpine) are recognised from their own release files, tried
//! in this order when neither os-release file exists or when the one that
//! does names nothing:
//! - `/etc/system-release`, `/etc/redhat-release`: one line,
//!   `NAME release VERSION (CODENAME)`. `id` comes from the name (see
//!   [`RELEASE_NAMES`]), `name` is the text before ` release `,
//!   `pretty_name` the whole line. `version_id` is the version as written,
//!   except where os-release itself would say only the major version:
//!   CentOS (`7.9.2009` → `7`) and Amazon Linux 2022 and later
//!   (`2023.3.20240219` → `2023`).
//! - `/etc/debian_version`: `12.5` gives `id = debian`,
//!   `version_id = 12` (the major, which is what Debian's os-release says
//!   since Debian 7), `pretty_name = Debian GNU/Linux 12.5` (the file's
//!   value kept as the detail). A codename such as `bookworm/sid` (testing,
//!   unstable, or an Ubuntu without os-release) gives no `version_id`.
//! - `/etc/alpine-release`: `3.19.1` gives `id = alpine`,
//!   `version_id = 3.19.1`, as Alpine's os-release does.

use super::error_log::{ErrorLog, excerpt};
use super::{DetectError, Detector, Findings, OsInfo};
use crate::fs::Filesystem;

/// The os-release files, in the order looked at; only the first that exists
/// is read.
pub const OS_RELEASE_PATHS: &[&str] = &["/etc/os-release", "/usr/lib/os-release"];

/// The largest release file read: real ones are under 1 KiB.
pub const MAX_RELEASE_FILE_SIZE: u64 = 64 * 1024;

/// Names at the start of a `/etc/system-release` line and the os-release
/// `ID` each stands for; the first prefix that matches wins.
pub const RELEASE_NAMES: &[(&str, &str)] = &[
    ("Red Hat Enterprise Linux", "rhel"),
    ("CentOS", "centos"),
    ("Amazon Linux", "amzn"),
    ("Fedora", "fedora"),
    ("Rocky Linux", "rocky"),
    ("AlmaLinux", "almalinux"),
    ("Oracle Linux", "ol"),
    ("Scientific Linux", "scientific"),
    ("CloudLinux", "cloudlinux"),
];

/// Reads one pre-os-release file's text.
type ReleaseFileParser = fn(&str) -> Option<OsInfo>;

/// The pre-os-release files and how each reads, in the order tried.
const FALLBACKS: &[(&str, ReleaseFileParser)] = &[
    ("/etc/system-release", parse_release_line),
    ("/etc/redhat-release", parse_release_line),
    ("/etc/debian_version", parse_debian_version),
    ("/etc/alpine-release", parse_alpine_release),
];

const NAME: &str = "os-release";

/// The os-release detector: `/etc/os-release`, else `/usr/lib/os-release`,
/// else the distribution's own release file (`/etc/system-release`,
/// `/etc/redhat-release`, `/etc/debian_version`, `/etc/alpine-release`),
/// each read up to 64 KiB.
pub struct OsReleaseDetector;

impl Detector for OsReleaseDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The OS from the first os-release file that exists, else from the
    /// first pre-os-release file that names one. Lines of os-release that cannot be parsed are
    /// reported in [`Findings::errors`]. No package is ever found.
    ///
    /// # Errors
    /// [`DetectError::Fs`] when a file that exists cannot be read, including
    /// when it is larger than 64 KiB.
    fn detect(&self, fs: &dyn Filesystem) -> Result<Findings, DetectError> {
        let mut findings = Findings::default();
        for path in OS_RELEASE_PATHS {
            let Some(text) = read_text(fs, path)? else {
                continue;
            };
            let (info, errors) = parse_os_release(&text);
            findings
                .errors
                .extend(errors.into_iter().map(|e| format!("{path}: {e}")));
            if info != OsInfo::default() {
                findings.os = Some(info);
                return Ok(findings);
            }
            findings.errors.push(format!(
                "{path}: sets none of ID, VERSION_ID, NAME, PRETTY_NAME; \
                 trying the distribution's own release files"
            ));
            // os-release(5): /usr/lib/os-release only when /etc's is missing.
            break;
        }
        for (path, parse) in FALLBACKS {
            if let Some(info) = read_text(fs, path)?.as_deref().and_then(parse) {
                findings.os = Some(info);
                return Ok(findings);
            }
        }
        Ok(findings)
    }
}

/// The file at `path` as text (invalid UTF-8 replaced), `None` when it does
/// not exist.
fn read_text(fs: &dyn Filesystem, path: &str) -> Result<Option<String>, DetectError> {
    match fs.read(path, MAX_RELEASE_FILE_SIZE) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) if err.is_not_found() => Ok(None),
        Err(source) => Err(DetectError::Fs {
            detector: NAME,
            source,
        }),
    }
}

/// Parse an os-release file: `ID`, `VERSION_ID`, `NAME` and `PRETTY_NAME`
/// (the last assignment of each wins, as in a shell; an empty value is
/// `None`), and the problems found, each starting with `line N:` (1-based).
///
/// No default is filled in for a missing key (os-release(5) says `ID`
/// defaults to `linux`): the report says what the file says.
///
/// Never panics, on any input; at most [`MAX_ERRORS_PER_FILE`](crate::detect::MAX_ERRORS_PER_FILE) errors are
/// returned, then one saying how many more there were.
pub fn parse_os_release(text: &str) -> (OsInfo, Vec<String>) {
    let (assignments, errors) = parse_assignments(text);
    let mut info = OsInfo::default();
    for (key, value) in assignments {
        let slot = match key.as_str() {
            "ID" => &mut info.id,
            "VERSION_ID" => &mut info.version_id,
            "NAME" => &mut info.name,
            "PRETTY_NAME" => &mut info.pretty_name,
            _ => continue,
        };
        *slot = Some(value).filter(|v| !v.is_empty());
    }
    (info, errors)
}

/// Every `KEY=value` of an os-release file, in file order, values unquoted
/// and unescaped; and the problems found.
fn parse_assignments(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut cursor = Cursor {
        text,
        pos: 0,
        line: 1,
    };
    let mut assignments = Vec::new();
    let mut errors = ErrorLog::default();
    loop {
        cursor.skip_blanks();
        match cursor.peek() {
            None => break,
            Some('\n') => {
                cursor.bump();
                continue;
            }
            Some('#') => {
                cursor.skip_to_eol();
                continue;
            }
            Some(_) => {}
        }
        let start = cursor.clone();
        let mut key = String::new();
        while let Some(c) = cursor
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            key.push(c);
            cursor.bump();
        }
        let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if !valid_key || cursor.peek() != Some('=') {
            errors.push(format!(
                "line {}: not a KEY=value assignment: {}",
                start.line,
                excerpt(start.rest_of_line())
            ));
            cursor.skip_to_eol();
            continue;
        }
        cursor.bump(); // '='
        match read_value(&mut cursor) {
            Ok(value) => {
                cursor.skip_blanks();
                match cursor.peek() {
                    None | Some('\n' | '#') => {}
                    Some(_) => errors.push(format!(
                        "line {}: text after the value of {key} ignored: {}",
                        cursor.line,
                        excerpt(cursor.rest_of_line())
                    )),
                }
                cursor.skip_to_eol();
                assignments.push((key, value));
            }
            Err(problem) => {
                errors.push(format!("line {}: {key}: {problem}; skipped", start.line));
                cursor = start;
                cursor.skip_to_eol();
            }
        }
    }
    (assignments, errors.into_vec())
}

/// One shell word at `cursor`: unquoted, `'…'` and `"…"` pieces joined,
/// ending at unquoted whitespace or the end of the line.
fn read_value(cursor: &mut Cursor<'_>) -> Result<String, &'static str> {
    let mut value = String::new();
    loop {
        match cursor.peek() {
            None | Some(' ' | '\t' | '\r' | '\n') => return Ok(value),
            Some('\\') => {
                cursor.bump();
                match cursor.bump() {
                    Some('\n') | None => {} // line continuation
                    Some(c) => value.push(c),
                }
            }
            Some('\'') => {
                cursor.bump();
                loop {
                    match cursor.bump() {
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            Some('"') => {
                cursor.bump();
                loop {
                    match cursor.bump() {
                        Some('"') => break,
                        Some('\\') => match cursor.bump() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => value.push(c),
                            Some('\n') => {} // line continuation
                            Some(c) => {
                                value.push('\\');
                                value.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => value.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            Some(c) => {
                cursor.bump();
                value.push(c);
            }
        }
    }
}

/// A position in the text and its 1-based line number.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    text: &'a str,
    /// Byte offset, always on a character boundary.
    pos: usize,
    line: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn rest_of_line(&self) -> &str {
        let rest = self.rest();
        rest.split('\n').next().unwrap_or(rest)
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos = self.pos.saturating_add(c.len_utf8());
        if c == '\n' {
            self.line = self.line.saturating_add(1);
        }
        Some(c)
    }

    /// Past spaces, tabs and carriage returns (so CRLF reads as LF).
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    /// To the next newline, which is left for the caller.
    fn skip_to_eol(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }
}

/// Parse `/etc/system-release` or `/etc/redhat-release`
/// (`CentOS Linux release 7.9.2009 (Core)`); see the module documentation
/// for the mapping. `None` when the file has no non-blank line.
pub fn parse_release_line(text: &str) -> Option<OsInfo> {
    let line = first_line(text)?;
    let (name, version) = match line.split_once(" release ") {
        Some((name, rest)) => (
            name.trim(),
            rest.split_whitespace()
                .next()
                .filter(|v| !v.starts_with('(')),
        ),
        None => (line, None),
    };
    let id = RELEASE_NAMES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, id)| *id);
    let version_id = version.map(|version| match id {
        Some("centos") => major(version).to_string(),
        Some("amzn") if major(version).parse::<u32>().is_ok_and(|y| y >= 2022) => {
            major(version).to_string()
        }
        _ => version.to_string(),
    });
    Some(OsInfo {
        id: id.map(str::to_string),
        version_id,
        name: Some(name.to_string()).filter(|n| !n.is_empty()),
        pretty_name: Some(line.to_string()),
    })
}

/// Parse `/etc/debian_version` (`12.5`, `bookworm/sid`); see the module
/// documentation for the mapping. `None` when the file has no non-blank
/// line.
pub fn parse_debian_version(text: &str) -> Option<OsInfo> {
    let line = first_line(text)?;
    let numeric = line
        .split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    Some(OsInfo {
        id: Some("debian".to_string()),
        version_id: numeric.then(|| major(line).to_string()),
        name: Some("Debian GNU/Linux".to_string()),
        pretty_name: Some(format!("Debian GNU/Linux {line}")),
    })
}

/// Parse `/etc/alpine-release` (`3.19.1`). `None` when the file has no
/// non-blank line.
pub fn parse_alpine_release(text: &str) -> Option<OsInfo> {
    let line = first_line(text)?;
    Some(OsInfo {
        id: Some("alpine".to_string()),
        version_id: Some(line.to_string()),
        name: Some("Alpine Linux".to_string()),
        pretty_name: Some(format!("Alpine Linux {line}")),
    })
}

/// The first non-blank line, trimmed.
fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| !line.is_empty())
}

/// The part of a dotted version before the first dot.
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::host::HostFs;
    use std::collections::BTreeMap;
    use std::error::Error;
    use std::path::Path;
    use std::process::Command;

    type TestResult = Result<(), Box<dyn Error>>;

    const QUOTING: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests-data/detect/os-release/quoting"
    ));

    /// What bash has in `keys` after sourcing `file`, in a clean environment.
    fn bash_values(file: &Path, keys: &[&str]) -> Result<BTreeMap<String, String>, Box<dyn Error>> {
        let output = Command::new("bash")
            .env_clear()
            .args(["--noprofile", "--norc", "-c"])
            .arg(r#"f=$1; shift; . "$f" || exit 1; for k in "$@"; do printf '%s\0%s\0' "$k" "${!k}"; done"#)
            .arg("bash")
            .arg(file)
            .args(keys)
            .output()
            .map_err(|err| format!("this test needs bash: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "bash could not source {}: {}",
                file.display(),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8(output.stdout)?;
        let fields: Vec<&str> = stdout.split('\0').collect();
        Ok(fields
            .chunks_exact(2)
            .map(|pair| (pair[0].to_string(), pair[1].to_string()))
            .collect())
    }

    fn info(
        id: Option<&str>,
        version_id: Option<&str>,
        name: Option<&str>,
        pretty: Option<&str>,
    ) -> OsInfo {
        OsInfo {
            id: id.map(str::to_string),
            version_id: version_id.map(str::to_string),
            name: name.map(str::to_string),
            pretty_name: pretty.map(str::to_string),
        }
    }

    /// A root holding `files` (path, content), detected.
    fn detect_files(files: &[(&str, &str)]) -> Result<Findings, Box<dyn Error>> {
        let root = tempfile::tempdir()?;
        for (path, content) in files {
            let host = root.path().join(path.trim_start_matches('/'));
            if let Some(parent) = host.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(host, content)?;
        }
        Ok(OsReleaseDetector.detect(&HostFs::new(root.path()))?)
    }

    #[test]
    fn quoting_and_escapes_read_as_bash_reads_them() -> TestResult {
        let (assignments, errors) = parse_assignments(QUOTING);
        assert_eq!(errors, Vec::<String>::new());
        let ours: BTreeMap<String, String> = assignments.into_iter().collect();
        let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "BUILD_ID",
                "CONCAT",
                "CONTINUED",
                "EMPTY",
                "EMPTY_QUOTED",
                "HOME_URL",
                "ID",
                "ID_LIKE",
                "LAST",
                "MULTI",
                "NAME",
                "PRETTY_NAME",
                "UTF8",
                "VERSION",
                "VERSION_CODENAME",
                "VERSION_ID",
            ]
        );
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("os-release");
        std::fs::write(&file, QUOTING)?;
        assert_eq!(ours, bash_values(&file, &keys)?);
        // And spelled out, so a reader sees what the escapes mean.
        assert_eq!(ours["NAME"], r#"Fixture "Quoted" Linux"#);
        assert_eq!(
            ours["VERSION"],
            r"1.2 (Two $ Dollars, `ticks`, a \ backslash)"
        );
        assert_eq!(
            ours["BUILD_ID"],
            r"a\b\c kept: backslash before other characters"
        );
        assert_eq!(ours["MULTI"], "first line\nsecond line");
        assert_eq!(
            parse_os_release(QUOTING).0,
            info(
                Some("fixture"),
                Some("1.2"),
                Some(r#"Fixture "Quoted" Linux"#),
                Some(r#"Single \ keeps backslashes "and" double quotes"#)
            )
        );
        Ok(())
    }

    #[test]
    fn this_machines_os_release_reads_as_bash_reads_it() -> TestResult {
        let path = Path::new("/etc/os-release");
        let text = std::fs::read_to_string(path)?;
        let (ours, errors) = parse_os_release(&text);
        assert_eq!(errors, Vec::<String>::new());
        let bash = bash_values(path, &["ID", "VERSION_ID", "NAME", "PRETTY_NAME"])?;
        let from_bash = |key: &str| bash.get(key).filter(|v| !v.is_empty()).cloned();
        assert_eq!(
            ours,
            OsInfo {
                id: from_bash("ID"),
                version_id: from_bash("VERSION_ID"),
                name: from_bash("NAME"),
                pretty_name: from_bash("PRETTY_NAME"),
            }
        );
        assert!(ours.id.is_some(), "this machine's os-release names its ID");
        // Through the Filesystem seam too (on Debian /etc/os-release is a
        // relative symlink into /usr/lib).
        let findings = OsReleaseDetector.detect(&HostFs::new("/"))?;
        assert_eq!(findings.os, Some(ours));
        Ok(())
    }

    #[test]
    fn a_symlinked_os_release_is_followed_inside_the_root() -> TestResult {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("usr/lib"))?;
        std::fs::create_dir_all(root.path().join("etc"))?;
        std::fs::write(
            root.path().join("usr/lib/os-release"),
            "NAME=\"Amazon Linux\"\nVERSION_ID=\"2023\"\nID=\"amzn\"\nPRETTY_NAME=\"Amazon Linux 2023.3.20240219\"\n",
        )?;
        std::os::unix::fs::symlink("../usr/lib/os-release", root.path().join("etc/os-release"))?;
        let findings = OsReleaseDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(
            findings.os,
            Some(info(
                Some("amzn"),
                Some("2023"),
                Some("Amazon Linux"),
                Some("Amazon Linux 2023.3.20240219")
            ))
        );
        // An absolute symlink resolves inside the root, not on the host.
        std::fs::remove_file(root.path().join("etc/os-release"))?;
        std::os::unix::fs::symlink("/usr/lib/os-release", root.path().join("etc/os-release"))?;
        let findings = OsReleaseDetector.detect(&HostFs::new(root.path()))?;
        assert_eq!(findings.os.and_then(|os| os.id).as_deref(), Some("amzn"));
        Ok(())
    }

    #[test]
    fn etc_takes_precedence_over_usr_lib() -> TestResult {
        let findings = detect_files(&[
            ("/etc/os-release", "ID=etc\n"),
            ("/usr/lib/os-release", "ID=usr\nVERSION_ID=1\n"),
        ])?;
        assert_eq!(findings.os, Some(info(Some("etc"), None, None, None)));
        let findings = detect_files(&[("/usr/lib/os-release", "ID=usr\nVERSION_ID=1\n")])?;
        assert_eq!(findings.os, Some(info(Some("usr"), Some("1"), None, None)));
        Ok(())
    }

    #[test]
    fn system_release_lines() {
        let cases = [
            (
                "Red Hat Enterprise Linux release 8.9 (Ootpa)\n",
                info(
                    Some("rhel"),
                    Some("8.9"),
                    Some("Red Hat Enterprise Linux"),
                    Some("Red Hat Enterprise Linux release 8.9 (Ootpa)"),
                ),
            ),
            (
                "Red Hat Enterprise Linux Server release 6.10 (Santiago)",
                info(
                    Some("rhel"),
                    Some("6.10"),
                    Some("Red Hat Enterprise Linux Server"),
                    Some("Red Hat Enterprise Linux Server release 6.10 (Santiago)"),
                ),
            ),
            (
                "CentOS Linux release 7.9.2009 (Core)\n",
                info(
                    Some("centos"),
                    Some("7"),
                    Some("CentOS Linux"),
                    Some("CentOS Linux release 7.9.2009 (Core)"),
                ),
            ),
            (
                "CentOS release 6.10 (Final)\n",
                info(
                    Some("centos"),
                    Some("6"),
                    Some("CentOS"),
                    Some("CentOS release 6.10 (Final)"),
                ),
            ),
            (
                "CentOS Stream release 9\n",
                info(
                    Some("centos"),
                    Some("9"),
                    Some("CentOS Stream"),
                    Some("CentOS Stream release 9"),
                ),
            ),
            (
                "Amazon Linux release 2 (Karoo)\n",
                info(
                    Some("amzn"),
                    Some("2"),
                    Some("Amazon Linux"),
                    Some("Amazon Linux release 2 (Karoo)"),
                ),
            ),
            (
                "Amazon Linux AMI release 2018.03\n",
                info(
                    Some("amzn"),
                    Some("2018.03"),
                    Some("Amazon Linux AMI"),
                    Some("Amazon Linux AMI release 2018.03"),
                ),
            ),
            (
                "Amazon Linux release 2023.3.20240219 (Amazon Linux)\n",
                info(
                    Some("amzn"),
                    Some("2023"),
                    Some("Amazon Linux"),
                    Some("Amazon Linux release 2023.3.20240219 (Amazon Linux)"),
                ),
            ),
            (
                "Fedora release 39 (Thirty Nine)\n",
                info(
                    Some("fedora"),
                    Some("39"),
                    Some("Fedora"),
                    Some("Fedora release 39 (Thirty Nine)"),
                ),
            ),
            (
                "Rocky Linux release 9.3 (Blue Onyx)\n",
                info(
                    Some("rocky"),
                    Some("9.3"),
                    Some("Rocky Linux"),
                    Some("Rocky Linux release 9.3 (Blue Onyx)"),
                ),
            ),
            (
                "AlmaLinux release 8.9 (Midnight Oncilla)\n",
                info(
                    Some("almalinux"),
                    Some("8.9"),
                    Some("AlmaLinux"),
                    Some("AlmaLinux release 8.9 (Midnight Oncilla)"),
                ),
            ),
            (
                "Oracle Linux Server release 8.9\n",
                info(
                    Some("ol"),
                    Some("8.9"),
                    Some("Oracle Linux Server"),
                    Some("Oracle Linux Server release 8.9"),
                ),
            ),
            (
                "\n  Unknown Distro release 1.0 (X)  \n",
                info(
                    None,
                    Some("1.0"),
                    Some("Unknown Distro"),
                    Some("Unknown Distro release 1.0 (X)"),
                ),
            ),
            (
                "Something without a version",
                info(
                    None,
                    None,
                    Some("Something without a version"),
                    Some("Something without a version"),
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_release_line(text), Some(expected), "{text:?}");
        }
        assert_eq!(parse_release_line(" \n\n"), None);
    }

    #[test]
    fn each_fallback_file_through_the_detector() -> TestResult {
        let centos = detect_files(&[(
            "/etc/redhat-release",
            "CentOS Linux release 7.9.2009 (Core)\n",
        )])?;
        assert_eq!(centos.os.and_then(|os| os.id).as_deref(), Some("centos"));

        // system-release is tried before redhat-release.
        let amzn = detect_files(&[
            ("/etc/system-release", "Amazon Linux release 2 (Karoo)\n"),
            (
                "/etc/redhat-release",
                "Red Hat Enterprise Linux release 8.9 (Ootpa)\n",
            ),
        ])?;
        assert_eq!(amzn.os.and_then(|os| os.id).as_deref(), Some("amzn"));

        let debian = detect_files(&[("/etc/debian_version", "12.5\n")])?;
        assert_eq!(
            debian.os,
            Some(info(
                Some("debian"),
                Some("12"),
                Some("Debian GNU/Linux"),
                Some("Debian GNU/Linux 12.5")
            ))
        );
        let sid = detect_files(&[("/etc/debian_version", "trixie/sid\n")])?;
        assert_eq!(
            sid.os,
            Some(info(
                Some("debian"),
                None,
                Some("Debian GNU/Linux"),
                Some("Debian GNU/Linux trixie/sid")
            ))
        );
        assert_eq!(
            parse_debian_version("6.0.10")
                .and_then(|os| os.version_id)
                .as_deref(),
            Some("6")
        );
        assert_eq!(
            parse_debian_version("12")
                .and_then(|os| os.version_id)
                .as_deref(),
            Some("12")
        );

        let alpine = detect_files(&[("/etc/alpine-release", "3.19.1\n")])?;
        assert_eq!(
            alpine.os,
            Some(info(
                Some("alpine"),
                Some("3.19.1"),
                Some("Alpine Linux"),
                Some("Alpine Linux 3.19.1")
            ))
        );

        // An os-release that names nothing: reported, then the fallbacks.
        let empty = detect_files(&[
            ("/etc/os-release", "# nothing here\n"),
            ("/etc/alpine-release", "3.4.6\n"),
        ])?;
        assert_eq!(
            empty.os.and_then(|os| os.version_id).as_deref(),
            Some("3.4.6")
        );
        assert_eq!(empty.errors.len(), 1);
        assert!(empty.errors[0].starts_with("/etc/os-release: sets none of"));

        // An empty fallback file is skipped for the next one.
        let next = detect_files(&[
            ("/etc/system-release", "\n"),
            ("/etc/debian_version", "11.9\n"),
        ])?;
        assert_eq!(next.os.and_then(|os| os.version_id).as_deref(), Some("11"));

        assert_eq!(detect_files(&[])?, Findings::default());
        Ok(())
    }

    #[test]
    fn malformed_lines_are_reported_and_the_rest_kept() {
        let text = "ID=one\nnot an assignment\n9X=bad\nNAME=\"open quote\nVERSION_ID=2 trailing words\nPRETTY_NAME='ok'\r\n=novalue\nBAD='never closed\n";
        let (info_, errors) = parse_os_release(text);
        assert_eq!(info_, info(Some("one"), Some("2"), None, Some("ok")));
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(
            errors[0].starts_with("line 2: not a KEY=value"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("line 3: not a KEY=value"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 4: NAME: unterminated double quote"),
            "{errors:?}"
        );
        assert!(
            errors[3].starts_with("line 5: text after the value of VERSION_ID"),
            "{errors:?}"
        );
        assert!(
            errors[4].starts_with("line 7: not a KEY=value"),
            "{errors:?}"
        );
        assert!(
            errors[5].starts_with("line 8: BAD: unterminated single quote"),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_values_are_none_and_the_last_assignment_wins() {
        let (info_, errors) = parse_os_release("ID=first\nID=second\nVERSION_ID=\nNAME=\"\"\n");
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(info_, info(Some("second"), None, None, None));
        assert_eq!(parse_os_release(""), (OsInfo::default(), vec![]));
    }

    #[test]
    fn a_file_over_the_limit_is_an_error() -> TestResult {
        let big = format!(
            "ID=x\n#{}\n",
            "#".repeat(usize::try_from(MAX_RELEASE_FILE_SIZE)?)
        );
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("etc"))?;
        std::fs::write(root.path().join("etc/os-release"), big)?;
        let result = OsReleaseDetector.detect(&HostFs::new(root.path()));
        assert!(
            matches!(
                result,
                Err(DetectError::Fs {
                    detector: "os-release",
                    source: crate::fs::FsError::TooLarge { .. }
                })
            ),
            "{result:?}"
        );
        Ok(())
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0xd1b5_4a32_d192_ed03_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ID=\"'\\\n #\t\r$`x\xff\xc3\xa4 release 1.2(";
        for round in 0..2_000 {
            let len = usize::try_from(next() % 300).unwrap_or(0);
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
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_os_release(&text);
            let _ = parse_release_line(&text);
            let _ = parse_debian_version(&text);
            let _ = parse_alpine_release(&text);
        }
    }
}
