//! One rpm header blob: the record rpm keeps per installed package.
//!
//! Layout (all integers big-endian), as rpm's `lib/header.c` reads it
//! (`hdrblobInit`, `hdrblobVerifyRegion`, `hdrblobVerifyInfo`) and as the
//! "Header format" section of rpm's `docs/manual/format.md` describes it:
//!
//! ```text
//! [magic 8e ad e8 01, 4 reserved bytes]   only in package files, not in rpmdb.sqlite
//! il: u32                                 number of index entries
//! dl: u32                                 length of the data store
//! il × { tag: u32, type: u32, offset: i32, count: u32 }
//! dl bytes of data store
//! ```
//!
//! An installed header usually opens with a region entry (tag 63,
//! `HEADERIMMUTABLE`) whose trailer, 16 bytes in the data store, tells how
//! many entries the signed region holds; entries past it ("dribbles", such
//! as `INSTALLTIME`) were added by rpm at install time.
//!
//! Every number is checked before use, as rpm checks it: `il` and `dl`
//! against rpm's own caps, the blob's length against `8 + 16·il + dl`, each
//! entry's type, alignment and offset, and each entry's data against the end
//! of the data store (strings must end in NUL inside it). A blob rpm would
//! reject is an error here too, so what we list is what `rpm -qa` lists.

// Offsets and lengths come from the blob: no unchecked arithmetic or
// indexing on them.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::indexing_slicing
)]

use thiserror::Error;

/// The 8 bytes that open a header in a package file (magic and 4 reserved
/// zero bytes). Headers in `rpmdb.sqlite` are stored without them.
pub const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];

/// Most index entries a header may have: rpm's `HEADER_TAGS_MAX`. Real
/// headers have a few hundred; rpm refuses more than this, and so do we.
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;

/// Longest data store a header may have: rpm's `HEADER_DATA_MAX`
/// (256 MiB − 1), sized for file signatures of huge packages. rpm refuses
/// more, and so do we.
pub const MAX_DATA_LEN: u32 = 0x0fff_ffff;

/// Bytes of the `il` and `dl` fields.
const INTRO_LEN: usize = 8;
/// Bytes of one index entry.
const ENTRY_LEN: usize = 16;

/// Tag numbers used here (rpm's `rpmtag.h`).
pub mod tag {
    /// Region tags: `HEADERIMAGE`, `HEADERSIGNATURES`, `HEADERIMMUTABLE`.
    pub const REGIONS: std::ops::RangeInclusive<u32> = 61..=63;
    /// `HEADERI18NTABLE`: tags below it (other than regions) are invalid.
    pub const I18NTABLE: u32 = 100;
    /// `NAME`.
    pub const NAME: u32 = 1000;
    /// `VERSION`.
    pub const VERSION: u32 = 1001;
    /// `RELEASE`.
    pub const RELEASE: u32 = 1002;
    /// `EPOCH` (INT32).
    pub const EPOCH: u32 = 1003;
    /// `ARCH`.
    pub const ARCH: u32 = 1022;
    /// `SOURCERPM`.
    pub const SOURCERPM: u32 = 1044;
}

/// Data types of index entries (rpm's `rpmTagType`). Type 0,
/// `RPM_NULL_TYPE`, has no data and so is invalid in a stored header.
pub mod kind {
    /// `RPM_CHAR_TYPE`.
    pub const CHAR: u32 = 1;
    /// `RPM_INT8_TYPE`.
    pub const INT8: u32 = 2;
    /// `RPM_INT16_TYPE`.
    pub const INT16: u32 = 3;
    /// `RPM_INT32_TYPE`.
    pub const INT32: u32 = 4;
    /// `RPM_INT64_TYPE`.
    pub const INT64: u32 = 5;
    /// `RPM_STRING_TYPE`: one NUL-terminated string; count must be 1.
    pub const STRING: u32 = 6;
    /// `RPM_BIN_TYPE`: `count` bytes.
    pub const BIN: u32 = 7;
    /// `RPM_STRING_ARRAY_TYPE`: `count` NUL-terminated strings.
    pub const STRING_ARRAY: u32 = 8;
    /// `RPM_I18NSTRING_TYPE`: one string per language of the i18n table.
    pub const I18NSTRING: u32 = 9;
    /// The highest valid type (`RPM_MAX_TYPE`).
    pub const MAX: u32 = I18NSTRING;
}

/// What the rpm detector needs from one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    /// `NAME`.
    pub name: String,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `EPOCH`, when the tag is present (0 included: rpm prints `0:` then).
    pub epoch: Option<u32>,
    /// `ARCH`; `gpg-pubkey` pseudo-packages have none.
    pub arch: Option<String>,
    /// `SOURCERPM`; absent for `gpg-pubkey` and source packages.
    pub source_rpm: Option<String>,
}

impl HeaderInfo {
    /// The version as rpm writes it: `[EPOCH:]VERSION-RELEASE`, the epoch
    /// only when the tag is present (rpm's `%|EPOCH?{%{EPOCH}:}|`).
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(epoch) => format!("{epoch}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

/// Why a header blob was rejected. Offsets are into the blob, after the
/// magic when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Shorter than the `il`/`dl` fields.
    #[error("{len} bytes is too short for a header (at least {INTRO_LEN})")]
    TooShort {
        /// The blob's length.
        len: usize,
    },
    /// Opens like a package-file header but the magic is wrong.
    #[error("bad header magic {found:02x?}")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// `il` is 0 or over [`MAX_INDEX_ENTRIES`].
    #[error("index entry count {il} is out of range (1..={MAX_INDEX_ENTRIES})")]
    BadIndexCount {
        /// The `il` field.
        il: u32,
    },
    /// `dl` is over [`MAX_DATA_LEN`].
    #[error("data store length {dl} is over rpm's limit of {MAX_DATA_LEN}")]
    BadDataLength {
        /// The `dl` field.
        dl: u32,
    },
    /// The blob's length is not `8 + 16·il + dl`.
    #[error("il {il} and dl {dl} make {expected} bytes, but the blob has {actual}")]
    SizeMismatch {
        /// The `il` field.
        il: u32,
        /// The `dl` field.
        dl: u32,
        /// `8 + 16·il + dl`.
        expected: u64,
        /// The blob's length (without magic).
        actual: usize,
    },
    /// The region entry or its trailer is inconsistent.
    #[error("region tag {tag}: {detail}")]
    BadRegion {
        /// The region's tag.
        tag: u32,
        /// What is wrong.
        detail: String,
    },
    /// An index entry is invalid (rpm's `tag[N]: BAD`).
    #[error("entry {index} (tag {tag} type {kind} offset {offset} count {count}): {reason}")]
    BadEntry {
        /// The entry's position in the index.
        index: usize,
        /// Its tag.
        tag: u32,
        /// Its type.
        kind: u32,
        /// Its offset into the data store.
        offset: i32,
        /// Its count.
        count: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A tag every package has is missing.
    #[error("no {tag} tag")]
    MissingTag {
        /// The tag's name.
        tag: &'static str,
    },
    /// A tag has a type that cannot hold what it should.
    #[error("{tag} has type {kind}, not {expected}")]
    WrongType {
        /// The tag's name.
        tag: &'static str,
        /// The type found.
        kind: u32,
        /// The type(s) expected.
        expected: &'static str,
    },
}

/// One validated index entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    kind: u32,
    /// Offset into the data store, known to be within it.
    offset: usize,
}

/// Parse one header blob, with or without the 8-byte magic, and return the
/// tags the detector reports.
///
/// Pure and bounded: it reads only `blob`, allocates only the returned
/// strings, and does work linear in `blob.len()`. Safe to call on any bytes
/// (it is a fuzz target).
///
/// When a tag appears more than once, the last entry wins, as in rpm, where
/// entries added after the signed region replace the region's own.
/// Strings that are not UTF-8 are converted lossily.
///
/// # Errors
/// [`HeaderError`] naming the field or entry that is out of bounds or
/// inconsistent, or the required tag (`NAME`, `VERSION`, `RELEASE`) that is
/// missing or not a string.
pub fn parse_header(blob: &[u8]) -> Result<HeaderInfo, HeaderError> {
    let (entries, data) = split_blob(blob)?;
    let name = string_tag(&entries, data, tag::NAME, "NAME")?
        .ok_or(HeaderError::MissingTag { tag: "NAME" })?;
    let version = string_tag(&entries, data, tag::VERSION, "VERSION")?
        .ok_or(HeaderError::MissingTag { tag: "VERSION" })?;
    let release = string_tag(&entries, data, tag::RELEASE, "RELEASE")?
        .ok_or(HeaderError::MissingTag { tag: "RELEASE" })?;
    let epoch = match find(&entries, tag::EPOCH) {
        None => None,
        Some(entry) if entry.kind == kind::INT32 => {
            Some(be_u32(data, entry.offset).ok_or(HeaderError::WrongType {
                tag: "EPOCH",
                kind: entry.kind,
                expected: "INT32",
            })?)
        }
        Some(entry) => {
            return Err(HeaderError::WrongType {
                tag: "EPOCH",
                kind: entry.kind,
                expected: "INT32",
            });
        }
    };
    let arch = string_tag(&entries, data, tag::ARCH, "ARCH")?;
    let source_rpm = string_tag(&entries, data, tag::SOURCERPM, "SOURCERPM")?;
    Ok(HeaderInfo {
        name,
        version,
        release,
        epoch,
        arch,
        source_rpm,
    })
}

/// Check the whole blob and return its validated entries and data store.
fn split_blob(blob: &[u8]) -> Result<(Vec<Entry>, &[u8]), HeaderError> {
    let body = match blob.get(..4) {
        Some(head) if head == &HEADER_MAGIC[..4] => {
            let found: [u8; 8] = blob
                .get(..8)
                .and_then(|m| m.try_into().ok())
                .ok_or(HeaderError::TooShort { len: blob.len() })?;
            if found != HEADER_MAGIC {
                return Err(HeaderError::BadMagic { found });
            }
            blob.get(8..).unwrap_or_default()
        }
        _ => blob,
    };
    let (Some(il), Some(dl)) = (be_u32(body, 0), be_u32(body, 4)) else {
        return Err(HeaderError::TooShort { len: body.len() });
    };
    if il == 0 || il > MAX_INDEX_ENTRIES {
        return Err(HeaderError::BadIndexCount { il });
    }
    if dl > MAX_DATA_LEN {
        return Err(HeaderError::BadDataLength { dl });
    }
    // Both are capped above, so this cannot overflow even on 32-bit targets
    // (8 + 16·0xffff + 0x0fffffff < 2^29).
    let index_len = usize_of(il).saturating_mul(ENTRY_LEN);
    let data_len = usize_of(dl);
    let expected = INTRO_LEN.saturating_add(index_len).saturating_add(data_len);
    if body.len() != expected {
        return Err(HeaderError::SizeMismatch {
            il,
            dl,
            expected: u64::try_from(expected).unwrap_or(u64::MAX),
            actual: body.len(),
        });
    }
    let index = body
        .get(INTRO_LEN..INTRO_LEN.saturating_add(index_len))
        .unwrap_or_default();
    let data = body
        .get(INTRO_LEN.saturating_add(index_len)..)
        .unwrap_or_default();

    let raw: Vec<RawEntry> = index.chunks_exact(ENTRY_LEN).map(RawEntry::read).collect();
    let skip = usize::from(verify_region(&raw, data)?);
    let mut entries = Vec::with_capacity(raw.len());
    // Data of consecutive entries must not overlap (rpm's `end > offset`).
    let mut end = 0usize;
    for (index, entry) in raw.iter().enumerate().skip(skip) {
        let bad = |reason| HeaderError::BadEntry {
            index,
            tag: entry.tag,
            kind: entry.kind,
            offset: entry.offset,
            count: entry.count,
            reason,
        };
        if entry.tag < tag::I18NTABLE {
            return Err(bad("tag number is reserved"));
        }
        if entry.kind > kind::MAX {
            return Err(bad("unknown type"));
        }
        let offset = usize::try_from(entry.offset).map_err(|_| bad("negative offset"))?;
        if offset > data.len() {
            return Err(bad("offset past the data store"));
        }
        if offset < end {
            return Err(bad("data overlaps the previous entry's"));
        }
        if offset.checked_rem(alignment(entry.kind)) != Some(0) {
            return Err(bad("offset not aligned for its type"));
        }
        let len = data_length(
            entry.kind,
            entry.count,
            data.get(offset..).unwrap_or_default(),
        )
        .ok_or_else(|| bad("data does not fit in the data store"))?;
        if len == 0 {
            return Err(bad("no data"));
        }
        end = offset.saturating_add(len);
        entries.push(Entry {
            tag: entry.tag,
            kind: entry.kind,
            offset,
        });
    }
    Ok((entries, data))
}

/// An index entry as stored.
#[derive(Debug, Clone, Copy)]
struct RawEntry {
    tag: u32,
    kind: u32,
    offset: i32,
    count: u32,
}

impl RawEntry {
    /// Decode one 16-byte entry (`chunk` is exactly [`ENTRY_LEN`] bytes).
    fn read(chunk: &[u8]) -> Self {
        let word = |at| be_u32(chunk, at).unwrap_or_default();
        Self {
            tag: word(0),
            kind: word(4),
            offset: i32::from_be_bytes(word(8).to_be_bytes()),
            count: word(12),
        }
    }
}

/// When the first entry is a region tag, check it and its trailer as rpm's
/// `hdrblobVerifyRegion` does, and return true (the entry is then not an
/// ordinary one). A header without a region (legacy) is accepted, as rpm
/// accepts it from its database.
fn verify_region(raw: &[RawEntry], data: &[u8]) -> Result<bool, HeaderError> {
    let Some(first) = raw.first() else {
        return Ok(false);
    };
    if !tag::REGIONS.contains(&first.tag) {
        return Ok(false);
    }
    let region_len = u32::try_from(ENTRY_LEN).unwrap_or(u32::MAX);
    let bad = |detail: String| HeaderError::BadRegion {
        tag: first.tag,
        detail,
    };
    if first.kind != kind::BIN || first.count != region_len {
        return Err(bad(format!(
            "type {} count {}, not BIN of 16 bytes",
            first.kind, first.count
        )));
    }
    let trailer_at = usize::try_from(first.offset)
        .ok()
        .filter(|&at| at.saturating_add(ENTRY_LEN) <= data.len())
        .ok_or_else(|| {
            bad(format!(
                "trailer offset {} is outside the data",
                first.offset
            ))
        })?;
    let trailer = RawEntry::read(
        data.get(trailer_at..trailer_at.saturating_add(ENTRY_LEN))
            .unwrap_or_default(),
    );
    if trailer.tag != first.tag || trailer.kind != kind::BIN || trailer.count != region_len {
        return Err(bad(format!(
            "trailer says tag {} type {} count {}",
            trailer.tag, trailer.kind, trailer.count
        )));
    }
    // The trailer's offset is minus the region's index length in bytes.
    let region_index_len = trailer
        .offset
        .checked_neg()
        .and_then(|n| usize::try_from(n).ok());
    match region_index_len {
        Some(len) if len % ENTRY_LEN == 0 && len / ENTRY_LEN <= raw.len() => Ok(true),
        _ => Err(bad(format!(
            "trailer offset {} does not give an entry count within il {}",
            trailer.offset,
            raw.len()
        ))),
    }
}

/// Bytes an entry's data takes at the start of `rest` (the data store from
/// the entry's offset on), or `None` when it does not fit: rpm's
/// `dataLength` for on-disk data.
fn data_length(kind: u32, count: u32, rest: &[u8]) -> Option<usize> {
    match kind {
        kind::STRING if count == 1 => strings_length(rest, 1),
        kind::STRING => None,
        kind::STRING_ARRAY | kind::I18NSTRING => strings_length(rest, count),
        _ => {
            let len = usize_of(count).checked_mul(type_size(kind))?;
            (len <= rest.len()).then_some(len)
        }
    }
}

/// Length of `count` consecutive NUL-terminated strings at the start of
/// `rest`, NULs included; `None` when they run past its end or `count` is 0.
/// Linear in the bytes scanned: every string takes at least its NUL.
fn strings_length(rest: &[u8], count: u32) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let mut at = 0usize;
    for _ in 0..count {
        let nul = rest.get(at..)?.iter().position(|&b| b == 0)?;
        at = at.checked_add(nul)?.checked_add(1)?;
    }
    Some(at)
}

/// Size of one item of a fixed-size type (0 for `NULL`, whose data is empty).
fn type_size(kind: u32) -> usize {
    match kind {
        kind::CHAR | kind::INT8 | kind::BIN => 1,
        kind::INT16 => 2,
        kind::INT32 => 4,
        kind::INT64 => 8,
        _ => 0,
    }
}

/// Alignment rpm requires of a type's offset (`typeAlign`).
fn alignment(kind: u32) -> usize {
    match kind {
        kind::INT16 => 2,
        kind::INT32 => 4,
        kind::INT64 => 8,
        _ => 1,
    }
}

/// The last entry with `tag`.
fn find(entries: &[Entry], wanted: u32) -> Option<Entry> {
    entries.iter().rev().find(|e| e.tag == wanted).copied()
}

/// A string tag's value: a `STRING`, or the first string of a
/// `STRING_ARRAY` or `I18NSTRING` (what rpm's `headerGetString` returns
/// without a matching locale). `None` when the tag is absent.
fn string_tag(
    entries: &[Entry],
    data: &[u8],
    wanted: u32,
    name: &'static str,
) -> Result<Option<String>, HeaderError> {
    let Some(entry) = find(entries, wanted) else {
        return Ok(None);
    };
    if !matches!(
        entry.kind,
        kind::STRING | kind::STRING_ARRAY | kind::I18NSTRING
    ) {
        return Err(HeaderError::WrongType {
            tag: name,
            kind: entry.kind,
            expected: "STRING, STRING_ARRAY or I18NSTRING",
        });
    }
    // Validated in split_blob: a NUL follows within the data store.
    let rest = data.get(entry.offset..).unwrap_or_default();
    let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let bytes = rest.get(..len).unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The big-endian u32 at `at`, if `bytes` holds it.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let word: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// A u32 as usize (lossless on the 32- and 64-bit targets we build for).
fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Build header blobs in tests: entries laid out in order, with or without a
/// region, like rpm's `headerExport`.
#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
pub(crate) mod build {
    use super::{ENTRY_LEN, kind, tag};

    /// One entry to write: tag, type, count and its raw data bytes.
    pub(crate) struct Item {
        pub tag: u32,
        pub kind: u32,
        pub count: u32,
        pub data: Vec<u8>,
    }

    /// A `STRING` entry.
    pub(crate) fn string(tag: u32, value: &str) -> Item {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        Item {
            tag,
            kind: kind::STRING,
            count: 1,
            data,
        }
    }

    /// An `INT32` entry with one value.
    pub(crate) fn int32(tag: u32, value: u32) -> Item {
        Item {
            tag,
            kind: kind::INT32,
            count: 1,
            data: value.to_be_bytes().to_vec(),
        }
    }

    /// The usual NAME/VERSION/RELEASE/ARCH entries.
    pub(crate) fn package(name: &str, version: &str, release: &str, arch: &str) -> Vec<Item> {
        vec![
            string(tag::NAME, name),
            string(tag::VERSION, version),
            string(tag::RELEASE, release),
            string(tag::ARCH, arch),
        ]
    }

    /// Serialize `items` (aligned as rpm aligns them), wrapped in an
    /// immutable region when `region` is true, without magic.
    pub(crate) fn blob(items: &[Item], region: bool) -> Vec<u8> {
        let mut index: Vec<[u32; 4]> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for item in items {
            let align = super::alignment(item.kind);
            while data.len() % align != 0 {
                data.push(0);
            }
            let offset = u32::try_from(data.len()).expect("test header is small");
            index.push([item.tag, item.kind, offset, item.count]);
            data.extend_from_slice(&item.data);
        }
        if region {
            let il = u32::try_from(index.len() + 1).expect("test header is small");
            let trailer_offset = u32::try_from(data.len()).expect("test header is small");
            let region_len = u32::try_from(ENTRY_LEN).expect("16 fits");
            // Trailer: the region tag, BIN, -(16·ril), 16.
            let negative = 0u32.wrapping_sub(il * region_len);
            for word in [63, kind::BIN, negative, region_len] {
                data.extend_from_slice(&word.to_be_bytes());
            }
            index.insert(0, [63, kind::BIN, trailer_offset, region_len]);
        }
        let mut out = Vec::new();
        out.extend_from_slice(
            &u32::try_from(index.len())
                .expect("test header is small")
                .to_be_bytes(),
        );
        out.extend_from_slice(
            &u32::try_from(data.len())
                .expect("test header is small")
                .to_be_bytes(),
        );
        for entry in &index {
            for word in entry {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out.extend_from_slice(&data);
        out
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::build::{Item, blob, int32, package, string};
    use super::*;

    fn info(name: &str, evr: (Option<u32>, &str, &str), arch: Option<&str>) -> HeaderInfo {
        HeaderInfo {
            name: name.into(),
            version: evr.1.into(),
            release: evr.2.into(),
            epoch: evr.0,
            arch: arch.map(Into::into),
            source_rpm: None,
        }
    }

    #[test]
    fn parses_with_and_without_region_and_magic() {
        let mut items = package("bash", "5.2.15", "2.el9", "x86_64");
        items.push(int32(tag::EPOCH, 0));
        let want = info("bash", (Some(0), "5.2.15", "2.el9"), Some("x86_64"));
        for region in [false, true] {
            let bytes = blob(&items, region);
            assert_eq!(parse_header(&bytes), Ok(want.clone()));
            let mut with_magic = HEADER_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            assert_eq!(parse_header(&with_magic), Ok(want.clone()));
        }
        assert_eq!(want.evr(), "0:5.2.15-2.el9");
    }

    #[test]
    fn gpg_pubkey_has_no_arch_and_no_epoch() {
        let items = vec![
            string(tag::NAME, "gpg-pubkey"),
            string(tag::VERSION, "6446965d"),
            string(tag::RELEASE, "6b061e18"),
        ];
        let parsed = parse_header(&blob(&items, true));
        assert_eq!(
            parsed,
            Ok(info("gpg-pubkey", (None, "6446965d", "6b061e18"), None))
        );
    }

    #[test]
    fn i18n_and_array_strings_give_their_first_string() {
        let items = vec![
            Item {
                tag: tag::NAME,
                kind: kind::I18NSTRING,
                count: 2,
                data: b"first\0second\0".to_vec(),
            },
            Item {
                tag: tag::VERSION,
                kind: kind::STRING_ARRAY,
                count: 1,
                data: b"1\0".to_vec(),
            },
            string(tag::RELEASE, "1"),
        ];
        let parsed = parse_header(&blob(&items, false)).map(|h| h.name);
        assert_eq!(parsed, Ok("first".into()));
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one() {
        let mut items = package("a", "1", "1", "noarch");
        items.push(string(tag::SOURCERPM, "a-1-1.src.rpm"));
        items.push(string(tag::ARCH, "x86_64"));
        let parsed = parse_header(&blob(&items, true));
        assert_eq!(
            parsed.as_ref().map(|h| h.arch.as_deref()),
            Ok(Some("x86_64"))
        );
        assert_eq!(
            parsed.map(|h| h.source_rpm),
            Ok(Some("a-1-1.src.rpm".into()))
        );
    }

    fn set_word(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    #[test]
    fn rejects_out_of_bounds_fields() {
        let good = blob(&package("a", "1", "1", "noarch"), false);

        let mut huge_il = good.clone();
        set_word(&mut huge_il, 0, 0x0100_0000);
        assert!(matches!(
            parse_header(&huge_il),
            Err(HeaderError::BadIndexCount { il: 0x0100_0000 })
        ));

        let mut zero_il = good.clone();
        set_word(&mut zero_il, 0, 0);
        assert!(matches!(
            parse_header(&zero_il),
            Err(HeaderError::BadIndexCount { il: 0 })
        ));

        let mut huge_dl = good.clone();
        set_word(&mut huge_dl, 4, u32::MAX);
        assert!(matches!(
            parse_header(&huge_dl),
            Err(HeaderError::BadDataLength { .. })
        ));

        assert!(matches!(
            parse_header(&good[..good.len() - 1]),
            Err(HeaderError::SizeMismatch { .. })
        ));
        assert!(matches!(
            parse_header(&good[..5]),
            Err(HeaderError::TooShort { len: 5 })
        ));

        // Entry 0's offset far past the data store.
        let mut far = good.clone();
        set_word(&mut far, 8 + 8, 0x7fff_0000);
        assert!(matches!(
            parse_header(&far),
            Err(HeaderError::BadEntry {
                index: 0,
                reason: "offset past the data store",
                ..
            })
        ));

        // Negative offset outside a region.
        let mut negative = good.clone();
        set_word(&mut negative, 8 + 8, 0xffff_fff0);
        assert!(matches!(
            parse_header(&negative),
            Err(HeaderError::BadEntry {
                reason: "negative offset",
                ..
            })
        ));

        // Unknown type.
        let mut typed = good.clone();
        set_word(&mut typed, 8 + 4, 17);
        assert!(matches!(
            parse_header(&typed),
            Err(HeaderError::BadEntry {
                reason: "unknown type",
                ..
            })
        ));

        // STRING with a count of 2.
        let mut counted = good.clone();
        set_word(&mut counted, 8 + 12, 2);
        assert!(matches!(
            parse_header(&counted),
            Err(HeaderError::BadEntry { .. })
        ));

        let mut magic = HEADER_MAGIC.to_vec();
        magic[5] = 1;
        magic.extend_from_slice(&good);
        assert!(matches!(
            parse_header(&magic),
            Err(HeaderError::BadMagic { .. })
        ));
    }

    #[test]
    fn rejects_unterminated_and_misaligned_data() {
        // The last string's NUL removed: it runs to the end of the store.
        let mut items = package("a", "1", "1", "noarch");
        items[3].data.pop();
        assert!(matches!(
            parse_header(&blob(&items, false)),
            Err(HeaderError::BadEntry { index: 3, .. })
        ));

        // An INT32 epoch at an odd offset.
        let mut bytes = blob(
            &[
                string(tag::NAME, "a"),
                string(tag::VERSION, "1"),
                string(tag::RELEASE, "1"),
                int32(tag::EPOCH, 1),
            ],
            false,
        );
        let epoch_offset = 8 + 3 * 16 + 8;
        let old = u32::from_be_bytes(
            bytes[epoch_offset..epoch_offset + 4]
                .try_into()
                .expect("4 bytes"),
        );
        set_word(&mut bytes, epoch_offset, old + 1);
        assert!(matches!(
            parse_header(&bytes),
            Err(HeaderError::BadEntry {
                reason: "offset not aligned for its type",
                ..
            })
        ));

        // An INT32 array longer than the data store.
        let mut bytes = blob(&[string(tag::NAME, "a"), int32(tag::EPOCH, 1)], false);
        set_word(&mut bytes, 8 + 16 + 12, u32::MAX);
        assert!(matches!(
            parse_header(&bytes),
            Err(HeaderError::BadEntry {
                reason: "data does not fit in the data store",
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_regions() {
        let good = blob(&package("a", "1", "1", "noarch"), true);
        // The trailer's offset claims more entries than il.
        let mut bytes = good.clone();
        let trailer_at = bytes.len() - 16;
        set_word(&mut bytes, trailer_at + 8, 0u32.wrapping_sub(16 * 99));
        assert!(matches!(
            parse_header(&bytes),
            Err(HeaderError::BadRegion { .. })
        ));
        // The region entry points past the data.
        let mut bytes = good.clone();
        set_word(&mut bytes, 8 + 8, 0x0fff_0000);
        assert!(matches!(
            parse_header(&bytes),
            Err(HeaderError::BadRegion { .. })
        ));
    }

    #[test]
    fn missing_or_mistyped_tags_are_named() {
        let items = vec![string(tag::NAME, "a"), string(tag::VERSION, "1")];
        assert_eq!(
            parse_header(&blob(&items, false)),
            Err(HeaderError::MissingTag { tag: "RELEASE" })
        );
        let items = vec![
            string(tag::NAME, "a"),
            string(tag::VERSION, "1"),
            string(tag::RELEASE, "1"),
            string(tag::EPOCH, "2"),
        ];
        assert!(matches!(
            parse_header(&blob(&items, false)),
            Err(HeaderError::WrongType { tag: "EPOCH", .. })
        ));
    }

    /// Every single-byte corruption and every truncation of a valid blob is
    /// an error or a parse, never a panic.
    #[test]
    fn mutations_never_panic() {
        let mut items = package("name", "1.0", "1.el9", "x86_64");
        items.push(int32(tag::EPOCH, 3));
        items.push(string(tag::SOURCERPM, "name-1.0-1.el9.src.rpm"));
        let good = blob(&items, true);
        for at in 0..good.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = value;
                let _ = parse_header(&bytes);
            }
            let _ = parse_header(&good[..at]);
        }
    }
}
