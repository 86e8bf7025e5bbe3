//! The SSM Parameter Store names the control Lambda, the worker daemon and
//! the CloudFormation template share, and the fleet-wide pause they agree on.
//!
//! Every name hangs under one prefix ([`DEFAULT_PARAMETER_PREFIX`] unless a
//! deployment sets another), so one IAM statement on `parameter/<prefix>/*`
//! covers them all and two deployments in one account do not collide.

use serde::{Deserialize, Serialize};

/// The prefix of every parameter unless a deployment sets another.
pub const DEFAULT_PARAMETER_PREFIX: &str = "/mondoo/scanner";

/// The parameter names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterNames {
    prefix: String,
}

impl Default for ParameterNames {
    fn default() -> Self {
        Self::new(DEFAULT_PARAMETER_PREFIX)
    }
}

impl ParameterNames {
    /// Names under `prefix` (a trailing `/` is ignored; a missing leading
    /// `/` is added, as SSM hierarchies start with one).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Self { prefix }
    }

    /// The prefix, with its leading `/` and without a trailing one.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }

    /// String: the fleet-wide pause, a [`Pause`] as JSON. Written by the
    /// control Lambda when AWS throttles it past its retries; read by every
    /// worker before it takes a job.
    pub fn pause(&self) -> String {
        self.name("pause")
    }

    /// String: the scan queue's URL.
    pub fn queue_url(&self) -> String {
        self.name("queue-url")
    }

    /// String: where reports go — `https://…`, `s3://bucket/prefix` or
    /// `file:///directory`.
    pub fn report_destination(&self) -> String {
        self.name("report-destination")
    }

    /// SecureString: the service credential the report is sent with, stored
    /// by the custom resource at registration. Never logged.
    pub fn service_credential(&self) -> String {
        self.name("service-credential")
    }

    /// String: how workers read snapshots, `direct` (EBS direct APIs) or
    /// `attach` (a volume attached to the worker).
    pub fn read_mode(&self) -> String {
        self.name("read-mode")
    }

    /// String: jobs one worker runs at once (a positive integer).
    pub fn concurrency(&self) -> String {
        self.name("concurrency")
    }

    /// String: minutes a worker waits on an empty queue before it scales
    /// itself in.
    pub fn idle_minutes(&self) -> String {
        self.name("idle-minutes")
    }

    /// String: the ownership tag as `KEY=VALUE`, for what the workers create
    /// (attached volumes).
    pub fn ownership_tag(&self) -> String {
        self.name("ownership-tag")
    }
}

/// The fleet-wide pause: no worker takes a new job before `until`.
///
/// JSON in the [`ParameterNames::pause`] parameter, e.g.
/// `{"until": 1764040000, "reason": "eu-west-1: CreateSnapshots throttled"}`.
/// `until` is seconds since the Unix epoch; `0` (the template's initial
/// value) or any time in the past means not paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Seconds since the Unix epoch until which job intake is paused.
    pub until: u64,
    /// Why, for people reading the parameter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Pause {
    /// No pause.
    pub const NONE: Pause = Pause {
        until: 0,
        reason: String::new(),
    };

    /// Whether intake is paused at `now` (seconds since the Unix epoch).
    pub fn is_active(&self, now: u64) -> bool {
        now < self.until
    }

    /// The parameter's value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Pause is a number and a string")
    }

    /// Read the parameter's value.
    ///
    /// # Errors
    /// When it is not a pause object; a reader should then treat the fleet
    /// as not paused and say so, rather than stop for good.
    pub fn from_json(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hang_under_one_prefix() {
        let names = ParameterNames::new("scanner/prod/");
        assert_eq!(names.prefix(), "/scanner/prod");
        assert_eq!(names.pause(), "/scanner/prod/pause");
        assert_eq!(
            ParameterNames::default().service_credential(),
            "/mondoo/scanner/service-credential"
        );
    }

    #[test]
    fn a_pause_is_active_only_before_its_end() {
        let pause =
            Pause::from_json(r#"{"until": 100, "reason": "throttled"}"#).expect("a pause parses");
        assert!(pause.is_active(99));
        assert!(!pause.is_active(100));
        assert!(!Pause::NONE.is_active(0));
        assert_eq!(
            Pause::from_json(&pause.to_json()).expect("a pause parses"),
            pause
        );
        assert!(Pause::from_json("paused").is_err());
        assert_eq!(
            Pause::from_json(r#"{"until": 0}"#).expect("a pause parses"),
            Pause::NONE
        );
    }
}
