//! What a stream's subscriptions did: records pushed and polled,
//! `SubscribeToShard` sessions opened and renewed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts over every subscription of one [`KinesisStream`](crate::KinesisStream)
/// and its clones, since it connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStats {
    /// Records received from `SubscribeToShard` events (enhanced fan-out).
    pub records_pushed: u64,
    /// Records received from `GetRecords` calls (polling).
    pub records_polled: u64,
    /// `SubscribeToShard` sessions opened.
    pub push_sessions: u64,
    /// Sessions Kinesis ended (every five minutes) that were renewed from
    /// the continuation sequence number.
    pub push_renewals: u64,
}

/// The state a stream shares with its subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) closed: AtomicBool,
    pushed: AtomicU64,
    polled: AtomicU64,
    sessions: AtomicU64,
    renewals: AtomicU64,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn count_pushed(&self, records: usize) {
        self.pushed.fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_polled(&self, records: usize) {
        self.polled.fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_renewal(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ReadStats {
        ReadStats {
            records_pushed: self.pushed.load(Ordering::Relaxed),
            records_polled: self.polled.load(Ordering::Relaxed),
            push_sessions: self.sessions.load(Ordering::Relaxed),
            push_renewals: self.renewals.load(Ordering::Relaxed),
        }
    }
}
