//! Putting scan jobs on the queue: `SendMessageBatch`, ten jobs a call (the
//! API's maximum), one message per instance (the contract's [`ScanJob`]).
//!
//! A batch call can succeed while some of its entries fail; an entry that
//! failed on the service's side (not the sender's) is sent once more, and
//! what still fails is reported per instance.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use scanner_contract::ScanJob;
use serde::Serialize;

use crate::error::ApiError;

/// Entries per `SendMessageBatch` call (the API's maximum).
pub const BATCH_SIZE: usize = 10;
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

/// Send `jobs` to `queue_url`, in order.
///
/// # Errors
/// [`EnqueueError`] when a batch call fails; the jobs of earlier batches are
/// on the queue, those of later ones are not sent.
pub async fn enqueue(
    sqs: &Client,
    queue_url: &str,
    jobs: &[ScanJob],
) -> Result<Sent, EnqueueError> {
    let mut outcome = Sent::default();
    for batch in jobs.chunks(BATCH_SIZE) {
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
