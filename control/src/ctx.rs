//! What every invocation shares: the configuration and the one `SdkConfig`
//! that builds every AWS client, with retries and timeouts set in it once.
//!
//! Built once per Lambda container (or per `control invoke`). The seam for
//! tests is the `ConfigLoader` handed to [`Ctx::load`]: pointed at the local
//! emulator, with test credentials — the same clients, the same code.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};

use crate::calls::ApiCalls;
use crate::config::Config;

/// Connecting to an endpoint: a few round trips; longer is a network problem.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one call: describes of a thousand instances answer in
/// seconds; a stuck attempt is abandoned and retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// One call, all attempts and backoffs included: bounded well inside a
/// Lambda's 15 minutes.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The handler's context.
#[derive(Debug, Clone)]
pub struct Ctx {
    config: Config,
    sdk: SdkConfig,
}

/// The SDK's usual loader: credentials, region and endpoint from the
/// environment (in Lambda: the function's role and region).
pub fn default_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
}

impl Ctx {
    /// Load the `SdkConfig` from `loader`, with the retry policy (the SDK's
    /// standard strategy: exponential backoff with jitter on throttling and
    /// transient errors, `config.max_attempts` attempts) and timeouts.
    pub async fn load(config: Config, loader: ConfigLoader) -> Self {
        let sdk = loader
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(config.initial_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        Self { config, sdk }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The function's own region (where the queue and the worker group are).
    pub fn home_region(&self) -> Option<&str> {
        self.sdk.region().map(Region::as_ref)
    }

    /// An EC2 client for `region` whose calls `calls` counts.
    pub fn ec2(&self, region: &str, calls: &ApiCalls) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.sdk)
            .region(Region::new(region.to_string()))
            .interceptor(calls.clone())
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// An SQS client in the home region.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    /// An SSM Parameter Store client in the home region (the pause, the
    /// service credential).
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    /// An S3 client in the home region (the release bucket); path-style
    /// addressing when an endpoint is configured (the local emulator).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.sdk.endpoint_url().is_some())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// A Lambda client in the home region (the function itself).
    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk)
    }

    /// An SNS client in the home region (alerts).
    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk)
    }

    /// A CloudFormation client in the home region (the stack).
    pub fn cloudformation(&self) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.sdk)
    }

    /// An Auto Scaling client in the home region.
    pub fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }
}
