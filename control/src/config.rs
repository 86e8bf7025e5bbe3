//! Configuration, from environment variables only (the Lambda's
//! environment, set by the CloudFormation template; the same variables for
//! `control invoke`). `control/README.md` lists them; an empty value counts
//! as unset, as CloudFormation passes optional parameters.

use std::time::Duration;

use scanner_contract::{OWNERSHIP_TAG_KEY, OWNERSHIP_TAG_VALUE, OwnershipTag, ParameterNames};

/// Regions to work in (comma list); unset: every region enabled in the account.
pub const ENV_REGIONS: &str = "CONTROL_REGIONS";
/// The scan queue's URL.
pub const ENV_QUEUE_URL: &str = "CONTROL_QUEUE_URL";
/// The worker Auto Scaling group's name.
pub const ENV_ASG_NAME: &str = "CONTROL_ASG_NAME";
/// The ownership tag's key.
pub const ENV_OWNERSHIP_TAG_KEY: &str = "CONTROL_OWNERSHIP_TAG_KEY";
/// The ownership tag's value.
pub const ENV_OWNERSHIP_TAG_VALUE: &str = "CONTROL_OWNERSHIP_TAG_VALUE";
/// The opt-out tag, `KEY=VALUE`.
pub const ENV_OPT_OUT_TAG: &str = "CONTROL_OPT_OUT_TAG";
/// Scan stopped instances too (`true`/`false`).
pub const ENV_INCLUDE_STOPPED: &str = "CONTROL_INCLUDE_STOPPED";
/// Reuse an owned snapshot younger than this many hours.
pub const ENV_SNAPSHOT_MAX_AGE_HOURS: &str = "CONTROL_SNAPSHOT_MAX_AGE_HOURS";
/// The sweep deletes owned snapshots and volumes older than this many hours.
pub const ENV_SWEEP_TTL_HOURS: &str = "CONTROL_SWEEP_TTL_HOURS";
/// The SSM parameter prefix shared with the workers (`/mondoo/scanner`).
pub const ENV_PARAMETER_PREFIX: &str = "CONTROL_PARAMETER_PREFIX";
/// Attempts per AWS call, the first included (the SDK's standard retry).
pub const ENV_MAX_ATTEMPTS: &str = "CONTROL_MAX_ATTEMPTS";
/// Minutes the fleet pauses after throttling outlasted the retries.
pub const ENV_PAUSE_MINUTES: &str = "CONTROL_PAUSE_MINUTES";
/// The sweep terminates owned instances launched more than this many hours ago.
pub const ENV_INSTANCE_TTL_HOURS: &str = "CONTROL_INSTANCE_TTL_HOURS";
/// Snapshots pending at once per account and region, the customer's included.
pub const ENV_MAX_PENDING_SNAPSHOTS: &str = "CONTROL_MAX_PENDING_SNAPSHOTS";
/// Jobs are delayed evenly over this many seconds (SQS `DelaySeconds`).
pub const ENV_JOB_SPREAD_SECONDS: &str = "CONTROL_JOB_SPREAD_SECONDS";
/// Snapshot calls (`CreateSnapshots`/`CreateSnapshot`) per second per region.
pub const ENV_SNAPSHOT_CALLS_PER_SECOND: &str = "CONTROL_SNAPSHOT_CALLS_PER_SECOND";
/// Seconds a scan may spend snapshotting before it defers the rest.
pub const ENV_SCAN_BUDGET_SECONDS: &str = "CONTROL_SCAN_BUDGET_SECONDS";
/// Only instances with one of these tags are scanned (`KEY=VALUE,KEY=*`).
pub const ENV_INCLUDE_TAGS: &str = "CONTROL_INCLUDE_TAGS";
/// Instances with one of these tags are not scanned (`KEY=VALUE,KEY=*`).
pub const ENV_EXCLUDE_TAGS: &str = "CONTROL_EXCLUDE_TAGS";

/// The default opt-out tag.
pub const DEFAULT_OPT_OUT: (&str, &str) = ("Mondoo:Exclude", "true");
/// Default snapshot reuse age: a daily scan makes one snapshot set a day.
pub const DEFAULT_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(20 * 3600);
/// Default sweep TTL: longer than the queue keeps a job (SQS's default
/// retention is 4 days), so a job never outlives its snapshots.
pub const DEFAULT_SWEEP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default attempts per call: throttling is the common failure here, and
/// the standard strategy backs off exponentially between attempts.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default pause: the 15 minutes, long enough for EC2's token
/// buckets to refill completely.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Default instance TTL: workers scale themselves in when the queue is
/// empty; one alive a day later is stuck, and costs money.
pub const DEFAULT_INSTANCE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default pending-snapshot quota per account and region (EBS's default).
pub const DEFAULT_MAX_PENDING_SNAPSHOTS: usize = 100;
/// Default job spread: five minutes of `DelaySeconds`.
pub const DEFAULT_JOB_SPREAD: Duration = Duration::from_secs(300);
/// Default snapshot calls per second per region: below the refill rate of
/// EC2's `CreateSnapshots` bucket (5 a second), leaving room for the
/// customer's own calls.
pub const DEFAULT_SNAPSHOT_CALLS_PER_SECOND: u32 = 4;
/// Default scan budget: 12 of Lambda's 15 minutes for snapshots, the rest
/// for enqueueing, scaling and a margin.
pub const DEFAULT_SCAN_BUDGET: Duration = Duration::from_secs(720);
/// Longest scan budget accepted: under Lambda's 900 s.
const MAX_SCAN_BUDGET_SECONDS: u64 = 870;
/// SQS's largest `DelaySeconds`.
pub const MAX_JOB_SPREAD_SECONDS: u64 = 900;
/// Longest pause accepted, in minutes (a day).
const MAX_PAUSE_MINUTES: u64 = 24 * 60;
/// Largest pending-snapshot quota accepted (EBS raises it on request, not
/// beyond thousands).
const MAX_PENDING_SNAPSHOTS: usize = 10_000;
/// Longest age or TTL accepted, in hours (ten years): beyond that a typo.
const MAX_HOURS: f64 = 24.0 * 366.0 * 10.0;
/// Most attempts accepted.
const MAX_ATTEMPTS: u32 = 20;

/// A tag key and value, matched exactly on the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutTag {
    /// The key, matched exactly.
    pub key: String,
    /// The value, matched ignoring ASCII case (`true`, `True`).
    pub value: String,
}

impl OptOutTag {
    /// Whether a resource with these tags opted out.
    pub fn matches<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter()
            .any(|(key, value)| key == self.key && value.eq_ignore_ascii_case(&self.value))
    }
}

/// A tag an include or exclude filter matches: the key exactly, the value
/// exactly or (`KEY=*`) any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    /// The key, matched exactly.
    pub key: String,
    /// The value, matched exactly; `None`: any value.
    pub value: Option<String>,
}

impl TagFilter {
    /// Whether one of `tags` matches.
    pub fn matches<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter().any(|(key, value)| {
            key == self.key && self.value.as_deref().is_none_or(|wanted| wanted == value)
        })
    }

    /// Parse `KEY=VALUE,KEY=*` (an empty list is no filter).
    pub fn parse_list(list: &str) -> Option<Vec<Self>> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
                    let (key, value) = (key.trim(), value.trim());
                    Some(Self {
                        key: key.to_string(),
                        value: (value != "*").then(|| value.to_string()),
                    })
                }
                _ => None,
            })
            .collect()
    }
}

/// Everything the handler is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Regions to work in; `None`: every enabled region (`DescribeRegions`).
    pub regions: Option<Vec<String>>,
    /// The scan queue; a scan and a scale need it.
    pub queue_url: Option<String>,
    /// The worker group; a scale needs it, a scan scales it when set.
    pub asg_name: Option<String>,
    /// What marks a resource as the scanner's.
    pub ownership: OwnershipTag,
    /// What marks an instance the customer does not want scanned.
    pub opt_out: OptOutTag,
    /// Scan stopped instances as well as running ones.
    pub include_stopped: bool,
    /// Reuse an owned snapshot of a volume younger than this (zero: never).
    pub snapshot_max_age: Duration,
    /// The sweep's default TTL (an event may name another).
    pub sweep_ttl: Duration,
    /// The SSM parameters shared with the workers (the pause, the service
    /// credential, …), under `CONTROL_PARAMETER_PREFIX`.
    pub parameters: ParameterNames,
    /// Attempts per AWS call, the first included.
    pub max_attempts: u32,
    /// How long the fleet pauses after throttling outlasted the retries
    /// (zero: no pause is written).
    pub pause: Duration,
    /// The sweep terminates owned instances launched longer ago than this.
    pub instance_ttl: Duration,
    /// Snapshots pending at once per account and region.
    pub max_pending_snapshots: usize,
    /// Jobs are delayed evenly over this window (at most 900 s).
    pub job_spread: Duration,
    /// Snapshot calls per second per region (0: unpaced).
    pub snapshot_calls_per_second: u32,
    /// Time a scan may spend snapshotting; what does not fit is deferred.
    pub scan_budget: Duration,
    /// With any, only instances carrying one of them are scanned.
    pub include_tags: Vec<TagFilter>,
    /// Instances carrying one of these are not scanned (wins over includes).
    pub exclude_tags: Vec<TagFilter>,
    /// Where releases come from, for the self-update.
    pub self_update: crate::self_update::SelfUpdateConfig,
    /// The standard retry strategy's first backoff (it doubles per attempt,
    /// with jitter, up to 20 s). Not an environment variable: tests shorten it.
    pub initial_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            regions: None,
            queue_url: None,
            asg_name: None,
            ownership: OwnershipTag::default(),
            opt_out: OptOutTag {
                key: DEFAULT_OPT_OUT.0.to_string(),
                value: DEFAULT_OPT_OUT.1.to_string(),
            },
            include_stopped: false,
            snapshot_max_age: DEFAULT_SNAPSHOT_MAX_AGE,
            sweep_ttl: DEFAULT_SWEEP_TTL,
            parameters: ParameterNames::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            self_update: crate::self_update::SelfUpdateConfig {
                arch: crate::self_update::binary_arch().to_string(),
                ..crate::self_update::SelfUpdateConfig::default()
            },
            initial_backoff: Duration::from_secs(1),
            pause: DEFAULT_PAUSE,
            instance_ttl: DEFAULT_INSTANCE_TTL,
            max_pending_snapshots: DEFAULT_MAX_PENDING_SNAPSHOTS,
            job_spread: DEFAULT_JOB_SPREAD,
            snapshot_calls_per_second: DEFAULT_SNAPSHOT_CALLS_PER_SECOND,
            scan_budget: DEFAULT_SCAN_BUDGET,
            include_tags: Vec::new(),
            exclude_tags: Vec::new(),
        }
    }
}

/// A variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: expected {expected}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

impl Config {
    /// Read the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable whose value is unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Read variables through `get` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable whose value is unusable.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let defaults = Self::default();
        let invalid = |var, value: &str, expected| ConfigError {
            var,
            value: value.to_string(),
            expected,
        };
        let regions = match get(ENV_REGIONS) {
            None => None,
            Some(list) => {
                let regions: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect();
                if regions.is_empty() || regions.iter().any(|r| !is_region_name(r)) {
                    return Err(invalid(
                        ENV_REGIONS,
                        &list,
                        "a comma list of region names (us-east-1,eu-west-1)",
                    ));
                }
                Some(regions)
            }
        };
        let ownership = OwnershipTag {
            key: get(ENV_OWNERSHIP_TAG_KEY).unwrap_or_else(|| OWNERSHIP_TAG_KEY.to_string()),
            value: get(ENV_OWNERSHIP_TAG_VALUE).unwrap_or_else(|| OWNERSHIP_TAG_VALUE.to_string()),
        };
        if ownership.key.starts_with("aws:") {
            return Err(invalid(
                ENV_OWNERSHIP_TAG_KEY,
                &ownership.key,
                "a tag key the scanner may set (not aws:…)",
            ));
        }
        let opt_out = match get(ENV_OPT_OUT_TAG) {
            None => defaults.opt_out.clone(),
            Some(tag) => match tag.split_once('=') {
                Some((key, value)) if !key.is_empty() && !value.is_empty() => OptOutTag {
                    key: key.to_string(),
                    value: value.to_string(),
                },
                _ => return Err(invalid(ENV_OPT_OUT_TAG, &tag, "KEY=VALUE")),
            },
        };
        let include_stopped = match get(ENV_INCLUDE_STOPPED) {
            None => defaults.include_stopped,
            Some(flag) => match flag.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(invalid(ENV_INCLUDE_STOPPED, &flag, "true or false")),
            },
        };
        let hours = |var: &'static str, default: Duration| match get(var) {
            None => Ok(default),
            Some(value) => parse_hours(&value).ok_or_else(|| {
                invalid(
                    var,
                    &value,
                    "a number of hours, 0 or more (0.5 is 30 minutes)",
                )
            }),
        };
        let max_attempts = match get(ENV_MAX_ATTEMPTS) {
            None => defaults.max_attempts,
            Some(value) => value
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
                .ok_or_else(|| invalid(ENV_MAX_ATTEMPTS, &value, "a whole number from 1 to 20"))?,
        };
        let whole = |var: &'static str, max: u64, expected: &'static str| match get(var) {
            None => Ok(None),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| invalid(var, &value, expected)),
        };
        let pause = whole(
            ENV_PAUSE_MINUTES,
            MAX_PAUSE_MINUTES,
            "a whole number of minutes from 0 to 1440",
        )?
        .map_or(defaults.pause, |minutes| Duration::from_secs(minutes * 60));
        let max_pending_snapshots = whole(
            ENV_MAX_PENDING_SNAPSHOTS,
            MAX_PENDING_SNAPSHOTS as u64,
            "a whole number from 1 to 10000",
        )?
        .map(|n| usize::try_from(n).unwrap_or(MAX_PENDING_SNAPSHOTS))
        .unwrap_or(defaults.max_pending_snapshots);
        if max_pending_snapshots == 0 {
            return Err(invalid(
                ENV_MAX_PENDING_SNAPSHOTS,
                "0",
                "a whole number from 1 to 10000",
            ));
        }
        let job_spread = whole(
            ENV_JOB_SPREAD_SECONDS,
            MAX_JOB_SPREAD_SECONDS,
            "a whole number of seconds from 0 to 900 (SQS's longest delay)",
        )?
        .map_or(defaults.job_spread, Duration::from_secs);
        let snapshot_calls_per_second = whole(
            ENV_SNAPSHOT_CALLS_PER_SECOND,
            1000,
            "a whole number of calls a second from 0 (unpaced) to 1000",
        )?
        .map_or(defaults.snapshot_calls_per_second, |n| {
            u32::try_from(n).unwrap_or(DEFAULT_SNAPSHOT_CALLS_PER_SECOND)
        });
        let scan_budget = whole(
            ENV_SCAN_BUDGET_SECONDS,
            MAX_SCAN_BUDGET_SECONDS,
            "a whole number of seconds from 10 to 870 (under Lambda's 15 minutes)",
        )?
        .map_or(Ok(defaults.scan_budget), |seconds| {
            if seconds < 10 {
                Err(invalid(
                    ENV_SCAN_BUDGET_SECONDS,
                    &seconds.to_string(),
                    "a whole number of seconds from 10 to 870 (under Lambda's 15 minutes)",
                ))
            } else {
                Ok(Duration::from_secs(seconds))
            }
        })?;
        let tags = |var: &'static str| match get(var) {
            None => Ok(Vec::new()),
            Some(list) => TagFilter::parse_list(&list)
                .ok_or_else(|| invalid(var, &list, "a comma list of KEY=VALUE or KEY=*")),
        };
        let include_tags = tags(ENV_INCLUDE_TAGS)?;
        let exclude_tags = tags(ENV_EXCLUDE_TAGS)?;
        let instance_ttl = hours(ENV_INSTANCE_TTL_HOURS, defaults.instance_ttl)?;
        let snapshot_max_age = hours(ENV_SNAPSHOT_MAX_AGE_HOURS, defaults.snapshot_max_age)?;
        let sweep_ttl = hours(ENV_SWEEP_TTL_HOURS, defaults.sweep_ttl)?;
        // A scan may hand out a snapshot up to the max age old; the sweep
        // must leave it to the worker for a while longer.
        if sweep_ttl <= snapshot_max_age {
            return Err(invalid(
                ENV_SWEEP_TTL_HOURS,
                &get(ENV_SWEEP_TTL_HOURS)
                    .unwrap_or_else(|| format!("{}", sweep_ttl.as_secs_f64() / 3600.0)),
                "more hours than CONTROL_SNAPSHOT_MAX_AGE_HOURS (the sweep would delete snapshots a scan just reused)",
            ));
        }
        Ok(Self {
            regions,
            queue_url: get(ENV_QUEUE_URL),
            asg_name: get(ENV_ASG_NAME),
            ownership,
            opt_out,
            include_stopped,
            snapshot_max_age,
            sweep_ttl,
            parameters: get(ENV_PARAMETER_PREFIX).map_or_else(ParameterNames::default, |prefix| {
                ParameterNames::new(&prefix)
            }),
            max_attempts,
            self_update: crate::self_update::SelfUpdateConfig::from_vars(get)?,
            initial_backoff: defaults.initial_backoff,
            pause,
            instance_ttl,
            max_pending_snapshots,
            job_spread,
            snapshot_calls_per_second,
            scan_budget,
            include_tags,
            exclude_tags,
        })
    }
}

/// Hours (a non-negative number, fractions allowed, at most ten years) as a
/// duration.
pub fn parse_hours(value: &str) -> Option<Duration> {
    value.parse::<f64>().ok().and_then(hours)
}

/// `hours` as a duration, when it is a number of hours from 0 to ten years.
pub fn hours(hours: f64) -> Option<Duration> {
    if !(0.0..=MAX_HOURS).contains(&hours) {
        return None;
    }
    Duration::try_from_secs_f64(hours * 3600.0).ok()
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`: lower-case letters, digits
/// and dashes, starting with a letter.
fn is_region_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.contains('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_the_defaults() {
        assert_eq!(config(&[]), Ok(Config::default()));
        // CloudFormation passes optional parameters as empty strings.
        assert_eq!(
            config(&[(ENV_REGIONS, ""), (ENV_QUEUE_URL, " ")]),
            Ok(Config::default())
        );
    }

    #[test]
    fn every_variable_is_read() {
        let config = config(&[
            (ENV_REGIONS, "us-east-1, eu-west-1"),
            (ENV_QUEUE_URL, "https://sqs/q"),
            (ENV_ASG_NAME, "workers"),
            (ENV_OWNERSHIP_TAG_KEY, "Owner"),
            (ENV_OWNERSHIP_TAG_VALUE, "scanner"),
            (ENV_OPT_OUT_TAG, "NoScan=yes"),
            (ENV_INCLUDE_STOPPED, "true"),
            (ENV_SNAPSHOT_MAX_AGE_HOURS, "0.5"),
            (ENV_SWEEP_TTL_HOURS, "48"),
            (ENV_MAX_ATTEMPTS, "3"),
            (ENV_PAUSE_MINUTES, "30"),
            (ENV_INSTANCE_TTL_HOURS, "6"),
            (ENV_MAX_PENDING_SNAPSHOTS, "50"),
            (ENV_JOB_SPREAD_SECONDS, "900"),
            (ENV_SNAPSHOT_CALLS_PER_SECOND, "10"),
            (ENV_SCAN_BUDGET_SECONDS, "600"),
            (ENV_INCLUDE_TAGS, "env=prod, team=*"),
            (ENV_EXCLUDE_TAGS, "Scan=no"),
        ])
        .expect("valid");
        assert_eq!(config.pause, Duration::from_secs(1800));
        assert_eq!(config.instance_ttl, Duration::from_secs(6 * 3600));
        assert_eq!(config.max_pending_snapshots, 50);
        assert_eq!(config.job_spread, Duration::from_secs(900));
        assert_eq!(config.snapshot_calls_per_second, 10);
        assert_eq!(config.scan_budget, Duration::from_secs(600));
        assert_eq!(
            config.include_tags,
            vec![
                TagFilter {
                    key: "env".to_string(),
                    value: Some("prod".to_string())
                },
                TagFilter {
                    key: "team".to_string(),
                    value: None
                },
            ]
        );
        assert_eq!(config.exclude_tags.len(), 1);
        assert_eq!(
            config.regions,
            Some(vec!["us-east-1".to_string(), "eu-west-1".to_string()])
        );
        assert_eq!(config.queue_url.as_deref(), Some("https://sqs/q"));
        assert_eq!(config.asg_name.as_deref(), Some("workers"));
        assert_eq!(config.ownership.key, "Owner");
        assert_eq!(config.ownership.value, "scanner");
        assert_eq!(config.opt_out.key, "NoScan");
        assert!(config.include_stopped);
        assert_eq!(config.snapshot_max_age, Duration::from_secs(1800));
        assert_eq!(config.sweep_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(config.max_attempts, 3);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (ENV_REGIONS, "us-east-1,,Eu West"),
            (ENV_OPT_OUT_TAG, "Mondoo:Exclude"),
            (ENV_INCLUDE_STOPPED, "maybe"),
            (ENV_SNAPSHOT_MAX_AGE_HOURS, "-1"),
            (ENV_SWEEP_TTL_HOURS, "NaN"),
            (ENV_SWEEP_TTL_HOURS, "1e30"),
            (ENV_MAX_ATTEMPTS, "0"),
            (ENV_OWNERSHIP_TAG_KEY, "aws:createdBy"),
            (ENV_SWEEP_TTL_HOURS, "20"),
            (ENV_PAUSE_MINUTES, "1441"),
            (ENV_PAUSE_MINUTES, "5.5"),
            (ENV_INSTANCE_TTL_HOURS, "-2"),
            (ENV_MAX_PENDING_SNAPSHOTS, "0"),
            (ENV_MAX_PENDING_SNAPSHOTS, "many"),
            (ENV_JOB_SPREAD_SECONDS, "901"),
            (ENV_SNAPSHOT_CALLS_PER_SECOND, "-1"),
            (ENV_SCAN_BUDGET_SECONDS, "900"),
            (ENV_SCAN_BUDGET_SECONDS, "5"),
            (ENV_INCLUDE_TAGS, "env"),
            (ENV_EXCLUDE_TAGS, "=prod"),
            (ENV_EXCLUDE_TAGS, "env="),
        ] {
            let err = config(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn tag_filters_match_the_key_exactly_and_the_value_or_any() {
        let filters = TagFilter::parse_list("env=prod,team=*").expect("valid");
        let matches =
            |tags: &[(&str, &str)]| filters.iter().any(|f| f.matches(tags.iter().copied()));
        assert!(matches(&[("env", "prod")]));
        assert!(matches(&[("team", "")]));
        assert!(matches(&[("Name", "x"), ("team", "blue")]));
        assert!(!matches(&[("env", "Prod")]));
        assert!(!matches(&[("Env", "prod")]));
        assert!(!matches(&[("envx", "prod")]));
        assert!(!matches(&[]));
        assert_eq!(TagFilter::parse_list(" , "), Some(Vec::new()));
    }

    #[test]
    fn the_opt_out_key_is_exact_its_value_any_case() {
        let tag = Config::default().opt_out;
        assert!(tag.matches([("Mondoo:Exclude", "True")]));
        assert!(!tag.matches([("mondoo:exclude", "true")]));
        assert!(!tag.matches([("Mondoo:Exclude", "false")]));
    }
}
