//! Faults injected into the emulator: throttling the SDK's retries absorb,
//! throttling that outlasts them (a clean error naming the region), and an
//! instance whose snapshot fails while the others go on; the fleet-wide
//! pause that throttling past the retries starts.

use anyhow::{Context, Result, bail, ensure};
use aws_smithy_types::error::display::DisplayErrorContext;
use control::pause::epoch_now;
use control::scan::{RegionError, ScanError};
use control::{ControlError, handle};
use scanner_contract::{ParameterNames, Pause};
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

/// The pause parameter's value, parsed.
async fn stored_pause(ssm: &aws_sdk_ssm::Client) -> Result<Pause> {
    let name = ParameterNames::default().pause();
    let answer = ssm
        .get_parameter()
        .name(&name)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("GetParameter {name}: {}", DisplayErrorContext(&err)))?;
    let value = answer
        .parameter()
        .and_then(|p| p.value())
        .context("the parameter has no value")?;
    Pause::from_json(value).with_context(|| format!("{name} holds {value:?}"))
}

#[test]
fn throttling_past_the_retries_pauses_the_fleet_until_it_passes() -> Result<()> {
    with_world(|world| async move {
        launch(&world.ec2(REGION).await, &[], &["/dev/xvda"]).await?;
        let sqs = world.sqs().await;
        let ssm = world.ssm().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let ctx = world.ctx(config(&[REGION], &queue)).await;
        world.emulator.inject(&throttle("DescribeInstances", 100))?;

        let err = handle(json!({"action": "scan"}), &ctx)
            .await
            .expect_err("throttled on every attempt");
        let ControlError::Scan(ScanError::Incomplete { summary, .. }) = err else {
            bail!("not a failed region: {err}");
        };
        let started = summary
            .pause_started
            .clone()
            .with_context(|| format!("no pause started: {summary:#?}"))?;
        let expected = epoch_now() + 15 * 60;
        ensure!(
            (expected - 60..=expected).contains(&started.until),
            "the pause ends in about 15 minutes: {started:?}, expected ~{expected}"
        );
        ensure!(
            started.reason.contains("eu-west-1") && started.reason.contains("DescribeInstances"),
            "{started:?}"
        );
        ensure!(
            stored_pause(&ssm).await? == started,
            "the workers' parameter holds it"
        );

        // The throttling is over, but the pause holds: nothing is called.
        world.emulator.clear_faults()?;
        let paused = scan(&ctx, json!({"action": "scan"})).await?;
        ensure!(paused.paused.as_ref() == Some(&started), "{paused:#?}");
        ensure!(
            paused.instances == 0 && paused.ec2.total_calls() == 0,
            "{paused:#?}"
        );
        ensure!(fleet::depth(&sqs, &queue).await? == 0, "nothing enqueued");
        let response = serde_json::to_value(control::Response::Scan(paused))?;
        ensure!(
            response["paused"]["until"] == json!(started.until),
            "the response says until when: {response}"
        );

        // Once it has passed, scans resume.
        control::pause::write(
            &ctx,
            &Pause {
                until: epoch_now() - 1,
                reason: started.reason.clone(),
            },
        )
        .await?;
        let resumed = scan(&ctx, json!({"action": "scan"})).await?;
        ensure!(
            resumed.paused.is_none() && resumed.jobs == 1,
            "{resumed:#?}"
        );
        ensure!(fleet::depth(&sqs, &queue).await? == 1, "the job is queued");
        Ok(())
    })
}
