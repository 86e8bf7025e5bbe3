//! The daemon's configuration: flags and `WORKER_*` environment variables
//! override the SSM parameters under the deployment's prefix, which override
//! the defaults.
//!
//! Why SSM: a worker is managed through SSM only (no SSH, no inbound ports),
//! and the CloudFormation template and the control Lambda write the same
//! names ([`ParameterNames`], one definition in the contract crate). Flags
//! and the environment exist for local runs and tests. The parameters are
//! read once at start-up; the fleet-wide pause is read again before every
//! intake (see [`super::queue`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_ssm::error::DisplayErrorContext;
use scanner_contract::{OwnershipTag, ParameterNames};

use super::sink::Destination;

/// How a job's snapshots are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The EBS direct APIs (lazy, nothing is created): the default.
    Direct,
    /// A volume created from the snapshot and attached to this instance.
    Attach,
}

impl ReadMode {
    /// Parse `direct` or `attach`.
    ///
    /// # Errors
    /// Any other value, named.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "direct" => Ok(Self::Direct),
            "attach" => Ok(Self::Attach),
            other => Err(ConfigError::Invalid {
                name: "read-mode".to_string(),
                value: other.to_string(),
                expected: "`direct` or `attach`",
            }),
        }
    }
}

/// A value that is never printed: the service credential. `Debug` shows
/// `<redacted>`, so every struct holding one can derive `Debug` safely;
/// [`Secret::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// Values given on the command line or in `WORKER_*` variables; `None`
/// falls back to SSM, then to the default.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The scan queue's URL.
    pub queue_url: Option<String>,
    /// Where reports go.
    pub report_destination: Option<String>,
    /// The credential reports are sent with.
    pub service_credential: Option<Secret>,
    /// `direct` or `attach`.
    pub read_mode: Option<String>,
    /// Jobs at once.
    pub concurrency: Option<String>,
    /// Minutes without a job before the worker scales itself in.
    pub idle_minutes: Option<String>,
    /// `KEY=VALUE`.
    pub ownership_tag: Option<String>,
}

/// Everything the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// What flags, SSM and the defaults resolved to.
    pub settings: Settings,
    /// The SSM names (the pause is read from them before every intake).
    pub parameters: ParameterNames,
    /// Tuning that has no SSM parameter.
    pub timing: Timing,
    /// This instance.
    pub instance_id: String,
    /// This instance's Availability Zone (attached volumes are created in it).
    pub availability_zone: String,
    /// Where attached volumes' device links are looked for (`/dev/disk/by-id`).
    pub device_dir: PathBuf,
}

/// Timeouts and intervals of the job loop, flags only.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Visibility timeout set on a received message and renewed by the
    /// heartbeat every third of it.
    pub visibility: Duration,
    /// SQS long-poll wait (at most 20 s).
    pub poll: Duration,
    /// A failed job's message becomes visible again after this.
    pub retry_delay: Duration,
    /// How long a job waits for its snapshots to be `completed`.
    pub snapshot_wait: Duration,
    /// Interval between DescribeSnapshots while waiting.
    pub snapshot_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(300),
            poll: Duration::from_secs(20),
            retry_delay: Duration::from_secs(60),
            snapshot_wait: Duration::from_secs(2 * 3600),
            snapshot_poll: Duration::from_secs(15),
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that is required is set nowhere.
    #[error("{name} is not set: give --{name}, WORKER_{env}, or the SSM parameter {parameter}")]
    Missing {
        /// The setting.
        name: &'static str,
        /// Its environment variable's suffix.
        env: &'static str,
        /// Its SSM parameter.
        parameter: String,
    },
    /// A value that does not parse.
    #[error("{name} = {value:?} is invalid: expected {expected}")]
    Invalid {
        /// The setting.
        name: String,
        /// What it was.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The instance metadata service did not answer.
    #[error(
        "reading {what} from the instance metadata service (give --{flag} for local runs): {detail}"
    )]
    Metadata {
        /// What was read.
        what: &'static str,
        /// The flag that replaces it.
        flag: &'static str,
        /// The IMDS error.
        detail: String,
    },
}

/// SSM parameter values by name (missing ones absent).
pub type Parameters = HashMap<String, String>;

/// Read every parameter under `names` in one `GetParameters` call
/// (SecureStrings decrypted). A call that fails is logged and treated as
/// "no parameters": flags may still give everything.
pub async fn read_parameters(ssm: &aws_sdk_ssm::Client, names: &ParameterNames) -> Parameters {
    let wanted = [
        names.queue_url(),
        names.report_destination(),
        names.service_credential(),
        names.read_mode(),
        names.concurrency(),
        names.idle_minutes(),
        names.ownership_tag(),
    ];
    match ssm
        .get_parameters()
        .set_names(Some(wanted.to_vec()))
        .with_decryption(true)
        .send()
        .await
    {
        Ok(answer) => answer
            .parameters()
            .iter()
            .filter_map(|p| Some((p.name()?.to_string(), p.value()?.to_string())))
            .collect(),
        Err(err) => {
            tracing::warn!(
                prefix = names.prefix(),
                error = %DisplayErrorContext(&err),
                "reading the SSM parameters failed; using flags, environment and defaults"
            );
            Parameters::new()
        }
    }
}

/// The default number of jobs at once: one per core, and no more than one
/// per 2 GiB of memory (a scan holds a 256 MiB block cache per snapshot and
/// package databases of up to a few hundred MiB).
pub fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let by_memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(cores, |kib| {
            usize::try_from(kib / (2 * 1024 * 1024)).unwrap_or(usize::MAX)
        });
    cores.min(by_memory).max(1)
}

/// The parsed settings that come from flags, SSM or defaults; the instance
/// identity is added by the caller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The scan queue.
    pub queue_url: String,
    /// Where reports go.
    pub destination: Destination,
    /// The HTTPS credential (never printed).
    pub service_credential: Option<Secret>,
    /// How snapshots are read.
    pub read_mode: ReadMode,
    /// Jobs at once.
    pub concurrency: usize,
    /// Idle time before scale-in.
    pub idle: Option<Duration>,
    /// The ownership tag.
    pub ownership: OwnershipTag,
}

/// Most jobs at once accepted: beyond it a typo.
const MAX_CONCURRENCY: usize = 256;

/// Merge `overrides` over `parameters` over the defaults.
///
/// # Errors
/// [`ConfigError`] for a missing queue or destination, or a value that does
/// not parse (named, with where it came from).
pub fn resolve(
    overrides: &Overrides,
    parameters: &Parameters,
    names: &ParameterNames,
) -> Result<Settings, ConfigError> {
    let pick = |flag: &Option<String>, parameter: String| -> Option<String> {
        flag.clone()
            .or_else(|| parameters.get(&parameter).cloned())
            .filter(|value| !value.trim().is_empty())
    };
    let queue_url =
        pick(&overrides.queue_url, names.queue_url()).ok_or_else(|| ConfigError::Missing {
            name: "queue-url",
            env: "QUEUE_URL",
            parameter: names.queue_url(),
        })?;
    let destination =
        pick(&overrides.report_destination, names.report_destination()).ok_or_else(|| {
            ConfigError::Missing {
                name: "report-destination",
                env: "REPORT_DESTINATION",
                parameter: names.report_destination(),
            }
        })?;
    let destination = Destination::parse(&destination)?;
    let service_credential = overrides
        .service_credential
        .clone()
        .or_else(|| parameters.get(&names.service_credential()).map(Secret::new))
        .filter(|secret| !secret.expose().trim().is_empty());
    let read_mode = pick(&overrides.read_mode, names.read_mode())
        .map_or(Ok(ReadMode::Direct), |value| ReadMode::parse(&value))?;
    let concurrency = match pick(&overrides.concurrency, names.concurrency()) {
        None => default_concurrency(),
        Some(value) => value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
            .ok_or(ConfigError::Invalid {
                name: "concurrency".to_string(),
                value,
                expected: "a whole number from 1 to 256",
            })?,
    };
    let idle = match pick(&overrides.idle_minutes, names.idle_minutes()) {
        None => Some(Duration::from_secs(DEFAULT_IDLE_MINUTES * 60)),
        Some(value) => {
            let minutes = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|m| m.is_finite() && (0.0..=MAX_IDLE_MINUTES).contains(m))
                .ok_or(ConfigError::Invalid {
                    name: "idle-minutes".to_string(),
                    value,
                    expected: "minutes from 0 (never scale in) to 10080, fractions allowed",
                })?;
            (minutes > 0.0).then(|| Duration::from_secs_f64(minutes * 60.0))
        }
    };
    let ownership = match pick(&overrides.ownership_tag, names.ownership_tag()) {
        None => OwnershipTag::default(),
        Some(value) => parse_tag(&value)?,
    };
    Ok(Settings {
        queue_url,
        destination,
        service_credential,
        read_mode,
        concurrency,
        idle,
        ownership,
    })
}

/// Default idle time before a worker scales itself in.
pub const DEFAULT_IDLE_MINUTES: u64 = 10;
/// Longest idle time accepted (a week).
const MAX_IDLE_MINUTES: f64 = 7.0 * 24.0 * 60.0;

fn parse_tag(value: &str) -> Result<OwnershipTag, ConfigError> {
    match value.split_once('=') {
        Some((key, tag_value)) if !key.trim().is_empty() => Ok(OwnershipTag {
            key: key.to_string(),
            value: tag_value.to_string(),
        }),
        _ => Err(ConfigError::Invalid {
            name: "ownership-tag".to_string(),
            value: value.to_string(),
            expected: "KEY=VALUE with a non-empty key",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn flags_override_parameters_override_defaults() {
        let names = ParameterNames::default();
        let parameters = params(&[
            ("/mondoo/scanner/queue-url", "https://sqs/q"),
            ("/mondoo/scanner/report-destination", "file:///tmp/reports"),
            ("/mondoo/scanner/concurrency", "3"),
            ("/mondoo/scanner/read-mode", "attach"),
        ]);
        let overrides = Overrides {
            concurrency: Some("2".to_string()),
            ..Overrides::default()
        };
        let settings = resolve(&overrides, &parameters, &names).expect("valid settings");
        assert_eq!(settings.queue_url, "https://sqs/q");
        assert_eq!(settings.concurrency, 2);
        assert_eq!(settings.read_mode, ReadMode::Attach);
        assert_eq!(settings.ownership, OwnershipTag::default());
        assert_eq!(
            settings.idle,
            Some(Duration::from_secs(DEFAULT_IDLE_MINUTES * 60))
        );
    }

    #[test]
    fn the_credential_from_ssm_or_a_flag_is_never_printed() {
        let names = ParameterNames::default();
        let parameters = params(&[
            ("/mondoo/scanner/queue-url", "https://sqs/q"),
            (
                "/mondoo/scanner/report-destination",
                "https://example.com/r",
            ),
            ("/mondoo/scanner/service-credential", "from-ssm-token"),
        ]);
        let settings = resolve(&Overrides::default(), &parameters, &names).expect("resolves");
        assert_eq!(
            settings.service_credential.as_ref().map(Secret::expose),
            Some("from-ssm-token")
        );
        let flag = Overrides {
            service_credential: Some(Secret::new("from-flag-token")),
            ..Overrides::default()
        };
        let overridden = resolve(&flag, &parameters, &names).expect("resolves");
        assert_eq!(
            overridden.service_credential.as_ref().map(Secret::expose),
            Some("from-flag-token")
        );
        let config = Config {
            settings,
            parameters: names,
            timing: Timing::default(),
            instance_id: "i-1".into(),
            availability_zone: "us-east-1a".into(),
            device_dir: PathBuf::from("/dev/disk/by-id"),
        };
        for printed in [
            format!("{config:?}"),
            format!("{overridden:?}"),
            format!("{flag:?}"),
        ] {
            assert!(
                !printed.contains("token") && printed.contains("<redacted>"),
                "{printed}"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let names = ParameterNames::default();
        let base = params(&[
            ("/mondoo/scanner/queue-url", "https://sqs/q"),
            ("/mondoo/scanner/report-destination", "file:///tmp/r"),
        ]);
        let with = |overrides: Overrides| {
            resolve(&overrides, &base, &names)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            with(Overrides {
                concurrency: Some("0".into()),
                ..Overrides::default()
            })
            .contains("concurrency")
        );
        assert!(
            with(Overrides {
                read_mode: Some("mount".into()),
                ..Overrides::default()
            })
            .contains("read-mode")
        );
        assert!(
            with(Overrides {
                ownership_tag: Some("=x".into()),
                ..Overrides::default()
            })
            .contains("ownership-tag")
        );
        let missing = resolve(&Overrides::default(), &Parameters::new(), &names)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("/mondoo/scanner/queue-url"), "{missing}");
    }
}
