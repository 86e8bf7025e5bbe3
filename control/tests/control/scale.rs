//! Scaling: the worker group follows the queue from 0 to its maximum and
//! back to 0; a scan resizes it for the jobs it enqueued.

use anyhow::{Result, bail, ensure};
use control::scale::ScaleSummary;
use control::{Config, Response, handle};
use serde_json::json;

use crate::fleet::{self, launch};
use crate::{HOME, config, with_world};

const GROUP: &str = "scanner-workers";

async fn scale(ctx: &control::Ctx) -> Result<ScaleSummary> {
    match handle(json!({"action": "scale"}), ctx).await? {
        Response::Scale(summary) => Ok(summary),
        other => bail!("a scale answered {other:?}"),
    }
}

#[test]
fn the_worker_group_goes_from_zero_to_its_maximum_and_back_with_the_queue() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let autoscaling = world.autoscaling().await;
        let sqs = world.sqs().await;
        fleet::worker_group(&ec2, &autoscaling, GROUP, 3).await?;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world
            .ctx(Config {
                asg_name: Some(GROUP.to_string()),
                ..config(&[HOME], &queue)
            })
            .await;

        let idle = scale(&ctx).await?;
        ensure!(
            idle.desired == 0 && idle.previous == 0 && idle.max_size == 3,
            "{idle:?}"
        );

        fleet::send(&sqs, &queue, 2).await?;
        let two = scale(&ctx).await?;
        ensure!(
            two.previous == 0 && two.desired == 2 && two.queue_visible == 2,
            "{two:?}"
        );
        ensure!(
            fleet::group_size(&autoscaling, GROUP).await?.0 == 2,
            "the group is at 2"
        );

        // More jobs than workers: the group's maximum, not more.
        fleet::send(&sqs, &queue, 5).await?;
        let full = scale(&ctx).await?;
        ensure!(full.desired == 3 && full.queue_visible == 7, "{full:?}");

        // Jobs being scanned still need their workers.
        let taken = fleet::receive(&sqs, &queue).await?;
        ensure!(taken.len() == 7, "received {}", taken.len());
        let busy = scale(&ctx).await?;
        ensure!(
            busy.desired == 3 && busy.queue_visible == 0 && busy.queue_in_flight == 7,
            "{busy:?}"
        );

        // Done: back to zero.
        fleet::delete(&sqs, &queue, &taken).await?;
        let drained = scale(&ctx).await?;
        ensure!(drained.previous == 3 && drained.desired == 0, "{drained:?}");
        ensure!(
            fleet::group_size(&autoscaling, GROUP).await? == (0, 0),
            "the group is empty"
        );
        Ok(())
    })
}

#[test]
fn a_scan_sizes_the_group_for_its_jobs_and_skips_the_workers() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let autoscaling = world.autoscaling().await;
        let sqs = world.sqs().await;
        fleet::worker_group(&ec2, &autoscaling, GROUP, 10).await?;
        // A worker already running: it carries the ownership tag (from the
        // launch template) and must not be scanned.
        autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(GROUP)
            .desired_capacity(1)
            .send()
            .await?;
        for _ in 0..2 {
            launch(&ec2, &[], &["/dev/xvda"]).await?;
        }
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world
            .ctx(Config {
                asg_name: Some(GROUP.to_string()),
                ..config(&[HOME], &queue)
            })
            .await;
        let Response::Scan(summary) = handle(json!({"action": "scan"}), &ctx).await? else {
            bail!("not a scan");
        };
        ensure!(summary.jobs == 2, "{summary:#?}");
        ensure!(
            summary.regions[0].skipped.len() == 1,
            "the worker is skipped: {summary:#?}"
        );
        let scaled = summary.scale.as_ref().expect("the group is configured");
        ensure!(scaled.previous == 1 && scaled.desired == 2, "{scaled:?}");
        Ok(())
    })
}

#[test]
fn scaling_errors_name_the_group_or_the_variable() -> Result<()> {
    with_world(|world| async move {
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let no_group = world.ctx(config(&[HOME], &queue)).await;
        let err = handle(json!({"action": "scale"}), &no_group)
            .await
            .expect_err("no group configured");
        ensure!(err.to_string().contains("CONTROL_ASG_NAME"), "{err}");

        let missing = world
            .ctx(Config {
                asg_name: Some("nobody".to_string()),
                ..config(&[HOME], &queue)
            })
            .await;
        let err = handle(json!({"action": "scale"}), &missing)
            .await
            .expect_err("no such group");
        ensure!(
            err.to_string() == "worker group nobody does not exist",
            "{err}"
        );
        Ok(())
    })
}
