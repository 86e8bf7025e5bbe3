//! Inventory: how many instances, volumes and snapshots each region holds,
//! for the report that leaves the account. Counts only — no id, name, tag
//! or any other detail leaves through it.
//!
//! A scan fills one per region from the pages it fetches anyway (the
//! instances it lists, their volumes, the owned and the pending snapshots),
//! keeping its EC2 call budget; the `{"action": "inventory"}` event counts
//! everything: every instance state, every volume, every snapshot of the
//! account — three paginated describes per region (1000 a page).

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::SnapshotState;
use scanner_contract::OwnershipTag;
use serde::Serialize;

use crate::calls::{ApiCalls, Counts};
use crate::ctx::Ctx;
use crate::discover;
use crate::error::ApiError;
use crate::regions::regions;

/// Resources per describe page (the APIs' maximum).
const PAGE_SIZE: i32 = 1000;
/// Every instance state.
const ALL_STATES: &[&str] = &[
    "pending",
    "running",
    "shutting-down",
    "terminated",
    "stopping",
    "stopped",
];

/// Counts of one region. In a scan, `instances` covers the states it lists
/// and `volumes` the volumes attached to them; fields the scan did not
/// fetch are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Instances by state.
    pub instances: BTreeMap<String, u64>,
    /// Instances that carry the ownership tag (the scanner's workers).
    pub scanner_instances: u64,
    /// EBS volumes.
    pub volumes: u64,
    /// Volumes that carry the ownership tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_volumes: Option<u64>,
    /// Snapshots owned by the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u64>,
    /// Snapshots that carry the ownership tag (the scanner's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_snapshots: Option<u64>,
    /// Snapshots of the account still `pending`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_snapshots: Option<u64>,
}

impl Inventory {
    /// Count `instances` (and their volumes).
    pub fn count_instances<'a>(
        &mut self,
        instances: impl IntoIterator<Item = &'a discover::Instance>,
        ownership: &OwnershipTag,
    ) {
        for instance in instances {
            *self.instances.entry(instance.state.clone()).or_default() += 1;
            let tags = instance.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            if ownership.is_owned(tags) {
                self.scanner_instances += 1;
            }
            self.volumes += count(instance.volumes.len());
        }
    }
}

/// A `usize` count as a `u64`.
pub fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One region's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionInventory {
    /// The region.
    pub region: String,
    /// Its counts.
    #[serde(flatten)]
    pub inventory: Inventory,
    /// Why counting stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an inventory counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventorySummary {
    /// Per region, sorted by name.
    pub regions: Vec<RegionInventory>,
    /// EC2 calls and attempts, per operation.
    pub ec2: Counts,
}

/// Why an inventory failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    /// The enabled regions could not be listed.
    #[error("listing the enabled regions: {0}")]
    Regions(#[source] ApiError),
    /// Some regions could not be counted.
    #[error(
        "inventory failed in {} of {} regions: {}",
        summary.regions.iter().filter(|r| r.error.is_some()).count(),
        summary.regions.len(),
        summary.regions.iter().filter_map(|r| Some(format!("{}: {}", r.region, r.error.as_ref()?))).collect::<Vec<_>>().join("; ")
    )]
    Incomplete {
        /// Everything counted.
        summary: Box<InventorySummary>,
    },
}

/// Count every configured region.
///
/// # Errors
/// [`InventoryError`]: no region list, or regions that failed (naming each).
pub async fn inventory(ctx: &Ctx) -> Result<InventorySummary, InventoryError> {
    let calls = ApiCalls::default();
    let regions = regions(ctx, &calls)
        .await
        .map_err(InventoryError::Regions)?;
    let ownership = &ctx.config().ownership;
    let outcomes = futures_util::future::join_all(regions.iter().map(|region| async {
        let ec2 = ctx.ec2(region, &calls);
        let mut inventory = Inventory::default();
        let error = count_region(&ec2, ownership, &mut inventory)
            .await
            .err()
            .map(|err| err.to_string());
        RegionInventory {
            region: region.clone(),
            inventory,
            error,
        }
    }))
    .await;
    let summary = InventorySummary {
        regions: outcomes,
        ec2: calls.counts(),
    };
    if summary.regions.iter().any(|r| r.error.is_some()) {
        return Err(InventoryError::Incomplete {
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

async fn count_region(
    ec2: &Client,
    ownership: &OwnershipTag,
    inventory: &mut Inventory,
) -> Result<(), ApiError> {
    let instances = discover::instances(ec2, ALL_STATES, None).await?;
    inventory.count_instances(&instances, ownership);
    // Every volume, attached or not.
    inventory.volumes = 0;
    let mut scanner_volumes = 0;
    let mut pages = ec2
        .describe_volumes()
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| ApiError::new("DescribeVolumes", &err))?;
        for volume in page.volumes() {
            inventory.volumes += 1;
            let tags = crate::tags::pairs(volume.tags());
            if ownership.is_owned(tags) {
                scanner_volumes += 1;
            }
        }
    }
    inventory.scanner_volumes = Some(scanner_volumes);
    let (mut snapshots, mut scanner_snapshots, mut pending) = (0, 0, 0);
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| ApiError::new("DescribeSnapshots", &err))?;
        for snapshot in page.snapshots() {
            snapshots += 1;
            let tags = crate::tags::pairs(snapshot.tags());
            if ownership.is_owned(tags) {
                scanner_snapshots += 1;
            }
            if snapshot.state() == Some(&SnapshotState::Pending) {
                pending += 1;
            }
        }
    }
    inventory.snapshots = Some(snapshots);
    inventory.scanner_snapshots = Some(scanner_snapshots);
    inventory.pending_snapshots = Some(pending);
    Ok(())
}
