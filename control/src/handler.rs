//! The handler: one event in, one response out. A plain async function of
//! the event and the context, which the Lambda runtime, `control invoke` and
//! the tests all call the same way.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::custom_resource::{CustomResourceError, CustomResourceSummary, custom_resource};
use crate::event::{Event, EventError};
use crate::inventory::{InventoryError, InventorySummary, inventory};
use crate::scale::{ScaleError, ScaleSummary, scale};
use crate::scan::{ScanError, ScanSummary, scan};
use crate::self_update::{SelfUpdateError, SelfUpdateSummary, self_update};
use crate::sweep::{SweepError, SweepSummary, sweep};

/// What the handler did: the JSON response, tagged with the action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Response {
    /// A scan.
    Scan(ScanSummary),
    /// A sweep.
    Sweep(SweepSummary),
    /// A scale.
    Scale(ScaleSummary),
    /// An inventory.
    Inventory(InventorySummary),
    /// A self-update.
    #[serde(rename = "self-update")]
    SelfUpdate(SelfUpdateSummary),
    /// A CloudFormation custom resource request, answered.
    #[serde(rename = "custom-resource")]
    CustomResource(CustomResourceSummary),
}

/// Why the handler failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The event is not one the handler accepts.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The scan failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The sweep failed.
    #[error(transparent)]
    Sweep(#[from] SweepError),
    /// The scale failed.
    #[error(transparent)]
    Scale(#[from] ScaleError),
    /// The inventory failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The self-update changed nothing.
    #[error(transparent)]
    SelfUpdate(#[from] SelfUpdateError),
    /// CloudFormation could not be answered.
    #[error(transparent)]
    CustomResource(#[from] CustomResourceError),
}

impl ControlError {
    /// A short name of the kind of failure (the Lambda error type).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Event(_) => "InvalidEvent",
            Self::Scan(_) => "ScanFailed",
            Self::Sweep(_) => "SweepFailed",
            Self::Scale(_) => "ScaleFailed",
            Self::Inventory(_) => "InventoryFailed",
            Self::CustomResource(_) => "CustomResourceFailed",
            Self::SelfUpdate(_) => "SelfUpdateFailed",
        }
    }
}

/// Handle one event.
///
/// # Errors
/// [`ControlError`]: an event not understood, or the failed action's error.
pub async fn handle(event: Value, ctx: &Ctx) -> Result<Response, ControlError> {
    handle_until(event, ctx, None).await
}

/// Handle one event, finishing before `deadline` (the Lambda's, where there
/// is one): a CloudFormation request is answered before it.
///
/// # Errors
/// [`ControlError`]: an event not understood, or the failed action's error.
pub async fn handle_until(
    event: Value,
    ctx: &Ctx,
    deadline: Option<SystemTime>,
) -> Result<Response, ControlError> {
    let event = Event::parse(&event)?;
    tracing::info!(?event, "handling");
    Ok(match event {
        Event::Scan { instance_ids } => Response::Scan(scan(ctx, instance_ids.as_deref()).await?),
        Event::Sweep { ttl } => {
            Response::Sweep(sweep(ctx, ttl.unwrap_or(ctx.config().sweep_ttl)).await?)
        }
        Event::Scale => Response::Scale(scale(ctx).await?),
        Event::Inventory => Response::Inventory(inventory(ctx).await?),
        Event::SelfUpdate => Response::SelfUpdate(self_update(ctx).await?),
        Event::CustomResource(request) => {
            Response::CustomResource(custom_resource(ctx, &request, deadline).await?)
        }
    })
}
