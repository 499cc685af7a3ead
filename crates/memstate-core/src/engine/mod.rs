//! The [`Engine`]: executes commands through the stream and serves queries.
//!
//! This file holds only the two handles users call, [`Engine`] and
//! [`Session`]; each role lives in its own file (see `docs/architecture.md`
//! for a command's walk through them):
//!
//! - `builder.rs`: [`EngineBuilder`], restoring and starting a node;
//! - `submit.rs`: waiters, the hand-off to the writer, halt and shutdown, and
//!   the one round trip every control message takes;
//! - `writer.rs`: group commit, one frame per append, appends in flight;
//! - `apply_loop.rs` and `apply.rs`: reading the subscription and applying
//!   each envelope, deterministically (`replicated.rs`: what is replicated);
//! - `snapshots.rs`: capture, write, restore and the snapshot policy;
//! - `reads.rs` and `tail.rs`: consistency levels and what this node knows of the tail;
//! - `leadership.rs`: election and heartbeats in single-leader mode;
//! - `stats.rs`: [`Status`] and [`Stats`].
//!
//! A command travels like this: [`Engine::execute`] wraps it in an envelope and
//! hands it to the writer, which packs whatever is waiting into one frame and
//! appends it (group commit). The apply loop reads every record back from the
//! subscription, decodes the frame, drops duplicates, applies each command to
//! the model, and resolves the caller that waits for it. Nothing is applied
//! before the stream has it: the stream's order is the only order.

mod apply;
mod apply_loop;
mod builder;
mod config;
mod events;
mod leadership;
mod reads;
pub(crate) mod replicated;
mod snapshots;
mod stats;
mod submit;
mod tail;
mod time_travel;
mod versions;
mod window;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use parking_lot::{Mutex, RwLockReadGuard};
use tokio::task::JoinHandle;

pub use builder::{EngineBuilder, IntoStream};
pub use leadership::LeadershipConfig;
pub use replicated::{Leadership, ModelVersions};
pub use snapshots::SnapshotStats;
pub use stats::{Stats, Status};
pub use tail::Lag;
pub use time_travel::{AsOf, PastState, TimeTravel};

use apply_loop::Applied;
use config::NodeInfo;
use leadership::LeaderWatch;
use reads::Reads;
use snapshots::Snapshots;
use submit::Submitter;

use crate::consistency::Consistency;
use crate::envelope::{CommandId, NodeId};
use crate::error::{Error, ExecuteError};
use crate::model::Model;
use crate::snapshot::SnapshotMeta;
use crate::stream::Stream;

/// One running node: the state of each role, side by side, shared by the
/// [`Engine`] handles and the background tasks. Each role keeps its own state
/// and locks, and its file adds the methods of that role:
/// [`NodeInfo`] (`config.rs`) who the node is; [`Submitter`] (`submit.rs`)
/// waiters, the writer's queue, halt and shutdown; [`Applied`]
/// (`apply_loop.rs`) the model and the replicated state; [`Reads`]
/// (`reads.rs`) the tail learned and the handles' last write; [`LeaderWatch`]
/// (`leadership.rs`) this node's view of the leader; [`Snapshots`]
/// (`snapshots.rs`) store, policy and bookkeeping.
struct Node<M: Model> {
    /// The figures this node records through the `metrics` facade.
    metrics: crate::metrics::EngineMetrics,
    info: NodeInfo,
    submitter: Submitter<M>,
    applied: Applied<M>,
    reads: Reads,
    leader_watch: LeaderWatch,
    snapshots: Snapshots<M>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Shuts the node down when the last user-facing handle is dropped.
struct ShutdownOnDrop<M: Model> {
    node: Arc<Node<M>>,
}

impl<M: Model> Drop for ShutdownOnDrop<M> {
    fn drop(&mut self) {
        self.node.begin_shutdown();
    }
}

/// What a successful command returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed<T> {
    /// The model's output.
    pub output: T,
    /// The command's applied index: its position among *all* envelopes of
    /// the log, counted from 1 — control records (each node's Genesis at
    /// start, leadership claims, heartbeats, sync markers) and dropped
    /// duplicates take an index too, so indexes of consecutive commands are
    /// not consecutive numbers. It is the same on every node, and it is the
    /// token the rest of the API speaks: pass it as
    /// [`Consistency::AtLeast`] to read this write on another node (which
    /// then waits until it has applied at least this many envelopes).
    pub index: u64,
}

/// A running engine: a cheap handle, clone it freely. When the last handle is
/// dropped the engine shuts down; [`Engine::shutdown`] does it explicitly and
/// waits for the background tasks.
pub struct Engine<M: Model> {
    node: Arc<Node<M>>,
    guard: Arc<ShutdownOnDrop<M>>,
}

impl<M: Model> Clone for Engine<M> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            guard: Arc::clone(&self.guard),
        }
    }
}

impl<M: Model> std::fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node_id", &self.node.info.node_id)
            .field("stream", &self.node.info.stream.describe())
            .field("status", &*self.node.submitter.status.borrow())
            .finish()
    }
}

impl<M: Model> Engine<M> {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node.info.node_id
    }

    /// The stream this engine reads and writes.
    pub fn stream(&self) -> &Arc<dyn Stream> {
        &self.node.info.stream
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
    /// ambiguous failure cannot apply it twice. A retry learns what became of
    /// the first copy, identically on every node: applied —
    /// [`Error::AlreadyApplied`]; deterministically rejected (skipped,
    /// panicked in safe mode) — [`Error::AlreadyRejected`];
    /// fenced as not from the leader — nothing happened, so the retry on the
    /// leader applies. `docs/consistency.md` lists, error by error, whether
    /// the command may still land and what to do.
    ///
    /// # Errors
    ///
    /// As [`Engine::execute`].
    pub async fn execute_with_id(
        &self,
        id: CommandId,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        let started = std::time::Instant::now();
        let result = self.node.execute(id, command).await;
        self.node.metrics.executed(started.elapsed(), &result);
        result
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
        let own = self.node.reads.last_write();
        self.node.query(level, own, f).await
    }

    /// Read access to the model as applied so far (the `Local` level), for
    /// callers that need a guard rather than a closure. Hold it briefly: the
    /// apply loop waits while it is held.
    ///
    /// # Errors
    ///
    /// A halted or stopped engine.
    pub fn read_local(&self) -> Result<RwLockReadGuard<'_, M>, Error> {
        self.node.check_running()?;
        Ok(self.node.applied.model.read())
    }

    /// Waits until this node has applied at least `index` envelopes.
    ///
    /// # Errors
    ///
    /// A timeout, or a halted or stopped engine.
    pub async fn wait_for_index(&self, index: u64) -> Result<(), Error> {
        self.node.wait_for(Consistency::AtLeast(index), 0).await
    }

    /// The applied index of the latest write acknowledged through any handle
    /// of this engine (`0` before any): the token its
    /// [`Consistency::ReadYourWrites`] reads wait for, and one to carry to
    /// another node as [`Consistency::AtLeast`]. [`Session::last_write`] is
    /// the same for one session.
    pub fn last_write(&self) -> u64 {
        self.node.reads.last_write()
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
        self.node.stats()
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
        self.node.snapshot_now().await
    }

    /// Catches up with the stream's tail, appends a claim on the epoch after
    /// the newest one there, and waits until it is read back; returns the
    /// epoch won. The log decides: the first claim of epoch `current + 1` in
    /// log order wins, on every node alike.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] naming the winner when another claim for that
    /// epoch came first; [`Error::Config`] in multi-writer mode; stream
    /// errors, a timeout, a halted or stopped engine.
    pub async fn claim_leadership(&self) -> Result<u64, Error> {
        self.node.claim().await
    }

    /// Whether this node leads, as far as it has applied the log.
    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// A session that continues one begun on another node (or another
    /// process): pass the other session's [`Session::last_write`], carried by
    /// the client (a cookie, a header). Its [`Consistency::ReadYourWrites`]
    /// reads then wait here until that write is applied.
    pub fn session_with_token(&self, last_write: u64) -> Session<M> {
        Session {
            engine: self.clone(),
            last_write: AtomicU64::new(last_write),
        }
    }

    /// Where the engine is in its life.
    pub fn status(&self) -> Status {
        self.node.submitter.status.borrow().clone()
    }

    /// The stream's model versions as far as this node has applied the log:
    /// the active version, and what each live node announced it reads.
    pub fn model_versions(&self) -> ModelVersions {
        self.node.model_versions()
    }

    /// Makes `version` the stream's active model version through a control
    /// record, identically on every node; returns the record's applied index.
    /// Writers then encode commands at it, and commands that need it are
    /// accepted. See `docs/upgrades.md`.
    ///
    /// # Errors
    ///
    /// [`Error::ActivationRefused`] naming the live nodes that announced they
    /// cannot read it (or when it is below the active version); stream
    /// errors, a timeout, a halted or stopped engine.
    pub async fn activate_version(&self, version: u32) -> Result<u64, Error> {
        self.node.activate(version).await
    }

    /// Records that `node` has left for good, so its announcement no longer
    /// holds activations back (a node that crashed and will not return under
    /// its id; a clean [`Engine::shutdown`] records its own departure).
    ///
    /// # Errors
    ///
    /// Stream errors, a timeout, a halted or stopped engine.
    pub async fn forget_node(&self, node: NodeId) -> Result<u64, Error> {
        let timeout = self.node.info.config.execute_timeout;
        self.node.depart(node, timeout).await
    }

    /// Stops the engine: records this node's departure in the stream (best
    /// effort, so its announcement no longer holds activations back), then
    /// callers still waiting get [`Error::ShutDown`] and the background tasks
    /// end. Idempotent.
    pub async fn shutdown(&self) {
        self.node.depart_on_shutdown().await;
        self.node.shutdown().await;
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
        self.engine.node.query(level, own, f).await
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

/// Sets the node's gauges from its stats once a second (lag and snapshot age
/// change with time alone), and a last time when the node shuts down.
async fn record_metrics<M: Model>(
    node: std::sync::Weak<Node<M>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tick.tick() => {}
        }
        let Some(node) = node.upgrade() else { return };
        node.metrics.observe(&node.stats());
        if *shutdown.borrow() {
            return;
        }
    }
}
