//! Sizing the worker group from the queue: one worker per job waiting, in
//! progress or delayed (`ApproximateNumberOfMessages` +
//! `ApproximateNumberOfMessagesNotVisible` + `ApproximateNumberOfMessagesDelayed`:
//! a scan spreads its jobs over up to 15 minutes, and the workers for them
//! should be up when they arrive),
//! clamped to the group's bounds — up to its `MaxSize`, down to its
//! `MinSize` (0 in the template, so an idle scanner costs no instance).
//!
//! `SetDesiredCapacity` is called only when the size changes. The queue
//! attributes are approximate; a scale every few minutes corrects itself.

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::config::{ENV_ASG_NAME, ENV_QUEUE_URL};
use crate::ctx::Ctx;
use crate::error::ApiError;

/// What a scale saw and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleSummary {
    /// The group.
    pub asg_name: String,
    /// Jobs waiting.
    pub queue_visible: u64,
    /// Jobs being scanned.
    pub queue_in_flight: u64,
    /// Jobs spread by the scan, not yet visible.
    pub queue_delayed: u64,
    /// The group's size before.
    pub previous: i32,
    /// Its size now.
    pub desired: i32,
    /// Its bounds.
    pub min_size: i32,
    /// Its bounds.
    pub max_size: i32,
}

/// Why a scale failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScaleError {
    /// The queue or the group is not configured.
    #[error("scaling needs {var}, which is not set")]
    NotConfigured {
        /// The variable.
        var: &'static str,
    },
    /// The queue's depth could not be read.
    #[error("reading the depth of {queue_url}: {source}")]
    Queue {
        /// The queue.
        queue_url: String,
        /// The call.
        source: ApiError,
    },
    /// An attribute that is not a count.
    #[error("{queue_url}: attribute {name} is {value:?}, not a count")]
    Attribute {
        /// The queue.
        queue_url: String,
        /// The attribute.
        name: String,
        /// Its value.
        value: String,
    },
    /// The group could not be described, or resized.
    #[error("worker group {asg_name}: {source}")]
    Group {
        /// The group.
        asg_name: String,
        /// The call.
        source: ApiError,
    },
    /// No group of that name.
    #[error("worker group {asg_name} does not exist")]
    NoGroup {
        /// The group.
        asg_name: String,
    },
}

/// Set the worker group's desired capacity from the queue's depth.
///
/// # Errors
/// [`ScaleError`] naming the queue or the group.
pub async fn scale(ctx: &Ctx) -> Result<ScaleSummary, ScaleError> {
    let queue_url = ctx
        .config()
        .queue_url
        .clone()
        .ok_or(ScaleError::NotConfigured { var: ENV_QUEUE_URL })?;
    let asg_name = ctx
        .config()
        .asg_name
        .clone()
        .ok_or(ScaleError::NotConfigured { var: ENV_ASG_NAME })?;
    let (queue_visible, queue_in_flight, queue_delayed) = depth(&ctx.sqs(), &queue_url).await?;

    let group_error = |source| ScaleError::Group {
        asg_name: asg_name.clone(),
        source,
    };
    let autoscaling = ctx.autoscaling();
    let groups = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&asg_name)
        .send()
        .await
        .map_err(|err| group_error(ApiError::new("DescribeAutoScalingGroups", &err)))?;
    let group = groups
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(asg_name.as_str()))
        .ok_or_else(|| ScaleError::NoGroup {
            asg_name: asg_name.clone(),
        })?;
    let min_size = group.min_size().unwrap_or(0).max(0);
    let max_size = group.max_size().unwrap_or(0).max(min_size);
    let previous = group.desired_capacity().unwrap_or(0);
    let wanted = i32::try_from(
        queue_visible
            .saturating_add(queue_in_flight)
            .saturating_add(queue_delayed),
    )
    .unwrap_or(i32::MAX);
    let desired = wanted.clamp(min_size, max_size);
    if desired != previous {
        autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(&asg_name)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|err| {
                group_error(ApiError::new(format!("SetDesiredCapacity {desired}"), &err))
            })?;
        tracing::info!(asg = %asg_name, previous, desired, queue_visible, queue_in_flight, "worker group resized");
    }
    Ok(ScaleSummary {
        asg_name,
        queue_visible,
        queue_in_flight,
        queue_delayed,
        previous,
        desired,
        min_size,
        max_size,
    })
}

/// Jobs waiting, in flight and delayed.
async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(u64, u64, u64), ScaleError> {
    let visible = QueueAttributeName::ApproximateNumberOfMessages;
    let in_flight = QueueAttributeName::ApproximateNumberOfMessagesNotVisible;
    let delayed = QueueAttributeName::ApproximateNumberOfMessagesDelayed;
    let answer = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(visible.clone())
        .attribute_names(in_flight.clone())
        .attribute_names(delayed.clone())
        .send()
        .await
        .map_err(|err| ScaleError::Queue {
            queue_url: queue_url.to_string(),
            source: ApiError::new("GetQueueAttributes", &err),
        })?;
    let count = |name: &QueueAttributeName| {
        let value = answer
            .attributes()
            .and_then(|attributes| attributes.get(name))
            .map_or("0", String::as_str);
        value.parse::<u64>().map_err(|_| ScaleError::Attribute {
            queue_url: queue_url.to_string(),
            name: name.as_str().to_string(),
            value: value.to_string(),
        })
    };
    Ok((count(&visible)?, count(&in_flight)?, count(&delayed)?))
}
