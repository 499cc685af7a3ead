//! The retained window of events and the subscriptions that read it.
//!
//! One ring of recent events per node, as tokio's `broadcast` channel: the
//! apply loop appends (never waiting: the oldest events leave when the window
//! is full), and each subscription keeps its own position in it. A position
//! that has left the window is a gap, reported once and then skipped over.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Event, EventError, EventStats, EventWindow, EventsFrom, RawEvent};

/// Turns an event's JSON into what the subscriber wants.
type Decoder<E> = Arc<dyn Fn(&Arc<str>) -> Result<E, String> + Send + Sync>;
/// Keeps the events a subscriber asked for.
type Filter<E> = Box<dyn Fn(&E) -> bool + Send + Sync>;

/// A node's retained events.
pub(crate) struct EventLog {
    window: Mutex<Window>,
    /// The sequence number one past the newest event, and bumped on close:
    /// what subscriptions wait on.
    changed: watch::Sender<u64>,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Window {
    limits: EventWindow,
    entries: VecDeque<RawEvent>,
    /// Node-local sequence number of `entries[0]`: positions survive eviction.
    first_seq: u64,
    bytes: usize,
    /// The events of every command after this index are retained.
    resumable_after: u64,
    /// Events of commands up to this index have been published.
    published_through: u64,
    emitted: u64,
    gaps_reported: u64,
    /// Each open subscription's next sequence number (for lag in stats).
    positions: HashMap<u64, u64>,
    next_subscriber: u64,
    closed: bool,
}

impl Window {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// The sequence number of the first retained event of a command after `index`.
    fn seq_after(&self, index: u64) -> u64 {
        self.first_seq + self.entries.partition_point(|e| e.index <= index) as u64
    }

    fn evict(&mut self) {
        while self.entries.len() > 1
            && (self.entries.len() > self.limits.max_events || self.bytes > self.limits.max_bytes)
        {
            if let Some(old) = self.entries.pop_front() {
                self.first_seq += 1;
                self.bytes -= old.event.len();
                // Part of this command may be gone: resuming needs a later index.
                self.resumable_after = self.resumable_after.max(old.index);
            }
        }
    }
}

impl EventLog {
    /// An empty window for a node whose state starts at `start_index`
    /// (events of commands up to it were never derived here).
    pub(crate) fn new(limits: EventWindow, start_index: u64) -> Self {
        let limits = EventWindow {
            max_events: limits.max_events.max(1),
            max_bytes: limits.max_bytes,
        };
        Self {
            window: Mutex::new(Window {
                limits,
                entries: VecDeque::new(),
                first_seq: 0,
                bytes: 0,
                resumable_after: start_index,
                published_through: start_index,
                emitted: 0,
                gaps_reported: 0,
                positions: HashMap::new(),
                next_subscriber: 0,
                closed: false,
            }),
            changed: watch::channel(0).0,
        }
    }

    /// Publishes the events of the commands applied up to `through` (in
    /// index order). Called once the state they describe is visible to
    /// queries; never waits for a subscriber.
    pub(crate) fn publish(&self, through: u64, events: Vec<RawEvent>) {
        let end = {
            let mut window = self.window.lock();
            window.published_through = window.published_through.max(through);
            if events.is_empty() {
                return;
            }
            window.emitted += events.len() as u64;
            for event in events {
                window.bytes += event.event.len();
                window.entries.push_back(event);
            }
            window.evict();
            window.end_seq()
        };
        self.changed.send_replace(end);
    }

    /// No more events will come: subscriptions drain what is retained and end.
    pub(crate) fn close(&self) {
        let end = {
            let mut window = self.window.lock();
            window.closed = true;
            window.end_seq()
        };
        self.changed.send_modify(|v| *v = end);
    }

    pub(crate) fn stats(&self) -> EventStats {
        let window = self.window.lock();
        let end = window.end_seq();
        EventStats {
            retained: window.entries.len(),
            retained_bytes: window.bytes,
            resumable_after: window.resumable_after,
            published_through: window.published_through,
            emitted: window.emitted,
            subscribers: window.positions.len(),
            max_subscriber_lag: window
                .positions
                .values()
                .map(|&next| end.saturating_sub(next))
                .max()
                .unwrap_or(0),
            gaps_reported: window.gaps_reported,
        }
    }

    /// A subscription that hands out every event as JSON.
    pub(crate) fn subscribe_raw(self: &Arc<Self>, from: EventsFrom) -> EventSubscription<Arc<str>> {
        self.subscribe(from, Arc::new(|json: &Arc<str>| Ok(Arc::clone(json))), None)
    }

    /// A subscription that decodes events with `decode` and keeps those
    /// `filter` accepts.
    pub(crate) fn subscribe<E>(
        self: &Arc<Self>,
        from: EventsFrom,
        decode: Decoder<E>,
        filter: Option<Filter<E>>,
    ) -> EventSubscription<E> {
        let mut window = self.window.lock();
        let (after, next_seq, pending_gap) = match from {
            EventsFrom::Now => (window.published_through, window.end_seq(), None),
            EventsFrom::After(index) if index < window.resumable_after => {
                let resumable_after = window.resumable_after;
                window.gaps_reported += 1;
                let gap = EventError::Gap {
                    after: index,
                    resumable_after,
                };
                (
                    resumable_after,
                    window.seq_after(resumable_after),
                    Some(gap),
                )
            }
            EventsFrom::After(index) => (index, window.seq_after(index), None),
        };
        let id = window.next_subscriber;
        window.next_subscriber += 1;
        window.positions.insert(id, next_seq);
        drop(window);
        EventSubscription {
            log: Arc::clone(self),
            changes: self.changed.subscribe(),
            id,
            next_seq,
            after,
            pending_gap,
            decode,
            filter,
        }
    }
}

/// A subscription to a node's events, in log order. See
/// [`Engine::events`](crate::Engine::events).
///
/// Call [`next`](EventSubscription::next) in a loop. Holding a subscription
/// costs the engine nothing while it is not read; one that is read too slowly
/// gets [`EventError::Gap`] once the window has moved past it.
pub struct EventSubscription<E> {
    log: Arc<EventLog>,
    changes: watch::Receiver<u64>,
    id: u64,
    next_seq: u64,
    /// Every event of every command up to this index has been handed out or
    /// filtered away (or precedes the subscription's start).
    after: u64,
    pending_gap: Option<EventError>,
    decode: Decoder<E>,
    filter: Option<Filter<E>>,
}

impl<E> fmt::Debug for EventSubscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription")
            .field("id", &self.id)
            .field("after", &self.after)
            .field("filtered", &self.filter.is_some())
            .finish()
    }
}

/// What one look at the window found.
enum Step<E> {
    Ready(Result<Event<E>, EventError>),
    Wait,
}

impl<E> EventSubscription<E> {
    /// The next event, waiting for it if need be.
    ///
    /// # Errors
    ///
    /// [`EventError::Gap`] when events this subscription should have seen are
    /// no longer retained (it then continues after the gap);
    /// [`EventError::Decode`] for an event that is not of the subscriber's
    /// type (it then continues with the next); [`EventError::Closed`] once the
    /// engine has stopped and everything retained has been handed out.
    pub async fn next(&mut self) -> Result<Event<E>, EventError> {
        loop {
            // Mark the current value seen before looking, so a publish that
            // lands after the look wakes the wait below.
            self.changes.borrow_and_update();
            if let Step::Ready(result) = self.step() {
                return result;
            }
            if self.changes.changed().await.is_err() {
                // The log itself is gone: nothing more can come.
                return match self.step() {
                    Step::Ready(result) => result,
                    Step::Wait => Err(EventError::Closed),
                };
            }
        }
    }

    /// The next event if one is ready, without waiting.
    ///
    /// # Errors
    ///
    /// As [`next`](EventSubscription::next).
    pub fn try_next(&mut self) -> Result<Option<Event<E>>, EventError> {
        match self.step() {
            Step::Ready(result) => result.map(Some),
            Step::Wait => Ok(None),
        }
    }

    /// The index this subscription has handled everything up to: resume a
    /// later subscription (here or on another node) after it.
    pub fn resume_after(&self) -> u64 {
        self.after
    }

    fn step(&mut self) -> Step<E> {
        if let Some(gap) = self.pending_gap.take() {
            return Step::Ready(Err(gap));
        }
        let mut window = self.log.window.lock();
        if self.next_seq < window.first_seq {
            // Overtaken: the window moved past this subscription.
            let resumable_after = window.resumable_after;
            window.gaps_reported += 1;
            let gap = EventError::Gap {
                after: self.after,
                resumable_after,
            };
            self.after = resumable_after;
            self.next_seq = window.seq_after(resumable_after);
            window.positions.insert(self.id, self.next_seq);
            return Step::Ready(Err(gap));
        }
        while self.next_seq < window.end_seq() {
            let offset = (self.next_seq - window.first_seq) as usize;
            let Some(raw) = window.entries.get(offset).cloned() else {
                break;
            };
            self.next_seq += 1;
            window.positions.insert(self.id, self.next_seq);
            if raw.index <= self.after {
                continue;
            }
            // Whole commands only move the resume point.
            let handled = if raw.last_in_command {
                raw.index
            } else {
                raw.index.saturating_sub(1)
            };
            self.after = self.after.max(handled);
            let event = match (self.decode)(&raw.event) {
                Ok(event) => event,
                Err(reason) => {
                    return Step::Ready(Err(EventError::Decode {
                        index: raw.index,
                        command_id: raw.command_id,
                        seq: raw.seq,
                        reason,
                    }));
                }
            };
            if self.filter.as_ref().is_some_and(|keep| !keep(&event)) {
                continue;
            }
            return Step::Ready(Ok(Event {
                index: raw.index,
                command_id: raw.command_id,
                seq: raw.seq,
                last_in_command: raw.last_in_command,
                event,
            }));
        }
        // Everything retained is handled; the published commands had no more events.
        self.after = self.after.max(window.published_through);
        if window.closed {
            Step::Ready(Err(EventError::Closed))
        } else {
            Step::Wait
        }
    }
}

impl<E: Send + 'static> EventSubscription<E> {
    /// The subscription as a [`futures::Stream`] of results (for server-sent
    /// events and other stream combinators); it ends after
    /// [`EventError::Closed`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Event<E>, EventError>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut subscription = state?;
            match subscription.next().await {
                Err(EventError::Closed) => None,
                item => Some((item, Some(subscription))),
            }
        })
    }
}

impl<E> Drop for EventSubscription<E> {
    fn drop(&mut self) {
        self.log.window.lock().positions.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::CommandId;

    fn command(index: u64, events: &[&str]) -> Vec<RawEvent> {
        let id = CommandId::random();
        let count = events.len();
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Event {
                index,
                command_id: id,
                seq: i as u32,
                last_in_command: i + 1 == count,
                event: Arc::from(format!("\"{e}\"")),
            })
            .collect()
    }

    fn log(max_events: usize) -> Arc<EventLog> {
        Arc::new(EventLog::new(
            EventWindow {
                max_events,
                max_bytes: usize::MAX,
            },
            0,
        ))
    }

    fn text(sub: &mut EventSubscription<Arc<str>>) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = sub.try_next() {
            out.push((e.index, e.event.to_string()));
        }
        out
    }

    #[test]
    fn resuming_after_an_index_yields_exactly_the_later_commands() {
        let log = log(100);
        log.publish(1, command(1, &["a"]));
        log.publish(3, command(3, &["b", "c"]));
        log.publish(4, command(4, &["d"]));
        let mut sub = log.subscribe_raw(EventsFrom::After(1));
        assert_eq!(
            text(&mut sub),
            vec![
                (3, "\"b\"".into()),
                (3, "\"c\"".into()),
                (4, "\"d\"".into())
            ]
        );
        assert_eq!(sub.resume_after(), 4);
    }

    #[test]
    fn a_resume_point_before_the_window_is_a_gap_then_the_rest_follows() {
        let log = log(2);
        log.publish(1, command(1, &["a"]));
        log.publish(2, command(2, &["b"]));
        log.publish(3, command(3, &["c"]));
        assert_eq!(log.stats().resumable_after, 1);
        let mut sub = log.subscribe_raw(EventsFrom::After(0));
        assert_eq!(
            sub.try_next(),
            Err(EventError::Gap {
                after: 0,
                resumable_after: 1
            })
        );
        assert_eq!(
            text(&mut sub),
            vec![(2, "\"b\"".into()), (3, "\"c\"".into())]
        );
        assert_eq!(log.stats().gaps_reported, 1);
    }

    #[test]
    fn a_partly_evicted_command_cannot_be_resumed_before() {
        let log = log(2);
        log.publish(5, command(5, &["a", "b", "c"]));
        // "a" left; command 5 is incomplete, so resuming after 4 is a gap.
        assert_eq!(log.stats().resumable_after, 5);
        let mut sub = log.subscribe_raw(EventsFrom::After(4));
        assert!(matches!(sub.try_next(), Err(EventError::Gap { .. })));
        assert!(text(&mut sub).is_empty());
    }

    #[test]
    fn a_subscriber_overtaken_by_the_window_gets_a_gap_naming_its_position() {
        let log = log(2);
        let mut sub = log.subscribe_raw(EventsFrom::Now);
        log.publish(1, command(1, &["a"]));
        assert_eq!(text(&mut sub), vec![(1, "\"a\"".into())]);
        for i in 2..=5 {
            log.publish(i, command(i, &["x"]));
        }
        assert_eq!(log.stats().max_subscriber_lag, 4);
        assert_eq!(
            sub.try_next(),
            Err(EventError::Gap {
                after: 1,
                resumable_after: 3
            })
        );
        assert_eq!(
            text(&mut sub),
            vec![(4, "\"x\"".into()), (5, "\"x\"".into())]
        );
        assert_eq!(log.stats().max_subscriber_lag, 0);
    }

    #[test]
    fn the_byte_bound_evicts_but_keeps_the_newest_command() {
        let log = Arc::new(EventLog::new(
            EventWindow {
                max_events: 100,
                max_bytes: 8,
            },
            0,
        ));
        log.publish(1, command(1, &["aaa"]));
        log.publish(2, command(2, &["bbb"]));
        let stats = log.stats();
        assert_eq!((stats.retained, stats.retained_bytes), (1, 5));
        log.publish(3, command(3, &["a much longer event than the bound"]));
        assert_eq!(log.stats().retained, 1);
    }

    #[test]
    fn now_skips_what_was_published_before() {
        let log = log(10);
        log.publish(1, command(1, &["old"]));
        log.publish(2, Vec::new());
        let mut sub = log.subscribe_raw(EventsFrom::Now);
        assert_eq!(sub.resume_after(), 2);
        log.publish(3, command(3, &["new"]));
        assert_eq!(text(&mut sub), vec![(3, "\"new\"".into())]);
    }

    #[test]
    fn a_node_started_from_a_snapshot_cannot_serve_what_precedes_it() {
        let log = Arc::new(EventLog::new(EventWindow::default(), 10));
        let mut sub = log.subscribe_raw(EventsFrom::After(9));
        assert_eq!(
            sub.try_next(),
            Err(EventError::Gap {
                after: 9,
                resumable_after: 10
            })
        );
        let mut sub = log.subscribe_raw(EventsFrom::After(10));
        assert_eq!(sub.try_next(), Ok(None));
    }

    #[test]
    fn the_filter_keeps_the_chosen_events_and_still_moves_the_resume_point() {
        let log = log(10);
        let mut sub = log.subscribe(
            EventsFrom::After(0),
            Arc::new(|j: &Arc<str>| Ok(j.to_string())),
            Some(Box::new(|e: &String| e.contains('b'))),
        );
        log.publish(1, command(1, &["a"]));
        log.publish(2, command(2, &["b"]));
        log.publish(3, command(3, &["c"]));
        let first = sub.try_next().unwrap().unwrap();
        assert_eq!((first.index, first.event.as_str()), (2, "\"b\""));
        assert_eq!(sub.try_next(), Ok(None));
        assert_eq!(sub.resume_after(), 3);
    }

    #[test]
    fn a_decode_failure_names_the_event_and_the_subscription_goes_on() {
        let log = log(10);
        let mut sub = log.subscribe(
            EventsFrom::After(0),
            Arc::new(|j: &Arc<str>| serde_json::from_str::<u32>(j).map_err(|e| e.to_string())),
            None,
        );
        log.publish(1, command(1, &["not a number"]));
        log.publish(
            2,
            vec![Event {
                index: 2,
                command_id: CommandId::random(),
                seq: 0,
                last_in_command: true,
                event: Arc::from("7"),
            }],
        );
        assert!(matches!(
            sub.try_next(),
            Err(EventError::Decode {
                index: 1,
                seq: 0,
                ..
            })
        ));
        assert_eq!(sub.try_next().unwrap().map(|e| e.event), Some(7));
    }

    #[tokio::test]
    async fn a_future_index_waits_until_it_is_published() {
        let log = log(10);
        let mut sub = log.subscribe_raw(EventsFrom::After(2));
        let waiting = tokio::spawn(async move { sub.next().await.map(|e| e.index) });
        log.publish(1, command(1, &["a"]));
        log.publish(2, command(2, &["b"]));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        log.publish(3, command(3, &["c"]));
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Ok(3));
    }

    #[tokio::test]
    async fn closing_drains_then_ends() {
        let log = log(10);
        let mut sub = log.subscribe_raw(EventsFrom::After(0));
        log.publish(1, command(1, &["a"]));
        log.close();
        assert_eq!(sub.next().await.map(|e| e.index), Ok(1));
        assert_eq!(sub.next().await, Err(EventError::Closed));
        let mut late = log.subscribe_raw(EventsFrom::Now);
        assert_eq!(late.next().await, Err(EventError::Closed));
    }

    #[tokio::test]
    async fn the_stream_form_yields_the_same_items_and_ends_on_close() {
        use futures::StreamExt;
        let log = log(10);
        let sub = log.subscribe_raw(EventsFrom::After(0));
        log.publish(1, command(1, &["a", "b"]));
        log.close();
        let items: Vec<_> = sub.into_stream().collect().await;
        let indexes: Vec<_> = items.into_iter().map(|i| i.map(|e| e.seq)).collect();
        assert_eq!(indexes, vec![Ok(0), Ok(1)]);
    }

    #[test]
    fn dropping_a_subscription_removes_it_from_the_stats() {
        let log = log(10);
        let sub = log.subscribe_raw(EventsFrom::Now);
        assert_eq!(log.stats().subscribers, 1);
        drop(sub);
        assert_eq!(log.stats().subscribers, 0);
    }
}
