//! Guarantees the documentation states, each checked so that removing it
//! fails a test: what a snapshot restores beside the model (the
//! de-duplication window, the leadership epoch), a snapshot of a newer format
//! refusing start, a claim that skips an epoch, and the clock of
//! bounded-staleness reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::{
    AsOf, Body, CommandId, CommandJson, Consistency, Control, Engine, EngineBuilder, Error,
    ExecuteError, FileSnapshotStore, LeadershipConfig, MemoryStream, NodeId, SnapshotError,
    SnapshotPolicy, Stream,
};
use support::{BoardCmd, Counters, TestStream, builder, paused_runtime, single_leader};

fn node(stream: &MemoryStream, id: &str, snaps: Option<&Path>) -> EngineBuilder<Counters> {
    let b = EngineBuilder::new(Counters::default(), stream.clone())
        .node_id(id)
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60));
    match snaps {
        Some(dir) => b.snapshots(FileSnapshotStore::new(dir), SnapshotPolicy::on_demand()),
        None => b,
    }
}

/// Manual elections only: nothing changes leader unless a test claims.
fn manual() -> LeadershipConfig {
    LeadershipConfig::new(Duration::from_secs(1), Duration::from_secs(600)).with_auto_claim(false)
}

fn count(e: &Engine<Counters>, key: &str) -> u64 {
    e.read_local().unwrap().0.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_snapshot_still_drops_a_retry_of_a_command_before_it() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let id = CommandId::random();
    let a = node(&stream, "a", Some(dir.path())).start().await.unwrap();
    a.execute_with_id(id, "k".into()).await.unwrap();
    a.execute("other".into()).await.unwrap();
    a.snapshot().await.unwrap();
    a.shutdown().await;

    let again = node(&stream, "a", Some(dir.path())).start().await.unwrap();
    assert!(again.stats().snapshots.restored_from.is_some());
    assert!(again.stats().dedup_window_len >= 2);
    // The retry's id is known only from the restored window: the original
    // lies before the snapshot, so the restored node never replays it.
    match again.execute_with_id(id, "k".into()).await {
        Err(ExecuteError::Engine(Error::AlreadyApplied { .. })) => {}
        other => panic!("a retry after restore must be dropped, got {other:?}"),
    }
    assert_eq!(count(&again, "k"), 1);
    // A node replaying the whole log drops it too: both agree.
    let full = node(&stream, "full", None).start().await.unwrap();
    full.query(Consistency::Linearizable, |_| ()).await.unwrap();
    again
        .query(Consistency::Linearizable, |_| ())
        .await
        .unwrap();
    assert_eq!(count(&full, "k"), 1);
    assert_eq!(full.stats().applied_index, again.stats().applied_index);
    again.shutdown().await;
    full.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_snapshot_keeps_the_leadership_epoch_and_follows_the_next_claim() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let leader = |id: &str, snaps: Option<&Path>| {
        node(&stream, id, snaps)
            .settings(single_leader())
            .leadership(manual())
    };
    let a = leader("a", Some(dir.path())).start().await.unwrap();
    assert_eq!(a.claim_leadership().await.unwrap(), 1);
    a.execute("k".into()).await.unwrap();
    a.snapshot().await.unwrap();
    a.shutdown().await;

    let again = leader("a", Some(dir.path())).start().await.unwrap();
    assert!(again.stats().snapshots.restored_from.is_some());
    let restored = again.stats().leadership;
    assert_eq!(restored.epoch, 1);
    assert_eq!(restored.leader, Some(NodeId::new("a")));
    // Still the leader of epoch 1: its commands are not fenced.
    again.execute("k".into()).await.unwrap();
    assert_eq!(count(&again, "k"), 2);

    // Another node claims epoch 2; the restored node accepts it (a node
    // restored at epoch 0 would refuse it as skipping an epoch and diverge).
    let b = leader("b", None).start().await.unwrap();
    assert_eq!(b.claim_leadership().await.unwrap(), 2);
    again
        .query(Consistency::Linearizable, |_| ())
        .await
        .unwrap();
    assert_eq!(again.stats().leadership.epoch, 2);
    assert_eq!(again.stats().leadership.leader, Some(NodeId::new("b")));
    match again.execute("k".into()).await {
        Err(ExecuteError::Engine(Error::NotLeader { .. })) => {}
        other => panic!("a deposed leader must not write, got {other:?}"),
    }
    assert_eq!(count(&again, "k"), count(&b, "k"));
    again.shutdown().await;
    b.shutdown().await;
}

/// Rewrites the format version in a snapshot file's header line.
fn set_snapshot_version(path: &Path, version: u32) {
    let bytes = std::fs::read(path).unwrap();
    let newline = bytes.iter().position(|b| *b == b'\n').unwrap();
    let header = std::str::from_utf8(&bytes[..newline]).unwrap();
    let mut parts: Vec<String> = header.split(' ').map(str::to_owned).collect();
    assert!(parts[1].starts_with('v'), "{header}");
    parts[1] = format!("v{version}");
    let mut out = parts.join(" ").into_bytes();
    out.extend_from_slice(&bytes[newline..]);
    std::fs::write(path, out).unwrap();
}

fn snapshot_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_newer_format_refuses_start_while_a_corrupt_one_is_skipped() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&stream, "a", Some(dir.path())).start().await.unwrap();
    a.execute("k".into()).await.unwrap();
    a.snapshot().await.unwrap();
    a.execute("k".into()).await.unwrap();
    a.snapshot().await.unwrap();
    a.shutdown().await;
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 2);
    let newest = files.last().unwrap();

    // Control: a corrupt newest snapshot is skipped for the older one.
    let original = std::fs::read(newest).unwrap();
    let mut damaged = original.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x55;
    std::fs::write(newest, &damaged).unwrap();
    let e = node(&stream, "a", Some(dir.path())).start().await.unwrap();
    assert_eq!(e.stats().snapshots.rejected_at_start.len(), 1);
    assert!(e.stats().snapshots.restored_from.is_some());
    assert_eq!(count(&e, "k"), 2);
    e.shutdown().await;

    // A newer format is not damage: this build must not start (skipping it
    // for an older snapshot would run old code over state it cannot read).
    std::fs::write(newest, &original).unwrap();
    set_snapshot_version(newest, 999);
    let err = node(&stream, "a", Some(dir.path()))
        .start()
        .await
        .unwrap_err();
    match err {
        Error::Snapshot(SnapshotError::UnknownVersion { found, .. }) => assert_eq!(found, 999),
        other => panic!("expected a refusal naming the version, got {other}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Appends one frame of envelopes `(origin, ts, body)` straight to the stream.
async fn append_frame(stream: &MemoryStream, envelopes: Vec<(&str, u64, Body)>) {
    let encoded: Vec<Vec<u8>> = envelopes
        .into_iter()
        .map(|(origin, ts, body)| {
            let envelope = memstate_core::Envelope {
                id: CommandId::random(),
                origin: NodeId::new(origin),
                ts,
                epoch: None,
                model_version: 1,
                reads: 1,
                body,
            };
            encode_envelope(&envelope).unwrap()
        })
        .collect();
    let frame = encode_frame(encoded.iter().map(Vec::as_slice));
    stream.append(vec![Bytes::from(frame)]).await.unwrap();
}

/// Appends one control envelope from `origin` straight to the stream.
async fn append_control(stream: &MemoryStream, origin: &str, control: Control) {
    append_frame(stream, vec![(origin, now_ms(), Body::Control(control))]).await;
}

/// Node "a", single-leader mode, manual elections, leader of epoch 1.
async fn leader_of_epoch_1(stream: &MemoryStream) -> Engine<Counters> {
    let a = node(stream, "a", None)
        .settings(single_leader())
        .leadership(manual())
        .start()
        .await
        .unwrap();
    assert_eq!(a.claim_leadership().await.unwrap(), 1);
    a
}

/// Found by cargo-mutants (`&&` -> `||` in the heartbeat rule): only the
/// current leader's heartbeat in its own epoch is a sign of life. Another
/// node's heartbeat in the current epoch, or the leader's in an old one,
/// must not move the replicated `last_seen_ts` (it decides elections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leaders_heartbeat_in_its_epoch_is_a_sign_of_life() {
    let stream = MemoryStream::new();
    let a = leader_of_epoch_1(&stream).await;
    // The leader's own heartbeats move it meanwhile, but not an hour ahead.
    let later = now_ms() + 3_600_000;
    let heartbeat = |epoch| Body::Control(Control::Heartbeat { epoch });
    append_frame(&stream, vec![("intruder", later, heartbeat(1))]).await;
    append_frame(&stream, vec![("a", later, heartbeat(0))]).await;
    a.query(Consistency::Linearizable, |_| ()).await.unwrap();
    assert!(a.stats().leadership.last_seen_ts < later);
    // Control: the leader's own heartbeat in its epoch counts.
    append_frame(&stream, vec![("a", later, heartbeat(1))]).await;
    a.query(Consistency::Linearizable, |_| ()).await.unwrap();
    assert_eq!(a.stats().leadership.last_seen_ts, later);
    a.shutdown().await;
}

/// Found by cargo-mutants (the index handed to the stop rule): time travel
/// to an index inside a frame of several envelopes stops at that envelope,
/// not at the end of the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_stops_inside_a_frame_of_several_commands() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a", None).start().await.unwrap();
    let k = || Body::Command(CommandJson::from(&serde_json::json!("k")));
    append_frame(
        &stream,
        vec![
            ("w", now_ms(), k()),
            ("w", now_ms(), k()),
            ("w", now_ms(), k()),
        ],
    )
    .await;
    a.query(Consistency::Linearizable, |_| ()).await.unwrap();
    let last = a.stats().applied_index;
    assert_eq!(count(&a, "k"), 3);
    let past = a
        .time_travel(Counters::default())
        .as_of(AsOf::Index(last - 1))
        .await
        .unwrap();
    assert_eq!(
        (past.applied_index, past.model.0.get("k")),
        (last - 1, Some(&2))
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_skips_an_epoch_is_rejected_and_the_next_epoch_is_accepted() {
    let stream = MemoryStream::new();
    let a = leader_of_epoch_1(&stream).await;

    append_control(&stream, "intruder", Control::AssumeLeadership { epoch: 3 }).await;
    a.query(Consistency::Linearizable, |_| ()).await.unwrap();
    let l = a.stats().leadership;
    assert_eq!((l.epoch, l.leader), (1, Some(NodeId::new("a"))));
    a.execute("k".into()).await.unwrap();

    // Control: the claim of exactly the next epoch wins.
    append_control(&stream, "intruder", Control::AssumeLeadership { epoch: 2 }).await;
    a.query(Consistency::Linearizable, |_| ()).await.unwrap();
    let l = a.stats().leadership;
    assert_eq!((l.epoch, l.leader), (2, Some(NodeId::new("intruder"))));
    assert!(!a.is_leader());
    a.shutdown().await;
}

#[test]
fn bounded_staleness_counts_a_catch_up_from_before_the_head_was_asked() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let client = TestStream::new(memory.clone());
        let reader = builder(client.clone(), "r").start().await.unwrap();
        let writer = builder(memory.clone(), "w").start().await.unwrap();
        writer.execute(BoardCmd::Set(1)).await.unwrap();
        let bound = Duration::from_secs(1);

        // Stale: the next bounded read must ask for the head. The answer
        // takes 3 s to come (the stream is cut off meanwhile).
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.set_cut_off(true);
        let asking = {
            let reader = reader.clone();
            tokio::spawn(async move {
                reader
                    .query(Consistency::BoundedStaleness(bound), |b| b.register)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(client.heads(), 1);
        client.set_cut_off(false);
        assert_eq!(asking.await.unwrap().unwrap(), 1);

        // The state read is what the stream held when the head was asked,
        // 3 s ago: older than the bound, so the next read asks again
        // instead of answering locally.
        let age = reader.stats().caught_up_age.unwrap();
        assert!(age >= Duration::from_secs(3), "caught up {age:?} ago");
        writer.execute(BoardCmd::Set(2)).await.unwrap();
        assert_eq!(
            reader
                .query(Consistency::BoundedStaleness(bound), |b| b.register)
                .await
                .unwrap(),
            2
        );
        assert_eq!(client.heads(), 2);
        writer.shutdown().await;
        reader.shutdown().await;
    });
}
