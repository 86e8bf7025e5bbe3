//! One failed AWS call, as every module reports it: the operation, the
//! service's error code where it sent one, and the SDK's full error chain
//! (printed with `DisplayErrorContext`, which shows the cause the plain
//! `Display` of an `SdkError` hides).
//!
//! Codes are classified here, once ([`ApiError::is_throttling`]), from
//! `ProvideErrorMetadata::code()`, never from message text.

use std::error::Error;
use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes AWS services throttle with (EC2, the query and JSON services).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// A failed AWS call (after the SDK's retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {detail}")]
pub struct ApiError {
    /// The operation (`DescribeInstances`), with the resource where one is
    /// named (`DeleteSnapshot snap-…`).
    pub operation: String,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
    /// The SDK's error chain.
    pub detail: String,
}

impl ApiError {
    /// Describe `err`, a failure of `operation`.
    pub fn new<E, R>(operation: impl Into<String>, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + Error + 'static,
        R: Debug,
    {
        Self {
            operation: operation.into(),
            code: err.code().map(str::to_string),
            detail: DisplayErrorContext(err).to_string(),
        }
    }

    /// The service throttled the call (on every attempt the SDK made).
    pub fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| THROTTLING_CODES.contains(&code))
    }

    /// The service answered with this error code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}
