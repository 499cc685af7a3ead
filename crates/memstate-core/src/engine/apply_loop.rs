//! The apply loop: one task reads the subscription and applies every record.
//!
//! It owns the model's write side and the replicated state ([`Applied`]); the
//! decisions themselves are in `apply.rs` ([`Applier`]), which is
//! deterministic and knows nothing of tasks or locks. After each record the
//! loop publishes the new progress (what reads wait on), resolves the callers
//! whose envelopes it applied, tells the leadership driver about signs of
//! life, and lets the snapshot policy take a snapshot.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::Node;
use super::apply::{Applier, Counters, Outcomes};
use super::replicated::Replicated;
use crate::error::HaltReason;
use crate::events::{EventLog, EventWindow};
use crate::model::Model;
use crate::skip::SkipList;
use crate::stream::{Cursor, Record, StreamError, Subscription};

/// How far the apply loop has got: what reads wait on.
#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    pub(super) applied_index: u64,
    pub(super) cursor: Option<Cursor>,
}

impl Progress {
    fn of(state: &Replicated) -> Self {
        Self {
            applied_index: state.applied_index,
            cursor: state.cursor.clone(),
        }
    }
}

/// The model and everything the apply loop advances beside it.
pub(super) struct Applied<M: Model> {
    pub(super) model: RwLock<M>,
    /// Replicated beside the model: identical on every node at one index.
    pub(super) state: Mutex<Replicated>,
    /// This node's reading counters (not replicated).
    pub(super) counters: Mutex<Counters>,
    /// Published after every record.
    pub(super) progress: watch::Sender<Progress>,
    /// Operator's skip list (configured on every node alike).
    pub(super) skip: SkipList,
    /// The events derived here, handed out after each record.
    pub(super) events: Arc<EventLog>,
}

impl<M: Model> Applied<M> {
    /// The state a node starts from (restored from a snapshot or empty).
    pub(super) fn new(model: M, state: Replicated, skip: SkipList, window: EventWindow) -> Self {
        Self {
            // Events are derived from what this node applies: none before its start.
            events: Arc::new(EventLog::new(window, state.applied_index)),
            progress: watch::channel(Progress::of(&state)).0,
            model: RwLock::new(model),
            state: Mutex::new(state),
            counters: Mutex::new(Counters::default()),
            skip,
        }
    }

    /// Wakes everyone waiting on progress (after a change of status).
    pub(super) fn wake_readers(&self) {
        self.progress.send_modify(|_| {});
    }

    /// The cursor of the last record applied.
    pub(super) fn cursor(&self) -> Option<Cursor> {
        self.state.lock().cursor.clone()
    }
}

impl<M: Model> Node<M> {
    /// Applies one record under the locks, publishes progress, then the
    /// record's events (their effect is visible by now), then resolves the
    /// waiters. `Err` halts the engine.
    fn apply_record(&self, record: Record) -> Result<(), HaltReason> {
        let mut outcomes: Outcomes<M> = Vec::new();
        let mut events = Vec::new();
        let (result, applied_index) = {
            let applied = &self.applied;
            let mut state = applied.state.lock();
            let mut counters = applied.counters.lock();
            let mut model = applied.model.write();
            let mut applier = Applier {
                stream: self.info.stream.as_ref(),
                node_id: &self.info.node_id,
                local_settings: &self.info.settings,
                skip: &applied.skip,
                state: &mut state,
                counters: &mut counters,
                model: &mut *model,
                outcomes: &mut outcomes,
                events: &mut events,
            };
            let result = applier.apply_record(record);
            self.leader_watch.observe(counters.leader_signals);
            drop(model);
            applied.progress.send_replace(Progress::of(&state));
            (result, state.applied_index)
        };
        self.applied.events.publish(applied_index, events);
        self.submitter.resolve(outcomes);
        result
    }
}

/// Closes the event log when the apply loop ends.
struct CloseOnDrop(Arc<EventLog>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Errors after which resubscribing cannot help.
fn is_fatal(error: &StreamError) -> bool {
    matches!(
        error,
        StreamError::Corrupt { .. }
            | StreamError::HistoryTruncated { .. }
            | StreamError::InvalidCursor { .. }
            | StreamError::NotFound { .. }
            | StreamError::Misconfigured { .. }
    )
}

/// Reads and applies until shutdown, a halt, or the stream's end.
/// A failing subscription is resumed after the last applied record, with
/// back-off, a bounded number of times in a row.
pub(super) async fn apply_loop<M: Model>(
    node: Arc<Node<M>>,
    mut subscription: Box<dyn Subscription>,
) {
    // However the loop ends, no more events will come: subscriptions drain and end.
    let _close_events = CloseOnDrop(Arc::clone(&node.applied.events));
    let mut shutdown = node.submitter.shutdown.subscribe();
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            next = subscription.next() => next,
        };
        match next {
            Ok(Some(record)) => {
                failures = 0;
                let bytes = record.payload.len();
                if let Err(reason) = node.apply_record(record) {
                    node.halt(reason);
                    return;
                }
                node.after_record(bytes);
            }
            Ok(None) => {
                tracing::info!(node = %node.info.node_id, "stream closed; engine stops");
                node.begin_shutdown();
                return;
            }
            Err(error) => {
                if is_fatal(&error) || failures >= node.info.config.resubscribe_attempts {
                    node.halt(HaltReason::StreamFailed(error.to_string()));
                    return;
                }
                failures += 1;
                tracing::warn!(node = %node.info.node_id, %error, attempt = failures, "subscription failed; resubscribing");
                let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match node.info.stream.subscribe(node.applied.cursor()).await {
                    Ok(s) => subscription = s,
                    Err(e) => {
                        tracing::warn!(node = %node.info.node_id, error = %e, "resubscription failed")
                    }
                }
            }
        }
    }
}
