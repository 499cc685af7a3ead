//! How long a subscription waits before its next `GetRecords` call.
//!
//! Kinesis allows five `GetRecords` calls per second per shard, shared by all
//! consumers, so a subscription must not spin: it reads again at once only
//! while it is behind the tip, waits `min` once it has caught up, doubles its
//! pause up to `max` while the stream stays idle, and backs off exponentially
//! (with jitter, so that nodes throttled together do not retry together)
//! while Kinesis answers `ProvisionedThroughputExceededException`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// The longest pause after repeated throttling, unless `max` is longer.
const THROTTLE_CAP: Duration = Duration::from_secs(5);

/// The pause policy of one subscription.
#[derive(Debug)]
pub(crate) struct Pacer {
    min: Duration,
    max: Duration,
    idle: Duration,
    throttled: Option<Duration>,
    rng: u64,
}

impl Pacer {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        // Only jitter needs randomness; a per-process random hasher seed is
        // enough and avoids a dependency.
        let seed = RandomState::new().hash_one(0x6d65_6d73_7461_7465_u64) | 1;
        Self {
            min,
            max: max.max(min),
            idle: min,
            throttled: None,
            rng: seed,
        }
    }

    /// After a successful call that returned `records` records with the
    /// consumer `millis_behind_latest` behind the tip.
    pub(crate) fn after_records(
        &mut self,
        records: usize,
        millis_behind_latest: Option<i64>,
    ) -> Duration {
        self.throttled = None;
        if millis_behind_latest.is_some_and(|behind| behind > 0) {
            // More is already there: read it now; throttling will say if too fast.
            self.idle = self.min;
            return Duration::ZERO;
        }
        if records > 0 {
            // Caught up, but records are flowing: stay at the fastest pace.
            self.idle = self.min;
            return self.min;
        }
        let pause = self.idle;
        self.idle = (self.idle * 2).min(self.max);
        pause
    }

    /// After Kinesis refused a call for exceeding the shard's read rate.
    pub(crate) fn after_throttle(&mut self) -> Duration {
        let cap = THROTTLE_CAP.max(self.max);
        let base = match self.throttled {
            None => self.min.max(Duration::from_millis(200)),
            Some(previous) => (previous * 2).min(cap),
        };
        self.throttled = Some(base);
        // Half fixed, half random: never shorter than base / 2.
        let half = base / 2;
        half + half.mul_f64(self.next_unit())
    }

    /// A number in [0, 1) from a xorshift generator.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(1);

    #[test]
    fn a_consumer_behind_the_tip_reads_again_at_once() {
        let mut p = Pacer::new(MIN, MAX);
        assert_eq!(p.after_records(0, Some(1500)), Duration::ZERO);
        assert_eq!(p.after_records(10, Some(3)), Duration::ZERO);
    }

    #[test]
    fn an_idle_stream_backs_off_to_the_maximum_and_records_reset_it() {
        let mut p = Pacer::new(MIN, MAX);
        let pauses: Vec<_> = (0..5).map(|_| p.after_records(0, Some(0))).collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1000, 1000]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert_eq!(p.after_records(1, Some(0)), MIN);
        assert_eq!(p.after_records(0, Some(0)), MIN);
    }

    #[test]
    fn throttling_backs_off_exponentially_with_bounded_jitter() {
        let mut p = Pacer::new(MIN, MAX);
        let mut base = Duration::from_millis(200);
        for _ in 0..10 {
            let pause = p.after_throttle();
            assert!(
                pause >= base / 2 && pause <= base,
                "{pause:?} outside [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(THROTTLE_CAP);
        }
        // Success ends the backoff.
        p.after_records(1, Some(0));
        assert!(p.after_throttle() <= Duration::from_millis(200));
    }
}
