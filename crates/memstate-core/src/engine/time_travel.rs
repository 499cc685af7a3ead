//! Time travel: the model as it was at an applied index or a moment, rebuilt
//! from the nearest snapshot at or before that point and the log after it.
//!
//! It applies the log with the engine's own [`Applier`], so de-duplication,
//! fencing, skips and safe mode decide exactly as they did on every node. It
//! only reads: one new subscription, no append, nothing shared with a running
//! engine on the same stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply::{Applier, Counters};
use super::replicated::Replicated;
use super::snapshots::{self, SnapshotBound, SnapshotHooks};
use crate::envelope::{CommandId, NodeId};
use crate::error::Error;
use crate::model::Model;
use crate::settings::Settings;
use crate::skip::{RecordSkip, SkipList};
use crate::snapshot::{SnapshotPolicy, SnapshotStore};
use crate::stream::Stream;

/// The point in the log to travel to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the envelope with this applied index (the index
    /// [`Executed::index`](crate::Executed::index) and events carry).
    Index(u64),
    /// Right before the first envelope stamped later than this moment (by
    /// its origin's clock, as logged).
    Time(SystemTime),
}

/// The model as it was at a point of the log: a value, detached from any engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PastState<M> {
    /// The model.
    pub model: M,
    /// The applied index it reflects.
    pub applied_index: u64,
    /// The applied index of the snapshot it was rebuilt from, if any.
    pub restored_from: Option<u64>,
    /// The timestamp (ms since the Unix epoch, origin clock) of the last
    /// envelope applied after the snapshot, if any.
    pub last_applied_ms: Option<u64>,
}

/// Rebuilds a past state of a stream's model: restores the newest snapshot at
/// or before the point, replays the log after it under the engine's rules, and
/// stops at the point. Only reads the stream: engines using it are not disturbed.
///
/// # Examples
///
/// ```
/// # use memstate_core::{CommandContext, Model, MemoryStream, EngineBuilder, AsOf, TimeTravel, Stream};
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # #[derive(Clone, Default, Serialize, Deserialize)] struct Counter(u64);
/// # #[derive(Serialize, Deserialize)] struct Add(u64);
/// # impl Model for Counter {
/// #     type Command = Add; type Output = u64; type Error = String;
/// #     fn apply(&mut self, c: Add, _: &mut CommandContext<'_>) -> Result<u64, String> { self.0 += c.0; Ok(self.0) }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let stream = MemoryStream::new();
/// let engine = EngineBuilder::new(Counter::default(), stream.clone()).start().await?;
/// let first = engine.execute(Add(2)).await?;
/// engine.execute(Add(3)).await?;
/// let shared: Arc<dyn Stream> = Arc::new(stream);
/// let past = TimeTravel::new(Counter::default(), shared).as_of(AsOf::Index(first.index)).await?;
/// assert_eq!(past.model.0, 2);
/// engine.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct TimeTravel<M: Model> {
    initial: M,
    stream: Arc<dyn Stream>,
    settings: Settings,
    skip: SkipList,
    snapshots: Option<SnapshotHooks<M>>,
    timeout: Duration,
}

impl<M: Model + Serialize + DeserializeOwned> TimeTravel<M> {
    /// Travels over `stream`, whose log starts from `initial`.
    pub fn new(initial: M, stream: Arc<dyn Stream>) -> Self {
        Self {
            initial,
            stream,
            settings: Settings::default(),
            skip: SkipList::default(),
            snapshots: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Starts from the newest snapshot in `store` at or before the point
    /// (any node's store of this stream will do).
    pub fn snapshots(self, store: impl SnapshotStore) -> Self {
        self.shared_snapshots(Arc::new(store))
    }

    pub(super) fn shared_snapshots(mut self, store: Arc<dyn SnapshotStore>) -> Self {
        self.snapshots = Some(SnapshotHooks::new(store, SnapshotPolicy::on_demand()));
        self
    }
}

impl<M: Model> TimeTravel<M> {
    /// The stream's settings (as its nodes are configured).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The operator's skip list, as configured on the stream's nodes.
    pub fn skip_commands(mut self, ids: impl IntoIterator<Item = CommandId>) -> Self {
        self.skip.commands.extend(ids);
        self
    }

    /// The records the stream's nodes pass over
    /// ([`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records)).
    pub fn skip_records(mut self, records: impl IntoIterator<Item = RecordSkip>) -> Self {
        self.skip.add_records(records);
        self
    }

    /// How long to wait for the log to reach the point (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rebuilds the model as of `at`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the log does not reach the point within the
    /// timeout (an index not yet written; a moment no envelope is stamped
    /// after yet); [`Error::Halted`] when the log cannot be applied (settings
    /// that differ, a missing beginning, a bad record under the halt policy);
    /// snapshot and stream errors.
    pub async fn as_of(self, at: AsOf) -> Result<PastState<M>, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let at_ms = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        let bound = match at {
            AsOf::Index(i) => SnapshotBound::Index(i),
            AsOf::Time(t) => SnapshotBound::TakenBy(at_ms(t)),
        };
        let restored =
            snapshots::restore_bounded(self.snapshots.as_ref(), &self.settings, bound).await?;
        let restored_from = restored.as_ref().map(|(_, state)| state.applied_index);
        let (mut model, mut state) =
            restored.unwrap_or_else(|| (self.initial, Replicated::default()));
        // A moment may lie after the whole log: where the stream can say
        // exactly where it ends, that end is the answer.
        let head = match at {
            AsOf::Time(_) if self.stream.capabilities().exact_head => self.stream.head().await?,
            _ => None,
        };
        let stream = self.stream.as_ref();
        let done = |state: &Replicated| match at {
            AsOf::Index(i) => state.applied_index >= i,
            AsOf::Time(_) => match (&head, &state.cursor) {
                (None, _) => stream.capabilities().exact_head,
                (Some(head), Some(at)) => stream
                    .compare_cursors(at, head)
                    .is_ok_and(|o| o != std::cmp::Ordering::Less),
                (Some(_), None) => false,
            },
        };
        let mut last_applied_ms = None;
        if !done(&state) {
            let mut subscription = stream.subscribe(state.cursor.clone()).await?;
            let mut counters = Counters::default();
            let past_node = NodeId::new("time-travel");
            let (mut outcomes, mut events) = (Vec::new(), Vec::new());
            loop {
                let record = match tokio::time::timeout_at(deadline, subscription.next()).await {
                    Ok(Ok(Some(record))) => record,
                    Ok(Ok(None)) => return Err(Error::Stream(crate::stream::StreamError::Closed)),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(Error::Timeout {
                            waiting_for: match at {
                                AsOf::Index(i) => format!(
                                    "applied index {i} in {} (it holds at least {} envelopes)",
                                    stream.describe(),
                                    state.applied_index
                                ),
                                AsOf::Time(_) => format!(
                                    "an envelope stamped after the requested time in {}",
                                    stream.describe()
                                ),
                            },
                            after: self.timeout,
                        });
                    }
                };
                let mut applier = Applier {
                    stream,
                    // No waiters here: replayed outcomes are discarded.
                    node_id: &past_node,
                    local_settings: &self.settings,
                    skip: &self.skip,
                    state: &mut state,
                    counters: &mut counters,
                    model: &mut model,
                    outcomes: &mut outcomes,
                    events: &mut events,
                };
                let stopped = applier
                    .apply_record_until(record, &mut |envelope, index| {
                        let stop = match at {
                            AsOf::Index(i) => index > i,
                            AsOf::Time(t) => envelope.ts > at_ms(t),
                        };
                        if !stop {
                            last_applied_ms = Some(envelope.ts);
                        }
                        stop
                    })
                    .map_err(Error::Halted)?;
                // Results and events of the past are of no one's concern.
                outcomes.clear();
                events.clear();
                if stopped || done(&state) {
                    break;
                }
            }
        }
        Ok(PastState {
            model,
            applied_index: state.applied_index,
            restored_from,
            last_applied_ms,
        })
    }
}
