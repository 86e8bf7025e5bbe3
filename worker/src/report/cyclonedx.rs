//! The report as a CycloneDX 1.6 JSON SBOM (`--format cyclonedx`).
//!
//! Written with our own serde structs because the `cyclonedx-bom` crate stops
//! at spec 1.5; we emit only the small subset a package inventory needs:
//! one `operating-system` component per volume with an OS, one `library`
//! component per package with a purl (`packageurl` crate, which sorts and
//! escapes qualifiers as the purl spec requires), and `dependencies`
//! linking each OS to its packages. Validated against the official 1.6 JSON
//! schema in the end-to-end tests.
//!
//! purls follow the purl spec's types: `pkg:deb/<os id>/name@version?arch=…&distro=<id>-<version>`,
//! `pkg:rpm/<os id>/name@VERSION-RELEASE?arch=…&epoch=N&distro=…` (rpm's
//! epoch is a qualifier, not part of the version), `pkg:apk/<os id>/name@version?arch=…&distro=…`.

use packageurl::PackageUrl;
use serde::Serialize;

use super::Report;
use crate::detect::{OsInfo, Package, PackageFormat};

/// A CycloneDX 1.6 BOM document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Serialize)]
struct Metadata {
    tools: Tools,
    component: Component,
}

#[derive(Debug, Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Debug, Serialize)]
struct Component {
    #[serde(rename = "type")]
    component_type: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Debug, Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

/// Build the BOM for `report`. Deterministic but for the serial number.
pub fn bom(report: &Report) -> Bom {
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for (index, volume) in report.volumes.iter().enumerate() {
        let volume_ref = format!("volume-{}", index.saturating_add(1));
        let os = volume.os.as_ref();
        let mut package_refs = Vec::new();
        for package in &volume.packages {
            let purl = purl(package, os);
            let bom_ref = format!(
                "{volume_ref}/{}",
                purl.clone().unwrap_or_else(|| package.name.clone())
            );
            package_refs.push(bom_ref.clone());
            let mut properties = vec![Property {
                name: "mondoo:package:format",
                value: format_name(package.format).to_string(),
            }];
            if let Some(source) = &package.source {
                properties.push(Property {
                    name: "mondoo:package:source",
                    value: source.clone(),
                });
            }
            components.push(Component {
                component_type: "library",
                bom_ref: Some(bom_ref),
                name: package.name.clone(),
                version: Some(package.version.clone()),
                description: None,
                purl,
                properties,
            });
        }
        if let Some(os) = os {
            let os_ref = format!("{volume_ref}/os");
            components.push(Component {
                component_type: "operating-system",
                bom_ref: Some(os_ref.clone()),
                name: os.id.clone().unwrap_or_else(|| "unknown".to_string()),
                version: os.version_id.clone(),
                description: os.pretty_name.clone(),
                purl: None,
                properties: volume_properties(volume),
            });
            dependencies.push(Dependency {
                reference: os_ref,
                depends_on: package_refs,
            });
        }
    }
    Bom {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        version: 1,
        metadata: Metadata {
            tools: Tools {
                components: vec![Component {
                    component_type: "application",
                    bom_ref: None,
                    name: "worker".to_string(),
                    version: Some(env!("CARGO_PKG_VERSION").to_string()),
                    description: Some("agentless EBS snapshot scanner".to_string()),
                    purl: None,
                    properties: Vec::new(),
                }],
            },
            component: Component {
                component_type: "device",
                bom_ref: Some("target".to_string()),
                name: report.target.clone(),
                version: None,
                description: Some("scanned disk".to_string()),
                purl: None,
                properties: Vec::new(),
            },
        },
        components,
        dependencies,
    }
}

fn volume_properties(volume: &super::VolumeReport) -> Vec<Property> {
    let mut properties = Vec::new();
    if let Some(partition) = &volume.partition {
        properties.push(Property {
            name: "mondoo:volume:partition",
            value: format!("{} {}", partition.scheme, partition.number),
        });
    }
    if let Some(filesystem) = &volume.filesystem {
        properties.push(Property {
            name: "mondoo:volume:filesystem",
            value: filesystem.fs_type.clone(),
        });
        if let Some(uuid) = &filesystem.uuid {
            properties.push(Property {
                name: "mondoo:volume:uuid",
                value: uuid.clone(),
            });
        }
    }
    properties
}

fn format_name(format: PackageFormat) -> &'static str {
    match format {
        PackageFormat::Deb => "deb",
        PackageFormat::Rpm => "rpm",
        PackageFormat::Apk => "apk",
    }
}

/// The package URL of `package` on an OS (namespace and `distro` come from
/// it), or `None` when the name cannot form a valid purl.
pub fn purl(package: &Package, os: Option<&OsInfo>) -> Option<String> {
    let namespace = os
        .and_then(|os| os.id.clone())
        .unwrap_or_else(|| match package.format {
            PackageFormat::Deb => "debian".to_string(),
            PackageFormat::Rpm => "redhat".to_string(),
            PackageFormat::Apk => "alpine".to_string(),
        });
    let mut purl = PackageUrl::new(format_name(package.format), package.name.as_str()).ok()?;
    purl.with_namespace(namespace.clone()).ok()?;
    let version = match package.format {
        PackageFormat::Rpm => match package.version.split_once(':') {
            Some((epoch, rest)) => {
                purl.add_qualifier("epoch", epoch.to_string()).ok()?;
                rest.to_string()
            }
            None => package.version.clone(),
        },
        PackageFormat::Deb | PackageFormat::Apk => package.version.clone(),
    };
    purl.with_version(version).ok()?;
    if let Some(arch) = &package.arch {
        purl.add_qualifier("arch", arch.clone()).ok()?;
    }
    if let Some(version_id) = os.and_then(|os| os.version_id.as_ref()) {
        purl.add_qualifier("distro", format!("{namespace}-{version_id}"))
            .ok()?;
    }
    Some(purl.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> OsInfo {
        OsInfo {
            id: Some("debian".to_string()),
            version_id: Some("12".to_string()),
            name: None,
            pretty_name: None,
        }
    }

    #[test]
    fn deb_purl_keeps_the_epoch_in_the_version() {
        let package = Package {
            name: "libc6".to_string(),
            version: "1:2.36-9".to_string(),
            arch: Some("amd64".to_string()),
            format: PackageFormat::Deb,
            source: None,
        };
        assert_eq!(
            purl(&package, Some(&debian())).as_deref(),
            Some("pkg:deb/debian/libc6@1:2.36-9?arch=amd64&distro=debian-12")
        );
    }

    #[test]
    fn rpm_purl_moves_the_epoch_to_a_qualifier() {
        let package = Package {
            name: "bash".to_string(),
            version: "2:5.2.15-1.amzn2023".to_string(),
            arch: Some("x86_64".to_string()),
            format: PackageFormat::Rpm,
            source: None,
        };
        let os = OsInfo {
            id: Some("amzn".to_string()),
            version_id: Some("2023".to_string()),
            ..OsInfo::default()
        };
        assert_eq!(
            purl(&package, Some(&os)).as_deref(),
            Some("pkg:rpm/amzn/bash@5.2.15-1.amzn2023?arch=x86_64&distro=amzn-2023&epoch=2")
        );
    }
}
