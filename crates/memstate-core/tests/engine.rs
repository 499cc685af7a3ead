//! Behaviour of the engine over the in-memory stream that needs the memory
//! stream's fault injection or inspection. What every adapter must support
//! (convergence, restart, de-duplication, bad records, limits) is in the
//! conformance suite, which runs it on the memory stream too
//! (`cargo test -p memstate-conformance --test memory`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::{
    ApplyMode, BadRecordPolicy, CommandContext, CommandId, Consistency, EngineBuilder, Error,
    ExecuteError, HaltReason, MemoryStream, Model, Settings, Status, Stream, SubscriberFaults,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq)]
struct Ledger {
    balances: BTreeMap<String, i64>,
    /// (applied index, command id, timestamp, random draw) of every applied command, in order.
    history: Vec<(u64, CommandId, u64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Deposit(String, i64),
    Withdraw(String, i64),
    /// Mutates, then fails: breaks the error contract on purpose.
    Sloppy(String),
    Panic,
}

impl Model for Ledger {
    type Command = Cmd;
    type Output = i64;
    type Error = String;

    fn apply(&mut self, cmd: Cmd, ctx: &mut CommandContext<'_>) -> Result<i64, String> {
        let draw = ctx.rng().next_u64();
        let out = match cmd {
            Cmd::Deposit(a, n) => {
                let b = self.balances.entry(a).or_default();
                *b += n;
                *b
            }
            Cmd::Withdraw(a, n) => {
                let b = self.balances.entry(a).or_default();
                if *b < n {
                    return Err(format!("insufficient funds: {b} < {n}"));
                }
                *b -= n;
                *b
            }
            Cmd::Sloppy(a) => {
                self.balances.insert(a, -1);
                return Err("sloppy".into());
            }
            Cmd::Panic => panic!("boom"),
        };
        self.history
            .push((ctx.index(), ctx.command_id(), ctx.timestamp_ms(), draw));
        Ok(out)
    }
}

fn settings(apply_mode: ApplyMode) -> Settings {
    let mut s = Settings::default();
    s.apply_mode = apply_mode;
    s
}

async fn node(stream: &MemoryStream, id: &str) -> memstate_core::Engine<Ledger> {
    EngineBuilder::new(Ledger::default(), stream.clone())
        .node_id(id)
        .execute_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap()
}

async fn snapshot(engine: &memstate_core::Engine<Ledger>) -> Ledger {
    engine
        .query(Consistency::Linearizable, Clone::clone)
        .await
        .unwrap()
}

#[tokio::test]
async fn execute_resolves_only_after_the_command_is_applied_locally() {
    let stream = MemoryStream::new();
    stream.set_subscriber_faults(SubscriberFaults::delayed(Duration::from_millis(20)));
    let n = node(&stream, "a").await;
    for i in 0..5 {
        let done = n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
        assert_eq!(done.output, i + 1);
        // No waiting: the local state already holds the write when execute returns.
        let local = n
            .query(Consistency::Local, |m| m.balances["x"])
            .await
            .unwrap();
        assert_eq!(local, i + 1);
        assert!(n.stats().applied_index >= done.index);
    }
    n.shutdown().await;
}

#[tokio::test]
async fn duplicate_delivery_is_applied_once() {
    let stream = MemoryStream::new();
    stream.set_subscriber_faults(SubscriberFaults::duplicated());
    let n = node(&stream, "a").await;
    for _ in 0..10 {
        n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    }
    assert_eq!(snapshot(&n).await.balances["x"], 10);
    assert!(n.stats().redeliveries_dropped >= 10);
    n.shutdown().await;
}

#[tokio::test]
async fn retrying_with_the_same_command_id_reports_already_applied() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    let id = CommandId::random();
    let first = n
        .execute_with_id(id, Cmd::Deposit("x".into(), 5))
        .await
        .unwrap();
    let retry = n
        .execute_with_id(id, Cmd::Deposit("x".into(), 5))
        .await
        .unwrap_err();
    match retry {
        ExecuteError::Engine(Error::AlreadyApplied { command_id, index }) => {
            assert_eq!(command_id, id);
            assert_eq!(index, first.index);
        }
        other => panic!("expected AlreadyApplied, got {other:?}"),
    }
    assert_eq!(snapshot(&n).await.balances["x"], 5);
    n.shutdown().await;
}

#[tokio::test]
async fn a_domain_error_reaches_the_caller_and_leaves_the_model_unchanged() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    n.execute(Cmd::Deposit("x".into(), 3)).await.unwrap();
    let before = snapshot(&n).await;
    let err = n.execute(Cmd::Withdraw("x".into(), 10)).await.unwrap_err();
    assert_eq!(
        err.rejection().map(String::as_str),
        Some("insufficient funds: 3 < 10")
    );
    assert_eq!(snapshot(&n).await, before);
    n.shutdown().await;
}

#[tokio::test]
async fn safe_mode_rolls_back_a_sloppy_command_and_turns_a_panic_into_an_error() {
    let stream = MemoryStream::new();
    let n = EngineBuilder::new(Ledger::default(), stream.clone())
        .settings(settings(ApplyMode::Safe))
        .start()
        .await
        .unwrap();
    n.execute(Cmd::Deposit("x".into(), 3)).await.unwrap();
    let before = snapshot(&n).await;
    assert!(
        n.execute(Cmd::Sloppy("x".into()))
            .await
            .unwrap_err()
            .rejection()
            .is_some()
    );
    let err = n.execute(Cmd::Panic).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Engine(Error::CommandPanicked { .. })),
        "{err:?}"
    );
    assert_eq!(snapshot(&n).await, before);
    // The engine goes on.
    n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    assert_eq!(n.status(), Status::Running);
    n.shutdown().await;
}

#[tokio::test]
async fn a_panic_outside_safe_mode_poisons_and_the_skip_list_gets_past_it() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    n.execute(Cmd::Deposit("x".into(), 3)).await.unwrap();
    let poison = CommandId::random();
    let err = n.execute_with_id(poison, Cmd::Panic).await.unwrap_err();
    assert!(
        matches!(&err, ExecuteError::Engine(Error::Halted(HaltReason::Poisoned { command_id, .. })) if *command_id == poison),
        "{err:?}"
    );
    // Every call now fails clearly.
    assert!(matches!(
        n.execute(Cmd::Deposit("x".into(), 1)).await,
        Err(ExecuteError::Engine(Error::Halted(_)))
    ));
    assert!(matches!(
        n.query(Consistency::Local, |m| m.clone()).await,
        Err(Error::Halted(_))
    ));
    n.shutdown().await;
    // A node restarted without the skip list halts again at start.
    let again = EngineBuilder::new(Ledger::default(), stream.clone())
        .start()
        .await;
    assert!(
        matches!(again, Err(Error::Halted(HaltReason::Poisoned { .. }))),
        "{again:?}"
    );
    // The operator lists the poison command: the node starts and skips it.
    let healed = EngineBuilder::new(Ledger::default(), stream.clone())
        .skip_commands([poison])
        .start()
        .await
        .unwrap();
    assert_eq!(snapshot(&healed).await.balances["x"], 3);
    healed.shutdown().await;
}

#[tokio::test]
async fn time_and_randomness_come_from_the_log() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a").await;
    a.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = node(&stream, "b").await;
    let (ha, hb) = (snapshot(&a).await.history, snapshot(&b).await.history);
    assert_eq!(ha, hb, "same timestamps and random draws on both nodes");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_whose_settings_differ_from_genesis_refuses_to_start() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    let mut other = Settings::default();
    other.bad_records = BadRecordPolicy::Halt;
    let err = EngineBuilder::new(Ledger::default(), stream.clone())
        .settings(other)
        .start()
        .await
        .unwrap_err();
    match err {
        Error::Halted(HaltReason::SettingsMismatch { differences }) => {
            assert!(differences[0].contains("bad_records"), "{differences:?}")
        }
        other => panic!("expected a settings mismatch, got {other:?}"),
    }
    // The running node is not disturbed by the refused node's Genesis restatement.
    n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    n.shutdown().await;
}

#[tokio::test]
async fn a_frame_of_an_unknown_newer_version_halts() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    stream
        .append(vec![Bytes::from_static(
            br#"{"v":2,"envelopes":[{"future":true}]}"#,
        )])
        .await
        .unwrap();
    let err = n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::Engine(Error::Halted(HaltReason::UnknownFormat { found: 2, .. }))
        ),
        "{err:?}"
    );
    let fresh = EngineBuilder::new(Ledger::default(), stream.clone())
        .start()
        .await;
    assert!(matches!(
        fresh,
        Err(Error::Halted(HaltReason::UnknownFormat { .. }))
    ));
    n.shutdown().await;
}

#[tokio::test]
async fn garbage_records_halt_under_the_halt_policy() {
    let stream = MemoryStream::new();
    let mut s = Settings::default();
    s.bad_records = BadRecordPolicy::Halt;
    let a = EngineBuilder::new(Ledger::default(), stream.clone())
        .settings(s)
        .start()
        .await
        .unwrap();
    stream
        .append(vec![Bytes::from_static(b"garbage")])
        .await
        .unwrap();
    let err = a.execute(Cmd::Deposit("x".into(), 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::Engine(Error::Halted(HaltReason::BadRecord { .. }))
        ),
        "{err:?}"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_does_not_start_with_genesis_is_refused() {
    let stream = MemoryStream::new();
    let donor = MemoryStream::new();
    let n = node(&donor, "a").await;
    n.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    n.shutdown().await;
    // Copy everything but the first record (the Genesis): a log whose beginning was deleted.
    stream.append(donor.payloads()[1..].to_vec()).await.unwrap();
    let err = EngineBuilder::new(Ledger::default(), stream.clone())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Halted(HaltReason::HistoryMissing { .. })),
        "{err:?}"
    );
}

/// A stream whose subscriptions stop delivering while paused: commands stay in flight.
#[derive(Debug, Clone)]
struct PausableStream {
    inner: MemoryStream,
    paused: Arc<std::sync::atomic::AtomicBool>,
    append_delay: Duration,
}

#[derive(Debug)]
struct PausableSubscription {
    inner: Box<dyn memstate_core::Subscription>,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl memstate_core::Subscription for PausableSubscription {
    async fn next(&mut self) -> Result<Option<memstate_core::Record>, memstate_core::StreamError> {
        let next = self.inner.next().await;
        while self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        next
    }
}

#[async_trait::async_trait]
impl Stream for PausableStream {
    fn describe(&self) -> String {
        "pausable memory stream".into()
    }
    fn capabilities(&self) -> memstate_core::Capabilities {
        self.inner.capabilities()
    }
    async fn append(
        &self,
        records: Vec<Bytes>,
    ) -> Result<Vec<memstate_core::Cursor>, memstate_core::StreamError> {
        tokio::time::sleep(self.append_delay).await;
        self.inner.append(records).await
    }
    async fn subscribe(
        &self,
        after: Option<memstate_core::Cursor>,
    ) -> Result<Box<dyn memstate_core::Subscription>, memstate_core::StreamError> {
        Ok(Box::new(PausableSubscription {
            inner: self.inner.subscribe(after).await?,
            paused: Arc::clone(&self.paused),
        }))
    }
    async fn head(&self) -> Result<Option<memstate_core::Cursor>, memstate_core::StreamError> {
        self.inner.head().await
    }
    fn compare_cursors(
        &self,
        a: &memstate_core::Cursor,
        b: &memstate_core::Cursor,
    ) -> Result<std::cmp::Ordering, memstate_core::StreamError> {
        self.inner.compare_cursors(a, b)
    }
}

#[tokio::test]
async fn shutdown_with_commands_in_flight_returns_errors_and_nothing_hangs() {
    let stream = PausableStream {
        inner: MemoryStream::new(),
        paused: Arc::default(),
        append_delay: Duration::ZERO,
    };
    let slow = EngineBuilder::new(Ledger::default(), stream.clone())
        .start()
        .await
        .unwrap();
    stream
        .paused
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut calls = Vec::new();
    for _ in 0..10 {
        let s = slow.clone();
        calls.push(tokio::spawn(async move {
            s.execute(Cmd::Deposit("x".into(), 1)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        stream.inner.len() > 1,
        "the commands were appended and are waiting to be read back"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), slow.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown hung");
    for c in calls {
        let r = tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("a caller hung")
            .unwrap();
        assert!(
            matches!(r, Err(ExecuteError::Engine(Error::ShutDown))),
            "{r:?}"
        );
    }
    assert!(matches!(
        slow.execute(Cmd::Deposit("x".into(), 1)).await,
        Err(ExecuteError::Engine(Error::ShutDown))
    ));
    assert!(matches!(
        slow.query(Consistency::Local, |_| ()).await,
        Err(Error::ShutDown)
    ));
}

#[tokio::test]
async fn at_least_token_carries_a_write_to_a_lagging_node() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a").await;
    stream.set_subscriber_faults(SubscriberFaults::delayed(Duration::from_millis(30)));
    let lagging = EngineBuilder::new(Ledger::default(), stream.clone())
        .node_id("lagging")
        .start()
        .await
        .unwrap();
    stream.set_subscriber_faults(SubscriberFaults::none());
    let mut last = 0;
    for _ in 0..5 {
        last = a.execute(Cmd::Deposit("x".into(), 1)).await.unwrap().index;
    }
    // The engine's own token is its latest write: carried, it is as good.
    assert_eq!(a.last_write(), last);
    let seen = lagging
        .query(Consistency::AtLeast(a.last_write()), |m| m.balances["x"])
        .await
        .unwrap();
    assert_eq!(seen, 5);
    let linear = lagging
        .query(Consistency::Linearizable, |m| m.balances["x"])
        .await
        .unwrap();
    assert_eq!(linear, 5);
    a.shutdown().await;
    lagging.shutdown().await;
}

#[tokio::test]
async fn read_your_writes_is_per_session() {
    let stream = MemoryStream::new();
    let n = node(&stream, "a").await;
    let s1 = n.session();
    let s2 = n.session();
    let w = s1.execute(Cmd::Deposit("x".into(), 7)).await.unwrap();
    assert_eq!(s1.last_write(), w.index);
    assert_eq!(s2.last_write(), 0);
    assert_eq!(
        s1.query(Consistency::ReadYourWrites, |m| m.balances["x"])
            .await
            .unwrap(),
        7
    );
    n.shutdown().await;
}

#[tokio::test]
async fn concurrent_engines_on_one_shared_stream_handle() {
    let stream: Arc<dyn Stream> = Arc::new(MemoryStream::new());
    let a = EngineBuilder::with_shared_stream(Ledger::default(), Arc::clone(&stream))
        .start()
        .await
        .unwrap();
    let b = EngineBuilder::with_shared_stream(Ledger::default(), Arc::clone(&stream))
        .start()
        .await
        .unwrap();
    a.execute(Cmd::Deposit("x".into(), 1)).await.unwrap();
    b.execute(Cmd::Deposit("x".into(), 2)).await.unwrap();
    assert_eq!(
        b.query(Consistency::Linearizable, |m| m.balances["x"])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        a.query(Consistency::Linearizable, |m| m.balances["x"])
            .await
            .unwrap(),
        3
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn concurrent_commands_share_one_frame_while_an_append_is_slow() {
    let stream = PausableStream {
        inner: MemoryStream::new(),
        paused: Arc::default(),
        append_delay: Duration::from_millis(50),
    };
    let n = EngineBuilder::new(Ledger::default(), stream.clone())
        .max_in_flight_appends(1)
        .start()
        .await
        .unwrap();
    let before = stream.inner.len();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let n = n.clone();
            tokio::spawn(async move { n.execute(Cmd::Deposit("x".into(), 1)).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let frames = stream.inner.len() - before;
    assert!(
        frames <= 10,
        "100 commands took {frames} appends: group commit is not packing"
    );
    assert_eq!(snapshot(&n).await.balances["x"], 100);
    n.shutdown().await;
}
