//! Putting scan jobs on the queue: `SendMessageBatch`, ten jobs a call (the
//! API's maximum), one message per instance (the contract's [`ScanJob`]).
//!
//! Jobs are spread over time: job `i` of `n` waits `i · spread / n`
//! seconds on the queue (`DelaySeconds`, at most SQS's 900), so the workers
//! start their EBS reads and EC2 calls evenly over the window rather than
//! all at once.
//!
//! A batch call can succeed while some of its entries fail; an entry that
//! failed on the service's side (not the sender's) is sent once more, and
//! what still fails is reported per instance.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use scanner_contract::ScanJob;
use serde::Serialize;

use crate::error::ApiError;

/// Entries per `SendMessageBatch` call (the API's maximum).
pub const BATCH_SIZE: usize = 10;
/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY_SECONDS: u64 = 900;
/// Rounds per batch: the first send, and one more for entries that failed
/// on the service's side.
const ROUNDS: usize = 2;

/// What was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// Jobs on the queue.
    pub sent: usize,
    /// Jobs that are not, with why.
    pub failed: Vec<FailedJob>,
}

/// A job the queue refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedJob {
    /// The job's instance.
    pub instance_id: String,
    /// The queue's error code and message.
    pub error: String,
}

/// A batch call that failed as a whole (after the SDK's retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("sending the jobs of {instances} to {queue_url}: {source}")]
pub struct EnqueueError {
    /// The queue.
    pub queue_url: String,
    /// The instances of the batch, comma-separated.
    pub instances: String,
    /// The call.
    pub source: ApiError,
}

/// Send `jobs` to `queue_url`, in order, delayed evenly over `spread`
/// (capped at 900 s).
///
/// # Errors
/// [`EnqueueError`] when a batch call fails; the jobs of earlier batches are
/// on the queue, those of later ones are not sent.
pub async fn enqueue(
    sqs: &Client,
    queue_url: &str,
    jobs: &[ScanJob],
    spread: Duration,
) -> Result<Sent, EnqueueError> {
    let mut outcome = Sent::default();
    let delays = delays(jobs.len(), spread);
    for (number, batch) in jobs.chunks(BATCH_SIZE).enumerate() {
        let first = number * BATCH_SIZE;
        let batch_error = |source| EnqueueError {
            queue_url: queue_url.to_string(),
            instances: batch
                .iter()
                .map(|job| job.instance_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            source,
        };
        // Entry ids are the jobs' indices in the batch.
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        for round in 1..=ROUNDS {
            let entries = pending
                .iter()
                .map(|&index| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(batch[index].to_json())
                        .delay_seconds(delays.get(first + index).copied().unwrap_or(0))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| {
                    batch_error(ApiError {
                        operation: "SendMessageBatch".to_string(),
                        code: None,
                        detail: err.to_string(),
                    })
                })?;
            let answer = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|err| batch_error(ApiError::new("SendMessageBatch", &err)))?;
            outcome.sent += answer.successful().len();
            pending.clear();
            for failure in answer.failed() {
                let Some(index) = failure
                    .id()
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < batch.len())
                else {
                    continue;
                };
                if !failure.sender_fault() && round < ROUNDS {
                    pending.push(index);
                    continue;
                }
                outcome.failed.push(FailedJob {
                    instance_id: batch[index].instance_id.clone(),
                    error: format!(
                        "{}: {}",
                        failure.code(),
                        failure.message().unwrap_or("no message")
                    ),
                });
            }
            if pending.is_empty() {
                break;
            }
        }
    }
    Ok(outcome)
}

/// `DelaySeconds` of each of `count` jobs spread evenly over `spread` (at
/// most [`MAX_DELAY_SECONDS`]): the first at once, the last just before the
/// window ends.
pub fn delays(count: usize, spread: Duration) -> Vec<i32> {
    let window = spread.as_secs().min(MAX_DELAY_SECONDS);
    let count_u64 = u64::try_from(count.max(1)).unwrap_or(u64::MAX);
    (0..count)
        .map(|i| {
            let i = u64::try_from(i).unwrap_or(u64::MAX);
            let delay = i.saturating_mul(window) / count_u64;
            i32::try_from(delay).unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_spread_evenly_over_the_window() {
        assert_eq!(delays(4, Duration::from_secs(300)), vec![0, 75, 150, 225]);
        assert_eq!(delays(1, Duration::from_secs(300)), vec![0]);
        assert_eq!(delays(3, Duration::ZERO), vec![0, 0, 0]);
        assert!(delays(0, Duration::from_secs(300)).is_empty());
        // SQS's maximum is the cap, whatever is asked.
        let long = delays(10_000, Duration::from_secs(5000));
        assert_eq!(long.len(), 10_000);
        assert!(long.iter().all(|d| (0..900).contains(d)));
        assert!(long.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(long[5000], 450);
    }
}
