//! The worker's place in its Auto Scaling group: protected from scale-in
//! while it has jobs (so the group shrinking never kills a scan), and
//! taking itself out when idle with `TerminateInstanceInAutoScalingGroup`
//! and `ShouldDecrementDesiredCapacity`, so the group reaches zero without
//! the control Lambda picking which instance goes.
//!
//! Outside a group (a local run), protection is skipped and idling ends
//! the process.

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::error::DisplayErrorContext;

/// This instance in its group.
#[derive(Debug)]
pub struct Fleet {
    asg: Client,
    instance_id: String,
    group: Option<String>,
}

impl Fleet {
    /// Find the group `instance_id` belongs to (`DescribeAutoScalingInstances`).
    /// A failed call is logged; the worker then runs as if outside a group.
    pub async fn discover(asg: Client, instance_id: String) -> Self {
        let group = match asg
            .describe_auto_scaling_instances()
            .instance_ids(&instance_id)
            .send()
            .await
        {
            Ok(answer) => answer
                .auto_scaling_instances()
                .iter()
                .find(|i| i.instance_id() == Some(instance_id.as_str()))
                .and_then(|i| i.auto_scaling_group_name().map(str::to_string)),
            Err(err) => {
                tracing::warn!(
                    instance = %instance_id,
                    error = %DisplayErrorContext(&err),
                    "finding this instance's Auto Scaling group failed; running without one"
                );
                None
            }
        };
        match &group {
            Some(group) => {
                tracing::info!(instance = %instance_id, group = %group, "in an Auto Scaling group")
            }
            None => tracing::info!(instance = %instance_id, "not in an Auto Scaling group"),
        }
        Self {
            asg,
            instance_id,
            group,
        }
    }

    /// The group, when there is one.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Protect this instance from scale-in (`true`) or lift it. Failures are
    /// logged: a scan goes on unprotected rather than not at all (its message
    /// is redelivered if the instance goes).
    pub async fn protect(&self, protected: bool) {
        let Some(group) = &self.group else { return };
        match self
            .asg
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protected)
            .send()
            .await
        {
            Ok(_) => tracing::info!(group = %group, protected, "scale-in protection set"),
            Err(err) => tracing::warn!(
                group = %group,
                protected,
                error = %DisplayErrorContext(&err),
                "setting scale-in protection failed"
            ),
        }
    }

    /// Idle: leave the group, decrementing its desired capacity (AWS then
    /// terminates this instance). Outside a group: nothing to do.
    pub async fn scale_in(&self) {
        let Some(group) = &self.group else {
            tracing::info!("idle and not in an Auto Scaling group: exiting");
            return;
        };
        self.protect(false).await;
        match self
            .asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&self.instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(group = %group, "idle: terminating this instance, desired capacity decremented")
            }
            Err(err) => tracing::error!(
                group = %group,
                error = %DisplayErrorContext(&err),
                "idle scale-in failed; the group's own scaling will remove this instance"
            ),
        }
    }
}
