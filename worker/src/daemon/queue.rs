//! The job loop: long-poll the queue, run up to `concurrency` jobs at once,
//! keep each message invisible while its job runs (the heartbeat), delete
//! it only after the report was delivered and the job cleaned up.
//!
//! Failure is left to the queue: a failed job's message becomes visible
//! again after the retry delay, and after the queue's `maxReceiveCount`
//! (its RedrivePolicy) SQS moves it to the dead-letter queue. On the last
//! attempt the worker still delivers the report with the reasons in it and
//! logs them, then lets the message go. A message that is not a job
//! (malformed, another version) is logged and takes the same road.
//!
//! Before every intake the fleet-wide pause (an SSM parameter the control
//! Lambda sets when AWS throttles it) is read; while it is active no job is
//! taken. On SIGTERM the loop stops taking jobs and running ones release
//! their messages (visibility 0) for another worker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use scanner_contract::{Pause, ScanJob};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::fleet::Fleet;
use super::job::{self, JobReport};
use super::{Ctx, Exit};

/// SQS's largest batch and long-poll wait.
const MAX_BATCH: usize = 10;
const MAX_POLL: Duration = Duration::from_secs(20);
/// Wait after a failed receive before the next: the SDK already retried.
const RECEIVE_BACKOFF: Duration = Duration::from_secs(5);

/// Run the loop until a signal or idleness (see the module docs).
pub async fn run(ctx: Arc<Ctx>, fleet: &Fleet, mut shutdown: watch::Receiver<bool>) -> Exit {
    let max_receive = max_receive_count(&ctx).await;
    let mut jobs = JoinSet::new();
    let mut busy = false;
    let mut last_activity = Instant::now();
    let exit = loop {
        while let Some(done) = jobs.try_join_next() {
            if let Err(err) = done {
                tracing::error!(error = %err, "a job task failed");
            }
        }
        if jobs.is_empty() && busy {
            fleet.protect(false).await;
            busy = false;
        }
        if !jobs.is_empty() {
            last_activity = Instant::now();
        }
        if *shutdown.borrow() {
            break Exit::Signal;
        }
        if jobs.is_empty()
            && ctx
                .config
                .settings
                .idle
                .is_some_and(|idle| last_activity.elapsed() >= idle)
        {
            tracing::info!(idle = ?ctx.config.settings.idle, "no job for the idle time");
            break Exit::Idle;
        }
        if jobs.len() >= ctx.config.settings.concurrency {
            tokio::select! {
                _ = jobs.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if let Some(pause) = active_pause(&ctx).await {
            // Work is waiting, not absent: a pause is not idleness.
            last_activity = Instant::now();
            let left = pause.until.saturating_sub(now_seconds());
            tracing::info!(until = pause.until, reason = %pause.reason, "intake paused");
            let wait = ctx.config.timing.poll.min(Duration::from_secs(left.max(1)));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let room = ctx
            .config
            .settings
            .concurrency
            .saturating_sub(jobs.len())
            .min(MAX_BATCH);
        let received = tokio::select! {
            received = receive(&ctx, room) => received,
            _ = shutdown.changed() => continue,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(reason) => {
                tracing::warn!(error = %reason, "receiving from the queue failed");
                tokio::select! {
                    () = tokio::time::sleep(RECEIVE_BACKOFF) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        last_activity = Instant::now();
        if !busy {
            fleet.protect(true).await;
            busy = true;
        }
        for message in messages {
            let ctx = Arc::clone(&ctx);
            let shutdown = shutdown.clone();
            jobs.spawn(handle(ctx, message, max_receive, shutdown));
        }
    };
    // Running jobs see the signal themselves and release their messages.
    while let Some(done) = jobs.join_next().await {
        if let Err(err) = done {
            tracing::error!(error = %err, "a job task failed");
        }
    }
    if busy {
        fleet.protect(false).await;
    }
    exit
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The pause, when one is active. A missing or unreadable parameter is no
/// pause (logged when unreadable): a typo must not stop the fleet for good.
async fn active_pause(ctx: &Ctx) -> Option<Pause> {
    let name = ctx.config.parameters.pause();
    let value = match ctx.ssm.get_parameter().name(&name).send().await {
        Ok(answer) => answer.parameter()?.value()?.to_string(),
        Err(err) => {
            let missing = err.as_service_error().is_some_and(
                aws_sdk_ssm::operation::get_parameter::GetParameterError::is_parameter_not_found,
            );
            if !missing {
                tracing::warn!(parameter = %name, error = %aws_sdk_ssm::error::DisplayErrorContext(&err), "reading the pause failed; not paused");
            }
            return None;
        }
    };
    match Pause::from_json(&value) {
        Ok(pause) if pause.is_active(now_seconds()) => Some(pause),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(parameter = %name, error = %err, "the pause parameter is not a pause; not paused");
            None
        }
    }
}

/// The queue's `maxReceiveCount`, from its RedrivePolicy (`None`: no
/// dead-letter queue, or unreadable).
async fn max_receive_count(ctx: &Ctx) -> Option<u32> {
    let answer = ctx
        .sqs
        .get_queue_attributes()
        .queue_url(&ctx.config.settings.queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await;
    let policy = match answer {
        Ok(answer) => answer
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .cloned(),
        Err(err) => {
            tracing::warn!(queue = %ctx.config.settings.queue_url, error = %DisplayErrorContext(&err), "reading the queue's redrive policy failed");
            None
        }
    }?;
    let value: serde_json::Value = serde_json::from_str(&policy).ok()?;
    let count = &value["maxReceiveCount"];
    count
        .as_u64()
        .or_else(|| count.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
}

async fn receive(ctx: &Ctx, room: usize) -> Result<Vec<Message>, String> {
    let visibility = seconds(ctx.config.timing.visibility);
    let answer = ctx
        .sqs
        .receive_message()
        .queue_url(&ctx.config.settings.queue_url)
        .max_number_of_messages(i32::try_from(room.max(1)).unwrap_or(1))
        .wait_time_seconds(seconds(ctx.config.timing.poll.min(MAX_POLL)))
        .visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(|err| DisplayErrorContext(&err).to_string())?;
    Ok(answer.messages.unwrap_or_default())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// One message, from parse to delete (or release).
async fn handle(
    ctx: Arc<Ctx>,
    message: Message,
    max_receive: Option<u32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let message_id = message.message_id().unwrap_or("unknown").to_string();
    let Some(receipt) = message.receipt_handle().map(str::to_string) else {
        tracing::error!(message = %message_id, "a message without a receipt handle");
        return;
    };
    let attempt = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    let last_attempt = max_receive.is_some_and(|max| attempt >= max);
    let span = tracing::info_span!(
        "job",
        message = %message_id,
        attempt,
        instance = tracing::field::Empty,
        scan_id = tracing::field::Empty,
    );
    async {
        let job = match ScanJob::from_json(message.body().unwrap_or("")) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(
                    reason = %err,
                    last_attempt,
                    "not a scan job; it goes to the dead-letter queue after its last attempt"
                );
                release(&ctx, &receipt, retry_delay(&ctx, last_attempt)).await;
                return;
            }
        };
        let span = tracing::Span::current();
        span.record("instance", job.instance_id.as_str());
        span.record("scan_id", job.scan_id.as_str());
        tracing::info!(snapshots = job.snapshots.len(), "job taken");
        let heartbeat =
            tokio::spawn(heartbeat(Arc::clone(&ctx), receipt.clone()).instrument(span.clone()));
        let outcome = tokio::select! {
            report = job::execute(&ctx, &job, attempt) => Some(report),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        heartbeat.abort();
        let Some(report) = outcome else {
            release(&ctx, &receipt, Duration::ZERO).await;
            tracing::info!("released on shutdown for another worker");
            return;
        };
        finish(&ctx, &receipt, &report, last_attempt).await;
    }
    .instrument(span)
    .await;
}

/// Deliver, then delete; or leave the message to be retried.
async fn finish(ctx: &Ctx, receipt: &str, report: &JobReport, last_attempt: bool) {
    let complete = report.complete();
    if !complete && !last_attempt {
        tracing::warn!(reasons = ?report.reasons(), "job failed; it will be retried");
        release(ctx, receipt, retry_delay(ctx, false)).await;
        return;
    }
    let body = match serde_json::to_vec(report) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "serialising the report failed");
            release(ctx, receipt, retry_delay(ctx, last_attempt)).await;
            return;
        }
    };
    match ctx
        .sink
        .deliver(&report.scan_id, &report.instance_id, body)
        .await
    {
        Ok(location) if complete => {
            tracing::info!(%location, "report delivered");
            delete(ctx, receipt).await;
        }
        Ok(location) => {
            tracing::error!(
                %location,
                reasons = ?report.reasons(),
                "job failed on its last attempt: report with the reasons delivered; the message goes to the dead-letter queue"
            );
            release(ctx, receipt, Duration::ZERO).await;
        }
        Err(err) => {
            tracing::warn!(error = %err, last_attempt, "report not delivered; the job will be retried");
            release(ctx, receipt, retry_delay(ctx, last_attempt)).await;
        }
    }
}

/// A failed message comes back after the retry delay; after its last
/// attempt at once, so SQS moves it to the dead-letter queue.
fn retry_delay(ctx: &Ctx, last_attempt: bool) -> Duration {
    if last_attempt {
        Duration::ZERO
    } else {
        ctx.config.timing.retry_delay
    }
}

/// Keep the message invisible while the job runs: every third of the
/// visibility timeout, extend it to a full one from now.
async fn heartbeat(ctx: Arc<Ctx>, receipt: String) {
    let visibility = ctx.config.timing.visibility;
    let every = (visibility / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        match ctx
            .sqs
            .change_message_visibility()
            .queue_url(&ctx.config.settings.queue_url)
            .receipt_handle(&receipt)
            .visibility_timeout(seconds(visibility))
            .send()
            .await
        {
            Ok(_) => tracing::debug!("visibility extended"),
            Err(err) => {
                tracing::warn!(error = %DisplayErrorContext(&err), "extending the message's visibility failed")
            }
        }
    }
}

async fn release(ctx: &Ctx, receipt: &str, delay: Duration) {
    if let Err(err) = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.config.settings.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(seconds(delay))
        .send()
        .await
    {
        tracing::warn!(error = %DisplayErrorContext(&err), "releasing the message failed; it returns when its visibility times out");
    }
}

async fn delete(ctx: &Ctx, receipt: &str) {
    match ctx
        .sqs
        .delete_message()
        .queue_url(&ctx.config.settings.queue_url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        Ok(_) => tracing::info!("job done, message deleted"),
        Err(err) => {
            tracing::warn!(error = %DisplayErrorContext(&err), "deleting the message failed; the job may run again")
        }
    }
}
