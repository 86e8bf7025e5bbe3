//! Ground truth from the real tools: what `sfdisk`, `blkid`, `dpkg-query`,
//! `rpm` and `dumpe2fs` say about the same images and trees the scanner
//! reads, in the shapes the tests compare with the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use worker::detect::{OsInfo, PackageFormat};
use worker::report::VolumeReport;

use crate::tools::{run, run_allowing, tool};

/// Packages as `(name, version, arch)`; an unrecorded arch is `""`.
pub type PackageSet = BTreeSet<(String, String, String)>;

/// One partition as `sfdisk --json` lists it, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePartition {
    /// The kernel's number: the digits ending sfdisk's `node`.
    pub number: u32,
    /// Byte offset from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// The type as the report writes it: a lowercase GPT type GUID, or the
    /// MBR type byte as `0x83`.
    pub type_id: String,
    /// The GPT partition name, where set.
    pub name: Option<String>,
}

impl TablePartition {
    /// Whether this is an MBR extended-partition container (types 0x05,
    /// 0x0f, 0x85), which holds the logical partitions rather than a
    /// filesystem.
    pub fn is_extended_container(&self) -> bool {
        matches!(self.type_id.as_str(), "0x05" | "0x0f" | "0x85")
    }
}

/// A partition table as `sfdisk --json` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `gpt` or `dos`.
    pub label: String,
    /// The partitions in sfdisk's order (primary, then logical).
    pub partitions: Vec<TablePartition>,
}

impl Table {
    /// The partition numbered `number`.
    ///
    /// # Errors
    /// When there is none.
    pub fn partition(&self, number: u32) -> Result<&TablePartition> {
        self.partitions
            .iter()
            .find(|p| p.number == number)
            .with_context(|| format!("sfdisk lists no partition {number}: {self:?}"))
    }
}

/// `sfdisk --json DISK`.
///
/// # Errors
/// When sfdisk fails or prints something unexpected.
pub fn sfdisk(disk: &Path) -> Result<Table> {
    let text = run(tool("sfdisk")?.arg("--json").arg(disk))?;
    let json: serde_json::Value = serde_json::from_str(&text).context("sfdisk --json output")?;
    let table = &json["partitiontable"];
    let label = table["label"]
        .as_str()
        .context("sfdisk: no label")?
        .to_string();
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let mut partitions = Vec::new();
    for entry in table["partitions"]
        .as_array()
        .context("sfdisk: no partitions")?
    {
        let node = entry["node"].as_str().context("sfdisk: no node")?;
        let digits: String = node
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let number = digits
            .parse()
            .with_context(|| format!("sfdisk node {node} has no number"))?;
        let start = entry["start"].as_u64().context("sfdisk: no start")? * sector;
        let size = entry["size"].as_u64().context("sfdisk: no size")? * sector;
        let raw_type = entry["type"].as_str().context("sfdisk: no type")?;
        let type_id = if label == "gpt" {
            raw_type.to_ascii_lowercase()
        } else {
            let byte = u8::from_str_radix(raw_type, 16)
                .with_context(|| format!("sfdisk MBR type {raw_type}"))?;
            format!("0x{byte:02x}")
        };
        let name = entry["name"].as_str().map(str::to_string);
        partitions.push(TablePartition {
            number,
            start,
            size,
            type_id,
            name,
        });
    }
    Ok(Table { label, partitions })
}

/// `blkid -p -o export -O OFFSET IMG`: the low-level probe's `UUID`,
/// `LABEL`, `TYPE`, … of the filesystem at `offset`.
///
/// # Errors
/// When blkid finds nothing there.
pub fn blkid(image: &Path, offset: u64) -> Result<BTreeMap<String, String>> {
    let out = run(tool("blkid")?
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(image))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// `dpkg-query --admindir=ADMINDIR -W`: the packages dpkg counts as
/// present, that is every status but `not-installed` and `config-files`.
///
/// # Errors
/// When dpkg-query fails.
pub fn dpkg_query(admindir: &Path) -> Result<PackageSet> {
    let mut cmd = tool("dpkg-query")?;
    cmd.arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f"])
        .arg("${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\n");
    let out = run(&mut cmd)?;
    let mut set = PackageSet::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [status, name, version, arch] = fields[..] else {
            bail!("dpkg-query printed an unexpected line: {line:?}");
        };
        if status == "not-installed" || status == "config-files" {
            continue;
        }
        set.insert((name.to_string(), version.to_string(), arch.to_string()));
    }
    if set.is_empty() {
        bail!("dpkg-query found no packages in {}", admindir.display());
    }
    Ok(set)
}

/// `rpm --root ROOT --dbpath /var/lib/rpm -qa`, versions written
/// `[EPOCH:]VERSION-RELEASE` with the epoch only when the package has one.
///
/// # Errors
/// When rpm fails or lists nothing.
pub fn rpm_qa(root: &Path) -> Result<PackageSet> {
    let mut cmd = tool("rpm")?;
    cmd.arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf"])
        .arg("%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n");
    let out = run(&mut cmd)?;
    let mut set = PackageSet::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, version, arch] = fields[..] else {
            bail!("rpm -qa printed an unexpected line: {line:?}");
        };
        // rpm prints "(none)" for a tag a header lacks (gpg-pubkey's arch).
        let arch = if arch == "(none)" { "" } else { arch };
        set.insert((name.to_string(), version.to_string(), arch.to_string()));
    }
    if set.is_empty() {
        bail!("rpm -qa found no packages under {}", root.display());
    }
    Ok(set)
}

/// The packages of `format` a volume reports, as a [`PackageSet`].
pub fn reported(volume: &VolumeReport, format: PackageFormat) -> PackageSet {
    volume
        .packages
        .iter()
        .filter(|p| p.format == format)
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone(),
                p.arch.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// What two package sets disagree on, for assertion messages.
pub fn set_diff(expected: &PackageSet, actual: &PackageSet) -> String {
    let missing: Vec<_> = expected.difference(actual).take(20).collect();
    let extra: Vec<_> = actual.difference(expected).take(20).collect();
    format!(
        "expected {} packages, report has {}; missing (first 20): {missing:?}; unexpected (first 20): {extra:?}",
        expected.len(),
        actual.len()
    )
}

/// Parse os-release text (os-release(5): `KEY=value`, values optionally in
/// single or double quotes, backslash escapes inside double quotes).
pub fn os_release(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_string()
        } else {
            raw.to_string()
        };
        map.insert(key.trim().to_string(), value);
    }
    map
}

/// The [`OsInfo`] the report should carry for os-release `text`.
pub fn os_info(text: &str) -> OsInfo {
    let fields = os_release(text);
    let get = |key: &str| fields.get(key).cloned();
    OsInfo {
        id: get("ID"),
        version_id: get("VERSION_ID"),
        name: get("NAME"),
        pretty_name: get("PRETTY_NAME"),
    }
}

/// `dumpe2fs -h IMG` as `key → value` (`Filesystem features`, `Block size`, …).
///
/// # Errors
/// When dumpe2fs fails.
pub fn dumpe2fs_header(image: &Path) -> Result<BTreeMap<String, String>> {
    let out = run_allowing(tool("dumpe2fs")?.arg("-h").arg(image), &[0])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// The features `dumpe2fs -h` lists.
///
/// # Errors
/// When dumpe2fs fails or lists none.
pub fn ext4_features(image: &Path) -> Result<BTreeSet<String>> {
    let header = dumpe2fs_header(image)?;
    let features = header
        .get("Filesystem features")
        .context("dumpe2fs -h printed no feature list")?;
    Ok(features.split_whitespace().map(str::to_string).collect())
}
