//! A retry learns what really happened to its command id: applied, fenced
//! (nothing happened: the id is free) or deterministically rejected — on
//! every node alike, after a restart and after a snapshot restore.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::{
    ApplyMode, Body, CommandContext, CommandId, CommandJson, Consistency, Engine, EngineBuilder,
    Envelope, Error, ExecuteError, FileSnapshotStore, MemoryStream, Model, NodeId, Rejection,
    Settings, SnapshotPolicy, Stream, WriteMode,
};
use serde::{Deserialize, Serialize};
use support::{TestStream, eventually};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counts(BTreeMap<String, u64>);

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Incr(String),
    Panic,
}

impl Model for Counts {
    type Command = Cmd;
    type Output = u64;
    type Error = String;

    fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        match cmd {
            Cmd::Incr(key) => {
                let c = self.0.entry(key).or_default();
                *c += 1;
                Ok(*c)
            }
            Cmd::Panic => panic!("boom"),
        }
    }
}

fn settings(write_mode: WriteMode, apply_mode: ApplyMode) -> Settings {
    let mut s = Settings::default();
    s.write_mode = write_mode;
    s.apply_mode = apply_mode;
    s
}

fn builder(stream: &MemoryStream, id: &str, settings: &Settings) -> EngineBuilder<Counts> {
    EngineBuilder::new(Counts::default(), stream.clone())
        .node_id(id)
        .settings(settings.clone())
        .execute_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
}

async fn node(stream: &MemoryStream, id: &str, settings: &Settings) -> Engine<Counts> {
    builder(stream, id, settings).start().await.unwrap()
}

/// A node that writes its snapshots (on demand only) under `dir`.
async fn node_with_snapshots(
    stream: &MemoryStream,
    id: &str,
    settings: &Settings,
    dir: &Path,
) -> Engine<Counts> {
    builder(stream, id, settings)
        .snapshots(FileSnapshotStore::new(dir), SnapshotPolicy::on_demand())
        .start()
        .await
        .unwrap()
}

/// Appends, as another node would, one frame with one command envelope.
async fn append_by_hand(
    stream: &MemoryStream,
    id: CommandId,
    origin: &str,
    epoch: Option<u64>,
    command: serde_json::Value,
) {
    let envelope = Envelope {
        id,
        origin: NodeId::new(origin),
        ts: 1,
        epoch,
        model_version: 1,
        reads: 1,
        body: Body::Command(CommandJson::from(&command)),
    };
    let bytes = encode_envelope(&envelope).unwrap();
    let frame = encode_frame([bytes.as_slice()]);
    stream.append(vec![Bytes::from(frame)]).await.unwrap();
}

async fn count(engine: &Engine<Counts>, key: &str) -> u64 {
    engine
        .query(Consistency::Linearizable, |m| {
            m.0.get(key).copied().unwrap_or(0)
        })
        .await
        .unwrap()
}

fn incr(key: &str) -> serde_json::Value {
    serde_json::to_value(Cmd::Incr(key.into())).unwrap()
}

fn engine_error<T: std::fmt::Debug>(result: Result<T, ExecuteError<String>>) -> Error {
    match result {
        Err(ExecuteError::Engine(e)) => e,
        other => panic!("expected an engine error, got {other:?}"),
    }
}

/// The reproduction: the old leader's command lands after the new
/// leader's claim and is fenced; its retry on the new leader must apply, and
/// a copy that lands after the retry is a duplicate.
#[tokio::test]
async fn a_fenced_command_does_not_consume_its_id_and_its_retry_on_the_leader_applies() {
    let single = settings(WriteMode::SingleLeader, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let old = node(&memory, "old", &single).await;
    let new = node(&memory, "new", &single).await;
    assert_eq!(old.claim_leadership().await.unwrap(), 1);
    old.execute(Cmd::Incr("before".into())).await.unwrap();
    assert_eq!(new.claim_leadership().await.unwrap(), 2);

    // The old leader's append of X, written under epoch 1, lands late.
    let x = CommandId::random();
    append_by_hand(&memory, x, "old", Some(1), incr("x")).await;
    assert_eq!(count(&new, "x").await, 0);
    assert_eq!(count(&old, "x").await, 0);
    assert_eq!(new.stats().commands_fenced, 1);
    assert_eq!(old.stats().commands_fenced, 1);

    // The client heard NotLeader (or a timeout) and retries X on the leader.
    let retried = new.execute_with_id(x, Cmd::Incr("x".into())).await.unwrap();
    assert_eq!(retried.output, 1, "the retry of a fenced command applies");
    assert_eq!(count(&old, "x").await, 1);

    // Another copy of the old append lands after the retry applied: a duplicate.
    append_by_hand(&memory, x, "old", Some(1), incr("x")).await;
    assert_eq!(count(&new, "x").await, 1);
    assert_eq!(
        new.stats().commands_fenced,
        1,
        "dropped as a duplicate, not fenced"
    );
    match engine_error(new.execute_with_id(x, Cmd::Incr("x".into())).await) {
        Error::AlreadyApplied { command_id, index } => {
            assert_eq!(command_id, x);
            assert_eq!(index, retried.index);
        }
        other => panic!("expected AlreadyApplied, got {other:?}"),
    }

    // A node that replays the whole log decides alike.
    let late = node(&memory, "late", &single).await;
    assert_eq!(count(&late, "x").await, 1);
    assert_eq!(late.stats().commands_fenced, 1);
    for engine in [old, new, late] {
        engine.shutdown().await;
    }
}

/// A fenced copy from another node that lands while this node's own copy of
/// the same id is still in flight does not answer this node's caller with
/// `NotLeader`: its own copy is still to come, and it applies.
#[tokio::test]
async fn a_fenced_copy_from_another_node_leaves_the_leaders_own_copy_to_apply() {
    let single = settings(WriteMode::SingleLeader, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let gated = TestStream::new(memory.clone());
    let leader = EngineBuilder::new(Counts::default(), gated.clone())
        .node_id("leader")
        .settings(single)
        .start()
        .await
        .unwrap();
    leader.claim_leadership().await.unwrap();
    let x = CommandId::random();
    gated.close_gate_for_commands();
    let own = tokio::spawn({
        let leader = leader.clone();
        async move { leader.execute_with_id(x, Cmd::Incr("x".into())).await }
    });
    gated.wait_held(1).await;
    append_by_hand(&memory, x, "old-leader", Some(0), incr("x")).await;
    eventually(Duration::from_secs(10), "the stray copy is fenced", || {
        leader.stats().commands_fenced == 1
    })
    .await;
    gated.open_gate();
    let done = own.await.unwrap().unwrap();
    assert_eq!(done.output, 1, "the leader's own copy applied");
    assert_eq!(count(&leader, "x").await, 1);
    leader.shutdown().await;
}

/// Takes a snapshot on `engine`'s store, then shows that a node restored from
/// it (and replaying nothing before it) answers a retry of `id` with `check`.
async fn after_restore(
    memory: &MemoryStream,
    dir: &Path,
    settings: &Settings,
    id: CommandId,
    check: impl Fn(Error),
) {
    let restored = node_with_snapshots(memory, "restored", settings, dir).await;
    assert!(restored.stats().snapshots.restored_from.is_some());
    check(engine_error(
        restored
            .execute_with_id(id, Cmd::Incr("retry".into()))
            .await,
    ));
    assert_eq!(count(&restored, "retry").await, 0);
    restored.shutdown().await;
}

#[tokio::test]
async fn a_retry_of_a_skipped_command_is_rejected_alike_never_already_applied() {
    let multi = settings(WriteMode::MultiWriter, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let x = CommandId::random();
    let a = builder(&memory, "a", &multi)
        .skip_commands([x])
        .snapshots(
            FileSnapshotStore::new(dir.path()),
            SnapshotPolicy::on_demand(),
        )
        .start()
        .await
        .unwrap();
    let b = builder(&memory, "b", &multi)
        .skip_commands([x])
        .start()
        .await
        .unwrap();
    assert!(matches!(
        engine_error(a.execute_with_id(x, Cmd::Incr("x".into())).await),
        Error::Skipped(id) if id == x
    ));
    let first_index = a.stats().applied_index;
    let rejected_at = |e: Error| match e {
        Error::AlreadyRejected {
            command_id,
            index,
            reason: Rejection::Skipped,
        } => {
            assert_eq!(command_id, x);
            assert_eq!(index, first_index, "names the index of the skipped copy");
        }
        other => panic!("expected AlreadyRejected(Skipped), got {other:?}"),
    };
    // On the same node and on another node alike.
    rejected_at(engine_error(
        a.execute_with_id(x, Cmd::Incr("x".into())).await,
    ));
    rejected_at(engine_error(
        b.execute_with_id(x, Cmd::Incr("x".into())).await,
    ));
    a.snapshot().await.unwrap();
    after_restore(&memory, dir.path(), &multi, x, rejected_at).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_retry_of_a_command_that_panicked_in_safe_mode_is_rejected_alike() {
    let safe = settings(WriteMode::MultiWriter, ApplyMode::Safe);
    let memory = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let a = node_with_snapshots(&memory, "a", &safe, dir.path()).await;
    let b = node(&memory, "b", &safe).await;
    let x = CommandId::random();
    assert!(matches!(
        engine_error(a.execute_with_id(x, Cmd::Panic).await),
        Error::CommandPanicked { .. }
    ));
    let panicked_at = a.stats().applied_index;
    let rejected = |e: Error| match e {
        Error::AlreadyRejected {
            command_id,
            index,
            reason: Rejection::Panicked { message },
        } => {
            assert_eq!(command_id, x);
            assert_eq!(index, panicked_at);
            assert_eq!(message, "boom");
        }
        other => panic!("expected AlreadyRejected(Panicked), got {other:?}"),
    };
    rejected(engine_error(
        b.execute_with_id(x, Cmd::Incr("x".into())).await,
    ));
    a.snapshot().await.unwrap();
    after_restore(&memory, dir.path(), &safe, x, rejected).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_retry_of_an_applied_command_is_answered_already_applied_after_a_restore() {
    let multi = settings(WriteMode::MultiWriter, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let a = node_with_snapshots(&memory, "a", &multi, dir.path()).await;
    let x = CommandId::random();
    let done = a.execute_with_id(x, Cmd::Incr("x".into())).await.unwrap();
    a.snapshot().await.unwrap();
    after_restore(&memory, dir.path(), &multi, x, |e| match e {
        Error::AlreadyApplied { command_id, index } => {
            assert_eq!(command_id, x);
            assert_eq!(index, done.index);
        }
        other => panic!("expected AlreadyApplied, got {other:?}"),
    })
    .await;
    assert_eq!(count(&a, "x").await, 1);
    a.shutdown().await;
}

#[tokio::test]
async fn a_fenced_id_stays_free_after_a_snapshot_restore() {
    let single = settings(WriteMode::SingleLeader, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let leader = node_with_snapshots(&memory, "leader", &single, dir.path()).await;
    leader.claim_leadership().await.unwrap();
    let x = CommandId::random();
    append_by_hand(&memory, x, "impostor", Some(1), incr("x")).await;
    assert_eq!(count(&leader, "x").await, 0);
    assert_eq!(leader.stats().commands_fenced, 1);
    leader.snapshot().await.unwrap();
    leader.shutdown().await;

    let restored = node_with_snapshots(&memory, "leader", &single, dir.path()).await;
    assert!(restored.stats().snapshots.restored_from.is_some());
    assert!(restored.is_leader());
    let done = restored
        .execute_with_id(x, Cmd::Incr("x".into()))
        .await
        .unwrap();
    assert_eq!(done.output, 1, "the fenced id was not consumed");
    restored.shutdown().await;
}

/// The history reader decides as the engines did: the fenced copy, the
/// applied retry and the late duplicate, with the engine's indexes.
#[tokio::test]
async fn the_history_reader_reports_fenced_applied_and_duplicate_copies_with_engine_indexes() {
    use memstate_core::history::{Fate, History};
    let single = settings(WriteMode::SingleLeader, ApplyMode::Direct);
    let memory = MemoryStream::new();
    let leader = node(&memory, "leader", &single).await;
    leader.claim_leadership().await.unwrap();
    let x = CommandId::random();
    append_by_hand(&memory, x, "impostor", Some(1), incr("x")).await;
    let retried = leader
        .execute_with_id(x, Cmd::Incr("x".into()))
        .await
        .unwrap();
    append_by_hand(&memory, x, "impostor", Some(1), incr("x")).await;
    assert_eq!(count(&leader, "x").await, 1);
    leader.shutdown().await;
    // Read after the shutdown: a clean shutdown appends the node's departure.
    let applied_index = leader.stats().applied_index;

    let mut history = History::<Cmd>::open(memory.clone())
        .await
        .unwrap()
        .until_head()
        .await
        .unwrap();
    let mut fates = Vec::new();
    while let Some(entry) = history.next().await.unwrap() {
        assert_eq!(entry.command_id, x);
        assert!(matches!(entry.command, Cmd::Incr(ref k) if k == "x"));
        fates.push((entry.index, entry.fate));
    }
    assert_eq!(fates.len(), 3, "{fates:?}");
    assert!(
        matches!(fates[0].1, Fate::Fenced { epoch: 1, .. }),
        "{fates:?}"
    );
    assert_eq!(fates[1], (retried.index, Fate::Applied));
    assert_eq!(
        fates[2].1,
        Fate::Duplicate {
            first_index: retried.index
        }
    );
    assert_eq!(
        history.index(),
        applied_index,
        "control records are counted too"
    );
}
