//! CRC32c (Castagnoli), the checksum of every v5 XFS metadata structure
//! and of log records.
//!
//! XFS computes it over the whole structure with its CRC field taken as
//! zero, and stores the result little-endian (`xfs_cksum.h`: seed `~0`,
//! final inversion). Written here, table-driven (slicing by 8), because the
//! workspace's `crc32fast` computes the IEEE polynomial only.

use super::bytes::le32;

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// Eight 256-entry tables for slicing by 8.
static TABLES: [[u32; 256]; 8] = build_tables();

// Evaluated at compile time: an overflow here fails the build.
#[allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::arithmetic_side_effects
)]
const fn build_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut n = 0;
    while n < 256 {
        let mut crc = n as u32;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            k += 1;
        }
        tables[0][n] = crc;
        n += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut n = 0;
        while n < 256 {
            let prev = tables[t - 1][n];
            tables[t][n] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            n += 1;
        }
        t += 1;
    }
    tables
}

/// Entry `index & 0xff` of table `t`.
fn entry(t: usize, index: u32) -> u32 {
    let index = usize::try_from(index & 0xff).unwrap_or(0);
    TABLES
        .get(t)
        .and_then(|table| table.get(index))
        .copied()
        .unwrap_or(0)
}

/// Continue a raw (not inverted) CRC over `bytes`.
fn update(mut crc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let lo = le32(chunk, 0).unwrap_or(0) ^ crc;
        let hi = le32(chunk, 4).unwrap_or(0);
        crc = entry(7, lo)
            ^ entry(6, lo >> 8)
            ^ entry(5, lo >> 16)
            ^ entry(4, lo >> 24)
            ^ entry(3, hi)
            ^ entry(2, hi >> 8)
            ^ entry(1, hi >> 16)
            ^ entry(0, hi >> 24);
    }
    for &b in chunks.remainder() {
        crc = entry(0, crc ^ u32::from(b)) ^ (crc >> 8);
    }
    crc
}

/// A running CRC32c.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crc32c(u32);

impl Crc32c {
    /// A CRC with XFS's seed.
    pub(super) fn new() -> Self {
        Self(!0)
    }

    /// Feed `bytes`.
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.0 = update(self.0, bytes);
    }

    /// Feed `n` zero bytes (a CRC field taken as zero).
    pub(super) fn zeros(&mut self, n: usize) {
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = n;
        while left > 0 {
            let now = left.min(ZEROS.len());
            self.0 = update(self.0, ZEROS.get(..now).unwrap_or_default());
            left = left.saturating_sub(now);
        }
    }

    /// The finished CRC, as XFS stores it.
    pub(super) fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC32c of `bytes` with the four bytes at `field` taken as zero.
pub(super) fn checksum(bytes: &[u8], field: usize) -> u32 {
    let mut crc = Crc32c::new();
    let end = field.saturating_add(4);
    crc.update(bytes.get(..field).unwrap_or(bytes));
    crc.zeros(4);
    crc.update(bytes.get(end..).unwrap_or_default());
    crc.finish()
}

/// True when the little-endian CRC stored at `field` matches `bytes`.
pub(super) fn verify(bytes: &[u8], field: usize) -> bool {
    le32(bytes, field) == Some(checksum(bytes, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 test vectors.
        let mut crc = Crc32c::new();
        crc.update(&[0u8; 32]);
        assert_eq!(crc.finish(), 0x8A91_36AA);
        let mut crc = Crc32c::new();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xE306_9283);
        let ascending: Vec<u8> = (0u8..32).collect();
        let mut crc = Crc32c::new();
        crc.update(&ascending);
        assert_eq!(crc.finish(), 0x46DD_794E);
    }
}
