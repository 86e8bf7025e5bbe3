//! The EBS snapshot quotas, kept before the calls rather than learnt from
//! their errors: at most [`MAX_PENDING_PER_VOLUME`] snapshots in flight per
//! volume, at least [`MIN_VOLUME_INTERVAL`] between two snapshots of one
//! volume, and at most `CONTROL_MAX_PENDING_SNAPSHOTS` (100 by default)
//! pending per account and region. A refused `CreateSnapshots` is a wasted
//! call against the `CreateSnapshots` rate limit, and it fails the whole set;
//! an instance that would break a quota is deferred instead — listed with
//! the quota in the scan's response, no call, no job — and the next scan
//! takes it.
//!
//! The load comes from one `DescribeSnapshots` per region (our account,
//! every snapshot in state `pending`, paginated): the customer's own
//! snapshots count against the same quotas. The scan's own snapshots are
//! counted as pending for the rest of the scan (they are, for minutes).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use crate::error::ApiError;

/// Snapshots in flight at once per volume (EBS's limit).
pub const MAX_PENDING_PER_VOLUME: usize = 5;
/// Least time between two snapshots of one volume (EBS's limit).
pub const MIN_VOLUME_INTERVAL: Duration = Duration::from_secs(15);
/// Snapshots per `DescribeSnapshots` page (the API's maximum).
const PAGE_SIZE: i32 = 1000;

/// The pending snapshots of a region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Pending in the account and region.
    pub pending: usize,
    /// Per volume id.
    pub volumes: HashMap<String, VolumeLoad>,
}

/// The pending snapshots of one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeLoad {
    /// Pending now.
    pub pending: usize,
    /// When the newest of them started.
    pub last_started: Option<SystemTime>,
}

impl Load {
    /// Count one snapshot of `volume_id` started at `started`.
    pub fn add(&mut self, volume_id: &str, started: Option<SystemTime>) {
        self.pending += 1;
        let volume = self.volumes.entry(volume_id.to_string()).or_default();
        volume.pending += 1;
        volume.last_started = volume.last_started.max(started);
    }
}

/// The region's pending snapshots, every owner in the account.
///
/// # Errors
/// [`ApiError`] when they cannot be listed.
pub async fn pending(ec2: &Client) -> Result<Load, ApiError> {
    let mut load = Load::default();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("status").values("pending").build())
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| ApiError::new("DescribeSnapshots (pending)", &err))?;
        for snapshot in page.snapshots() {
            let started = snapshot
                .start_time()
                .and_then(|t| SystemTime::try_from(*t).ok());
            load.add(snapshot.volume_id().unwrap_or_default(), started);
        }
    }
    Ok(load)
}

/// Why an instance waits for the next scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "quota", rename_all = "snake_case")]
pub enum Deferral {
    /// A volume has as many snapshots in flight as EBS allows.
    VolumeInFlight {
        /// The volume.
        volume_id: String,
        /// Its pending snapshots.
        pending: usize,
    },
    /// A volume's last snapshot started less than 15 s ago.
    VolumeTooRecent {
        /// The volume.
        volume_id: String,
        /// Seconds since it started.
        seconds_ago: u64,
    },
    /// The region's snapshot calls would not fit in the scan's time budget
    /// at the paced rate (`CONTROL_SCAN_BUDGET_SECONDS` ×
    /// `CONTROL_SNAPSHOT_CALLS_PER_SECOND`).
    ScanBudget {
        /// Calls admitted so far.
        calls: usize,
        /// Calls the budget holds.
        max: usize,
    },
    /// The scan's time budget ran out before the instance's turn.
    OutOfTime {
        /// The budget, in seconds.
        budget_seconds: u64,
    },
    /// The account's pending snapshots in the region are at the quota.
    AccountPending {
        /// Pending now, this scan's included.
        pending: usize,
        /// Snapshots the instance needs.
        needed: usize,
        /// The quota (`CONTROL_MAX_PENDING_SNAPSHOTS`).
        max: usize,
    },
}

impl fmt::Display for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VolumeInFlight { volume_id, pending } => write!(
                f,
                "{volume_id} has {pending} snapshots in flight (at most {MAX_PENDING_PER_VOLUME})"
            ),
            Self::VolumeTooRecent {
                volume_id,
                seconds_ago,
            } => write!(
                f,
                "{volume_id} was snapshotted {seconds_ago} s ago (at least {} s apart)",
                MIN_VOLUME_INTERVAL.as_secs()
            ),
            Self::ScanBudget { calls, max } => write!(
                f,
                "{calls} snapshot calls admitted, the scan's time budget holds {max}"
            ),
            Self::OutOfTime { budget_seconds } => {
                write!(f, "the scan's time budget of {budget_seconds} s ran out")
            }
            Self::AccountPending {
                pending,
                needed,
                max,
            } => write!(
                f,
                "{pending} snapshots pending in the region, {needed} more would pass the quota of {max}"
            ),
        }
    }
}

/// Admits instances against the quotas, one after the other, counting what
/// it admitted.
#[derive(Debug, Clone)]
pub struct Planner {
    load: Load,
    max_pending: usize,
    now: SystemTime,
    max_calls: Option<usize>,
    calls: usize,
}

impl Planner {
    /// A planner over `load` with the account quota `max_pending`, at `now`.
    pub fn new(load: Load, max_pending: usize, now: SystemTime) -> Self {
        Self {
            load,
            max_pending,
            now,
            max_calls: None,
            calls: 0,
        }
    }

    /// Admit at most `max_calls` snapshot calls in all (the scan's time
    /// budget at the paced rate).
    #[must_use]
    pub fn with_call_budget(mut self, max_calls: usize) -> Self {
        self.max_calls = Some(max_calls);
        self
    }

    /// Admit snapshots of `volumes` now, made by `calls` calls (and count
    /// them), or say which quota they would break. No volume: nothing to
    /// count.
    ///
    /// # Errors
    /// The [`Deferral`].
    pub fn admit(&mut self, volumes: &[&str], calls: usize) -> Result<(), Deferral> {
        if volumes.is_empty() {
            return Ok(());
        }
        if let Some(max) = self.max_calls {
            if self.calls + calls > max {
                return Err(Deferral::ScanBudget {
                    calls: self.calls,
                    max,
                });
            }
        }
        for volume_id in volumes {
            let Some(load) = self.load.volumes.get(*volume_id) else {
                continue;
            };
            if load.pending >= MAX_PENDING_PER_VOLUME {
                return Err(Deferral::VolumeInFlight {
                    volume_id: (*volume_id).to_string(),
                    pending: load.pending,
                });
            }
            if let Some(last) = load.last_started {
                // A start in the future (clock skew) counts as just now.
                let ago = self.now.duration_since(last).unwrap_or_default();
                if ago < MIN_VOLUME_INTERVAL {
                    return Err(Deferral::VolumeTooRecent {
                        volume_id: (*volume_id).to_string(),
                        seconds_ago: ago.as_secs(),
                    });
                }
            }
        }
        if self.load.pending + volumes.len() > self.max_pending {
            return Err(Deferral::AccountPending {
                pending: self.load.pending,
                needed: volumes.len(),
                max: self.max_pending,
            });
        }
        for volume_id in volumes {
            self.load.add(volume_id, Some(self.now));
        }
        self.calls += calls;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_764_000_000);

    fn at(seconds_before_now: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + NOW - Duration::from_secs(seconds_before_now))
    }

    fn planner(load: Load, max: usize) -> Planner {
        Planner::new(load, max, SystemTime::UNIX_EPOCH + NOW)
    }

    #[test]
    fn a_volume_with_five_in_flight_waits() {
        let mut load = Load::default();
        for _ in 0..4 {
            load.add("vol-a", at(600));
        }
        let mut planner = planner(load.clone(), 100);
        assert_eq!(planner.admit(&["vol-a"], 1), Ok(()), "the fifth");
        load.add("vol-a", at(600));
        let mut planner = self::planner(load, 100);
        assert_eq!(
            planner.admit(&["vol-b", "vol-a"], 1),
            Err(Deferral::VolumeInFlight {
                volume_id: "vol-a".to_string(),
                pending: 5
            })
        );
        // Nothing was counted for the refused instance.
        assert_eq!(planner.admit(&["vol-b"], 1), Ok(()));
    }

    #[test]
    fn a_volume_snapshotted_less_than_15_s_ago_waits() {
        let mut load = Load::default();
        load.add("vol-a", at(14));
        load.add("vol-b", at(15));
        let mut planner = planner(load, 100);
        let refused = planner.admit(&["vol-a"], 1);
        assert_eq!(
            refused,
            Err(Deferral::VolumeTooRecent {
                volume_id: "vol-a".to_string(),
                seconds_ago: 14
            })
        );
        assert!(
            refused
                .expect_err("deferred")
                .to_string()
                .contains("at least 15 s apart")
        );
        assert_eq!(planner.admit(&["vol-b"], 1), Ok(()));
        // Admitted now: a second snapshot of it in the same scan waits.
        assert!(matches!(
            planner.admit(&["vol-b"], 1),
            Err(Deferral::VolumeTooRecent { .. })
        ));
    }

    #[test]
    fn the_account_quota_counts_the_customers_and_this_scans_snapshots() {
        let mut load = Load::default();
        for i in 0..97 {
            load.add(&format!("vol-customer-{i}"), at(3600));
        }
        let mut planner = planner(load, 100);
        assert_eq!(planner.admit(&["vol-1", "vol-2"], 1), Ok(()));
        assert_eq!(
            planner.admit(&["vol-3", "vol-4"], 1),
            Err(Deferral::AccountPending {
                pending: 99,
                needed: 2,
                max: 100
            })
        );
        assert_eq!(planner.admit(&["vol-5"], 1), Ok(()), "the hundredth fits");
        assert!(planner.admit(&["vol-6"], 1).is_err());
        assert_eq!(
            planner.admit(&[], 0),
            Ok(()),
            "reusing everything needs none"
        );
    }

    #[test]
    fn the_time_budget_caps_the_calls() {
        let mut planner = planner(Load::default(), 100).with_call_budget(3);
        assert_eq!(planner.admit(&["vol-1", "vol-2"], 1), Ok(()));
        assert_eq!(planner.admit(&["vol-3", "vol-4"], 2), Ok(()));
        assert_eq!(
            planner.admit(&["vol-5"], 1),
            Err(Deferral::ScanBudget { calls: 3, max: 3 })
        );
    }
}
