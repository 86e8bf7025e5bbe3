//! The sweep: exactly the owned, expired snapshots and available volumes
//! go, and the owned instances past their TTL are terminated; everything
//! else stays — above all a customer's resources, whatever
//! tags they carry that look like ours, even when their ids are handed to
//! the delete path directly.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail, ensure};
use control::sweep::{SweepSummary, Verdict, delete_snapshot, delete_volume, terminate_instance};
use control::{Response, handle};
use scanner_contract::OwnershipTag;
use serde_json::json;

use crate::fleet::{self, launch, volumes_of};
use crate::{HOME, World, config, with_world};

const WEST: &str = "eu-west-1";
const OWNED: &[(&str, &str)] = &[("Created By", "Mondoo")];

/// Tags that look like the ownership tag and are not it.
const LOOK_ALIKES: &[&[(&str, &str)]] = &[
    &[],
    &[("Created By", "mondoo")],
    &[("created by", "Mondoo")],
    &[("CREATED BY", "MONDOO")],
    &[("Created By ", "Mondoo")],
    &[("Created By", "Mondoo ")],
    &[("Created By", "Mondoo Inc")],
    &[("Created", "By: Mondoo")],
    &[("Name", "Created By: Mondoo")],
    &[
        ("Mondoo:Instance", "i-0123456789abcdef0"),
        ("Mondoo:ScanId", "x"),
    ],
];

async fn sweep(ctx: &control::Ctx, ttl_hours: f64) -> Result<SweepSummary> {
    match handle(json!({"action": "sweep", "ttl_hours": ttl_hours}), ctx).await? {
        Response::Sweep(summary) => Ok(summary),
        other => bail!("a sweep answered {other:?}"),
    }
}

/// A customer's resources in one region (ids).
struct Customer {
    /// An instance that carries the ownership tag itself — by the contract
    /// a scanner worker, which the sweep terminates once expired — whose
    /// volume and snapshots do not carry it.
    tagged_instance: String,
    /// An untagged snapshot of its volume, and one per look-alike tag set.
    snapshots: Vec<String>,
    /// Its volume, and an available volume per look-alike tag set.
    volumes: Vec<String>,
    /// A running instance per look-alike tag set.
    instances: Vec<String>,
}

/// A customer's resources in `region`.
async fn customer(world: &World, region: &str) -> Result<Customer> {
    let ec2 = world.ec2(region).await;
    let tagged_instance = launch(&ec2, OWNED, &["/dev/xvda"]).await?;
    let (root, _) = volumes_of(&ec2, &tagged_instance).await?[0].clone();
    let mut customer = Customer {
        snapshots: vec![fleet::snapshot(&ec2, &root, &[]).await?],
        volumes: vec![root.clone()],
        instances: Vec::new(),
        tagged_instance,
    };
    for tags in LOOK_ALIKES {
        customer
            .snapshots
            .push(fleet::snapshot(&ec2, &root, tags).await?);
        customer
            .volumes
            .push(fleet::volume(&ec2, region, tags).await?);
        customer
            .instances
            .push(launch(&ec2, tags, &["/dev/xvda"]).await?);
    }
    Ok(customer)
}

/// Every one of `instances` is still running.
async fn all_running(world: &World, region: &str, instances: &[String]) -> Result<()> {
    let ec2 = world.ec2(region).await;
    for instance in instances {
        let state = fleet::state(&ec2, instance).await?;
        ensure!(state == "running", "{region} {instance} is {state}");
    }
    Ok(())
}

async fn existing(world: &World, region: &str) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let ec2 = world.ec2(region).await;
    let snapshots = fleet::snapshots(&ec2)
        .await?
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect();
    let volumes = fleet::volume_ids(&ec2).await?.into_iter().collect();
    Ok((snapshots, volumes))
}

#[test]
fn the_sweep_deletes_exactly_the_owned_expired_resources() -> Result<()> {
    with_world(|world| async move {
        let mut doomed_snapshots = BTreeSet::new();
        let mut doomed_volumes = BTreeSet::new();
        let mut doomed_instances = BTreeSet::new();
        let mut customers = Vec::new();
        for region in [HOME, WEST] {
            let ec2 = world.ec2(region).await;
            let customer = customer(&world, region).await?;
            // It carries the exact tag: by the contract, a worker.
            doomed_instances.insert(customer.tagged_instance.clone());
            customers.push((region, customer));
            // An owned worker that outlived its TTL (its volume, untagged,
            // stays when it is terminated: DeleteOnTermination is false).
            doomed_instances.insert(launch(&ec2, OWNED, &["/dev/xvda"]).await?);
            // Owned and old: a snapshot, an available volume; an owned
            // volume still attached to an instance (a worker's) stays.
            let instance = launch(&ec2, &[], &["/dev/xvda"]).await?;
            let (root, _) = volumes_of(&ec2, &instance).await?[0].clone();
            doomed_snapshots.insert(fleet::snapshot(&ec2, &root, OWNED).await?);
            doomed_volumes.insert(fleet::volume(&ec2, region, OWNED).await?);
            let attached = fleet::volume(&ec2, region, OWNED).await?;
            fleet::attach(&ec2, &attached, &instance, "/dev/sdf").await?;
        }
        // Timestamps have whole seconds: the old ones are 6 s older than the
        // new ones, the TTL is 4 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut young_instances = Vec::new();
        for region in [HOME, WEST] {
            let ec2 = world.ec2(region).await;
            let volume = fleet::volume(&ec2, region, OWNED).await?;
            fleet::snapshot(&ec2, &volume, OWNED).await?;
            young_instances.push((region, launch(&ec2, OWNED, &[]).await?));
        }
        let before = [existing(&world, HOME).await?, existing(&world, WEST).await?];

        let ctx = world.ctx(config(&[HOME, WEST], "unused")).await;
        let summary = sweep(&ctx, 4.0 / 3600.0).await?;

        let terminated: BTreeSet<String> = summary
            .regions
            .iter()
            .flat_map(|r| r.instances_terminated.iter().cloned())
            .collect();
        ensure!(terminated == doomed_instances, "{summary:#?}");
        for (region, customer) in &customers {
            all_running(&world, region, &customer.instances).await?;
            let ec2 = world.ec2(region).await;
            let state = fleet::state(&ec2, &customer.tagged_instance).await?;
            ensure!(state == "terminated", "{state}");
        }
        for (region, young) in &young_instances {
            all_running(&world, region, std::slice::from_ref(young)).await?;
        }

        let deleted_snapshots: BTreeSet<String> = summary
            .regions
            .iter()
            .flat_map(|r| r.snapshots_deleted.iter().cloned())
            .collect();
        let deleted_volumes: BTreeSet<String> = summary
            .regions
            .iter()
            .flat_map(|r| r.volumes_deleted.iter().cloned())
            .collect();
        ensure!(deleted_snapshots == doomed_snapshots, "{summary:#?}");
        ensure!(deleted_volumes == doomed_volumes, "{summary:#?}");
        for (region, (snapshots, volumes)) in [HOME, WEST].into_iter().zip(before) {
            let (snapshots_now, volumes_now) = existing(&world, region).await?;
            let expected: BTreeSet<String> =
                snapshots.difference(&doomed_snapshots).cloned().collect();
            ensure!(
                snapshots_now == expected,
                "{region}: snapshots left {snapshots_now:?}"
            );
            let expected: BTreeSet<String> = volumes.difference(&doomed_volumes).cloned().collect();
            ensure!(
                volumes_now == expected,
                "{region}: volumes left {volumes_now:?}"
            );
        }
        for region in &summary.regions {
            // The fresh instance, snapshot and volume (the attached one is
            // not listed: only available volumes are).
            ensure!(region.not_expired == 3, "{region:?}");
            ensure!(
                region.kept.is_empty() && region.failed.is_empty(),
                "{region:?}"
            );
        }

        // Nothing more to do.
        let again = sweep(&ctx, 4.0 / 3600.0).await?;
        ensure!(
            again.snapshots_deleted == 0
                && again.volumes_deleted == 0
                && again.instances_terminated == 0,
            "{again:#?}"
        );
        Ok(())
    })
}

#[test]
fn a_customers_snapshots_and_volumes_cannot_be_deleted_through_the_sweep() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let Customer {
            tagged_instance,
            snapshots,
            volumes,
            instances,
        } = customer(&world, HOME).await?;
        let before = existing(&world, HOME).await?;
        let ownership = OwnershipTag::default();
        // Every resource counts as expired: only the tag stands in the way.
        let cutoff = SystemTime::now() + Duration::from_secs(24 * 3600);

        // The delete path itself, handed the customer's ids.
        for id in &snapshots {
            let verdict = delete_snapshot(&ec2, &ownership, id, cutoff).await?;
            ensure!(verdict == Verdict::NotOwned, "{id}: {verdict:?}");
        }
        for id in &volumes {
            let verdict = delete_volume(&ec2, &ownership, id, cutoff).await?;
            ensure!(verdict == Verdict::NotOwned, "{id}: {verdict:?}");
        }
        for id in &instances {
            let verdict = terminate_instance(&ec2, &ownership, id, cutoff).await?;
            ensure!(verdict == Verdict::NotOwned, "{id}: {verdict:?}");
        }
        all_running(&world, HOME, &instances).await?;
        // A whole sweep with a TTL of zero: only the instance that carries
        // the exact tag goes (its volume stays: it does not).
        let ctx = world.ctx(config(&[HOME], "unused")).await;
        let summary = sweep(&ctx, 0.0).await?;
        ensure!(
            summary.snapshots_deleted == 0
                && summary.volumes_deleted == 0
                && summary.regions[0].instances_terminated == vec![tagged_instance],
            "{summary:#?}"
        );
        ensure!(
            existing(&world, HOME).await? == before,
            "every snapshot and volume is still there"
        );
        all_running(&world, HOME, &instances).await?;

        // The same path does delete what is ours, and says when it is gone.
        let ours = fleet::volume(&ec2, HOME, OWNED).await?;
        ensure!(delete_volume(&ec2, &ownership, &ours, cutoff).await? == Verdict::Deleted);
        ensure!(delete_volume(&ec2, &ownership, &ours, cutoff).await? == Verdict::Gone);
        let (root, _) =
            volumes_of(&ec2, &launch(&ec2, &[], &["/dev/xvda"]).await?).await?[0].clone();
        let ours = fleet::snapshot(&ec2, &root, OWNED).await?;
        let young = SystemTime::now() - Duration::from_secs(3600);
        ensure!(delete_snapshot(&ec2, &ownership, &ours, young).await? == Verdict::NotExpired);
        ensure!(delete_snapshot(&ec2, &ownership, &ours, cutoff).await? == Verdict::Deleted);
        ensure!(delete_snapshot(&ec2, &ownership, &ours, cutoff).await? == Verdict::Gone);
        let ours = launch(&ec2, OWNED, &[]).await?;
        ensure!(terminate_instance(&ec2, &ownership, &ours, young).await? == Verdict::NotExpired);
        ensure!(terminate_instance(&ec2, &ownership, &ours, cutoff).await? == Verdict::Terminated);
        ensure!(terminate_instance(&ec2, &ownership, &ours, cutoff).await? == Verdict::Gone);
        Ok(())
    })
}

#[test]
fn a_deployment_with_another_ownership_tag_owns_only_that() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let theirs = fleet::volume(&ec2, HOME, OWNED).await?;
        let ours = fleet::volume(&ec2, HOME, &[("Owner", "scanner-2")]).await?;
        let ctx = world
            .ctx(control::Config {
                ownership: OwnershipTag {
                    key: "Owner".to_string(),
                    value: "scanner-2".to_string(),
                },
                ..config(&[HOME], "unused")
            })
            .await;
        let summary = sweep(&ctx, 0.0).await?;
        ensure!(
            summary.regions[0].volumes_deleted == vec![ours],
            "{summary:#?}"
        );
        ensure!(
            fleet::volume_ids(&ec2).await? == vec![theirs],
            "the default-tagged one stays"
        );
        Ok(())
    })
}
