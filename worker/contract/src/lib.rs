//! What the control Lambda and the worker agree on, defined once.
//!
//! The ownership rule: everything the scanner creates carries the tag
//! `Created By: Mondoo` (key and value configurable per deployment), and
//! nothing without it is ever deleted. The match is exact — another value, a
//! key in another case, or the tag on a related resource but not on this one
//! does not make a resource ours.
//!
//! The scan job ([`ScanJob`]): what the control Lambda puts on the queue for
//! each instance and the worker reads back.
//!
//! The SSM parameters ([`ParameterNames`]) and the fleet-wide [`Pause`]
//! the Lambda writes and every worker reads.
#![deny(missing_docs)]

mod job;
mod params;

pub use job::{JOB_VERSION, JobError, JobSnapshot, ScanJob};
pub use params::{DEFAULT_PARAMETER_PREFIX, ParameterNames, Pause};

/// The ownership tag's default key.
pub const OWNERSHIP_TAG_KEY: &str = "Created By";
/// The ownership tag's default value.
pub const OWNERSHIP_TAG_VALUE: &str = "Mondoo";

/// Tag on a snapshot the scanner made: the instance it was taken for.
pub const TAG_INSTANCE: &str = "Mondoo:Instance";
/// Tag on a snapshot the scanner made one volume at a time: the volume (a
/// set made by `CreateSnapshots` names it in the snapshot's own `VolumeId`).
pub const TAG_VOLUME: &str = "Mondoo:Volume";
/// Tag on a snapshot the scanner made: the scan run that made it.
pub const TAG_SCAN_ID: &str = "Mondoo:ScanId";

/// The tag that marks a resource as created by the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipTag {
    /// Tag key, matched exactly (case-sensitive, as AWS tag keys are).
    pub key: String,
    /// Tag value, matched exactly.
    pub value: String,
}

impl Default for OwnershipTag {
    fn default() -> Self {
        Self {
            key: OWNERSHIP_TAG_KEY.to_string(),
            value: OWNERSHIP_TAG_VALUE.to_string(),
        }
    }
}

impl OwnershipTag {
    /// Whether a resource with these `(key, value)` tags is ours.
    pub fn is_owned<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter()
            .any(|(key, value)| key == self.key && value == self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_tag_makes_a_resource_ours() {
        let tag = OwnershipTag::default();
        assert!(tag.is_owned([("Name", "x"), ("Created By", "Mondoo")]));
        assert!(!tag.is_owned([("Created By", "mondoo")]));
        assert!(!tag.is_owned([("created by", "Mondoo")]));
        assert!(!tag.is_owned([("Created By ", "Mondoo")]));
        assert!(!tag.is_owned([]));
    }
}
