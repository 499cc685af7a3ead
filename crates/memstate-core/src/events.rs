//! Domain events: derived from commands while they are applied, handed out
//! once their effect is visible.
//!
//! The log holds commands only. A command calls [`CommandContext::emit`]
//! while it is applied; every node applies the same commands in the same
//! order, so every node derives the same events in the same order — nothing
//! extra is written to the stream. The events of a command are kept only when
//! the command succeeds: a command that returns an error, is fenced, is
//! rolled back, is skipped or panics emits nothing.
//!
//! Each node keeps a **retained window** of recent events, bounded by count
//! and bytes ([`EventWindow`]). Subscriptions read from that window, each at
//! its own position, so applying never waits for a subscriber: a subscriber
//! that falls so far behind that its next event has left the window gets
//! [`EventError::Gap`], naming what it missed — never a silent hole.
//!
//! Every event carries the applied index of its command, the one token that
//! means the same on every node: a subscriber that remembers the last index it
//! handled resumes after it, on this node or on another one.
//!
//! [`CommandContext::emit`]: crate::model::CommandContext::emit

mod window;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::CommandId;
use crate::model::Model;

pub(crate) use window::EventLog;
pub use window::EventSubscription;

/// A model that publishes typed events.
///
/// Why a separate trait rather than an associated type on [`Model`]: stable
/// Rust has no defaults for associated types, so adding `type Event` to
/// `Model` would make every existing model fail to compile until it declares
/// one. Events are serialized when they are emitted anyway (an event that
/// cannot be serialized must fail its command identically on every node, the
/// retained window is bounded in bytes, and remote subscribers receive JSON),
/// so the type matters at the two ends only: here it names what
/// [`Engine::events`](crate::Engine::events) decodes into, and the model
/// emits values of it. A model without events implements nothing more;
/// [`Engine::raw_events`](crate::Engine::raw_events) serves any model as JSON.
///
/// # Examples
///
/// ```
/// use memstate_core::{CommandContext, EventModel, Model};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default)]
/// struct Counter(u64);
///
/// #[derive(Serialize, Deserialize)]
/// struct Add(u64);
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     Crossed { hundreds: u64 },
/// }
///
/// impl Model for Counter {
///     type Command = Add;
///     type Output = u64;
///     type Error = String;
///
///     fn apply(&mut self, cmd: Add, ctx: &mut CommandContext<'_>) -> Result<u64, String> {
///         let new = self.0.checked_add(cmd.0).ok_or("overflow")?;
///         if new / 100 > self.0 / 100 {
///             ctx.emit(CounterEvent::Crossed { hundreds: new / 100 });
///         }
///         self.0 = new;
///         Ok(new)
///     }
/// }
///
/// impl EventModel for Counter {
///     type Event = CounterEvent;
/// }
/// ```
pub trait EventModel: Model {
    /// What the model's commands emit.
    type Event: Serialize + DeserializeOwned + Send + 'static;
}

/// One event, with the command that emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<E> {
    /// The applied index of the command that emitted it: the same on every
    /// node. All events of one command share it.
    pub index: u64,
    /// The command that emitted it.
    pub command_id: CommandId,
    /// Its place among the events of its command, from 0.
    pub seq: u32,
    /// Whether it is the command's last event. A subscriber that stops after
    /// it has seen the whole command and may resume after `index`.
    pub last_in_command: bool,
    /// The event.
    pub event: E,
}

/// An event as the engine keeps it: its JSON text.
pub type RawEvent = Event<Arc<str>>;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventsFrom {
    /// The events of commands applied from now on.
    Now,
    /// The events of every command whose applied index is greater than the
    /// given one: pass the last index you handled to resume without a gap
    /// and without a repeat. An index this node has not reached yet waits
    /// for it; one whose successors are no longer retained is
    /// [`EventError::Gap`].
    After(u64),
}

/// How many events a node retains for subscribers to resume from and to
/// catch up with, by count and by bytes (of their JSON). The oldest leave
/// first; the newest command's events always stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWindow {
    /// At most this many events.
    pub max_events: usize,
    /// At most this many bytes of event JSON.
    pub max_bytes: usize,
}

impl Default for EventWindow {
    /// 10,000 events or 16 MiB, whichever is reached first.
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A moment's view of a node's events, part of [`Stats`](crate::Stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStats {
    /// Events in the retained window.
    pub retained: usize,
    /// Bytes of JSON they hold.
    pub retained_bytes: usize,
    /// The oldest index a subscription can resume after: the events of every
    /// command after it are retained (at start, the index this node started
    /// from — its snapshot's, or 0).
    pub resumable_after: u64,
    /// The applied index up to which events have been handed out.
    pub published_through: u64,
    /// Events derived on this node since it started.
    pub emitted: u64,
    /// Open subscriptions.
    pub subscribers: usize,
    /// Events the furthest-behind subscription has not yet taken.
    pub max_subscriber_lag: u64,
    /// Gaps reported to subscribers (a resume point before the window, or a
    /// subscriber overtaken by the window).
    pub gaps_reported: u64,
}

/// Why a subscription could not yield the next event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Events after `after` are no longer retained on this node: the
    /// subscription asked to resume before the window, or fell so far behind
    /// that the window moved past it. The subscription continues with the
    /// events after `resumable_after`; whatever lies between is lost to it.
    /// Rebuild what you derive from events from a query (or time travel) at
    /// `resumable_after` or later, then continue.
    #[error(
        "events after index {after} are no longer retained on this node; the oldest index a subscription can resume after is {resumable_after} (rebuild from a read at or after it, then resume)"
    )]
    Gap {
        /// The index the subscriber had handled everything up to.
        after: u64,
        /// The oldest index it can resume after; the subscription continues from there.
        resumable_after: u64,
    },
    /// An event did not decode as the subscriber's event type (a model that
    /// emits values of another type than its [`EventModel::Event`]). The
    /// subscription continues with the next event.
    #[error("the event {seq} of command {command_id} at index {index} does not decode: {reason}")]
    Decode {
        /// The command's applied index.
        index: u64,
        /// The command.
        command_id: CommandId,
        /// The event's place among the command's events.
        seq: u32,
        /// The decoder's message.
        reason: String,
    },
    /// The engine stopped (shut down or halted) and every retained event has
    /// been handed out.
    #[error("the engine stopped; no more events")]
    Closed,
}

/// Events emitted by one command while it is applied, already serialized.
#[derive(Default)]
pub(crate) struct Emitted {
    pub(crate) events: Vec<Arc<str>>,
    /// The first serialization failure: it fails the command.
    pub(crate) failure: Option<String>,
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitted")
            .field("events", &self.events.len())
            .field("failure", &self.failure)
            .finish()
    }
}

impl Emitted {
    pub(crate) fn push(&mut self, event: impl Serialize) -> Result<(), serde_json::Error> {
        match serde_json::to_string(&event) {
            Ok(json) => {
                self.events.push(Arc::from(json));
                Ok(())
            }
            Err(e) => {
                if self.failure.is_none() {
                    self.failure = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// The command's events as they are published.
    pub(crate) fn into_raw(self, index: u64, command_id: CommandId) -> Vec<RawEvent> {
        let count = self.events.len();
        self.events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Event {
                index,
                command_id,
                seq: u32::try_from(i).unwrap_or(u32::MAX),
                last_in_command: i + 1 == count,
                event,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::ser::Error as _;

    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("this event refuses to serialize"))
        }
    }

    #[test]
    fn a_command_s_events_share_its_index_and_the_last_is_marked() {
        let mut emitted = Emitted::default();
        emitted.push("a").unwrap();
        emitted.push(2).unwrap();
        let id = CommandId::random();
        let raw = emitted.into_raw(7, id);
        assert_eq!(raw.len(), 2);
        assert_eq!(
            (raw[0].index, raw[0].seq, raw[0].last_in_command),
            (7, 0, false)
        );
        assert_eq!(
            (raw[1].index, raw[1].seq, raw[1].last_in_command),
            (7, 1, true)
        );
        assert_eq!(&*raw[0].event, "\"a\"");
        assert!(raw.iter().all(|e| e.command_id == id));
    }

    #[test]
    fn a_serialization_failure_is_kept_not_panicked() {
        let mut emitted = Emitted::default();
        emitted.push(1).unwrap();
        assert!(emitted.push(Unserializable).is_err());
        emitted.push(2).unwrap();
        assert_eq!(
            emitted.failure.as_deref(),
            Some("this event refuses to serialize")
        );
    }
}
