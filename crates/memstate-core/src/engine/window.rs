//! How many appends the writer keeps in flight: a window sized to the
//! stream's latency rather than a fixed number.
//!
//! A backend that pipelines (Kafka: librdkafka batches the frames in flight
//! into one produce request; the file journal: one fsync for every frame
//! queued) answers each append in about the same time however many are in
//! flight, so more in flight is more throughput: the window grows. A backend
//! that serves appends one after the other answers later the more are in
//! flight, so more in flight only splits the same commands into smaller
//! frames: the window stays small and commands ride together.
//!
//! The rule, per completed append (a gradient, as TCP Vegas):
//!
//! * the **floor** is the lowest append latency seen; the **recent** latency
//!   a moving average (1/8 per sample);
//! * while recent and the sample are within [`TOLERANCE`] × floor and the
//!   completion freed a slot that work was waiting for, the window grows: by
//!   one per completion (it doubles per round trip) until the latency first
//!   grows past the tolerance, by one per round trip after that;
//! * while recent > [`TOLERANCE`] × floor, it is multiplied by the gradient
//!   (tolerance × floor ÷ recent), at most once per round trip (the appends
//!   already in flight still answer at the old window's latency); at its
//!   minimum the recent latency becomes the new floor (a backend that got
//!   slower for good is measured again);
//! * a failed or timed-out append halves it.
//!
//! The window stays within `[min, max]`; a fixed window (`adaptive: false`)
//! stays at `max`. Order is untouched: the window only decides how many
//! appends are in flight, and the stream alone orders them.

use std::time::Duration;

/// How far above its floor the recent latency may be and still count as the
/// backend keeping pace.
pub(crate) const TOLERANCE: f64 = 2.0;

/// Weight of one sample in the recent latency.
const RECENT_WEIGHT: f64 = 1.0 / 8.0;

/// The number of appends allowed in flight, adapted to the stream's latency.
#[derive(Clone, Debug)]
pub(crate) struct InFlightWindow {
    limit: f64,
    min: f64,
    max: f64,
    adaptive: bool,
    /// The lowest latency seen (seconds).
    floor: Option<f64>,
    /// Moving average of the latency (seconds).
    recent: Option<f64>,
    /// Completions to wait before the next decrease (one round trip).
    hold: usize,
    /// Growing fast (one per completion) until the latency first grows.
    probing: bool,
}

impl InFlightWindow {
    /// A window between `min` and `max` (both at least 1, `min` at most
    /// `max`), starting at `min`; a fixed one stays at `max`.
    pub(crate) fn new(min: usize, max: usize, adaptive: bool) -> Self {
        let max = max.max(1) as f64;
        let min = (min.max(1) as f64).min(max);
        Self {
            limit: if adaptive { min } else { max },
            min,
            max,
            adaptive,
            floor: None,
            recent: None,
            hold: 0,
            probing: true,
        }
    }

    /// Appends allowed in flight now.
    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// An append succeeded after `latency`; `waited` says whether work was
    /// waiting for the slot it frees (the window was full and submissions
    /// were queued).
    pub(crate) fn completed(&mut self, latency: Duration, waited: bool) {
        if !self.adaptive {
            return;
        }
        let sample = latency.as_secs_f64().max(1e-9);
        let recent = self
            .recent
            .map_or(sample, |r| r + (sample - r) * RECENT_WEIGHT);
        self.recent = Some(recent);
        let floor = self.floor.map_or(sample, |f| f.min(sample));
        self.floor = Some(floor);
        let gradient = TOLERANCE * floor / recent;
        if gradient >= 1.0 {
            if waited && sample <= TOLERANCE * floor {
                // Doubling per round trip until the first sign of queueing,
                // then one more per round trip.
                let step = if self.probing { 1.0 } else { 1.0 / self.limit };
                self.limit = (self.limit + step).min(self.max);
            }
        } else if self.hold == 0 {
            self.probing = false;
            // The appends already in flight answer at the old window's
            // latency for one more round trip: shrink once per round trip.
            self.hold = self.limit as usize;
            self.limit = (self.limit * gradient).max(self.min);
            if self.limit <= self.min {
                // At the smallest window the latency seen is the backend's own.
                self.floor = Some(recent);
            }
        }
        self.hold = self.hold.saturating_sub(1);
    }

    /// An append failed or timed out: the backend is in trouble, halve.
    pub(crate) fn failed(&mut self) {
        if self.adaptive {
            self.limit = (self.limit / 2.0).max(self.min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_one_per_completion_while_work_waits_and_latency_holds() {
        let mut w = InFlightWindow::new(4, 64, true);
        assert_eq!(w.limit(), 4);
        for _ in 0..10 {
            w.completed(6 * MS, true);
        }
        assert_eq!(w.limit(), 14);
        for _ in 0..100 {
            w.completed(7 * MS, true);
        }
        assert_eq!(w.limit(), 64, "never past the maximum");
    }

    #[test]
    fn does_not_grow_without_waiting_work() {
        let mut w = InFlightWindow::new(4, 64, true);
        for _ in 0..100 {
            w.completed(6 * MS, false);
        }
        assert_eq!(w.limit(), 4);
    }

    #[test]
    fn shrinks_when_latency_grows_past_the_tolerance_then_measures_again() {
        let mut w = InFlightWindow::new(2, 64, true);
        for _ in 0..40 {
            w.completed(5 * MS, true);
        }
        assert_eq!(w.limit(), 42);
        // Latency triples: the window falls back to its minimum, where 15 ms
        // becomes the floor, and grows again from there.
        let mut lowest = w.limit();
        let mut reached_at = None;
        for i in 0..300 {
            w.completed(15 * MS, true);
            if w.limit() < lowest {
                lowest = w.limit();
                reached_at = Some(i);
            }
        }
        assert_eq!(lowest, 2);
        let reached_at = reached_at.unwrap();
        assert!(
            reached_at > 100,
            "shrinks gradually, not at once ({reached_at})"
        );
        assert!(w.limit() > 2, "window {} after re-measuring", w.limit());
    }

    #[test]
    fn a_failure_halves_down_to_the_minimum() {
        let mut w = InFlightWindow::new(3, 64, true);
        for _ in 0..29 {
            w.completed(MS, true);
        }
        assert_eq!(w.limit(), 32);
        w.failed();
        assert_eq!(w.limit(), 16);
        for _ in 0..10 {
            w.failed();
        }
        assert_eq!(w.limit(), 3);
    }

    #[test]
    fn a_fixed_window_stays_at_its_maximum() {
        let mut w = InFlightWindow::new(4, 32, false);
        assert_eq!(w.limit(), 32);
        w.failed();
        w.completed(100 * MS, true);
        assert_eq!(w.limit(), 32);
    }

    #[test]
    fn bounds_are_sane() {
        assert_eq!(InFlightWindow::new(8, 1, true).limit(), 1);
        assert_eq!(InFlightWindow::new(0, 0, true).limit(), 1);
    }
}
