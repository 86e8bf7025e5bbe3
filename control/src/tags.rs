//! EC2 tags as `(key, value)` pairs: the one shape the ownership rule
//! (`OwnershipTag::is_owned`) and the tag filters take. A tag without a key
//! is skipped; a missing value reads as empty.

use aws_sdk_ec2::types::{Filter, Tag};
use scanner_contract::OwnershipTag;

/// `tags` as `(key, value)` pairs.
pub fn pairs(tags: &[Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter()
        .filter_map(|tag| Some((tag.key()?, tag.value().unwrap_or(""))))
}

/// The `Describe*` filter for what carries the ownership tag. A listing
/// narrowed by it is still re-checked with `OwnershipTag::is_owned`
/// before anything is deleted.
pub fn owned_filter(ownership: &OwnershipTag) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", ownership.key))
        .values(&ownership.value)
        .build()
}
