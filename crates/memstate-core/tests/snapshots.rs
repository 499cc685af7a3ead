//! Snapshots: restart replays only the tail and reaches the same state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use memstate_core::{
    BadRecordPolicy, CommandContext, Consistency, Engine, EngineBuilder, Error, FileSnapshotStore,
    MemoryStream, Model, Settings, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, u64>,
    order: Vec<u64>,
}

impl Model for Kv {
    type Command = (String, u64);
    type Output = ();
    type Error = String;
    fn apply(&mut self, (k, v): (String, u64), ctx: &mut CommandContext<'_>) -> Result<(), String> {
        self.map.insert(k, v);
        self.order.push(ctx.index());
        Ok(())
    }
}

async fn start(stream: &MemoryStream, snaps: Option<&PathBuf>) -> Engine<Kv> {
    let b = EngineBuilder::new(Kv::default(), stream.clone());
    let b = match snaps {
        Some(dir) => b.snapshots(FileSnapshotStore::new(dir), SnapshotPolicy::on_demand()),
        None => b,
    };
    b.start().await.unwrap()
}

async fn write(e: &Engine<Kv>, from: u64, to: u64) {
    for i in from..to {
        e.execute((format!("k{}", i % 10), i)).await.unwrap();
    }
}

async fn state(e: &Engine<Kv>) -> Kv {
    e.query(Consistency::Linearizable, Clone::clone)
        .await
        .unwrap()
}

#[tokio::test]
async fn restart_from_a_snapshot_replays_only_the_tail_and_matches_a_full_replay() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().to_path_buf();
    let e = start(&stream, Some(&snaps)).await;
    write(&e, 0, 100).await;
    let meta = e.snapshot().await.unwrap();
    assert!(meta.applied_index >= 100);
    write(&e, 100, 120).await;
    let expected = state(&e).await;
    e.shutdown().await;

    let restored = start(&stream, Some(&snaps)).await;
    let stats = restored.stats();
    assert_eq!(
        stats
            .snapshots
            .restored_from
            .as_ref()
            .map(|m| m.applied_index),
        Some(meta.applied_index)
    );
    assert_eq!(
        stats.commands_applied, 20,
        "only the tail after the snapshot is replayed"
    );
    assert_eq!(state(&restored).await, expected);

    let full = start(&stream, None).await;
    assert_eq!(full.stats().commands_applied, 120);
    assert_eq!(state(&full).await, expected);
    assert_eq!(full.stats().applied_index, restored.stats().applied_index);
    restored.shutdown().await;
    full.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_falls_back_to_an_older_one_and_is_reported() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().to_path_buf();
    let e = start(&stream, Some(&snaps)).await;
    write(&e, 0, 10).await;
    let older = e.snapshot().await.unwrap();
    write(&e, 10, 20).await;
    let newer = e.snapshot().await.unwrap();
    write(&e, 20, 25).await;
    let expected = state(&e).await;
    e.shutdown().await;
    let newest = snaps.join(format!("snapshot-{:020}.snap", newer.applied_index));
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();

    let again = start(&stream, Some(&snaps)).await;
    let stats = again.stats().snapshots;
    assert_eq!(
        stats.restored_from.map(|m| m.applied_index),
        Some(older.applied_index)
    );
    assert_eq!(
        stats.rejected_at_start.len(),
        1,
        "{:?}",
        stats.rejected_at_start
    );
    assert!(
        stats.rejected_at_start[0].contains("corrupt"),
        "{:?}",
        stats.rejected_at_start
    );
    assert_eq!(state(&again).await, expected);
    again.shutdown().await;
}

#[tokio::test]
async fn with_no_valid_snapshot_the_whole_log_is_replayed() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().to_path_buf();
    let e = start(&stream, Some(&snaps)).await;
    write(&e, 0, 10).await;
    let meta = e.snapshot().await.unwrap();
    let expected = state(&e).await;
    e.shutdown().await;
    std::fs::write(
        snaps.join(format!("snapshot-{:020}.snap", meta.applied_index)),
        b"garbage",
    )
    .unwrap();
    let again = start(&stream, Some(&snaps)).await;
    let stats = again.stats();
    assert!(stats.snapshots.restored_from.is_none());
    assert_eq!(stats.snapshots.rejected_at_start.len(), 1);
    assert_eq!(stats.commands_applied, 10);
    assert_eq!(state(&again).await, expected);
    again.shutdown().await;
}

#[tokio::test]
async fn the_policy_takes_snapshots_every_n_envelopes() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let e = EngineBuilder::new(Kv::default(), stream.clone())
        .snapshots(
            FileSnapshotStore::new(dir.path()).keep(10),
            SnapshotPolicy::every_envelopes(25),
        )
        .start()
        .await
        .unwrap();
    // A snapshot due while the previous one is still being written is not
    // queued, so bursts written faster than the disk would merge. Each burst
    // of 25 waits for the snapshot it makes due: three bursts, three
    // snapshots, whatever the disk's speed.
    for burst in 1..=3u64 {
        write(&e, (burst - 1) * 25, burst * 25).await;
        wait_for_snapshots(&e, burst).await;
        let last = e.stats().snapshots.last_taken.unwrap();
        assert!(last.applied_index >= 25 * burst, "{last:?}");
    }
    assert_eq!(e.stats().snapshots.taken, 3);
    assert_eq!(e.stats().snapshots.failed, 0);
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|f| f.file_name().to_string_lossy().ends_with(".snap"))
        .count();
    assert_eq!(files, 3, "{files} snapshot files");
    assert!(e.stats().snapshots.last_pause.is_some());
    e.shutdown().await;
}

/// Found by cargo-mutants (the byte count never growing): a policy by bytes
/// alone takes a snapshot once that many record bytes were applied.
#[tokio::test]
async fn the_policy_takes_a_snapshot_after_n_bytes() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let e = EngineBuilder::new(Kv::default(), stream.clone())
        .snapshots(
            FileSnapshotStore::new(dir.path()),
            SnapshotPolicy::on_demand().with_bytes(2_000),
        )
        .start()
        .await
        .unwrap();
    write(&e, 0, 40).await;
    wait_for_snapshots(&e, 1).await;
    assert!(e.stats().snapshots.last_taken.is_some());
    e.shutdown().await;
}

/// Waits until `n` snapshots were written; the deadline only guards a hang.
async fn wait_for_snapshots(e: &Engine<Kv>, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while e.stats().snapshots.taken < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshots after 120 s: {:?}",
            e.stats().snapshots
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_time_trigger_fires_on_a_node_that_receives_nothing_more() {
    // The clock is paused: it moves only when every task waits on a timer.
    let hour = Duration::from_secs(3600);
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let e = EngineBuilder::new(Kv::default(), stream.clone())
        .snapshots(
            FileSnapshotStore::new(dir.path()).keep(10),
            SnapshotPolicy::on_demand().with_interval(hour),
        )
        .start()
        .await
        .unwrap();
    write(&e, 0, 5).await;
    let applied = e.stats().applied_index;
    // No record arrives after these: only a timer can take the snapshot.
    let deadline = tokio::time::Instant::now() + 3 * hour;
    while e.stats().snapshots.taken == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot three intervals after the last record: {:?}",
            e.stats().snapshots
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let taken = e.stats().snapshots.last_taken.unwrap();
    assert_eq!(taken.applied_index, applied, "{taken:?}");
    // Nothing new since: more idle intervals take no more snapshots.
    tokio::time::sleep(5 * hour).await;
    assert_eq!(e.stats().snapshots.taken, 1, "{:?}", e.stats().snapshots);
    assert_eq!(e.stats().snapshots.failed, 0);
    e.shutdown().await;

    // The timer's snapshot is on disk. Shutting down applies the node's own
    // departure record, and that record may trigger one more snapshot (an
    // interval has passed): the restart uses the newest, never an older one.
    let timer_snapshot = dir.path().join(format!("snapshot-{applied:020}.snap"));
    assert!(timer_snapshot.exists(), "{timer_snapshot:?} missing");
    let restored = start(&stream, Some(&dir.path().to_path_buf())).await;
    let from = restored
        .stats()
        .snapshots
        .restored_from
        .map(|m| m.applied_index);
    assert!(
        from.is_some_and(|i| i >= applied),
        "restored from {from:?}, the timer's snapshot is at {applied}"
    );
    restored.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_taken_under_other_settings_is_refused() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().to_path_buf();
    let e = start(&stream, Some(&snaps)).await;
    write(&e, 0, 5).await;
    e.snapshot().await.unwrap();
    e.shutdown().await;
    let mut other = Settings::default();
    other.bad_records = BadRecordPolicy::Halt;
    let err = EngineBuilder::new(Kv::default(), stream.clone())
        .settings(other)
        .snapshots(FileSnapshotStore::new(&snaps), SnapshotPolicy::on_demand())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Halted(memstate_core::HaltReason::SettingsMismatch { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn snapshot_without_a_store_is_a_clear_error() {
    let stream = MemoryStream::new();
    let e = start(&stream, None).await;
    let err = e.snapshot().await.unwrap_err();
    assert!(err.to_string().contains("no snapshot store"), "{err}");
    e.shutdown().await;
}
