//! Reads from the block source, with the metadata the log replay produced
//! laid over it and a bounded cache of metadata blocks.
//!
//! The overlay is the in-memory result of [`log`](super::log) recovery: whole
//! metadata buffers (by byte offset) as they would be after the kernel's
//! replay. A read that touches one says so, because replayed buffers carry
//! stale CRCs (the kernel recomputes them when it writes the buffer back;
//! we never write), so their CRCs are not checked.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::bytes::{to_u64, to_usize};
use super::cache::Cache;
use crate::block::BlockSource;
use crate::fs::FsError;

/// Metadata blocks kept per open filesystem (two generations of this many):
/// with 4 KiB blocks, at most 32 MiB.
const CACHED_BLOCKS: usize = 4096;

/// Replayed metadata buffers, keyed by byte offset.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    buffers: BTreeMap<u64, Vec<u8>>,
    /// Longest buffer, to bound the range query.
    longest: u64,
    /// Bytes held.
    bytes: u64,
}

impl Overlay {
    /// Bytes held in replayed buffers.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of replayed buffers.
    pub(super) fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Replace whatever overlaps `[offset, offset + data.len())` with `data`.
    /// Buffers partly overlapped are patched in place; `data` is stored
    /// under `offset` (merged into a buffer at the same offset and length).
    pub(super) fn put(&mut self, offset: u64, data: Vec<u8>) {
        let len = to_u64(data.len());
        let end = offset.saturating_add(len);
        // Patch overlapping buffers so no stale copy survives.
        let from = offset.saturating_sub(self.longest);
        let keys: Vec<u64> = self.buffers.range(from..end).map(|(k, _)| *k).collect();
        for key in keys {
            if key == offset
                && let Some(old) = self.buffers.get(&key)
                && to_u64(old.len()) <= len
            {
                self.bytes = self.bytes.saturating_sub(to_u64(old.len()));
                self.buffers.remove(&key);
                continue;
            }
            if let Some(buffer) = self.buffers.get_mut(&key) {
                patch(buffer, key, &data, offset);
            }
        }
        if let Some(existing) = self.buffers.get_mut(&offset) {
            // A longer buffer at the same place: patched above.
            let _ = existing;
            return;
        }
        self.longest = self.longest.max(len);
        self.bytes = self.bytes.saturating_add(len);
        self.buffers.insert(offset, data);
    }

    /// Lay the buffers overlapping `[offset, offset + buf.len())` over `buf`;
    /// true when any did.
    pub(super) fn apply(&self, buf: &mut [u8], offset: u64) -> bool {
        if self.buffers.is_empty() {
            return false;
        }
        let end = offset.saturating_add(to_u64(buf.len()));
        let from = offset.saturating_sub(self.longest);
        let mut touched = false;
        for (&key, data) in self.buffers.range(from..end) {
            if key.saturating_add(to_u64(data.len())) > offset {
                // Copy data onto buf where they overlap.
                copy_overlap(buf, offset, data, key);
                touched = true;
            }
        }
        touched
    }
}

/// Copy the part of `src` (at byte `src_at`) that overlaps `dst` (at byte
/// `dst_at`) into `dst`.
fn copy_overlap(dst: &mut [u8], dst_at: u64, src: &[u8], src_at: u64) {
    let start = dst_at.max(src_at);
    let end = dst_at
        .saturating_add(to_u64(dst.len()))
        .min(src_at.saturating_add(to_u64(src.len())));
    if start >= end {
        return;
    }
    let len = to_usize(end.saturating_sub(start));
    let d = to_usize(start.saturating_sub(dst_at));
    let s = to_usize(start.saturating_sub(src_at));
    if let (Some(d), Some(s)) = (
        dst.get_mut(d..d.saturating_add(len)),
        src.get(s..s.saturating_add(len)),
    ) {
        d.copy_from_slice(s);
    }
}

/// Patch `buffer` (at byte `at`) with the overlapping part of `data` (at
/// byte `data_at`).
fn patch(buffer: &mut [u8], at: u64, data: &[u8], data_at: u64) {
    copy_overlap(buffer, at, data, data_at);
}

/// A block read through the cache: its bytes, and whether the log replay
/// changed any of them.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub bytes: Rc<[u8]>,
    pub replayed: bool,
}

/// The block source as the reader sees it.
pub(super) struct Device {
    source: Arc<dyn BlockSource>,
    overlay: Option<Arc<Overlay>>,
    cache: RefCell<Cache<(u64, usize), Block>>,
}

impl Device {
    /// Reads of `source`, with `overlay` (the replayed log) on top.
    pub(super) fn new(source: Arc<dyn BlockSource>, overlay: Option<Arc<Overlay>>) -> Self {
        Self {
            source,
            overlay,
            cache: RefCell::new(Cache::new(CACHED_BLOCKS)),
        }
    }

    /// Fill `buf` from byte `offset`, overlay applied; true when the overlay
    /// changed something. `what` names the structure for errors.
    pub(super) fn read_into(
        &self,
        buf: &mut [u8],
        offset: u64,
        what: &str,
    ) -> Result<bool, FsError> {
        self.source
            .read_exact_at(buf, offset)
            .map_err(|err| FsError::Io {
                what: what.to_string(),
                detail: err.to_string(),
            })?;
        Ok(self
            .overlay
            .as_ref()
            .is_some_and(|overlay| overlay.apply(buf, offset)))
    }

    /// Fill `buf` from byte `offset` without the overlay (file data, which
    /// the log never holds).
    pub(super) fn read_raw(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<(), FsError> {
        self.source
            .read_exact_at(buf, offset)
            .map_err(|err| FsError::Io {
                what: what.to_string(),
                detail: err.to_string(),
            })
    }

    /// A hint that these `(offset, len)` byte ranges will be read next: a
    /// snapshot source fetches them in parallel instead of one by one.
    pub(super) fn prefetch(&self, ranges: &[(u64, u64)]) {
        self.source.prefetch(ranges);
    }

    /// `len` bytes of metadata at `offset`, through the cache.
    pub(super) fn block(&self, offset: u64, len: usize, what: &str) -> Result<Block, FsError> {
        if let Some(block) = self.cache.borrow_mut().get(&(offset, len)) {
            return Ok(block);
        }
        let mut buf = vec![0u8; len];
        let replayed = self.read_into(&mut buf, offset, what)?;
        let block = Block {
            bytes: Rc::from(buf),
            replayed,
        };
        self.cache.borrow_mut().insert((offset, len), block.clone());
        Ok(block)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn overlay_patches_and_replaces() {
        let mut overlay = Overlay::default();
        overlay.put(100, vec![1; 10]);
        overlay.put(105, vec![2; 10]);
        let mut buf = vec![0u8; 30];
        assert!(overlay.apply(&mut buf, 95));
        assert_eq!(&buf[..5], &[0; 5]);
        assert_eq!(&buf[5..10], &[1; 5]);
        assert_eq!(&buf[10..20], &[2; 10]);
        assert_eq!(&buf[20..], &[0; 10]);
        overlay.put(100, vec![3; 10]);
        let mut buf = vec![0u8; 20];
        overlay.apply(&mut buf, 100);
        assert_eq!(&buf[..10], &[3; 10]);
        assert_eq!(&buf[10..15], &[2; 5]);
        let mut away = vec![0u8; 10];
        assert!(!overlay.apply(&mut away, 200));
    }
}
