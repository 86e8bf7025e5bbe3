//! The control crate's one integration-test binary: the handler against
//! the local AWS emulator (moto over HTTP, `tests/emulator/`), with the real
//! SDK clients, and the `control` binary run from a shell.
//!
//! Every test takes the emulator to itself ([`with_world`]): its state is
//! reset (a scan lists every instance of a region, so tests must not see
//! each other's) and its faults, which are global, are cleared. Run through
//! `scripts/test`, which sets `SCANNER_EMULATOR_PYTHON`.
//!
//! One module per action, in `tests/control/`; [`fleet`] makes and reads
//! back the AWS resources.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_ec2::config::Credentials;
use control::{Config, Ctx};
use e2e::emulator::{Emulator, emulator};

#[path = "control/cli.rs"]
mod cli;
#[path = "control/custom_resource.rs"]
mod custom_resource;
#[path = "control/faults.rs"]
mod faults;
#[path = "control/fleet.rs"]
mod fleet;
#[path = "control/http.rs"]
mod http;
#[path = "control/inventory.rs"]
mod inventory;
#[path = "control/quota.rs"]
mod quota;
#[path = "control/runtime_api.rs"]
mod runtime_api;
#[path = "control/scale.rs"]
mod scale;
#[path = "control/scan.rs"]
mod scan;
#[path = "control/self_update.rs"]
mod self_update;
#[path = "control/sweep.rs"]
mod sweep;

/// The function's home region in the tests: the queue and the worker group.
pub const HOME: &str = "us-east-1";

static EMULATOR_LOCK: Mutex<()> = Mutex::new(());

/// The emulator, reset, for one test.
pub struct World {
    /// The running emulator.
    pub emulator: &'static Emulator,
}

/// Run `test` with the emulator to itself: reset, no faults; the faults are
/// cleared again afterwards.
pub fn with_world<F, Fut>(test: F) -> Result<()>
where
    F: FnOnce(World) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let _guard = EMULATOR_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let emulator = emulator()?;
    emulator.clear_faults()?;
    post(emulator, "/moto-api/reset")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let outcome = runtime.block_on(test(World { emulator }));
    emulator.clear_faults()?;
    outcome
}

/// A bodiless POST to the emulator (moto's own API).
fn post(emulator: &Emulator, path: &str) -> Result<()> {
    let address = emulator.url.trim_start_matches("http://");
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!("POST {path}: {}", response.lines().next().unwrap_or(""));
    }
    Ok(())
}

impl World {
    /// The SDK's loader pointed at the emulator, with test credentials.
    pub fn loader(&self) -> ConfigLoader {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.emulator.url)
            .region(Region::new(HOME))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
    }

    /// The handler's context with `config`, against the emulator.
    pub async fn ctx(&self, config: Config) -> Ctx {
        Ctx::load(config, self.loader()).await
    }

    /// An EC2 client for the tests' own set-up and checks.
    pub async fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let sdk = self
            .loader()
            .region(Region::new(region.to_string()))
            .load()
            .await;
        aws_sdk_ec2::Client::new(&sdk)
    }

    /// An SQS client in the home region.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.loader().load().await)
    }

    /// An SSM client in the home region (the pause parameter).
    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.loader().load().await)
    }

    /// An Auto Scaling client in the home region.
    pub async fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.loader().load().await)
    }
}

/// A configuration for `regions` and `queue_url`, retrying quickly (three
/// attempts, 10 ms first backoff), its jobs visible at once and its
/// snapshot calls unpaced (the tests that spread and pace say so).
pub fn config(regions: &[&str], queue_url: &str) -> Config {
    Config {
        regions: Some(regions.iter().map(|r| r.to_string()).collect()),
        queue_url: Some(queue_url.to_string()),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        job_spread: Duration::ZERO,
        snapshot_calls_per_second: 0,
        ..Config::default()
    }
}
