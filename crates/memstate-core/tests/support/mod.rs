//! Shared pieces of the leadership and consistency tests: a small model, a
//! stream wrapper with knobs (held appends, seeded jitter, a cut-off switch,
//! counters), and a paused-clock runtime.
//!
//! Most tests run on a current-thread runtime with tokio's clock paused:
//! time advances only when every task is idle, so "the follower waited out
//! the election timeout" or "the lagging node has not applied it yet" are
//! facts of the schedule, not races against the machine's speed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod linearizability;

use std::cmp::Ordering as CmpOrdering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::envelope::decode_frame;
use memstate_core::{
    Body, Capabilities, CommandContext, Control, Cursor, DeterministicRng, Engine, EngineBuilder,
    Envelope, LeadershipConfig, MemoryStream, Model, NodeId, Record, Settings, Stream, StreamError,
    Subscription, WriteMode,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A register and named counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Board {
    pub register: u64,
    pub counters: BTreeMap<String, u64>,
}

/// Named counters, serializable for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Model for Counters {
    type Command = String;
    type Output = u64;
    type Error = String;
    fn apply(&mut self, key: String, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        let c = self.0.entry(key).or_default();
        *c += 1;
        Ok(*c)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BoardCmd {
    /// Sets the register; returns the value it replaced.
    Set(u64),
    /// Adds one to a counter; returns the new count.
    Incr(String),
}

impl Model for Board {
    type Command = BoardCmd;
    type Output = u64;
    type Error = String;

    fn apply(&mut self, cmd: BoardCmd, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        Ok(match cmd {
            BoardCmd::Set(v) => std::mem::replace(&mut self.register, v),
            BoardCmd::Incr(key) => {
                let c = self.counters.entry(key).or_default();
                *c += 1;
                *c
            }
        })
    }
}

/// A current-thread runtime whose clock is paused (auto-advancing when idle).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Settings of a single-leader stream.
pub fn single_leader() -> Settings {
    let mut s = Settings::default();
    s.write_mode = WriteMode::SingleLeader;
    s
}

/// A builder for a node over `stream` with generous timeouts.
pub fn builder(stream: impl Stream, id: &str) -> EngineBuilder<Board> {
    EngineBuilder::new(Board::default(), stream)
        .node_id(id)
        .execute_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
}

/// A single-leader node taking part in elections with `config`.
pub async fn leader_node(stream: impl Stream, id: &str, config: LeadershipConfig) -> Engine<Board> {
    builder(stream, id)
        .settings(single_leader())
        .leadership(config)
        .start()
        .await
        .unwrap()
}

/// Every envelope in the stream, in log order.
pub fn envelopes(stream: &MemoryStream) -> Vec<Envelope> {
    stream
        .payloads()
        .iter()
        .filter_map(|p| decode_frame(p).ok())
        .flatten()
        .collect()
}

/// The winner of each epoch by the rule every node applies: the first claim
/// of `current + 1` in log order. Index 0 is epoch 1.
pub fn winners_from_log(stream: &MemoryStream) -> Vec<NodeId> {
    let mut winners = Vec::new();
    for e in envelopes(stream) {
        if let Body::Control(Control::AssumeLeadership { epoch }) = e.body
            && epoch == winners.len() as u64 + 1
        {
            winners.push(e.origin);
        }
    }
    winners
}

/// How many envelopes of this kind ("heartbeat", "sync", ...) the log holds.
pub fn count_kind(stream: &MemoryStream, kind: &str) -> usize {
    envelopes(stream)
        .iter()
        .filter(|e| e.kind() == kind)
        .count()
}

/// Polls `done` every 10 ms (of the runtime's clock) until it holds; panics after `within`.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug)]
struct Knobs {
    /// Appends wait while this is false.
    gate_open: watch::Sender<bool>,
    /// The gate holds only frames that carry a user command.
    gate_commands_only: AtomicBool,
    /// Envelopes in appends currently held at the gate.
    held_envelopes: watch::Sender<usize>,
    /// While true, `head` and `append` wait and subscriptions deliver nothing.
    cut_off: watch::Sender<bool>,
    jitter: Mutex<Option<(DeterministicRng, u64)>>,
    exact_head: bool,
    heads: AtomicU64,
    appends: AtomicU64,
    /// Errors the next reads of any subscription return, one per read.
    read_errors: Mutex<Vec<StreamError>>,
    /// When each read error was returned, and each subscription's `after` and moment.
    reads_failed: Mutex<Vec<tokio::time::Instant>>,
    subscriptions: Mutex<Vec<(tokio::time::Instant, Option<Cursor>)>>,
}

/// One client of a shared [`MemoryStream`], with knobs for tests.
#[derive(Clone, Debug)]
pub struct TestStream {
    inner: MemoryStream,
    knobs: Arc<Knobs>,
}

impl TestStream {
    pub fn new(inner: MemoryStream) -> Self {
        Self {
            inner,
            knobs: Arc::new(Knobs {
                gate_open: watch::channel(true).0,
                gate_commands_only: AtomicBool::new(false),
                held_envelopes: watch::channel(0).0,
                cut_off: watch::channel(false).0,
                jitter: Mutex::new(None),
                exact_head: true,
                heads: AtomicU64::new(0),
                appends: AtomicU64::new(0),
                read_errors: Mutex::new(Vec::new()),
                reads_failed: Mutex::new(Vec::new()),
                subscriptions: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Declares an inexact head, so the engine must use sync markers.
    pub fn without_exact_head(self) -> Self {
        let knobs = Arc::try_unwrap(self.knobs).expect("configure before sharing");
        Self {
            inner: self.inner,
            knobs: Arc::new(Knobs {
                exact_head: false,
                ..knobs
            }),
        }
    }

    /// Sleeps a seeded random time below `max` before each append, so that
    /// concurrent appends of several clients land in a seed-dependent order.
    pub fn with_append_jitter(self, seed: u64, max: Duration) -> Self {
        *self.knobs.jitter.lock() = Some((
            DeterministicRng::seeded(u128::from(seed)),
            max.as_micros() as u64,
        ));
        self
    }

    /// Holds every append from now on until [`TestStream::open_gate`].
    pub fn close_gate(&self) {
        self.knobs.gate_commands_only.store(false, Ordering::SeqCst);
        self.knobs.gate_open.send_replace(false);
    }

    /// Holds appends of frames carrying a user command; control messages
    /// (claims, heartbeats, markers) pass.
    pub fn close_gate_for_commands(&self) {
        self.knobs.gate_commands_only.store(true, Ordering::SeqCst);
        self.knobs.gate_open.send_replace(false);
    }

    /// Lets held appends through.
    pub fn open_gate(&self) {
        self.knobs.gate_open.send_replace(true);
    }

    /// Waits until at least `n` envelopes are held at the gate.
    pub async fn wait_held(&self, n: usize) {
        let mut rx = self.knobs.held_envelopes.subscribe();
        rx.wait_for(|held| *held >= n).await.unwrap();
    }

    /// Cuts this client off the stream (or reconnects it).
    pub fn set_cut_off(&self, cut: bool) {
        self.knobs.cut_off.send_replace(cut);
    }

    /// How many times `head` was asked.
    pub fn heads(&self) -> u64 {
        self.knobs.heads.load(Ordering::SeqCst)
    }

    /// How many appends reached the stream.
    pub fn appends(&self) -> u64 {
        self.knobs.appends.load(Ordering::SeqCst)
    }

    /// The next reads of any subscription fail with these errors, in order,
    /// one per read, before the records resume.
    pub fn fail_reads(&self, errors: Vec<StreamError>) {
        let mut queue = self.knobs.read_errors.lock();
        queue.extend(errors);
    }

    /// When each injected read error was returned.
    pub fn reads_failed(&self) -> Vec<tokio::time::Instant> {
        self.knobs.reads_failed.lock().clone()
    }

    /// Every subscription opened: when, and the cursor it resumes after.
    pub fn subscriptions(&self) -> Vec<(tokio::time::Instant, Option<Cursor>)> {
        self.knobs.subscriptions.lock().clone()
    }

    pub fn memory(&self) -> &MemoryStream {
        &self.inner
    }

    async fn wait_connected(knobs: &Knobs) {
        let mut rx = knobs.cut_off.subscribe();
        let _ = rx.wait_for(|cut| !*cut).await;
    }
}

#[async_trait]
impl Stream for TestStream {
    fn describe(&self) -> String {
        "test stream".into()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner
            .capabilities()
            .with_exact_head(self.knobs.exact_head)
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        let jitter = self
            .knobs
            .jitter
            .lock()
            .as_mut()
            .map(|(rng, max)| rng.below(*max));
        if let Some(micros) = jitter {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        let envelopes: Vec<Envelope> = records
            .iter()
            .filter_map(|r| decode_frame(r).ok())
            .flatten()
            .collect();
        let held = !*self.knobs.gate_open.borrow()
            && (!self.knobs.gate_commands_only.load(Ordering::SeqCst)
                || envelopes.iter().any(|e| e.kind() == "command"));
        if held {
            let n = envelopes.len();
            self.knobs.held_envelopes.send_modify(|h| *h += n);
            let mut open = self.knobs.gate_open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            self.knobs.held_envelopes.send_modify(|h| *h -= n);
        }
        Self::wait_connected(&self.knobs).await;
        self.knobs.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(records).await
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        self.knobs
            .subscriptions
            .lock()
            .push((tokio::time::Instant::now(), after.clone()));
        Ok(Box::new(TestSubscription {
            inner: self.inner.subscribe(after).await?,
            knobs: Arc::clone(&self.knobs),
        }))
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        self.knobs.heads.fetch_add(1, Ordering::SeqCst);
        Self::wait_connected(&self.knobs).await;
        self.inner.head().await
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<CmpOrdering, StreamError> {
        self.inner.compare_cursors(a, b)
    }
}

#[derive(Debug)]
struct TestSubscription {
    inner: Box<dyn Subscription>,
    knobs: Arc<Knobs>,
}

#[async_trait]
impl Subscription for TestSubscription {
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        TestStream::wait_connected(&self.knobs).await;
        let injected = {
            let mut queue = self.knobs.read_errors.lock();
            (!queue.is_empty()).then(|| queue.remove(0))
        };
        if let Some(error) = injected {
            self.knobs
                .reads_failed
                .lock()
                .push(tokio::time::Instant::now());
            return Err(error);
        }
        let next = self.inner.next().await;
        // A record already fetched is still withheld while cut off.
        TestStream::wait_connected(&self.knobs).await;
        next
    }
}
