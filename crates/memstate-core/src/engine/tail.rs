//! What this node knows about the stream's tail, measured on its own clock.
//!
//! Nothing here is replicated: it is how fresh *this* node's state is, which is
//! what [`Consistency::BoundedStaleness`](crate::Consistency::BoundedStaleness)
//! and the lag figures of [`Stats`](crate::Stats) are about. Instants come from
//! `tokio::time`, so tests can run the clock virtually.

use std::cmp::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::stream::{Cursor, Stream};

/// How far this node's applied state is behind the last tail it learned.
///
/// Cursors are opaque to the engine (a Kafka offset, a Kinesis sequence
/// number, a file position), so it cannot count the records in between; how
/// old the knowledge is tells the rest ([`Stats::known_tail_age`](crate::Stats),
/// [`Stats::caught_up_age`](crate::Stats)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lag {
    /// This node has not learned the tail yet.
    Unknown,
    /// It has applied everything up to the last tail it learned.
    CaughtUp,
    /// It has not yet applied the last tail it learned.
    Behind,
}

/// The freshest facts this node has about the tail.
#[derive(Debug, Default)]
pub(super) struct TailKnowledge {
    /// The last tail learned (an exact head, or where this node's own marker
    /// landed) and when the asking began.
    known: Option<(Cursor, Instant)>,
    /// The latest instant `t` such that this node has applied everything the
    /// stream held at `t`.
    caught_up_at: Option<Instant>,
}

impl TailKnowledge {
    /// The stream ended at `cursor` at some moment after `asked_at`.
    pub(super) fn learned(&mut self, cursor: Cursor, asked_at: Instant) {
        if self.known.as_ref().is_none_or(|(_, at)| *at <= asked_at) {
            self.known = Some((cursor, asked_at));
        }
    }

    /// Everything the stream held at `at` is applied here.
    pub(super) fn caught_up(&mut self, at: Instant) {
        if self.caught_up_at.is_none_or(|t| t < at) {
            self.caught_up_at = Some(at);
        }
    }

    /// How long ago this node was last known to be caught up.
    pub(super) fn caught_up_age(&self) -> Option<Duration> {
        self.caught_up_at.map(|t| t.elapsed())
    }

    /// The last tail learned and how long ago.
    pub(super) fn known(&self) -> Option<(Cursor, Duration)> {
        self.known
            .as_ref()
            .map(|(cursor, at)| (cursor.clone(), at.elapsed()))
    }

    /// Whether this node has applied everything the stream held `bound` ago.
    ///
    /// Either it caught up at a moment younger than `bound`, or it learned a
    /// tail younger than `bound` and has since applied up to it (then that
    /// moment becomes its catch-up time).
    pub(super) fn fresh_within(
        &mut self,
        bound: Duration,
        applied: Option<&Cursor>,
        stream: &dyn Stream,
    ) -> bool {
        let now = Instant::now();
        let young = |t: Instant| now.saturating_duration_since(t) <= bound;
        if self.caught_up_at.is_some_and(young) {
            return true;
        }
        if let Some((tail, at)) = &self.known {
            let at = *at;
            if young(at) && reached(applied, tail, stream) {
                self.caught_up(at);
                return true;
            }
        }
        false
    }

    /// Where the applied state stands against the last tail learned.
    pub(super) fn lag(&self, applied: Option<&Cursor>, stream: &dyn Stream) -> Lag {
        match &self.known {
            None => Lag::Unknown,
            Some((tail, _)) if reached(applied, tail, stream) => Lag::CaughtUp,
            Some(_) => Lag::Behind,
        }
    }
}

/// Whether the applied cursor is at or past `tail`.
pub(super) fn reached(applied: Option<&Cursor>, tail: &Cursor, stream: &dyn Stream) -> bool {
    applied.is_some_and(|c| {
        matches!(
            stream.compare_cursors(c, tail),
            Ok(Ordering::Greater | Ordering::Equal)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStream;

    #[tokio::test(start_paused = true)]
    async fn a_tail_learned_recently_and_reached_counts_as_fresh() {
        let stream = MemoryStream::new();
        let mut tail = TailKnowledge::default();
        let bound = Duration::from_secs(1);
        assert!(!tail.fresh_within(bound, None, &stream));
        assert_eq!(tail.lag(None, &stream), Lag::Unknown);
        tail.learned(Cursor::new("5"), Instant::now());
        let behind = Cursor::new("4");
        assert!(!tail.fresh_within(bound, Some(&behind), &stream));
        assert_eq!(tail.lag(Some(&behind), &stream), Lag::Behind);
        let there = Cursor::new("5");
        assert!(tail.fresh_within(bound, Some(&there), &stream));
        assert_eq!(tail.lag(Some(&there), &stream), Lag::CaughtUp);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(
            !tail.fresh_within(bound, Some(&there), &stream),
            "a catch-up older than the bound is not fresh"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_time_only_moves_forward() {
        let mut tail = TailKnowledge::default();
        let early = Instant::now();
        tail.caught_up(early);
        tokio::time::advance(Duration::from_secs(2)).await;
        tail.caught_up(Instant::now());
        assert_eq!(tail.caught_up_age(), Some(Duration::ZERO), "moves forward");
        tail.caught_up(early);
        assert_eq!(tail.caught_up_age(), Some(Duration::ZERO), "never back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_tail_learned_is_kept_whatever_the_order_answers_arrive_in() {
        let stream = MemoryStream::new();
        let mut tail = TailKnowledge::default();
        let first = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = Instant::now();
        tail.learned(Cursor::new("5"), first);
        tail.learned(Cursor::new("7"), second);
        assert_eq!(tail.known(), Some((Cursor::new("7"), Duration::ZERO)));
        // An answer to an older question, arriving late, changes nothing.
        tail.learned(Cursor::new("6"), first);
        assert_eq!(tail.known(), Some((Cursor::new("7"), Duration::ZERO)));
        // Two answers to questions asked at the same instant: the later one.
        tail.learned(Cursor::new("8"), second);
        assert_eq!(tail.known(), Some((Cursor::new("8"), Duration::ZERO)));
        assert_eq!(tail.lag(Some(&Cursor::new("7")), &stream), Lag::Behind);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tail_reached_but_learned_longer_ago_than_the_bound_is_not_fresh() {
        let stream = MemoryStream::new();
        let mut tail = TailKnowledge::default();
        let bound = Duration::from_secs(1);
        tail.learned(Cursor::new("5"), Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        // Applied up to it, but the stream may have grown since: not fresh,
        // and no catch-up time is made up from it.
        assert!(!tail.fresh_within(bound, Some(&Cursor::new("5")), &stream));
        assert_eq!(tail.caught_up_age(), None);
        // At exactly the bound it still counts.
        let mut tail = TailKnowledge::default();
        tail.learned(Cursor::new("5"), Instant::now());
        tokio::time::advance(bound).await;
        assert!(tail.fresh_within(bound, Some(&Cursor::new("5")), &stream));
        assert_eq!(tail.caught_up_age(), Some(bound));
    }
}
