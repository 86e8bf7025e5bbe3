//! PLACEHOLDER: CycloneDX 1.6 JSON SBOM.

use super::Report;

/// Build a CycloneDX 1.6 BOM for `report`.
pub fn bom(report: &Report) -> serde_json::Value {
    serde_json::json!({ "bomFormat": "CycloneDX", "specVersion": "1.6", "target": report.target })
}
