//! The fleet-wide pause: when AWS throttles a call past the SDK's retries,
//! more calls now would be throttled too — by this function and by every
//! worker, which share the account's API rate limits. So the function
//! writes a [`Pause`] (`until` = now + `CONTROL_PAUSE_MINUTES`, 15 by
//! default) to the SSM parameter [`ParameterNames::pause`]; every worker
//! reads it before taking a job, and a scan that starts before `until` does
//! nothing and says until when. Once it passes, scans resume by themselves:
//! nothing has to clear it.
//!
//! SSM rather than the queue (a visibility change, a delay) because the
//! pause must reach work already queued and workers already running.
//!
//! [`ParameterNames::pause`]: scanner_contract::ParameterNames::pause

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::types::ParameterType;
use scanner_contract::Pause;

use crate::ctx::Ctx;
use crate::error::ApiError;

/// Why the pause could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PauseError {
    /// The parameter could not be read or written.
    #[error("the pause parameter {name}: {source}")]
    Call {
        /// The parameter.
        name: String,
        /// The call.
        source: ApiError,
    },
    /// The parameter holds something that is not a pause.
    #[error(
        "the pause parameter {name} holds {excerpt:?}, not a pause ({{\"until\": SECONDS, \"reason\": \"…\"}}): {detail}"
    )]
    Invalid {
        /// The parameter.
        name: String,
        /// The start of its value.
        excerpt: String,
        /// What the parser said.
        detail: String,
    },
}

/// Seconds since the Unix epoch, now.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The pause in force now, if any (a missing parameter is no pause).
///
/// # Errors
/// [`PauseError`] when the parameter cannot be read or is not a pause.
pub async fn active(ctx: &Ctx) -> Result<Option<Pause>, PauseError> {
    let name = ctx.config().parameters.pause();
    let answer = match ctx.ssm().get_parameter().name(&name).send().await {
        Ok(answer) => answer,
        Err(err) => {
            let source = ApiError::new(format!("GetParameter {name}"), &err);
            return if source.is_code("ParameterNotFound") {
                Ok(None)
            } else {
                Err(PauseError::Call { name, source })
            };
        }
    };
    let value = answer
        .parameter()
        .and_then(|p| p.value())
        .unwrap_or_default();
    let pause = Pause::from_json(value).map_err(|err| PauseError::Invalid {
        name: name.clone(),
        excerpt: value.chars().take(80).collect(),
        detail: err.to_string(),
    })?;
    Ok(pause.is_active(epoch_now()).then_some(pause))
}

/// Pause the fleet for `length` from now, saying `reason`; the pause written.
///
/// # Errors
/// [`PauseError`] when the parameter cannot be written.
pub async fn start(ctx: &Ctx, length: Duration, reason: &str) -> Result<Pause, PauseError> {
    let pause = Pause {
        until: epoch_now().saturating_add(length.as_secs()),
        // SSM's standard tier holds 4 KB; the reason is for people.
        reason: reason.chars().take(1000).collect(),
    };
    write(ctx, &pause).await?;
    tracing::warn!(until = pause.until, reason = pause.reason, "fleet paused");
    Ok(pause)
}

/// Write `pause` to the parameter (a String, overwritten).
///
/// # Errors
/// [`PauseError`] when the parameter cannot be written.
pub async fn write(ctx: &Ctx, pause: &Pause) -> Result<(), PauseError> {
    let name = ctx.config().parameters.pause();
    ctx.ssm()
        .put_parameter()
        .name(&name)
        .value(pause.to_json())
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|err| PauseError::Call {
            source: ApiError::new(format!("PutParameter {name}"), &err),
            name,
        })?;
    Ok(())
}

/// Pause the fleet for the configured time (`CONTROL_PAUSE_MINUTES`; none
/// when it is zero) because of throttling described by `reason`.
///
/// # Errors
/// [`PauseError`] when the parameter cannot be written (logged too).
pub async fn after_throttling(ctx: &Ctx, reason: &str) -> Result<Option<Pause>, PauseError> {
    let length = ctx.config().pause;
    if length.is_zero() {
        return Ok(None);
    }
    match start(ctx, length, &format!("throttled: {reason}")).await {
        Ok(pause) => Ok(Some(pause)),
        Err(err) => {
            tracing::error!(error = %err, "the fleet could not be paused");
            Err(err)
        }
    }
}
