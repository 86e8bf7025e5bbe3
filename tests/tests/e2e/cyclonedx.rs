//! `--format cyclonedx`: a CycloneDX 1.6 SBOM that the official JSON schema
//! accepts (validated by cyclonedx-python-lib in the venv scripts/test
//! makes), with a package URL per deb package.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use e2e::image::{self, MIB};
use e2e::run::run_worker;
use e2e::tools::run_with_input;
use e2e::{tree, truth, venv_python, workdir};

/// Validates the BOM on stdin against the CycloneDX 1.6 JSON schema (strict:
/// no unknown properties) and prints `{"errors": [...], "purls": [...]}`,
/// each purl parsed by packageurl-python.
const VALIDATE: &str = r#"
import json, sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

text = sys.stdin.read()
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
errors = [str(e) for e in (errors or [])]
purls = []
def walk(components):
    for c in components or []:
        if "purl" in c:
            p = PackageURL.from_string(c["purl"])
            purls.append({"purl": c["purl"], "type": p.type, "namespace": p.namespace,
                          "name": p.name, "version": p.version,
                          "qualifiers": p.qualifiers or {}, "canonical": p.to_string()})
        walk(c.get("components"))
try:
    walk(json.loads(text).get("components"))
except Exception as e:
    errors.append(f"reading components: {e!r}")
print(json.dumps({"errors": errors, "purls": purls}))
"#;

#[test]
fn cyclonedx_validates_against_the_1_6_schema_and_has_deb_purls() -> Result<()> {
    let python = venv_python()?;
    let dir = workdir()?;
    let root = dir.path().join("root");
    tree::debian_root(&root)?;
    let img = image::bare_ext4(dir.path(), "debian.img", &root, 64 * MIB)?;

    let outcome = run_worker([
        "scan".as_ref(),
        img.as_os_str(),
        "--format".as_ref(),
        "cyclonedx".as_ref(),
    ])?;
    ensure!(outcome.code == Some(0), "{}", outcome.summary());
    let bom = &outcome.stdout;

    let mut cmd = std::process::Command::new(&python);
    cmd.args(["-c", VALIDATE]);
    let checked: serde_json::Value =
        serde_json::from_str(&run_with_input(&mut cmd, bom.as_bytes())?)
            .context("validator output")?;
    let errors = checked["errors"]
        .as_array()
        .context("validator: no errors list")?;
    if !errors.is_empty() {
        bail!(
            "the SBOM is not valid CycloneDX 1.6 ({} errors):\n{}\nBOM (start):\n{}",
            errors.len(),
            errors
                .iter()
                .map(|e| e.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
            bom.chars().take(2000).collect::<String>()
        );
    }

    let os = truth::os_release(&tree::host_os_release()?);
    let id = os.get("ID").context("host os-release has no ID")?;
    let version_id = os
        .get("VERSION_ID")
        .context("host os-release has no VERSION_ID")?;
    let distro = format!("{id}-{version_id}");
    let purls = checked["purls"].as_array().context("validator: no purls")?;
    let mut found = BTreeSet::new();
    for purl in purls.iter().filter(|p| p["type"] == "deb") {
        let text = purl["purl"].as_str().unwrap_or_default();
        ensure!(
            purl["namespace"].as_str() == Some(id.as_str())
                && purl["qualifiers"]["distro"].as_str() == Some(distro.as_str()),
            "{text}: expected pkg:deb/{id}/…?…distro={distro}"
        );
        found.insert((
            purl["name"].as_str().unwrap_or_default().to_string(),
            purl["version"].as_str().unwrap_or_default().to_string(),
            purl["qualifiers"]["arch"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let expected = truth::dpkg_query(&root.join("var/lib/dpkg"))?;
    ensure!(
        found == expected,
        "deb purls differ from dpkg-query: {}",
        truth::set_diff(&expected, &found)
    );
    // Spelled out for a package whose name and version need no escaping.
    let plain = expected
        .iter()
        .find(|(name, version, _)| {
            name.chars()
                .chain(version.chars())
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .context("no package with a plain name and version")?;
    let literal = format!(
        "pkg:deb/{id}/{}@{}?arch={}&distro={distro}",
        plain.0, plain.1, plain.2
    );
    ensure!(
        purls.iter().any(|p| p["purl"] == literal.as_str()),
        "no component has the purl {literal}"
    );
    Ok(())
}
