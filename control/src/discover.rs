//! Finding the instances to scan in one region: `DescribeInstances` through
//! its paginator (up to 1000 instances a page: one call covers many
//! instances), filtered by state on the server and by tags in code.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use scanner_contract::OwnershipTag;
use serde::Serialize;

use crate::config::{OptOutTag, TagFilter};
use crate::error::ApiError;

/// Instances per `DescribeInstances` page (the API's maximum).
const PAGE_SIZE: i32 = 1000;
/// Values per filter in one request (EC2's limit on filter values).
const FILTER_VALUES: usize = 200;

/// An instance and what it has attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// `running`, `stopped`, ….
    pub state: String,
    /// Its tags, in the order EC2 lists them.
    pub tags: Vec<(String, String)>,
    /// Its EBS volumes, in block-device order (instance-store devices have
    /// no volume and are left out).
    pub volumes: Vec<AttachedVolume>,
}

/// An EBS volume attached to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedVolume {
    /// `vol-…`.
    pub volume_id: String,
    /// The device it is attached as.
    pub device_name: Option<String>,
}

/// Why an instance is not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It carries the opt-out tag.
    OptedOut,
    /// It carries the ownership tag: a scanner worker, not a customer's.
    Scanner,
    /// No EBS volume is attached (instance store only).
    NoEbsVolumes,
    /// It carries a tag of `CONTROL_EXCLUDE_TAGS`.
    Excluded,
    /// Include tags are configured and it carries none of them.
    NotIncluded,
}

impl Instance {
    /// Why it is not to be scanned, or `None` when it is.
    pub fn skip_reason(&self, opt_out: &OptOutTag, ownership: &OwnershipTag) -> Option<SkipReason> {
        let tags = || self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if opt_out.matches(tags()) {
            Some(SkipReason::OptedOut)
        } else if ownership.is_owned(tags()) {
            Some(SkipReason::Scanner)
        } else if self.volumes.is_empty() {
            Some(SkipReason::NoEbsVolumes)
        } else {
            None
        }
    }

    /// Why the include and exclude filters leave it out, or `None` when
    /// they let it through: an exclude always wins; with includes, one of
    /// them must match.
    pub fn filter_reason(
        &self,
        include: &[TagFilter],
        exclude: &[TagFilter],
    ) -> Option<SkipReason> {
        let tags = || self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if exclude.iter().any(|filter| filter.matches(tags())) {
            Some(SkipReason::Excluded)
        } else if !include.is_empty() && !include.iter().any(|filter| filter.matches(tags())) {
            Some(SkipReason::NotIncluded)
        } else {
            None
        }
    }
}

/// The instances of the region `ec2` is for that are in one of `states`,
/// and only those named in `ids` when given; in the order EC2 lists them.
///
/// # Errors
/// [`ApiError`] when a page cannot be read (after the SDK's retries).
pub async fn instances(
    ec2: &Client,
    states: &[&str],
    ids: Option<&[String]>,
) -> Result<Vec<Instance>, ApiError> {
    let state_filter = Filter::builder()
        .name("instance-state-name")
        .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
        .build();
    // Ids go in a filter, not `InstanceIds`: an id that is not in this
    // region is then simply not listed, where `InstanceIds` fails the call.
    let id_chunks: Vec<Option<&[String]>> = match ids {
        None => vec![None],
        Some(ids) => ids.chunks(FILTER_VALUES).map(Some).collect(),
    };
    let mut found = Vec::new();
    for chunk in id_chunks {
        let mut request = ec2
            .describe_instances()
            .filters(state_filter.clone())
            .max_results(PAGE_SIZE);
        if let Some(chunk) = chunk {
            request = request.filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            );
        }
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| ApiError::new("DescribeInstances", &err))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(instance));
            }
        }
    }
    Ok(found)
}

fn instance(described: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = described.instance_id()?.to_string();
    let state = described
        .state()
        .and_then(|s| s.name())
        .map(|name| name.as_str().to_string())
        .unwrap_or_default();
    let tags = crate::tags::pairs(described.tags())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let volumes = described
        .block_device_mappings()
        .iter()
        .filter_map(|mapping| {
            let ebs = mapping.ebs()?;
            let attached = matches!(
                ebs.status().map(|s| s.as_str()),
                None | Some("attached" | "attaching")
            );
            if !attached {
                return None;
            }
            Some(AttachedVolume {
                volume_id: ebs.volume_id()?.to_string(),
                device_name: mapping.device_name().map(str::to_string),
            })
        })
        .collect();
    Some(Instance {
        id,
        state,
        tags,
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn instance(tags: &[(&str, &str)], volumes: usize) -> Instance {
        Instance {
            id: "i-1".to_string(),
            state: "running".to_string(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            volumes: (0..volumes)
                .map(|i| AttachedVolume {
                    volume_id: format!("vol-{i}"),
                    device_name: None,
                })
                .collect(),
        }
    }

    #[test]
    fn skipped_instances_say_why() {
        let config = Config::default();
        let skip = |i: Instance| i.skip_reason(&config.opt_out, &config.ownership);
        assert_eq!(skip(instance(&[("Name", "web")], 1)), None);
        assert_eq!(
            skip(instance(&[("Mondoo:Exclude", "true")], 1)),
            Some(SkipReason::OptedOut)
        );
        assert_eq!(
            skip(instance(&[("Created By", "Mondoo")], 1)),
            Some(SkipReason::Scanner)
        );
        // A look-alike ownership tag is a customer's instance.
        assert_eq!(skip(instance(&[("created by", "Mondoo")], 1)), None);
        assert_eq!(skip(instance(&[], 0)), Some(SkipReason::NoEbsVolumes));
    }

    #[test]
    fn excludes_win_over_includes() {
        let include = TagFilter::parse_list("env=prod,team=*").expect("valid");
        let exclude = TagFilter::parse_list("Scan=no").expect("valid");
        let reason = |tags: &[(&str, &str)]| instance(tags, 1).filter_reason(&include, &exclude);
        assert_eq!(reason(&[("env", "prod")]), None);
        assert_eq!(reason(&[("team", "db")]), None);
        assert_eq!(
            reason(&[("env", "prod"), ("Scan", "no")]),
            Some(SkipReason::Excluded)
        );
        assert_eq!(reason(&[("env", "dev")]), Some(SkipReason::NotIncluded));
        assert_eq!(reason(&[]), Some(SkipReason::NotIncluded));
        // No includes: everything not excluded.
        assert_eq!(instance(&[], 1).filter_reason(&[], &exclude), None);
        assert_eq!(
            instance(&[("Scan", "no")], 1).filter_reason(&[], &exclude),
            Some(SkipReason::Excluded)
        );
    }
}
