//! Inventory: counts per region and nothing else — from the inventory
//! event (every instance, volume and snapshot) and from a scan's own pages.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use control::{Response, handle};
use serde_json::json;

use crate::fleet::{self, launch, volumes_of};
use crate::scan::scan;
use crate::{HOME, config, with_world};

const WEST: &str = "eu-west-1";
const OWNED: &[(&str, &str)] = &[("Created By", "Mondoo")];

#[test]
fn the_inventory_counts_each_region_and_names_nothing() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let web = launch(&ec2, &[("Name", "web")], &["/dev/xvda"]).await?;
        launch(&ec2, OWNED, &["/dev/xvda"]).await?;
        let stopped = launch(&ec2, &[], &["/dev/xvda"]).await?;
        fleet::stop(&ec2, &stopped).await?;
        fleet::volume(&ec2, HOME, OWNED).await?;
        let (root, _) = volumes_of(&ec2, &web).await?[0].clone();
        fleet::snapshot(&ec2, &root, &[]).await?;
        fleet::snapshot(&ec2, &root, OWNED).await?;
        // A look-alike is the customer's.
        fleet::snapshot(&ec2, &root, &[("Created By", "mondoo")]).await?;
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[HOME, WEST], &queue)).await;

        let Response::Inventory(summary) = handle(json!({"action": "inventory"}), &ctx).await?
        else {
            bail!("not an inventory");
        };
        let region = |name: &str| {
            summary
                .regions
                .iter()
                .find(|r| r.region == name)
                .with_context(|| format!("{name} is not counted: {summary:#?}"))
        };
        let home = region(HOME)?;
        let counts = &home.inventory;
        ensure!(
            counts.instances
                == BTreeMap::from([("running".to_string(), 2), ("stopped".to_string(), 1)])
                && counts.scanner_instances == 1
                && counts.volumes == 4
                && counts.scanner_volumes == Some(1)
                && counts.snapshots == Some(3)
                && counts.scanner_snapshots == Some(1)
                && counts.pending_snapshots == Some(0),
            "{counts:#?}"
        );
        let west = region(WEST)?;
        ensure!(
            west.inventory.instances.is_empty()
                && west.inventory.volumes == 0
                && west.inventory.snapshots == Some(0),
            "{west:#?}"
        );
        ensure!(
            summary.ec2.calls.values().all(|&n| n == 2),
            "one call of each describe per region: {:?}",
            summary.ec2
        );
        let response = serde_json::to_string(&Response::Inventory(summary))?;
        for id in ["i-", "vol-", "snap-", "web", "Mondoo"] {
            ensure!(!response.contains(id), "{id:?} leaves: {response}");
        }

        // A scan counts from the pages it fetches, with no extra call (the
        // one instance it scans reuses the owned snapshot: no pending
        // listing, no pending count).
        let scanned = scan(&ctx, json!({"action": "scan"})).await?;
        let counts = &scanned
            .regions
            .iter()
            .find(|r| r.region == HOME)
            .context("home region")?
            .inventory;
        ensure!(
            counts.instances == BTreeMap::from([("running".to_string(), 2)])
                && counts.scanner_instances == 1
                && counts.volumes == 2
                && counts.scanner_snapshots == Some(1)
                && counts.pending_snapshots.is_none()
                && counts.snapshots.is_none(),
            "{counts:#?}"
        );
        ensure!(
            !scanned.ec2.calls.contains_key("DescribeVolumes"),
            "{:?}",
            scanned.ec2
        );
        Ok(())
    })
}
