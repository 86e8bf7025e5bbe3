//! The report as tables for a person at a terminal.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::Report;

/// Render `report` as text: a line for the target, a table of volumes, and a
/// table of packages per volume that has any.
pub fn render(report: &Report) -> String {
    render_with(report, None)
}

/// [`render`], with at most `max_packages` rows per package table (the
/// rest counted in a line below it) when given.
pub fn render_with(report: &Report, max_packages: Option<usize>) -> String {
    let mut out = format!(
        "{}: {} volume(s), {} bytes read in {} ms\n",
        report.target,
        report.volumes.len(),
        report.stats.bytes_read,
        report.stats.duration_ms
    );
    for error in &report.errors {
        out.push_str(&format!("warning: {error}\n"));
    }
    let mut volumes = Table::new();
    volumes.load_preset(UTF8_FULL_CONDENSED).set_header([
        "#",
        "partition",
        "filesystem",
        "os",
        "packages",
        "status",
    ]);
    for (index, volume) in report.volumes.iter().enumerate() {
        let partition = volume.partition.as_ref().map_or_else(
            || "whole disk".to_string(),
            |p| format!("{} {} ({})", p.scheme, p.number, human_size(p.size)),
        );
        let filesystem = volume.filesystem.as_ref().map_or_else(
            || "-".to_string(),
            |f| match &f.label {
                Some(label) => format!("{} \"{label}\"", f.fs_type),
                None => f.fs_type.clone(),
            },
        );
        let os = volume
            .os
            .as_ref()
            .and_then(|os| os.pretty_name.clone().or_else(|| os.id.clone()))
            .unwrap_or_else(|| "-".to_string());
        let status = match (&volume.skipped, volume.errors.len()) {
            (Some(skipped), _) => format!("skipped: {}", skipped.detail),
            (None, 0) => "ok".to_string(),
            (None, n) => format!("{n} error(s)"),
        };
        volumes.add_row([
            (index + 1).to_string(),
            partition,
            filesystem,
            os,
            volume.packages.len().to_string(),
            status,
        ]);
    }
    out.push_str(&volumes.to_string());
    out.push('\n');
    for (index, volume) in report.volumes.iter().enumerate() {
        for error in &volume.errors {
            out.push_str(&format!("volume {}: error: {error}\n", index + 1));
        }
        for note in &volume.notes {
            out.push_str(&format!("volume {}: note: {note}\n", index + 1));
        }
        if volume.packages.is_empty() {
            continue;
        }
        let mut packages = Table::new();
        packages
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(["package", "version", "arch", "format"]);
        let shown = max_packages.unwrap_or(usize::MAX);
        for package in volume.packages.iter().take(shown) {
            packages.add_row([
                package.name.as_str(),
                package.version.as_str(),
                package.arch.as_deref().unwrap_or("-"),
                format_name(package.format),
            ]);
        }
        out.push_str(&format!("\nvolume {} packages:\n{packages}\n", index + 1));
        if let Some(more) = volume.packages.len().checked_sub(shown).filter(|n| *n > 0) {
            out.push_str(&format!("… and {more} more\n"));
        }
    }
    out
}

fn format_name(format: crate::detect::PackageFormat) -> &'static str {
    match format {
        crate::detect::PackageFormat::Deb => "deb",
        crate::detect::PackageFormat::Rpm => "rpm",
        crate::detect::PackageFormat::Apk => "apk",
    }
}

/// `1536` → `1.5 KiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
