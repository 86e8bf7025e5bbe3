//! Pacing the snapshot calls of one region under EC2's rate limit for
//! them.
//!
//! EC2 throttles per account and region with token buckets;
//! `CreateSnapshots` and `CreateSnapshot` refill 5 tokens a second, a
//! quarter of the describes' rate (`control/README.md` has the figures and
//! the arithmetic). Concurrency
//! alone (four calls in flight) does not bound the *rate*: against a fast
//! endpoint four workers could send dozens of calls a second and drain the
//! bucket the workers and the customer's own tooling share. So every
//! snapshot call first takes the next free slot of a fixed schedule —
//! `CONTROL_SNAPSHOT_CALLS_PER_SECOND` slots a second — and waits for it.
//! A few lines on tokio's clock, rather than a rate-limiting crate: one
//! rate, one region, no bursts wanted.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Hands out call slots at most `rate` a second.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer of `rate` calls a second (0: no pacing).
    pub fn per_second(rate: u32) -> Self {
        let interval = if rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate
        };
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for the next free slot.
    pub async fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_an_interval_apart() {
        let pacer = Pacer::per_second(50);
        let start = Instant::now();
        for _ in 0..9 {
            pacer.wait().await;
        }
        // The first at once, then every 20 ms.
        let took = Instant::now() - start;
        assert!(
            took >= Duration::from_millis(160) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let free = Pacer::per_second(0);
        let start = Instant::now();
        for _ in 0..100 {
            free.wait().await;
        }
        assert!(Instant::now() - start < Duration::from_millis(100));
    }
}
