//! Partition tables: GPT and MBR (with extended/logical partitions), or a
//! bare filesystem with no table.
//!
//! PLACEHOLDER: reports every disk as having no table until the GPT and MBR
//! readers land.

use crate::block::{BlockError, BlockSource};

/// Which kind of table a partition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// GUID Partition Table.
    Gpt,
    /// Master Boot Record (DOS) table.
    Mbr,
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The table it came from.
    pub scheme: Scheme,
    /// The number the kernel would give it (`sda1` is 1; logical partitions start at 5).
    pub number: u32,
    /// Byte offset from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type: the GPT type GUID (lowercase, dashed) or the MBR type byte as `0x83`.
    pub type_id: String,
    /// The GPT partition name, where set.
    pub name: Option<String>,
}

/// What a disk holds at the partition level.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionTable {
    /// The table found, or `None` for a bare filesystem (or unknown content).
    pub scheme: Option<Scheme>,
    /// The partitions, in table order.
    pub partitions: Vec<Partition>,
    /// Problems that did not stop reading (a bad primary GPT header replaced
    /// by the backup, an entry past the end of the disk, …).
    pub warnings: Vec<String>,
}

/// Why a partition table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The disk could not be read.
    #[error("reading the partition table: {0}")]
    Read(#[source] BlockError),
}

/// Read the partition table of `source`.
///
/// # Errors
/// [`PartitionError`] when the disk cannot be read at all.
pub fn read_partitions(source: &dyn BlockSource) -> Result<PartitionTable, PartitionError> {
    let _ = source;
    Ok(PartitionTable::default())
}
