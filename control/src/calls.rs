//! Counting the AWS calls one invocation makes, per operation: the figure
//! behind "EC2 calls per instance" (the target is at most 3).
//!
//! An SDK interceptor, so every call is counted where it is made — paginator
//! pages and retries included — without a wrapper around each call site.
//! `calls` counts operations (what the code asked for), `attempts` counts HTTP
//! requests (what the service's rate limits see; a retried call is one call
//! and several attempts).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

/// Calls counted so far; cheap to clone (clones share the counts). Give one
/// to each client whose calls should be counted ([`crate::Ctx::ec2`]).
#[derive(Debug, Clone, Default)]
pub struct ApiCalls {
    counts: Arc<Mutex<Counts>>,
}

/// Calls and attempts per operation name (`DescribeInstances`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Operations started.
    pub calls: BTreeMap<String, u64>,
    /// HTTP requests sent (a retried operation counts each attempt).
    pub attempts: BTreeMap<String, u64>,
}

impl Counts {
    /// Every operation, summed.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Every attempt, summed.
    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }
}

impl ApiCalls {
    /// A copy of the counts now.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn add(&self, cfg: &ConfigBag, attempt: bool) {
        let name = cfg
            .load::<Metadata>()
            .map_or("unknown", Metadata::name)
            .to_string();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let map = if attempt {
            &mut counts.attempts
        } else {
            &mut counts.calls
        };
        *map.entry(name).or_default() += 1;
    }
}

impl Intercept for ApiCalls {
    fn name(&self) -> &'static str {
        "ApiCalls"
    }

    // Once per operation; the operation's name is in the bag from here on
    // (not yet in `read_before_execution`).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.add(cfg, false);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.add(cfg, true);
        Ok(())
    }
}
