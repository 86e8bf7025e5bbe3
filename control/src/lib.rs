//! The control Lambda of the agentless EBS snapshot scanner: orchestration
//! only, never the scanning code.
//!
//! One event in ([`event`]), one action, one JSON response out
//! ([`handler::handle`]):
//!
//! - **scan** ([`scan`]): in every region ([`regions`]), find the instances
//!   ([`discover`]), snapshot their volumes or reuse recent snapshots
//!   ([`snapshot`]), enqueue one job per instance ([`enqueue`]), resize the
//!   worker group;
//! - **scale** ([`scale`]): the worker group's size from the queue depth;
//! - **sweep** ([`sweep`]): delete what the scanner made and no longer
//!   needs — only what carries the ownership tag;
//! - **inventory** ([`inventory`]): counts per region, nothing else;
//! - **CloudFormation custom resource** ([`custom_resource`]): register the
//!   stack with the service (the credential in SSM), and on delete remove
//!   everything the scanner made, then answer CloudFormation;
//! - **self-update** ([`self_update`]): the function's code and the stack's
//!   template from the release bucket, only when they match the manifest.
//!
//! Throttling that outlasts the retries pauses the whole fleet for a while
//! ([`pause`]), through an SSM parameter the workers read.
//!
//! The context ([`Ctx`]) holds the configuration ([`config`], from the
//! environment) and the one `SdkConfig` every client is built from. AWS
//! failures are [`error::ApiError`]s; calls are counted per invocation
//! ([`calls`]).
#![deny(missing_docs)]

pub mod calls;
pub mod config;
pub mod ctx;
pub mod custom_resource;
pub mod discover;
pub mod enqueue;
pub mod error;
pub mod event;
pub mod handler;
pub mod inventory;
pub mod pace;
pub mod pause;
pub mod quota;
pub mod regions;
pub mod scale;
pub mod scan;
pub mod self_update;
pub mod snapshot;
pub mod sweep;
pub mod tags;

pub use config::Config;
pub use ctx::Ctx;
pub use handler::{ControlError, Response, handle, handle_until};
