//! Big-endian field readers for XFS's on-disk structures (and the few
//! little-endian ones: CRCs and the host-order log item formats).
//!
//! Every reader returns `None` past the end of the buffer instead of
//! panicking; parsers turn that into a [`FsError::Corrupt`] naming the
//! structure and where it was read.

use crate::fs::FsError;

/// `N` bytes at `at`, or `None` when they run past the end.
pub(super) fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// A big-endian `u16` at `at`.
pub(super) fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    array(bytes, at).map(u16::from_be_bytes)
}

/// A big-endian `u32` at `at`.
pub(super) fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    array(bytes, at).map(u32::from_be_bytes)
}

/// A big-endian `u64` at `at`.
pub(super) fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    array(bytes, at).map(u64::from_be_bytes)
}

/// A little-endian `u16` at `at`.
pub(super) fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    array(bytes, at).map(u16::from_le_bytes)
}

/// A little-endian `u32` at `at`.
pub(super) fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    array(bytes, at).map(u32::from_le_bytes)
}

/// A little-endian `u64` at `at`.
pub(super) fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    array(bytes, at).map(u64::from_le_bytes)
}

/// One byte at `at`.
pub(super) fn byte(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

/// A [`FsError::Corrupt`] for `what`.
pub(super) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> FsError {
    FsError::Corrupt {
        what: what.into(),
        detail: detail.into(),
    }
}

/// The error for a field read past the end of a structure.
pub(super) fn short(what: &str) -> FsError {
    corrupt(what, "structure is shorter than its fields")
}

/// A `usize` from an on-disk `u64` (lossless on 64-bit targets; saturates
/// elsewhere so the caller's bound checks reject it).
pub(super) fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A `u64` from a length.
pub(super) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
