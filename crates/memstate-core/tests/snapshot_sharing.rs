//! Snapshots of a model on persistent collections (structural sharing):
//! taken while commands are applied, each holds exactly the state at its
//! own position; and the file format stays readable across builds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use memstate_core::envelope::decode_frame;
use memstate_core::snapshot::SnapshotStore;
use memstate_core::{
    Body, CommandContext, Consistency, Engine, EngineBuilder, FileSnapshotStore, MemoryStream,
    Model, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};

/// Keys and their last values, and every value in the order applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Shared {
    map: imbl::OrdMap<u64, u64>,
    order: imbl::Vector<u64>,
}

impl Model for Shared {
    type Command = u64;
    type Output = ();
    type Error = String;
    fn apply(&mut self, v: u64, _: &mut CommandContext<'_>) -> Result<(), String> {
        self.map.insert(v % 37, v);
        self.order.push_back(v);
        Ok(())
    }
}

fn fold(order: &imbl::Vector<u64>) -> imbl::OrdMap<u64, u64> {
    order.iter().map(|v| (v % 37, *v)).collect()
}

async fn start(stream: &MemoryStream, dir: &Path, policy: SnapshotPolicy) -> Engine<Shared> {
    EngineBuilder::new(Shared::default(), stream.clone())
        .snapshots(FileSnapshotStore::new(dir).keep(1000), policy)
        .start()
        .await
        .unwrap()
}

/// How many of the log's first `applied` envelopes are commands.
fn commands_within(stream: &MemoryStream, applied: u64) -> usize {
    let mut seen = 0u64;
    let mut commands = 0;
    for payload in stream.payloads() {
        for envelope in decode_frame(&payload).unwrap() {
            if seen == applied {
                return commands;
            }
            seen += 1;
            if matches!(envelope.body, Body::Command(_)) {
                commands += 1;
            }
        }
    }
    assert_eq!(seen, applied, "the snapshot lies past the log's end");
    commands
}

#[derive(Deserialize)]
struct Stored {
    meta: memstate_core::SnapshotMeta,
    model: Shared,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_taken_during_writes_hold_the_state_at_their_own_position() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(start(&stream, dir.path(), SnapshotPolicy::every_envelopes(40)).await);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move {
                for i in 0..300u64 {
                    engine.execute(w * 1_000_000 + i).await.unwrap();
                }
            })
        })
        .collect();
    let mut on_demand = Vec::new();
    while !writers.iter().all(|w| w.is_finished()) {
        on_demand.push(engine.snapshot().await.unwrap());
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let last = engine
        .query(Consistency::Local, Clone::clone)
        .await
        .unwrap();
    assert_eq!(last.order.len(), 1200);

    let store = FileSnapshotStore::new(dir.path());
    let listed = store.list().await.unwrap();
    assert!(
        listed.len() >= 5,
        "snapshots by policy and on demand: {}",
        listed.len()
    );
    let mut mid_write = 0;
    for stored in &listed {
        let body: Stored = serde_json::from_slice(&store.load(stored).await.unwrap()).unwrap();
        let n = commands_within(&stream, body.meta.applied_index);
        assert_eq!(
            body.model.order.len(),
            n,
            "the snapshot at {} holds the commands before it, no more, no fewer",
            body.meta.applied_index
        );
        assert_eq!(body.model.order, last.order.take(n));
        assert_eq!(body.model.map, fold(&body.model.order));
        if n > 0 && n < 1200 {
            mid_write += 1;
        }
    }
    assert!(mid_write > 0, "some snapshots were taken while writes ran");
    let engine = Arc::try_unwrap(engine).ok().unwrap();
    engine.shutdown().await;

    // Every node restarting from the newest snapshot reaches the same state.
    let restarted = start(&stream, dir.path(), SnapshotPolicy::on_demand()).await;
    assert!(restarted.stats().snapshots.restored_from.is_some());
    let state = restarted
        .query(Consistency::Linearizable, Clone::clone)
        .await
        .unwrap();
    assert_eq!(state, last);
    restarted.shutdown().await;
}

/// A snapshot as builds before streaming wrote it: the body in one piece,
/// its keys in `serde_json::Map` order, the length unpadded in the header.
/// It still restores, and the streamed file of the same state holds the
/// same JSON.
#[tokio::test]
async fn a_snapshot_in_the_layout_earlier_builds_wrote_still_restores() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&stream, dir.path(), SnapshotPolicy::on_demand()).await;
    for v in 0..50 {
        engine.execute(v).await.unwrap();
    }
    let meta = engine.snapshot().await.unwrap();
    for v in 50..60 {
        engine.execute(v).await.unwrap();
    }
    let expected = engine
        .query(Consistency::Local, Clone::clone)
        .await
        .unwrap();
    engine.shutdown().await;

    let store = FileSnapshotStore::new(dir.path());
    let listed = store.list().await.unwrap();
    let streamed = store.load(&listed[0]).await.unwrap();
    assert_eq!(meta.bytes, streamed.len() as u64);
    let value: serde_json::Value = serde_json::from_slice(&streamed).unwrap();
    let old_layout = serde_json::to_vec(&value).unwrap();
    std::fs::remove_file(&listed[0].location).unwrap();
    store.save(&meta, old_layout.clone()).await.unwrap();
    let file = std::fs::read(&listed[0].location).unwrap();
    assert!(
        file.starts_with(
            format!(
                "memstate-snapshot v1 crc32c={:08x} len={}\n",
                crc32c::crc32c(&old_layout),
                old_layout.len()
            )
            .as_bytes()
        ),
        "the earlier header"
    );

    let restarted = start(&stream, dir.path(), SnapshotPolicy::on_demand()).await;
    let stats = restarted.stats();
    assert_eq!(
        stats.snapshots.restored_from.map(|m| m.applied_index),
        Some(meta.applied_index)
    );
    assert_eq!(stats.commands_applied, 10, "only the tail is replayed");
    let state = restarted
        .query(Consistency::Linearizable, Clone::clone)
        .await
        .unwrap();
    assert_eq!(state, expected);
    restarted.shutdown().await;
}
