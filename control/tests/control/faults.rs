//! Faults injected into the emulator: throttling the SDK's retries absorb,
//! throttling that outlasts them (a clean error naming the region), and an
//! instance whose snapshot fails while the others go on.

use anyhow::{Result, ensure};
use control::scan::{RegionError, ScanError};
use control::{ControlError, handle};
use serde_json::json;

use crate::fleet::{self, launch};
use crate::scan::scan;
use crate::{config, with_world};

const REGION: &str = "eu-west-1";

fn throttle(action: &str, count: u32) -> serde_json::Value {
    // EC2 throttles with 503 RequestLimitExceeded.
    json!({"service": "ec2", "action": action, "count": count,
           "status": 503, "code": "RequestLimitExceeded"})
}

#[test]
fn throttled_describe_instances_is_retried() -> Result<()> {
    with_world(|world| async move {
        launch(&world.ec2(REGION).await, &[], &["/dev/xvda"]).await?;
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[REGION], &queue)).await; // 3 attempts
        world.emulator.inject(&throttle("DescribeInstances", 2))?;

        let summary = scan(&ctx, json!({"action": "scan"})).await?;
        ensure!(summary.jobs == 1, "{summary:#?}");
        ensure!(
            summary.ec2.calls["DescribeInstances"] == 1
                && summary.ec2.attempts["DescribeInstances"] == 3,
            "one call, three attempts: {:?}",
            summary.ec2
        );
        ensure!(
            fleet::jobs(&sqs, &queue).await?.len() == 1,
            "the job is queued"
        );
        Ok(())
    })
}

#[test]
fn persistent_throttling_is_an_error_naming_the_region() -> Result<()> {
    with_world(|world| async move {
        launch(&world.ec2(REGION).await, &[], &["/dev/xvda"]).await?;
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[REGION], &queue)).await;
        world.emulator.inject(&throttle("DescribeInstances", 100))?;

        let err = handle(json!({"action": "scan"}), &ctx)
            .await
            .expect_err("throttled on every attempt");
        let message = err.to_string();
        ensure!(
            message.contains("eu-west-1: discovering instances: DescribeInstances")
                && message.contains("RequestLimitExceeded"),
            "{message}"
        );
        let ControlError::Scan(ScanError::Incomplete { failures, summary }) = err else {
            anyhow::bail!("not a failed region: {message}");
        };
        ensure!(
            failures.len() == 1 && failures[0].region == REGION,
            "{failures:?}"
        );
        ensure!(
            matches!(&failures[0].error, RegionError::Discover(api) if api.is_throttling()),
            "{failures:?}"
        );
        ensure!(
            summary.ec2.attempts["DescribeInstances"] == 3,
            "the configured attempts, no more: {:?}",
            summary.ec2
        );
        ensure!(fleet::depth(&sqs, &queue).await? == 0, "nothing enqueued");
        Ok(())
    })
}

#[test]
fn throttled_snapshots_stop_the_region_and_name_it() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(REGION).await;
        for _ in 0..2 {
            launch(&ec2, &[], &["/dev/xvda"]).await?;
        }
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[REGION], &queue)).await;
        world.emulator.inject(&throttle("CreateSnapshots", 100))?;

        let err = handle(json!({"action": "scan"}), &ctx)
            .await
            .expect_err("snapshots throttled");
        let message = err.to_string();
        ensure!(
            message.contains("eu-west-1: throttled, snapshots stopped: snapshotting i-")
                && message.contains("CreateSnapshots"),
            "{message}"
        );
        Ok(())
    })
}

#[test]
fn one_instance_failing_does_not_stop_the_others() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(REGION).await;
        for _ in 0..3 {
            launch(&ec2, &[], &["/dev/xvda"]).await?;
        }
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[REGION], &queue)).await;
        world
            .emulator
            .inject(&json!({"service": "ec2", "action": "CreateSnapshots",
            "count": 1, "status": 400, "code": "IncorrectState"}))?;

        let summary = scan(&ctx, json!({"action": "scan"})).await?;
        let region = &summary.regions[0];
        ensure!(
            summary.jobs == 2 && region.failed.len() == 1,
            "{summary:#?}"
        );
        ensure!(
            region.failed[0].error.contains("IncorrectState")
                && region.failed[0]
                    .error
                    .contains(&region.failed[0].instance_id),
            "{:?}",
            region.failed
        );
        ensure!(
            fleet::jobs(&sqs, &queue).await?.len() == 2,
            "two jobs queued"
        );
        Ok(())
    })
}
