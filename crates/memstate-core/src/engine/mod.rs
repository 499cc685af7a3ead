//! The [`Engine`]: executes commands through the stream and serves queries.
//!
//! A command travels like this: [`Engine::execute`] wraps it in an envelope and
//! hands it to the writer, which packs whatever is waiting into one frame and
//! appends it (group commit). The apply loop reads every record back from the
//! subscription, decodes the frame, drops duplicates, applies each command to
//! the model, and resolves the caller that waits for it. Nothing is applied
//! before the stream has it: the stream's order is the only order.

mod apply;
mod leadership;
mod reads;
mod snapshots;
mod tail;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadership::LeaderWatch;
use tail::TailKnowledge;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use apply::Leadership;
use apply::{Applier, Completion, Counters, Outcomes, Replicated};
pub use leadership::LeadershipConfig;
pub use snapshots::SnapshotStats;
use snapshots::{SnapshotHooks, SnapshotProgress};
pub use tail::Lag;

use crate::consistency::Consistency;
use crate::envelope::{
    Body, CommandId, Control, Envelope, FRAME_OVERHEAD, NodeId, encode_envelope,
};
use crate::error::{Error, ExecuteError, HaltReason};
use crate::model::Model;
use crate::settings::{Settings, WriteMode};
use crate::snapshot::{SnapshotMeta, SnapshotPolicy, SnapshotStore};
use crate::stream::{Cursor, Stream, StreamError, Subscription};

/// What a successful command returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed<T> {
    /// The model's output.
    pub output: T,
    /// The command's applied index: the same on every node. Pass it as
    /// [`Consistency::AtLeast`] to read this write on another node.
    pub index: u64,
}

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
    /// stream held (by its own clock): the age [`Consistency::BoundedStaleness`]
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
}

#[derive(Clone, Debug, Default)]
struct Progress {
    applied_index: u64,
    cursor: Option<Cursor>,
}

/// Tunables that stay local to a node (not replicated).
#[derive(Clone, Debug)]
struct LocalConfig {
    execute_timeout: Duration,
    read_timeout: Duration,
    startup_timeout: Duration,
    append_timeout: Duration,
    max_in_flight_appends: usize,
    max_frame_bytes: usize,
    queue_capacity: usize,
    resubscribe_attempts: u32,
    leadership: Option<LeadershipConfig>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            execute_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(600),
            append_timeout: Duration::from_secs(60),
            max_in_flight_appends: 32,
            max_frame_bytes: usize::MAX,
            queue_capacity: 16 * 1024,
            resubscribe_attempts: 5,
            leadership: None,
        }
    }
}

pub(crate) struct Submission {
    id: CommandId,
    bytes: Vec<u8>,
}

struct Shared<M: Model> {
    node_id: NodeId,
    stream: Arc<dyn Stream>,
    settings: Settings,
    skip: HashSet<CommandId>,
    config: LocalConfig,
    frame_limit: usize,
    exact_head: bool,
    model: RwLock<M>,
    state: Mutex<Replicated>,
    counters: Mutex<Counters>,
    waiters: Mutex<HashMap<CommandId, oneshot::Sender<Completion<M>>>>,
    progress: watch::Sender<Progress>,
    status: watch::Sender<Status>,
    shutdown: watch::Sender<bool>,
    submit: mpsc::Sender<Submission>,
    last_write: AtomicU64,
    tail: Mutex<TailKnowledge>,
    leader_watch: LeaderWatch,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    snapshots: Option<SnapshotHooks<M>>,
    snapshot_progress: snapshots::Progress,
}

/// Shuts the engine down when the last user-facing handle is dropped.
struct ShutdownOnDrop<M: Model> {
    shared: Arc<Shared<M>>,
}

impl<M: Model> Drop for ShutdownOnDrop<M> {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// Builds and starts an [`Engine`].
///
/// # Examples
///
/// ```
/// # use memstate_core::{CommandContext, Model, MemoryStream, EngineBuilder, Consistency};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Default)] struct Counter(u64);
/// # #[derive(Serialize, Deserialize)] struct Add(u64);
/// # impl Model for Counter {
/// #     type Command = Add; type Output = u64; type Error = String;
/// #     fn apply(&mut self, c: Add, _: &mut CommandContext<'_>) -> Result<u64, String> { self.0 += c.0; Ok(self.0) }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let stream = MemoryStream::new();
/// let engine = EngineBuilder::new(Counter::default(), stream).start().await?;
/// let done = engine.execute(Add(2)).await?;
/// assert_eq!(done.output, 2);
/// let value = engine.query(Consistency::ReadYourWrites, |c| c.0).await?;
/// assert_eq!(value, 2);
/// engine.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct EngineBuilder<M: Model> {
    model: M,
    stream: Arc<dyn Stream>,
    node_id: Option<NodeId>,
    settings: Settings,
    skip: HashSet<CommandId>,
    config: LocalConfig,
    snapshots: Option<SnapshotHooks<M>>,
}

impl<M: Model + serde::Serialize + serde::de::DeserializeOwned> EngineBuilder<M> {
    /// Keeps snapshots of this node in `store`, taken by `policy` and on
    /// demand ([`Engine::snapshot`]). At start the newest valid snapshot is
    /// restored and only the log after it is replayed; a corrupt one is
    /// reported and an older one used; with none valid, the whole log is replayed.
    pub fn snapshots(mut self, store: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(SnapshotHooks::new(Arc::new(store), policy));
        self
    }
}

impl<M: Model> EngineBuilder<M> {
    /// An engine for `model` (its initial state) over `stream`.
    pub fn new(model: M, stream: impl Stream) -> Self {
        Self::with_shared_stream(model, Arc::new(stream))
    }

    /// Like [`EngineBuilder::new`] with a stream shared by several engines.
    pub fn with_shared_stream(model: M, stream: Arc<dyn Stream>) -> Self {
        Self {
            model,
            stream,
            node_id: None,
            settings: Settings::default(),
            skip: HashSet::new(),
            config: LocalConfig::default(),
            snapshots: None,
        }
    }

    /// This node's id (default: a random UUID). Must be unique per stream.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(NodeId::new(id));
        self
    }

    /// The replicated settings; they must match the stream's Genesis record.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Command ids that are not applied (to get past a poison command).
    /// Configure every node alike.
    pub fn skip_commands(mut self, ids: impl IntoIterator<Item = CommandId>) -> Self {
        self.skip.extend(ids);
        self
    }

    /// How long `execute` waits for its command to come back (default 30 s).
    pub fn execute_timeout(mut self, timeout: Duration) -> Self {
        self.config.execute_timeout = timeout;
        self
    }

    /// How long a query waits for its consistency level (default 30 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// How long `start` may take to replay the log (default 10 min).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.config.startup_timeout = timeout;
        self
    }

    /// A backstop on each append, beyond the adapter's own timeouts (default 60 s).
    pub fn append_timeout(mut self, timeout: Duration) -> Self {
        self.config.append_timeout = timeout;
        self
    }

    /// Appends allowed in flight at once (default 32: a remote backend with a
    /// few milliseconds per append needs many in flight to keep up; the file
    /// journal shares fsyncs among them). While all are busy,
    /// waiting commands accumulate into the next frame.
    pub fn max_in_flight_appends(mut self, n: usize) -> Self {
        self.config.max_in_flight_appends = n.max(1);
        self
    }

    /// Caps a frame's size below the stream's record limit.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.max_frame_bytes = bytes;
        self
    }

    /// Commands that may wait for the writer before `execute` waits for room.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n.max(1);
        self
    }

    /// Takes part in leader election (single-leader mode only): heartbeats
    /// while leading, claims the next epoch after the leader's silence. Without
    /// it, leadership changes only through [`Engine::claim_leadership`].
    pub fn leadership(mut self, config: LeadershipConfig) -> Self {
        self.config.leadership = Some(config);
        self
    }

    /// Replays the stream, then serves. Appends a Genesis record (this node's
    /// settings) and returns once it has read that record back, so every
    /// record written before the call is applied when it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Halted`] when the stream's Genesis settings differ from this
    /// node's, when the log does not start at its beginning, or when a record
    /// cannot be read under the stream's rules; stream errors; a timeout.
    pub async fn start(self) -> Result<Engine<M>, Error> {
        let caps = self.stream.capabilities();
        let frame_limit = caps.max_record_size.min(self.config.max_frame_bytes);
        if frame_limit <= FRAME_OVERHEAD {
            return Err(Error::Config(format!(
                "a frame limit of {frame_limit} bytes cannot hold any command"
            )));
        }
        if let Some(leadership) = &self.config.leadership {
            leadership.validate(self.settings.write_mode)?;
        }
        let startup_timeout = self.config.startup_timeout;
        let mut model = self.model;
        let mut replicated = Replicated::default();
        let mut snapshot_progress = SnapshotProgress::default();
        if let Some(hooks) = &self.snapshots {
            let rejected = &mut snapshot_progress.stats.rejected_at_start;
            match snapshots::restore(hooks, &self.settings, rejected).await? {
                Some(restored) => {
                    tracing::info!(applied_index = restored.meta.applied_index, cursor = ?restored.meta.cursor, "restored a snapshot; replaying the log after it");
                    model = restored.model;
                    replicated = restored.replicated;
                    snapshot_progress.index_at_last = restored.meta.applied_index;
                    snapshot_progress.stats.restored_from = Some(restored.meta);
                }
                None => tracing::info!("no usable snapshot; replaying the whole log"),
            }
        }
        let after = replicated.cursor.clone();
        let initial_progress = Progress {
            applied_index: replicated.applied_index,
            cursor: replicated.cursor.clone(),
        };
        let subscription = tokio::time::timeout(startup_timeout, self.stream.subscribe(after))
            .await
            .map_err(|_| Error::Timeout {
                waiting_for: format!("a subscription to {}", self.stream.describe()),
                after: startup_timeout,
            })??;
        let (submit, queue) = mpsc::channel(self.config.queue_capacity);
        let shared = Arc::new(Shared {
            node_id: self.node_id.unwrap_or_else(NodeId::random),
            stream: self.stream,
            settings: self.settings,
            skip: self.skip,
            config: self.config,
            frame_limit,
            exact_head: caps.exact_head,
            model: RwLock::new(model),
            state: Mutex::new(replicated),
            counters: Mutex::new(Counters::default()),
            waiters: Mutex::new(HashMap::new()),
            progress: watch::channel(initial_progress).0,
            status: watch::channel(Status::Starting).0,
            shutdown: watch::channel(false).0,
            submit,
            last_write: AtomicU64::new(0),
            tail: Mutex::new(TailKnowledge::default()),
            leader_watch: LeaderWatch::new(),
            tasks: Mutex::new(Vec::new()),
            snapshots: self.snapshots,
            snapshot_progress: Mutex::new(snapshot_progress),
        });
        let apply_task = tokio::spawn(apply_loop(Arc::clone(&shared), subscription));
        let writer_task = tokio::spawn(writer::writer_loop(
            writer::WriterContext {
                stream: Arc::clone(&shared.stream),
                frame_limit,
                max_in_flight: shared.config.max_in_flight_appends,
                append_timeout: shared.config.append_timeout,
                shutdown: shared.shutdown.subscribe(),
            },
            queue,
            {
                let shared = Arc::clone(&shared);
                move |ids: Vec<CommandId>, error: Error| shared.fail_all(ids, &error)
            },
        ));
        shared.tasks.lock().extend([apply_task, writer_task]);
        let engine = Engine {
            guard: Arc::new(ShutdownOnDrop {
                shared: Arc::clone(&shared),
            }),
            shared,
        };
        let started = tokio::time::Instant::now();
        let marker = engine.shared.envelope(Body::Control(Control::Genesis(
            engine.shared.settings.clone(),
        )));
        match engine.shared.submit(marker, startup_timeout).await {
            Ok(Completion::Applied { .. }) => {
                engine.shutdown().await;
                return Err(Error::Config(
                    "the start marker resolved as a command".into(),
                ));
            }
            Ok(Completion::Marker { index, .. }) => {
                tracing::debug!(index, "read this node's start marker back");
            }
            Ok(Completion::Failed(e)) | Err(e) => {
                engine.shutdown().await;
                return Err(e);
            }
        }
        engine.shared.tail.lock().caught_up(started);
        engine.shared.status.send_if_modified(|s| {
            if *s == Status::Starting {
                *s = Status::Running;
                true
            } else {
                false
            }
        });
        engine.shared.check_running()?;
        if let Some(config) = engine.shared.config.leadership.clone() {
            let driver = tokio::spawn(leadership::drive(Arc::clone(&engine.shared), config));
            engine.shared.tasks.lock().push(driver);
        }
        tracing::info!(node = %engine.shared.node_id, stream = %engine.shared.stream.describe(), applied_index = engine.shared.progress.borrow().applied_index, "engine started");
        Ok(engine)
    }
}

/// A running engine: a cheap handle, clone it freely. When the last handle is
/// dropped the engine shuts down; [`Engine::shutdown`] does it explicitly and
/// waits for the background tasks.
pub struct Engine<M: Model> {
    shared: Arc<Shared<M>>,
    guard: Arc<ShutdownOnDrop<M>>,
}

impl<M: Model> Clone for Engine<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            guard: Arc::clone(&self.guard),
        }
    }
}

impl<M: Model> std::fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node_id", &self.shared.node_id)
            .field("stream", &self.shared.stream.describe())
            .field("status", &*self.shared.status.borrow())
            .finish()
    }
}

impl<M: Model> Engine<M> {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// The stream this engine reads and writes.
    pub fn stream(&self) -> &Arc<dyn Stream> {
        &self.shared.stream
    }

    /// Executes a command with a fresh id. Returns once the command came back
    /// from the stream and was applied on this node.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Rejected`] with the model's domain error (the model is
    /// unchanged), or [`ExecuteError::Engine`]: the command is too large, the
    /// append failed (it may still land: retry with the same id via
    /// [`Engine::execute_with_id`]), a timeout, a halted or stopped engine.
    pub async fn execute(
        &self,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        self.execute_with_id(CommandId::random(), command).await
    }

    /// Executes a command under a caller-chosen id, so that retrying after an
    /// ambiguous failure cannot apply it twice: a second copy is dropped by
    /// every node and its caller gets [`Error::AlreadyApplied`].
    ///
    /// # Errors
    ///
    /// As [`Engine::execute`].
    pub async fn execute_with_id(
        &self,
        id: CommandId,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        let shared = &self.shared;
        shared.check_running()?;
        let value = serde_json::to_value(&command).map_err(Error::Encode)?;
        let mut envelope = shared.envelope(Body::Command(value));
        envelope.id = id;
        if shared.settings.write_mode == WriteMode::SingleLeader {
            let lead = shared.state.lock().leadership.clone();
            if lead.leader.as_ref() != Some(&shared.node_id) {
                return Err(Error::NotLeader {
                    leader: lead.leader,
                    epoch: lead.epoch,
                }
                .into());
            }
            envelope.epoch = Some(lead.epoch);
        }
        let completion = shared
            .submit(envelope, shared.config.execute_timeout)
            .await?;
        match completion {
            Completion::Applied { index, result } => {
                shared.last_write.fetch_max(index, AtomicOrdering::AcqRel);
                match result {
                    Ok(output) => Ok(Executed { output, index }),
                    Err(error) => Err(ExecuteError::Rejected { error, index }),
                }
            }
            Completion::Failed(e) => Err(ExecuteError::Engine(e)),
            Completion::Marker { .. } => Err(ExecuteError::Engine(Error::Config(format!(
                "command id {id} was used by a control message"
            )))),
        }
    }

    /// Runs `f` over the model once the consistency level is met.
    ///
    /// # Errors
    ///
    /// A timeout waiting for the level (the node's read timeout bounds the
    /// whole wait), a stream error while learning the tail,
    /// [`Error::TooStale`] when a bounded-staleness read cannot be served,
    /// or a halted or stopped engine.
    pub async fn query<R>(&self, level: Consistency, f: impl FnOnce(&M) -> R) -> Result<R, Error> {
        let own = self.shared.last_write.load(AtomicOrdering::Acquire);
        self.shared.query(level, own, f).await
    }

    /// Read access to the model as applied so far (the `Local` level), for
    /// callers that need a guard rather than a closure. Hold it briefly: the
    /// apply loop waits while it is held.
    ///
    /// # Errors
    ///
    /// A halted or stopped engine.
    pub fn read_local(&self) -> Result<RwLockReadGuard<'_, M>, Error> {
        self.shared.check_running()?;
        Ok(self.shared.model.read())
    }

    /// Waits until this node has applied at least `index` envelopes.
    ///
    /// # Errors
    ///
    /// A timeout, or a halted or stopped engine.
    pub async fn wait_for_index(&self, index: u64) -> Result<(), Error> {
        self.shared.wait_for(Consistency::AtLeast(index), 0).await
    }

    /// A session: remembers its own writes for [`Consistency::ReadYourWrites`].
    pub fn session(&self) -> Session<M> {
        Session {
            engine: self.clone(),
            last_write: AtomicU64::new(0),
        }
    }

    /// A moment's view of this engine.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let state = shared.state.lock();
        let counters = shared.counters.lock().clone();
        let tail = shared.tail.lock();
        Stats {
            node_id: shared.node_id.clone(),
            status: shared.status.borrow().clone(),
            applied_index: state.applied_index,
            cursor: state.cursor.clone(),
            caught_up_age: tail.caught_up_age(),
            known_tail: tail.known().map(|(cursor, _)| cursor),
            known_tail_age: tail.known().map(|(_, age)| age),
            lag: tail.lag(state.cursor.as_ref(), shared.stream.as_ref()),
            duplicates_dropped: counters.duplicates_dropped,
            redeliveries_dropped: counters.redeliveries_dropped,
            bad_records_skipped: counters.bad_records_skipped,
            commands_applied: counters.commands_applied,
            dedup_window_len: state.dedup.len(),
            leadership: state.leadership.clone(),
            is_leader: state.leadership.leader.as_ref() == Some(&shared.node_id),
            leader_silence: shared.leader_watch.last_signal_age(),
            commands_fenced: counters.commands_fenced,
            settings: state.genesis.clone(),
            snapshots: shared.snapshot_progress.lock().stats.clone(),
        }
    }

    /// Takes a snapshot now and waits until it is stored. Queries go on
    /// meanwhile; applying pauses only while the state is copied (a clone of
    /// the model); serialization and I/O run off the engine.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no snapshot store is configured or the model
    /// cannot be serialized; the store's I/O errors; a halted engine.
    pub async fn snapshot(&self) -> Result<SnapshotMeta, Error> {
        self.shared.check_running()?;
        let hooks = self.shared.snapshots.as_ref().ok_or_else(|| {
            Error::Config("no snapshot store configured (EngineBuilder::snapshots)".into())
        })?;
        let captured = self.shared.capture_snapshot();
        self.shared.write_snapshot(hooks, captured).await
    }

    /// Where the engine is in its life.
    pub fn status(&self) -> Status {
        self.shared.status.borrow().clone()
    }

    /// Stops the engine: callers still waiting get [`Error::ShutDown`], the
    /// background tasks end. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.begin_shutdown();
        let tasks: Vec<JoinHandle<()>> = self.shared.tasks.lock().drain(..).collect();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("an engine task did not stop within 10 s");
            }
        }
    }
}

/// A handle that remembers the applied index of its own last acknowledged
/// write, so [`Consistency::ReadYourWrites`] means "this session's writes".
#[derive(Debug)]
pub struct Session<M: Model> {
    engine: Engine<M>,
    last_write: AtomicU64,
}

impl<M: Model> Session<M> {
    /// As [`Engine::execute`], remembering the write.
    ///
    /// # Errors
    ///
    /// As [`Engine::execute`].
    pub async fn execute(
        &self,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        self.execute_with_id(CommandId::random(), command).await
    }

    /// As [`Engine::execute_with_id`], remembering the write.
    ///
    /// # Errors
    ///
    /// As [`Engine::execute`].
    pub async fn execute_with_id(
        &self,
        id: CommandId,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        let result = self.engine.execute_with_id(id, command).await;
        match &result {
            Ok(done) => self.remember(done.index),
            Err(ExecuteError::Rejected { index, .. }) => self.remember(*index),
            Err(_) => {}
        }
        result
    }

    /// As [`Engine::query`]; `ReadYourWrites` waits for this session's writes.
    ///
    /// # Errors
    ///
    /// As [`Engine::query`].
    pub async fn query<R>(&self, level: Consistency, f: impl FnOnce(&M) -> R) -> Result<R, Error> {
        let own = self.last_write.load(AtomicOrdering::Acquire);
        self.engine.shared.query(level, own, f).await
    }

    /// The applied index of this session's last acknowledged write (a token
    /// for [`Consistency::AtLeast`] on another node).
    pub fn last_write(&self) -> u64 {
        self.last_write.load(AtomicOrdering::Acquire)
    }

    /// The engine behind this session.
    pub fn engine(&self) -> &Engine<M> {
        &self.engine
    }

    fn remember(&self, index: u64) {
        self.last_write.fetch_max(index, AtomicOrdering::AcqRel);
    }
}

impl<M: Model> Shared<M> {
    fn envelope(&self, body: Body) -> Envelope {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Envelope {
            id: CommandId::random(),
            origin: self.node_id.clone(),
            ts,
            epoch: None,
            body,
        }
    }

    /// Runs `f` over the model once `level` is met, `own_last_write` being
    /// the caller's read-your-writes token.
    async fn query<R>(
        &self,
        level: Consistency,
        own_last_write: u64,
        f: impl FnOnce(&M) -> R,
    ) -> Result<R, Error> {
        self.wait_for(level, own_last_write).await?;
        self.check_running()?;
        Ok(f(&self.model.read()))
    }

    fn check_running(&self) -> Result<(), Error> {
        match &*self.status.borrow() {
            Status::Starting | Status::Running => Ok(()),
            Status::Halted(reason) => Err(Error::Halted(reason.clone())),
            Status::Stopped => Err(Error::ShutDown),
        }
    }

    /// Hands an envelope to the writer and waits for its completion.
    async fn submit(&self, envelope: Envelope, timeout: Duration) -> Result<Completion<M>, Error> {
        let id = envelope.id;
        let bytes = encode_envelope(&envelope).map_err(Error::Encode)?;
        let size = bytes.len() + FRAME_OVERHEAD;
        if size > self.frame_limit {
            return Err(Error::CommandTooLarge {
                command_id: id,
                size,
                limit: self.frame_limit,
            });
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock();
            if waiters.contains_key(&id) {
                return Err(Error::DuplicateInFlight(id));
            }
            waiters.insert(id, tx);
        }
        // A halt or shutdown drains the waiters after changing the status:
        // checking again here closes the gap with a drain that ran before we
        // registered.
        if let Err(e) = self.check_running() {
            self.waiters.lock().remove(&id);
            return Err(e);
        }
        let wait = async {
            self.submit
                .send(Submission { id, bytes })
                .await
                .map_err(|_| Error::ShutDown)?;
            rx.await.map_err(|_| self.terminal_error())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(completion)) => Ok(completion),
            Ok(Err(e)) => {
                self.waiters.lock().remove(&id);
                Err(e)
            }
            Err(_) => {
                self.waiters.lock().remove(&id);
                Err(Error::Timeout {
                    waiting_for: format!(
                        "command {id} to come back from {}",
                        self.stream.describe()
                    ),
                    after: timeout,
                })
            }
        }
    }

    fn terminal_error(&self) -> Error {
        match self.check_running() {
            Err(e) => e,
            Ok(()) => Error::ShutDown,
        }
    }

    fn fail_all(&self, ids: Vec<CommandId>, error: &Error) {
        let mut waiters = self.waiters.lock();
        for id in ids {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(Completion::Failed(clone_error(error)));
            }
        }
    }

    fn drain_waiters(&self, error: impl Fn() -> Error) {
        let drained: Vec<_> = self.waiters.lock().drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Completion::Failed(error()));
        }
        // Wake everyone waiting on progress so they see the new status.
        self.progress.send_modify(|_| {});
    }

    fn halt(&self, reason: HaltReason) {
        tracing::error!(node = %self.node_id, %reason, "engine halted");
        self.status.send_replace(Status::Halted(reason.clone()));
        self.drain_waiters(|| Error::Halted(reason.clone()));
    }

    fn begin_shutdown(&self) {
        self.status.send_if_modified(|s| match s {
            Status::Halted(_) | Status::Stopped => false,
            _ => {
                *s = Status::Stopped;
                true
            }
        });
        self.shutdown.send_replace(true);
        let status = self.status.borrow().clone();
        self.drain_waiters(|| match &status {
            Status::Halted(r) => Error::Halted(r.clone()),
            _ => Error::ShutDown,
        });
    }

    /// Copies the state at a record boundary: applying waits only for the
    /// copy (a clone of the model), not for serialization or I/O.
    fn capture_snapshot(&self) -> (Replicated, M) {
        let started = Instant::now();
        let captured = {
            let state = self.state.lock();
            let model = self.model.read();
            (state.clone(), model.clone())
        };
        let mut progress = self.snapshot_progress.lock();
        progress.stats.last_pause = Some(started.elapsed());
        progress.index_at_last = captured.0.applied_index;
        progress.bytes_since = 0;
        progress.last_at = Instant::now();
        captured
    }

    /// Serializes a captured state on a blocking thread and stores it.
    async fn write_snapshot(
        &self,
        hooks: &SnapshotHooks<M>,
        (state, model): (Replicated, M),
    ) -> Result<SnapshotMeta, Error> {
        let encoder = hooks.encoder();
        let node_id = self.node_id.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            snapshots::encode(encoder, &node_id, &state, &model)
        })
        .await
        .map_err(|e| Error::Config(format!("the snapshot task failed: {e}")))?;
        let (meta, body) = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                let mut progress = self.snapshot_progress.lock();
                progress.writing = false;
                progress.stats.failed += 1;
                return Err(e);
            }
        };
        match hooks.store.save(&meta, body).await {
            Ok(()) => {
                self.snapshot_saved(&meta);
                Ok(meta)
            }
            Err(e) => {
                snapshots::report_failure(&self.snapshot_progress, &e);
                Err(Error::Config(format!("writing the snapshot failed: {e}")))
            }
        }
    }

    fn snapshot_saved(&self, meta: &SnapshotMeta) {
        let mut progress = self.snapshot_progress.lock();
        progress.writing = false;
        progress.stats.taken += 1;
        if progress
            .stats
            .last_taken
            .as_ref()
            .is_none_or(|l| l.applied_index <= meta.applied_index)
        {
            progress.stats.last_taken = Some(meta.clone());
        }
    }

    /// Takes a snapshot when the policy says so; the write happens in the background.
    fn after_record(self: &Arc<Self>, record_bytes: usize) {
        let Some(hooks) = &self.snapshots else { return };
        let applied_index = self.progress.borrow().applied_index;
        {
            let mut progress = self.snapshot_progress.lock();
            progress.bytes_since += record_bytes as u64;
            if !progress.due(&hooks.policy, applied_index) {
                return;
            }
            progress.writing = true;
        }
        let captured = self.capture_snapshot();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(hooks) = &shared.snapshots
                && let Err(e) = shared.write_snapshot(hooks, captured).await
            {
                tracing::error!(error = %e, "taking a snapshot failed; the log still holds everything");
            }
        });
    }

    fn apply_record(&self, record: crate::stream::Record) -> Result<(), HaltReason> {
        let mut outcomes: Outcomes<M> = Vec::new();
        let result = {
            let mut state = self.state.lock();
            let mut counters = self.counters.lock();
            let mut model = self.model.write();
            let mut applier = Applier {
                stream: self.stream.as_ref(),
                local_settings: &self.settings,
                skip: &self.skip,
                state: &mut state,
                counters: &mut counters,
                model: &mut *model,
                outcomes: &mut outcomes,
            };
            let result = applier.apply_record(record);
            self.leader_watch.observe(counters.leader_signals);
            let progress = Progress {
                applied_index: state.applied_index,
                cursor: state.cursor.clone(),
            };
            drop(model);
            self.progress.send_replace(progress);
            result
        };
        if !outcomes.is_empty() {
            let mut waiters = self.waiters.lock();
            for (id, completion) in outcomes {
                if let Some(tx) = waiters.remove(&id) {
                    let _ = tx.send(completion);
                }
            }
        }
        result
    }
}

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

async fn apply_loop<M: Model>(shared: Arc<Shared<M>>, mut subscription: Box<dyn Subscription>) {
    let mut shutdown = shared.shutdown.subscribe();
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
                if let Err(reason) = shared.apply_record(record) {
                    shared.halt(reason);
                    return;
                }
                shared.after_record(bytes);
            }
            Ok(None) => {
                tracing::info!(node = %shared.node_id, "stream closed; engine stops");
                shared.begin_shutdown();
                return;
            }
            Err(error) => {
                if is_fatal(&error) || failures >= shared.config.resubscribe_attempts {
                    shared.halt(HaltReason::StreamFailed(error.to_string()));
                    return;
                }
                failures += 1;
                tracing::warn!(node = %shared.node_id, %error, attempt = failures, "subscription failed; resubscribing");
                let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                let after = shared.state.lock().cursor.clone();
                match shared.stream.subscribe(after).await {
                    Ok(s) => subscription = s,
                    Err(e) => {
                        tracing::warn!(node = %shared.node_id, error = %e, "resubscription failed")
                    }
                }
            }
        }
    }
}

/// Errors are not `Clone` (they carry sources); waiters of one failed append
/// each get an equivalent error.
fn clone_error(error: &Error) -> Error {
    match error {
        Error::ShutDown => Error::ShutDown,
        Error::Halted(r) => Error::Halted(r.clone()),
        Error::Timeout { waiting_for, after } => Error::Timeout {
            waiting_for: waiting_for.clone(),
            after: *after,
        },
        Error::Stream(StreamError::RecordTooLarge { size, limit }) => {
            Error::Stream(StreamError::RecordTooLarge {
                size: *size,
                limit: *limit,
            })
        }
        Error::Stream(StreamError::Closed) => Error::Stream(StreamError::Closed),
        other => Error::Stream(StreamError::Ambiguous {
            reason: other.to_string(),
            source: None,
        }),
    }
}
