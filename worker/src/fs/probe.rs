//! Tells what a volume holds from its magic numbers, never from a partition
//! type or name: data volumes and odd layouts must not be skipped silently.
//!
//! Offsets follow each format's documentation: ext2/3/4 superblock at 1024
//! with magic 0xEF53 at +0x38 (kernel `Documentation/filesystems/ext4`),
//! XFS `XFSB` at 0 (XFS on-disk format, "Superblocks"), FAT boot sector
//! signatures, LUKS, LVM2 `LABELONE` in one of the first four sectors,
//! btrfs `_BHRfS_M` at 64 KiB + 0x40, Linux swap at the end of the first
//! page, NTFS OEM id, squashfs `hsqs`, ISO 9660 `CD001`.

use crate::block::{BlockError, BlockSource};

/// Filesystem (or container) kinds the probe recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    /// ext2, ext3 or ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// FAT12/16/32 (EFI system partitions).
    Vfat,
    /// btrfs.
    Btrfs,
    /// NTFS.
    Ntfs,
    /// squashfs.
    Squashfs,
    /// ISO 9660.
    Iso9660,
    /// Linux swap space.
    Swap,
    /// A LUKS encrypted container.
    Luks,
    /// An LVM2 physical volume.
    Lvm2,
}

impl FsKind {
    /// Whether this scanner parses the filesystem (the others are reported
    /// and skipped as unsupported).
    pub fn has_reader(self) -> bool {
        matches!(self, FsKind::Ext4 | FsKind::Xfs)
    }

    /// The name used in reports (`ext4`, `xfs`, `vfat`, …).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Vfat => "vfat",
            FsKind::Btrfs => "btrfs",
            FsKind::Ntfs => "ntfs",
            FsKind::Squashfs => "squashfs",
            FsKind::Iso9660 => "iso9660",
            FsKind::Swap => "swap",
            FsKind::Luks => "crypto_LUKS",
            FsKind::Lvm2 => "LVM2_member",
        }
    }
}

/// What the probe found on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The kind.
    pub kind: FsKind,
    /// The filesystem UUID, formatted as `blkid` shows it, where it has one.
    pub uuid: Option<String>,
    /// The volume label, where set.
    pub label: Option<String>,
    /// For ext2/3/4: which of the three, as `blkid` would say.
    pub variant: Option<&'static str>,
    /// Inodes in use, from the superblock, where the format records it: a
    /// bound for walks (no valid tree has more directories than this).
    pub inodes_used: Option<u64>,
}

/// How many leading bytes the probe reads: enough for every magic above
/// (btrfs's superblock ends at 64 KiB + 4 KiB).
const PROBE_LEN: u64 = 72 * 1024;

/// Probe `source` for a known filesystem or container.
///
/// Returns `Ok(None)` when nothing is recognised (an empty or unknown
/// volume); the caller decides how to report that.
///
/// # Errors
/// [`BlockError`] when the first bytes cannot be read.
pub fn probe(source: &dyn BlockSource) -> Result<Option<Probe>, BlockError> {
    let len = PROBE_LEN.min(source.size());
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(0)];
    source.read_exact_at(&mut head, 0)?;
    Ok(probe_bytes(&head))
}

/// Probe the first bytes of a volume (at most [`PROBE_LEN`] are looked at).
pub fn probe_bytes(head: &[u8]) -> Option<Probe> {
    let at = |offset: usize, len: usize| head.get(offset..offset.checked_add(len)?);
    let plain = |kind| Probe {
        kind,
        uuid: None,
        label: None,
        variant: None,
        inodes_used: None,
    };

    if at(0, 6) == Some(b"LUKS\xba\xbe") {
        let uuid = at(168, 40).map(c_string).filter(|u| !u.is_empty());
        return Some(Probe {
            uuid,
            ..plain(FsKind::Luks)
        });
    }
    if (0..4).any(|sector| at(sector * 512, 8) == Some(b"LABELONE")) {
        return Some(plain(FsKind::Lvm2));
    }
    if at(0, 4) == Some(b"XFSB") {
        let be64 = |offset: usize| {
            at(offset, 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        };
        // sb_icount and sb_ifree (XFS on-disk format, "Superblocks").
        let inodes_used = be64(128)
            .zip(be64(136))
            .map(|(count, free)| count.saturating_sub(free));
        return Some(Probe {
            inodes_used,
            uuid: at(32, 16).map(format_uuid),
            label: at(108, 12).map(c_string).filter(|l| !l.is_empty()),
            ..plain(FsKind::Xfs)
        });
    }
    if at(1024 + 0x38, 2) == Some(&[0x53, 0xEF]) {
        let le32 = |offset: usize| {
            at(1024 + offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let compat = le32(0x5C).unwrap_or(0);
        let incompat = le32(0x60).unwrap_or(0);
        let ro_compat = le32(0x64).unwrap_or(0);
        // blkid's rule: ext4 if it uses any ext4-only feature, ext3 if it
        // has a journal, ext2 otherwise.
        let ext4_only = incompat & !0x0006 != 0 || ro_compat & !0x0007 != 0;
        let variant = if ext4_only {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let inodes_used = le32(0x00)
            .zip(le32(0x10))
            .map(|(count, free)| u64::from(count.saturating_sub(free)));
        return Some(Probe {
            inodes_used,
            uuid: at(1024 + 0x68, 16).map(format_uuid),
            label: at(1024 + 0x78, 16).map(c_string).filter(|l| !l.is_empty()),
            variant: Some(variant),
            ..plain(FsKind::Ext4)
        });
    }
    if at(0x10040, 8) == Some(b"_BHRfS_M") {
        return Some(Probe {
            uuid: at(0x10020, 16).map(format_uuid),
            label: at(0x1012B, 256).map(c_string).filter(|l| !l.is_empty()),
            ..plain(FsKind::Btrfs)
        });
    }
    if at(3, 8) == Some(b"NTFS    ") {
        return Some(plain(FsKind::Ntfs));
    }
    if at(0, 4) == Some(b"hsqs") {
        return Some(plain(FsKind::Squashfs));
    }
    if at(0x8001, 5) == Some(b"CD001") {
        return Some(plain(FsKind::Iso9660));
    }
    if [4096usize, 8192, 16384, 65536]
        .iter()
        .any(|page| matches!(at(page - 10, 10), Some(b"SWAPSPACE2" | b"SWAP-SPACE")))
    {
        return Some(plain(FsKind::Swap));
    }
    if at(510, 2) == Some(&[0x55, 0xAA]) {
        // FAT32 keeps its type string and serial further in than FAT12/16.
        let (serial, label) = if at(0x52, 5) == Some(b"FAT32") {
            (at(0x43, 4), at(0x47, 11))
        } else if at(0x36, 3) == Some(b"FAT") {
            (at(0x27, 4), at(0x2B, 11))
        } else {
            (None, None)
        };
        if let Some(serial) = serial {
            let uuid = format!(
                "{:02X}{:02X}-{:02X}{:02X}",
                serial[3], serial[2], serial[1], serial[0]
            );
            let label = label
                .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
                .filter(|l| !l.is_empty() && l != "NO NAME");
            return Some(Probe {
                uuid: Some(uuid),
                label,
                ..plain(FsKind::Vfat)
            });
        }
    }
    None
}

/// Format 16 bytes as a lowercase RFC 4122 UUID string.
fn format_uuid(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match (
        hex.get(0..8),
        hex.get(8..12),
        hex.get(12..16),
        hex.get(16..20),
        hex.get(20..32),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e)) => format!("{a}-{b}-{c}-{d}-{e}"),
        _ => hex,
    }
}

/// The text up to the first NUL, non-UTF-8 replaced.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_random_bytes_are_unknown() {
        assert_eq!(probe_bytes(&[]), None);
        assert_eq!(probe_bytes(&[0u8; 4096]), None);
    }

    #[test]
    fn xfs_magic_is_recognised() {
        let mut head = vec![0u8; 512];
        head[..4].copy_from_slice(b"XFSB");
        assert_eq!(probe_bytes(&head).map(|p| p.kind), Some(FsKind::Xfs));
    }
}
