//! [`EventStoreSubscription`]: a catch-up subscription that survives dropped
//! connections without gaps or duplicates.
//!
//! # Who re-subscribes
//!
//! This adapter does, not the client: the client's `retry_options` stay
//! unset, so a dropped subscription surfaces here as an error. The client's
//! own retry (kurrentdb 1.2, `Subscription::next_subscription_event`) retries
//! with a fixed delay, returns the node-selection error of a reconnect
//! directly instead of retrying it, and its connection task ends for good after
//! one failed connection attempt, so it cannot outlive a server restart.
//!
//! Here a transient failure (server unavailable, connection reset, the
//! server's "consumer too slow" drop, a dead client) re-opens the subscription
//! from the last revision yielded (`StreamPosition::Position(rev)` starts
//! *after* `rev`), with a doubling backoff and at most
//! [`EventStoreConfig::resubscribe_attempts`](crate::EventStoreConfig::resubscribe_attempts)
//! consecutive failures; the count starts again once a re-opened subscription
//! is confirmed by the server. As a safety net every event whose revision is
//! not above the last one yielded is skipped, and a revision that jumps ahead
//! (events removed by `$maxCount`, `$maxAge`, `$tb` or a soft delete) is
//! [`StreamError::HistoryTruncated`]: the log would no longer be whole.

use std::cmp::Ordering;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use kurrentdb::{
    Client, ResolvedEvent, StreamPosition, SubscribeToStreamOptions,
    Subscription as ClientSubscription, SubscriptionEvent,
};
use memstate_core::{Record, StreamError, Subscription};

use crate::client::Shared;
use crate::error::{self, Operation};
use crate::event;

/// A subscription to an [`EventStoreStream`](crate::EventStoreStream).
pub struct EventStoreSubscription {
    shared: Arc<Shared>,
    /// The open server subscription, `None` after a failure.
    live: Option<ClientSubscription>,
    /// The generation of the client `live` was opened with.
    live_generation: u64,
    /// An event that arrived before the server's confirmation.
    pending: Option<ResolvedEvent>,
    /// The revision of the last record yielded (or the `after` cursor).
    last: Option<u64>,
    /// Consecutive failed attempts to re-open.
    failures: u32,
}

/// Why opening failed.
enum OpenFailure {
    Client(kurrentdb::Error),
    TimedOut,
    Fatal(StreamError),
}

impl EventStoreSubscription {
    /// Opens a subscription after `after` (from the first event when `None`)
    /// and waits, within the operation timeout, for the server to confirm it.
    pub(crate) async fn open(shared: Arc<Shared>, after: Option<u64>) -> Result<Self, StreamError> {
        let mut subscription = Self {
            shared,
            live: None,
            live_generation: 0,
            pending: None,
            last: after,
            failures: 0,
        };
        let mut sent_again = false;
        loop {
            match subscription.try_open().await {
                Ok(()) => return Ok(subscription),
                Err(OpenFailure::Client(e)) if !sent_again && error::retry_is_safe(&e) => {
                    sent_again = true;
                }
                Err(failure) => return Err(subscription.open_error(failure)),
            }
        }
    }

    fn open_error(&self, failure: OpenFailure) -> StreamError {
        let ctx = self.shared.context();
        match failure {
            OpenFailure::Client(e) => error::map_client_error(e, &Operation::Subscribe, &ctx),
            OpenFailure::TimedOut => error::timed_out(&Operation::Subscribe, &ctx),
            OpenFailure::Fatal(e) => e,
        }
    }

    /// One attempt: subscribe and wait for the confirmation (or a first event).
    async fn try_open(&mut self) -> Result<(), OpenFailure> {
        let (generation, client) = self.shared.current_client();
        let start = match self.last {
            None => StreamPosition::Start,
            Some(revision) => StreamPosition::Position(revision),
        };
        // No `retry_options`: re-subscribing is done here (see module docs).
        let options = SubscribeToStreamOptions::default().start_from(start);
        let name = self.shared.config.stream_name.clone();
        let opening = AssertUnwindSafe(confirmed(client, name, options)).catch_unwind();
        match tokio::time::timeout(self.shared.config.operation_timeout, opening).await {
            Err(_elapsed) => {
                self.shared.replace_client(generation);
                Err(OpenFailure::TimedOut)
            }
            Ok(Err(panic)) => {
                self.shared.replace_client(generation);
                Err(OpenFailure::Fatal(error::panicked(
                    panic.as_ref(),
                    &Operation::Subscribe,
                    &self.shared.context(),
                )))
            }
            Ok(Ok(Err(e))) => {
                if error::client_is_dead(&e) {
                    self.shared.replace_client(generation);
                }
                Err(OpenFailure::Client(e))
            }
            Ok(Ok(Ok((live, first)))) => {
                self.live = Some(live);
                self.live_generation = generation;
                self.pending = first;
                Ok(())
            }
        }
    }

    /// Re-opens after a drop: backoff, bounded consecutive failures.
    async fn reopen(&mut self) -> Result<(), StreamError> {
        let attempts = self.shared.config.resubscribe_attempts;
        loop {
            if self.failures >= attempts {
                return Err(self.give_up(None));
            }
            self.failures += 1;
            tokio::time::sleep(self.shared.config.backoff(self.failures)).await;
            let failure = match self.try_open().await {
                Ok(()) => {
                    self.failures = 0;
                    tracing::info!(
                        stream = %self.shared.config.stream_name,
                        after = ?self.last,
                        "subscription re-opened"
                    );
                    return Ok(());
                }
                Err(OpenFailure::Fatal(e)) => return Err(e),
                Err(OpenFailure::Client(e)) if !error::is_transient(&e) => {
                    return Err(error::map_client_error(
                        e,
                        &Operation::Subscribe,
                        &self.shared.context(),
                    ));
                }
                Err(failure) => failure,
            };
            let reason = match &failure {
                OpenFailure::Client(e) => e.to_string(),
                _ => format!(
                    "no confirmation within {:?}",
                    self.shared.config.operation_timeout
                ),
            };
            tracing::warn!(
                stream = %self.shared.config.stream_name,
                attempt = self.failures,
                of = attempts,
                %reason,
                "re-opening the subscription failed"
            );
            if self.failures >= attempts {
                return Err(self.give_up(Some(failure)));
            }
        }
    }

    /// The error after the last allowed attempt; a later `next` starts a new
    /// round of attempts.
    fn give_up(&mut self, last: Option<OpenFailure>) -> StreamError {
        let action = format!(
            "re-subscribing to stream {:?} after revision {:?} at {} (gave up after {} failed \
             attempts)",
            self.shared.config.stream_name, self.last, self.shared.endpoint, self.failures
        );
        self.failures = 0;
        match last {
            Some(OpenFailure::Client(e)) => StreamError::backend(error::BACKEND, action, e),
            Some(OpenFailure::Fatal(e)) => e,
            Some(OpenFailure::TimedOut) | None => StreamError::Timeout {
                action,
                after: self.shared.config.operation_timeout,
            },
        }
    }

    /// Yields `event` if it is the next revision; skips repeats; refuses gaps.
    fn accept(&mut self, event: ResolvedEvent) -> Result<Option<Record>, StreamError> {
        let (revision, record) = event::to_record(event)?;
        let name = &self.shared.config.stream_name;
        match admit(self.last, revision) {
            Admission::Next => {
                self.last = Some(revision);
                Ok(Some(record))
            }
            Admission::Repeat => {
                tracing::debug!(revision, last = ?self.last, "skipping a revision already delivered");
                Ok(None)
            }
            Admission::Gap { expected } => Err(StreamError::HistoryTruncated {
                name: name.clone(),
                reason: format!(
                    "expected revision {expected} next but the server delivered revision \
                     {revision}: events {expected}..{revision} are gone (truncated by \
                     $maxCount, $maxAge or $tb stream metadata, or a soft delete)"
                ),
            }),
            Admission::PastTheEnd => Err(StreamError::Corrupt {
                location: format!("stream {name:?}"),
                reason: "an event after revision 2^64 - 1".to_owned(),
            }),
        }
    }
}

/// What to do with an event, given the last revision yielded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The next revision: yield it.
    Next,
    /// Already yielded (a re-opened subscription repeating itself): skip it.
    Repeat,
    /// Revisions are missing before it: the history is not whole.
    Gap { expected: u64 },
    /// Nothing can follow revision `u64::MAX`.
    PastTheEnd,
}

/// Revisions of one stream are contiguous from 0, so the event after `last`
/// must be `last + 1` (the first must be 0).
pub(crate) fn admit(last: Option<u64>, revision: u64) -> Admission {
    let expected = match last {
        None => 0,
        Some(last) => match last.checked_add(1) {
            Some(next) => next,
            None => return Admission::PastTheEnd,
        },
    };
    match revision.cmp(&expected) {
        Ordering::Less => Admission::Repeat,
        Ordering::Equal => Admission::Next,
        Ordering::Greater => Admission::Gap { expected },
    }
}

/// Subscribes and waits for the server's confirmation, returning an event
/// that came first, if any (the server confirms before sending events).
async fn confirmed(
    client: Client,
    name: String,
    options: SubscribeToStreamOptions,
) -> Result<(ClientSubscription, Option<ResolvedEvent>), kurrentdb::Error> {
    let mut subscription = client.subscribe_to_stream(name, &options).await;
    loop {
        match subscription.next_subscription_event().await? {
            SubscriptionEvent::Confirmed(_) => return Ok((subscription, None)),
            SubscriptionEvent::EventAppeared(event) => return Ok((subscription, Some(event))),
            _ => {}
        }
    }
}

#[async_trait]
impl Subscription for EventStoreSubscription {
    /// The next record. Waits without a time limit while the stream has
    /// nothing new; a dead connection is detected by HTTP/2 keep-alive
    /// (`keepAliveInterval`/`keepAliveTimeout`, 10 s each by default) and
    /// re-opened as described in the module docs.
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        loop {
            if let Some(event) = self.pending.take() {
                if let Some(record) = self.accept(event)? {
                    return Ok(Some(record));
                }
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                self.reopen().await?;
                continue;
            };
            let step = AssertUnwindSafe(live.next_subscription_event())
                .catch_unwind()
                .await;
            match step {
                Ok(Ok(SubscriptionEvent::EventAppeared(event))) => {
                    if let Some(record) = self.accept(event)? {
                        return Ok(Some(record));
                    }
                }
                // Confirmations, caught-up and fell-behind notices.
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.live = None;
                    if error::client_is_dead(&e) {
                        self.shared.replace_client(self.live_generation);
                    }
                    if !error::is_transient(&e) || self.shared.config.resubscribe_attempts == 0 {
                        return Err(error::map_client_error(
                            e,
                            &Operation::Subscribe,
                            &self.shared.context(),
                        ));
                    }
                    tracing::warn!(
                        stream = %self.shared.config.stream_name,
                        after = ?self.last,
                        error = %e,
                        "subscription dropped; re-opening after the last revision delivered"
                    );
                }
                Err(panic) => {
                    self.live = None;
                    self.shared.replace_client(self.live_generation);
                    return Err(error::panicked(
                        panic.as_ref(),
                        &Operation::Subscribe,
                        &self.shared.context(),
                    ));
                }
            }
        }
    }
}

impl fmt::Debug for EventStoreSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreSubscription")
            .field("stream_name", &self.shared.config.stream_name)
            .field("last_revision", &self.last)
            .field("open", &self.live.is_some())
            .field("failures", &self.failures)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_must_be_revision_zero() {
        assert_eq!(admit(None, 0), Admission::Next);
        assert_eq!(admit(None, 3), Admission::Gap { expected: 0 });
    }

    #[test]
    fn the_event_after_the_last_yielded_is_next() {
        assert_eq!(admit(Some(41), 42), Admission::Next);
    }

    #[test]
    fn repeats_after_a_reopen_are_skipped() {
        assert_eq!(admit(Some(41), 41), Admission::Repeat);
        assert_eq!(admit(Some(41), 0), Admission::Repeat);
    }

    #[test]
    fn a_jump_ahead_is_a_gap_naming_the_missing_revision() {
        assert_eq!(admit(Some(41), 45), Admission::Gap { expected: 42 });
    }

    #[test]
    fn nothing_follows_the_largest_revision() {
        assert_eq!(admit(Some(u64::MAX), 0), Admission::PastTheEnd);
    }

    #[test]
    fn a_resumed_sequence_with_overlap_yields_each_revision_once() {
        // A subscription yields 0..=4, drops, and the re-opened one repeats 3
        // and 4 before going on: every revision is yielded exactly once.
        let mut last = None;
        let mut yielded = Vec::new();
        for revision in [0, 1, 2, 3, 4, 3, 4, 5, 6] {
            if admit(last, revision) == Admission::Next {
                last = Some(revision);
                yielded.push(revision);
            }
        }
        assert_eq!(yielded, vec![0, 1, 2, 3, 4, 5, 6]);
    }
}
