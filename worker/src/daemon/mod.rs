//! `worker run`: the daemon the Auto Scaling group's instances run (as a
//! systemd service), managed through SSM only.
//!
//! It takes scan jobs from the SQS queue the control Lambda fills, reads
//! each job's snapshots (EBS direct APIs, or a volume attached to this
//! instance), scans them with the same synchronous pipeline as `worker
//! scan`, delivers one report per job, cleans up what it created, and only
//! then deletes the message. Idle for long enough, it takes itself out of
//! its group. One module per responsibility:
//!
//! - [`config`]: flags and `WORKER_*` over SSM parameters over defaults;
//! - [`queue`]: the job loop, the visibility heartbeat, retries and the
//!   fleet-wide pause;
//! - [`job`]: one job, from its snapshots to its report;
//! - [`attach`]: the attach read mode;
//! - [`sink`]: report delivery (HTTPS, S3, a directory);
//! - [`fleet`]: scale-in protection while busy, idle self-termination;
//! - [`signals`]: SIGTERM and SIGINT.
//!
//! Async lives here, at the AWS edges; the scan stays synchronous code on
//! blocking threads and rayon.

pub mod attach;
pub mod config;
pub mod fleet;
pub mod job;
pub mod queue;
pub mod signals;
pub mod sink;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use scanner_contract::ParameterNames;

use crate::ScanOptions;
use config::{Config, ConfigError, Overrides, Timing};
use sink::{DeliveryError, Sink};

/// Attempts per AWS call, the first included (the SDK's standard retry
/// with exponential back-off and jitter).
const MAX_ATTEMPTS: u32 = 5;
/// Connecting to an endpoint; longer is a network problem.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one call; SQS long polls take up to 20 s of it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How `worker run` was started: what has no SSM parameter.
#[derive(Debug, Clone)]
pub struct Startup {
    /// The SSM prefix.
    pub parameter_prefix: String,
    /// Flag and environment values over the SSM parameters.
    pub overrides: Overrides,
    /// This instance (IMDS when `None`).
    pub instance_id: Option<String>,
    /// Its Availability Zone (IMDS when `None`).
    pub availability_zone: Option<String>,
    /// The AWS region of the queue and parameters (the SDK's chain when
    /// `None`: `AWS_REGION`, then IMDS).
    pub region: Option<String>,
    /// Where attached volumes' device links are looked for.
    pub device_dir: PathBuf,
    /// Loop timing.
    pub timing: Timing,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The report destination's client could not be built.
    #[error(transparent)]
    Sink(#[from] DeliveryError),
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT: running jobs were released.
    Signal,
    /// Idle for the configured time: scaled in (or, outside a group, done).
    Idle,
}

/// What every job shares.
#[derive(Debug)]
pub struct Ctx {
    /// The configuration.
    pub config: Config,
    /// Builds every AWS client.
    pub sdk: SdkConfig,
    /// The queue's client.
    pub sqs: aws_sdk_sqs::Client,
    /// Parameter Store's client (the pause).
    pub ssm: aws_sdk_ssm::Client,
    /// Where reports go.
    pub sink: Sink,
    /// How snapshots are scanned.
    pub scan_options: ScanOptions,
    /// Volumes created in attach mode and not yet deleted.
    pub attached: attach::Attached,
}

impl Ctx {
    /// An EC2 client in `region` (a job's snapshots live in its region).
    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&self.sdk)
                .region(Region::new(region.to_string()))
                .build(),
        )
    }
}

/// Load the SDK configuration once: credentials, region and endpoint from
/// the environment, retries and timeouts set here for every client.
pub async fn load_sdk(region: Option<String>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// Run the daemon until a signal or idle scale-in.
///
/// # Errors
/// [`DaemonError`] when the configuration is unusable; once running, job
/// failures are logged and retried, never returned.
pub async fn run(startup: Startup) -> Result<Exit, DaemonError> {
    let shutdown = signals::shutdown();
    let sdk = load_sdk(startup.region.clone()).await;
    let names = ParameterNames::new(&startup.parameter_prefix);
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let parameters = config::read_parameters(&ssm, &names).await;
    let settings = config::resolve(&startup.overrides, &parameters, &names)?;
    let (instance_id, availability_zone) =
        identity(startup.instance_id, startup.availability_zone).await?;
    let config = Config {
        settings,
        parameters: names,
        timing: startup.timing,
        instance_id,
        availability_zone,
        device_dir: startup.device_dir,
    };
    let sink = Sink::new(
        config.settings.destination.clone(),
        config.settings.service_credential.clone(),
        &sdk,
    )?;
    tracing::info!(
        queue = %config.settings.queue_url,
        destination = ?config.settings.destination,
        read_mode = ?config.settings.read_mode,
        concurrency = config.settings.concurrency,
        idle = ?config.settings.idle,
        "worker daemon starting"
    );
    let fleet = fleet::Fleet::discover(
        aws_sdk_autoscaling::Client::new(&sdk),
        config.instance_id.clone(),
    )
    .await;
    let ctx = Arc::new(Ctx {
        config,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        ssm,
        sink,
        scan_options: job::scan_options(),
        attached: attach::Attached::default(),
        sdk,
    });
    let exit = queue::run(Arc::clone(&ctx), &fleet, shutdown).await;
    attach::cleanup_all(&ctx).await;
    if exit == Exit::Idle {
        fleet.scale_in().await;
    }
    tracing::info!(?exit, "worker daemon stopped");
    Ok(exit)
}

/// This instance's id and Availability Zone: as given, else from IMDSv2.
async fn identity(
    instance_id: Option<String>,
    availability_zone: Option<String>,
) -> Result<(String, String), ConfigError> {
    if let (Some(id), Some(zone)) = (&instance_id, &availability_zone) {
        return Ok((id.clone(), zone.clone()));
    }
    let imds = aws_config::imds::Client::builder().build();
    let read = |what: &'static str, flag: &'static str, path: &'static str| {
        let imds = imds.clone();
        async move {
            imds.get(path)
                .await
                .map(|value| AsRef::<str>::as_ref(&value).to_string())
                .map_err(|err| ConfigError::Metadata {
                    what,
                    flag,
                    detail: err.to_string(),
                })
        }
    };
    let instance_id = match instance_id {
        Some(id) => id,
        None => {
            read(
                "the instance id",
                "instance-id",
                "/latest/meta-data/instance-id",
            )
            .await?
        }
    };
    let availability_zone = match availability_zone {
        Some(zone) => zone,
        None => {
            read(
                "the availability zone",
                "availability-zone",
                "/latest/meta-data/placement/availability-zone",
            )
            .await?
        }
    };
    Ok((instance_id, availability_zone))
}
