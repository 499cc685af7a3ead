//! Building and starting an engine.
//!
//! [`EngineBuilder::start`] restores the newest usable snapshot, subscribes
//! after it, starts the apply loop and the writer, and then appends this
//! node's Genesis record and waits to read it back: once it is applied, so is
//! everything written before the call.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Engine;
use super::apply_loop::{Applied, apply_loop};
use super::config::{LocalConfig, NodeInfo};
use super::leadership::{self, LeaderWatch, LeadershipConfig};
use super::reads::Reads;
use super::snapshots::{self, SnapshotHooks, Snapshots};
use super::submit::Submitter;
use super::writer;
use super::{Node, ShutdownOnDrop};
use crate::codec::Codec;
use crate::envelope::{CommandId, Control, FRAME_OVERHEAD, NodeId};
use crate::error::Error;
use crate::events::EventWindow;
use crate::model::Model;
use crate::settings::Settings;
use crate::skip::{RecordSkip, SkipList};
use crate::snapshot::{SnapshotPolicy, SnapshotStore};
use crate::stream::Stream;

/// What [`EngineBuilder::new`] accepts as its stream: any [`Stream`] value
/// (the engine owns it), or a stream shared by several engines as
/// `Arc<dyn Stream>` or `Arc<S>`.
pub trait IntoStream {
    /// The stream, shared.
    fn into_stream(self) -> Arc<dyn Stream>;
}

impl<S: Stream> IntoStream for S {
    fn into_stream(self) -> Arc<dyn Stream> {
        Arc::new(self)
    }
}

impl IntoStream for Arc<dyn Stream> {
    fn into_stream(self) -> Arc<dyn Stream> {
        self
    }
}

impl<S: Stream> IntoStream for Arc<S> {
    fn into_stream(self) -> Arc<dyn Stream> {
        self
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
    skip: SkipList,
    config: LocalConfig,
    snapshots: Option<SnapshotHooks<M>>,
}

impl<M: Model + serde::Serialize + serde::de::DeserializeOwned> EngineBuilder<M> {
    /// Keeps snapshots of this node in `store`, taken by `policy` and on
    /// demand ([`Engine::snapshot`]). At start the newest valid snapshot is
    /// restored and only the log after it is replayed; a corrupt one is
    /// reported and an older one used; with none valid, the whole log is replayed.
    /// A snapshot taken by an older build of the model is migrated
    /// ([`Model::migrate_snapshot`]); one this build cannot read (a newer
    /// model version, or a model that does not decode) stops the start with
    /// an error that names the version, rather than falling back.
    pub fn snapshots(mut self, store: impl SnapshotStore, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(SnapshotHooks::new(Arc::new(store), policy));
        self
    }
}

impl<M: Model> EngineBuilder<M> {
    /// An engine for `model` (its initial state) over `stream`: a stream
    /// value, or one shared by several engines (`Arc<dyn Stream>` or
    /// `Arc<S>`), see [`IntoStream`].
    pub fn new(model: M, stream: impl IntoStream) -> Self {
        Self {
            model,
            stream: stream.into_stream(),
            node_id: None,
            settings: Settings::default(),
            skip: SkipList::default(),
            config: LocalConfig::default(),
            snapshots: None,
        }
    }

    /// Like [`EngineBuilder::new`] with a stream shared by several engines;
    /// `new` accepts an `Arc<dyn Stream>` as well.
    pub fn with_shared_stream(model: M, stream: Arc<dyn Stream>) -> Self {
        Self::new(model, stream)
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

    /// The codec of a stream this node creates ([`Settings::with_codec`]):
    /// recorded in its Genesis record, it is part of the replicated settings.
    /// On an existing stream it must match the stream's Genesis, like every
    /// setting: a node configured with another codec refuses the stream. Set
    /// it after [`EngineBuilder::settings`], which replaces the codec too.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.settings = self.settings.with_codec(codec);
        self
    }

    /// Command ids that are not applied (to get past a poison command).
    /// Configure every node alike.
    pub fn skip_commands(mut self, ids: impl IntoIterator<Item = CommandId>) -> Self {
        self.skip.commands.extend(ids);
        self
    }

    /// Records passed over whole, without being opened: the way past a
    /// record no node can apply (a frame of a newer format, bytes that are
    /// not a frame under the `Halt` policy). Each entry names a record by
    /// cursor and checksum, as the halt reason prints it
    /// ([`HaltReason::UnknownFormat`](crate::HaltReason::UnknownFormat)); an
    /// entry whose checksum does not match the record at its cursor is
    /// ignored with a warning. Configure every node alike, and keep the
    /// entry while any node may still replay that part of the log.
    pub fn skip_records(mut self, records: impl IntoIterator<Item = RecordSkip>) -> Self {
        self.skip.add_records(records);
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

    /// The most appends allowed in flight at once (default 256). The writer
    /// sizes its window to the stream's latency between
    /// [`min_in_flight_appends`](Self::min_in_flight_appends) and this cap:
    /// it grows while commands wait for a slot and the append latency stays
    /// within twice the lowest seen (a backend that pipelines appends, such
    /// as Kafka, or the file journal sharing one fsync), shrinks when the
    /// latency grows past that (a backend that serves appends one after the
    /// other) and halves when an append fails. While every slot is busy,
    /// waiting commands accumulate into the next frame.
    /// [`Stats::appends_in_flight_limit`](crate::Stats::appends_in_flight_limit)
    /// shows the current window.
    pub fn max_in_flight_appends(mut self, n: usize) -> Self {
        self.config.max_in_flight_appends = n.max(1);
        self
    }

    /// The smallest window of appends in flight, and where it starts
    /// (default 32; at most [`max_in_flight_appends`](Self::max_in_flight_appends)).
    /// The default is the fixed window of earlier releases: measured on
    /// Kafka, a window the latency rule had shrunk below it lost throughput
    /// (docs/benchmarks.md, "Profiles"), and on the file journal the window
    /// made no difference; a backend that serves appends one after the other
    /// may want it lower.
    pub fn min_in_flight_appends(mut self, n: usize) -> Self {
        self.config.min_in_flight_appends = n.max(1);
        self
    }

    /// Whether the window of appends in flight adapts to the stream's
    /// latency (default `true`); `false` keeps it at
    /// [`max_in_flight_appends`](Self::max_in_flight_appends).
    pub fn adaptive_in_flight_appends(mut self, adaptive: bool) -> Self {
        self.config.adaptive_in_flight = adaptive;
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

    /// How many recent events this node retains for subscribers to resume
    /// from and catch up with (default: [`EventWindow::default`]). See
    /// [`crate::events`].
    pub fn event_window(mut self, window: EventWindow) -> Self {
        self.config.event_window = window;
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
    /// cannot be read under the stream's rules; [`Error::Snapshot`] when the
    /// snapshot store cannot be read; stream errors; a timeout.
    pub async fn start(mut self) -> Result<Engine<M>, Error> {
        // A binary stream is recorded at its codec's format version however
        // the settings were built, so that builds from before codecs refuse it.
        let codec_version = self.settings.command_codec.format_version();
        self.settings.format_version = self.settings.format_version.max(codec_version);
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
        let (model, replicated, snapshot_progress) =
            snapshots::restore_at_start(self.snapshots.as_ref(), &self.settings, self.model)
                .await?;
        let subscription = tokio::time::timeout(
            startup_timeout,
            self.stream.subscribe(replicated.cursor.clone()),
        )
        .await
        .map_err(|_| Error::Timeout {
            waiting_for: format!("a subscription to {}", self.stream.describe()),
            after: startup_timeout,
        })??;
        let (queue_tx, queue_rx) = mpsc::channel(self.config.queue_capacity);
        let node_id = self.node_id.unwrap_or_else(NodeId::random);
        let event_window = self.config.event_window;
        let node = Arc::new(Node {
            metrics: crate::metrics::EngineMetrics::new(&node_id),
            info: NodeInfo {
                node_id,
                stream: self.stream,
                settings: self.settings,
                config: self.config,
                frame_limit,
                exact_head: caps.exact_head,
                reads: M::VERSION,
            },
            submitter: Submitter::new(queue_tx),
            applied: Applied::new(model, replicated, self.skip, event_window),
            reads: Reads::default(),
            leader_watch: LeaderWatch::new(),
            snapshots: Snapshots::new(self.snapshots, snapshot_progress),
            tasks: Mutex::new(Vec::new()),
        });
        let apply_task = tokio::spawn(apply_loop(Arc::clone(&node), subscription));
        let writer_task = tokio::spawn(writer::writer_loop(
            writer::WriterContext {
                stream: Arc::clone(&node.info.stream),
                frame_limit,
                window: super::window::InFlightWindow::new(
                    node.info.config.min_in_flight_appends,
                    node.info.config.max_in_flight_appends,
                    node.info.config.adaptive_in_flight,
                ),
                gauge: Arc::clone(&node.submitter.gauge),
                append_timeout: node.info.config.append_timeout,
                shutdown: node.submitter.shutdown.subscribe(),
            },
            queue_rx,
            {
                let node = Arc::clone(&node);
                move |ids: Vec<CommandId>, error: Error| node.submitter.fail_all(ids, &error)
            },
        ));
        node.tasks.lock().extend([apply_task, writer_task]);
        let engine = Engine {
            guard: Arc::new(ShutdownOnDrop {
                node: Arc::clone(&node),
            }),
            node,
        };
        let genesis = Control::Genesis(engine.node.info.settings.clone());
        match engine.node.round_trip(genesis, startup_timeout).await {
            Ok(read_back) => tracing::debug!(
                index = read_back.index,
                "read this node's start marker back"
            ),
            Err(e) => {
                engine.node.shutdown().await;
                return Err(e);
            }
        }
        engine.node.submitter.mark_running();
        engine.node.check_running()?;
        if let Some(interval) = engine.node.snapshots.interval() {
            let timer = tokio::spawn(super::snapshots::snapshot_timer(
                Arc::clone(&engine.node),
                interval,
            ));
            engine.node.tasks.lock().push(timer);
        }
        if let Some(config) = engine.node.info.config.leadership.clone() {
            let driver = tokio::spawn(leadership::drive(Arc::clone(&engine.node), config));
            engine.node.tasks.lock().push(driver);
        }
        let recorder = tokio::spawn(super::record_metrics(
            Arc::downgrade(&engine.node),
            engine.node.submitter.shutdown.subscribe(),
        ));
        engine.node.tasks.lock().push(recorder);
        tracing::info!(node = %engine.node.info.node_id, stream = %engine.node.info.stream.describe(), applied_index = engine.node.applied.progress.borrow().applied_index, "engine started");
        Ok(engine)
    }
}
