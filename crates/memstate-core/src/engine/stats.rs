//! What an engine reports about itself: its life cycle and a moment's view.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Node;
use super::replicated::Leadership;
use super::snapshots::SnapshotStats;
use super::tail::Lag;
use crate::envelope::NodeId;
use crate::error::HaltReason;
use crate::events::EventStats;
use crate::model::Model;
use crate::settings::Settings;
use crate::stream::Cursor;

/// Where an engine is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Replaying the log; not yet serving.
    Starting,
    /// Serving.
    Running,
    /// Stopped applying for the given reason; every call fails.
    Halted(HaltReason),
    /// Shut down.
    Stopped,
}

/// A moment's view of an engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// This node.
    pub node_id: NodeId,
    /// Where it is in its life.
    pub status: Status,
    /// How many envelopes it has applied (the same on every node for the same log prefix).
    pub applied_index: u64,
    /// The cursor of the last record applied.
    pub cursor: Option<Cursor>,
    /// How long ago this node was last known to have applied everything the
    /// stream held (by its own clock): the age [`Consistency::BoundedStaleness`](crate::Consistency::BoundedStaleness)
    /// compares with its bound.
    pub caught_up_age: Option<Duration>,
    /// The last tail of the stream this node learned: the exact head, or
    /// where its own marker landed.
    pub known_tail: Option<Cursor>,
    /// How long ago it learned that tail.
    pub known_tail_age: Option<Duration>,
    /// Whether it has applied up to that tail.
    pub lag: Lag,
    /// Envelopes dropped because their command id had been applied before.
    pub duplicates_dropped: u64,
    /// Records read again (same cursor) and ignored.
    pub redeliveries_dropped: u64,
    /// Records or commands skipped under the `Skip` bad-record policy.
    pub bad_records_skipped: u64,
    /// Commands applied (including those that returned a domain error).
    pub commands_applied: u64,
    /// Command ids in the de-duplication window.
    pub dedup_window_len: usize,
    /// The de-duplication window's accounted bytes (bounded by
    /// [`DedupWindow::max_bytes`](crate::DedupWindow::max_bytes)).
    pub dedup_window_bytes: u64,
    /// Leadership as the log decides it (epoch and leader).
    pub leadership: Leadership,
    /// Whether this node is the leader, as far as it has applied the log.
    pub is_leader: bool,
    /// How long ago, on this node's clock, it applied the last accepted
    /// claim or heartbeat of the current leader; `None` if it never has.
    pub leader_silence: Option<Duration>,
    /// Commands refused at apply time because they did not come from the
    /// current leader in the current epoch (the same on every node).
    pub commands_fenced: u64,
    /// The settings of the stream (from its Genesis record).
    pub settings: Option<Settings>,
    /// Snapshots restored and taken.
    pub snapshots: SnapshotStats,
    /// The retained window of events and how far behind its subscribers are.
    pub events: EventStats,
    /// Appends the writer allows in flight now: its window, sized to the
    /// stream's latency (see [`EngineBuilder::max_in_flight_appends`](crate::EngineBuilder::max_in_flight_appends)).
    pub appends_in_flight_limit: usize,
    /// Appends in flight now (as the writer last counted them).
    pub appends_in_flight: usize,
}

impl<M: Model> Node<M> {
    /// A moment's view of this node.
    pub(super) fn stats(&self) -> Stats {
        let state = self.applied.state.lock();
        let counters = self.applied.counters.lock().clone();
        let tail = self.reads.tail.lock();
        Stats {
            node_id: self.info.node_id.clone(),
            status: self.submitter.status.borrow().clone(),
            applied_index: state.applied_index,
            cursor: state.cursor.clone(),
            caught_up_age: tail.caught_up_age(),
            known_tail: tail.known().map(|(cursor, _)| cursor),
            known_tail_age: tail.known().map(|(_, age)| age),
            lag: tail.lag(state.cursor.as_ref(), self.info.stream.as_ref()),
            duplicates_dropped: counters.duplicates_dropped,
            redeliveries_dropped: counters.redeliveries_dropped,
            bad_records_skipped: counters.bad_records_skipped,
            commands_applied: counters.commands_applied,
            dedup_window_len: state.dedup.len(),
            dedup_window_bytes: state.dedup.bytes(),
            leadership: state.leadership.clone(),
            is_leader: state.leadership.leader.as_ref() == Some(&self.info.node_id),
            leader_silence: self.leader_watch.last_signal_age(),
            commands_fenced: counters.commands_fenced,
            settings: state.genesis.clone(),
            snapshots: self.snapshots.stats(),
            events: self.applied.events.stats(),
            appends_in_flight_limit: self.submitter.gauge.limit.load(Ordering::Relaxed),
            appends_in_flight: self.submitter.gauge.in_flight.load(Ordering::Relaxed),
        }
    }
}
