//! The snapshot quotas against the emulator: snapshots already pending in
//! the account (the customer's, started through the EBS direct API, which
//! stay `pending` until completed) count against
//! `CONTROL_MAX_PENDING_SNAPSHOTS` together with the scan's own; an instance
//! that would pass it is deferred — no call, no job — and the next scan
//! takes it. (The per-volume rules are unit tests of `control::quota`: the
//! emulator cannot hold a volume's snapshot in `pending`.) The time budget:
//! at the paced rate, what does not fit is deferred too.

use anyhow::{Result, ensure};
use aws_smithy_types::error::display::DisplayErrorContext;
use control::quota::Deferral;
use serde_json::json;

use crate::fleet::{self, launch};
use crate::scan::scan;
use crate::{HOME, config, with_world};

#[test]
fn instances_past_the_pending_quota_are_deferred_to_the_next_scan() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let mut instances = Vec::new();
        for _ in 0..3 {
            instances.push(launch(&ec2, &[], &["/dev/xvda"]).await?);
        }
        // Two of the customer's snapshots in flight.
        let ebs = aws_sdk_ebs::Client::new(&world.loader().load().await);
        let mut customer = Vec::new();
        for _ in 0..2 {
            let started = ebs
                .start_snapshot()
                .volume_size(1)
                .send()
                .await
                .map_err(|err| anyhow::anyhow!("StartSnapshot: {}", DisplayErrorContext(&err)))?;
            customer.extend(started.snapshot_id().map(str::to_string));
        }
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world
            .ctx(control::Config {
                max_pending_snapshots: 3,
                ..config(&[HOME], &queue)
            })
            .await;

        let first = scan(&ctx, json!({"action": "scan"})).await?;
        let region = &first.regions[0];
        ensure!(
            first.jobs == 1 && first.snapshots_created == 1 && first.deferred == 2,
            "{first:#?}"
        );
        ensure!(
            first.ec2.calls.get("CreateSnapshots") == Some(&1),
            "no call for a deferred instance: {:?}",
            first.ec2
        );
        for deferred in &region.deferred {
            ensure!(
                deferred.reason
                    == Deferral::AccountPending {
                        pending: 3,
                        needed: 1,
                        max: 3
                    },
                "{deferred:?}"
            );
        }
        let response = serde_json::to_value(control::Response::Scan(first.clone()))?;
        ensure!(
            response["regions"][0]["deferred"][0]["reason"]["quota"] == json!("account_pending"),
            "{response}"
        );
        ensure!(fleet::jobs(&sqs, &queue).await?.len() == 1, "one job");

        // The customer's snapshots complete (the scan's are completed at
        // once in the emulator): the next scan takes the deferred ones and
        // reuses the first one's snapshot.
        for id in &customer {
            ebs.complete_snapshot()
                .snapshot_id(id)
                .changed_blocks_count(0)
                .send()
                .await
                .map_err(|err| {
                    anyhow::anyhow!("CompleteSnapshot: {}", DisplayErrorContext(&err))
                })?;
        }
        let second = scan(&ctx, json!({"action": "scan"})).await?;
        ensure!(
            second.jobs == 3
                && second.snapshots_created == 2
                && second.snapshots_reused == 1
                && second.deferred == 0,
            "{second:#?}"
        );
        Ok(())
    })
}

#[test]
fn what_does_not_fit_the_time_budget_at_the_paced_rate_is_deferred() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        for _ in 0..7 {
            launch(&ec2, &[], &["/dev/xvda"]).await?;
        }
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        // Five calls a second for one second: five instances.
        let ctx = world
            .ctx(control::Config {
                snapshot_calls_per_second: 5,
                scan_budget: std::time::Duration::from_secs(1),
                ..config(&[HOME], &queue)
            })
            .await;
        let summary = scan(&ctx, json!({"action": "scan"})).await?;
        let region = &summary.regions[0];
        ensure!(summary.jobs == 5 && summary.deferred == 2, "{summary:#?}");
        ensure!(
            region
                .deferred
                .iter()
                .all(|d| d.reason == Deferral::ScanBudget { calls: 5, max: 5 }),
            "{:?}",
            region.deferred
        );
        Ok(())
    })
}
