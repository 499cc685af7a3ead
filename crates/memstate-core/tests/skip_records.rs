//! The operator's way past a record the cluster cannot apply
//! (`EngineBuilder::skip_records`): a halted cluster resumes past exactly
//! that record, every node alike; an entry that does not match the record at
//! its cursor changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::history::History;
use memstate_core::{
    AsOf, BadRecordPolicy, Consistency, Cursor, Engine, EngineBuilder, Error, ExecuteError,
    FileSnapshotStore, HaltReason, MemoryStream, RecordSkip, Settings, SnapshotPolicy, Status,
    Stream,
};
use support::{Counters, eventually};

/// A frame of a format no build reads.
const FUTURE_FRAME: &[u8] = br#"{"v":99,"envelopes":[{"from":"the future"}]}"#;

fn halt_policy() -> Settings {
    let mut s = Settings::default();
    s.bad_records = BadRecordPolicy::Halt;
    s
}

fn node(stream: &MemoryStream, id: &str, snaps: Option<&Path>) -> EngineBuilder<Counters> {
    let b = EngineBuilder::new(Counters::default(), stream.clone())
        .node_id(id)
        .settings(halt_policy())
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60));
    match snaps {
        Some(dir) => b.snapshots(FileSnapshotStore::new(dir), SnapshotPolicy::on_demand()),
        None => b,
    }
}

async fn incr(e: &Engine<Counters>, key: &str) -> u64 {
    e.execute(key.to_owned()).await.unwrap().index
}

/// Everything a node's state is judged by: model, applied index, cursor.
async fn state(e: &Engine<Counters>) -> (Counters, u64, Option<Cursor>) {
    let model = e
        .query(Consistency::Linearizable, Counters::clone)
        .await
        .unwrap();
    let stats = e.stats();
    (model, stats.applied_index, stats.cursor)
}

async fn halted(e: &Engine<Counters>) -> HaltReason {
    eventually(Duration::from_secs(30), "the node halts", || {
        matches!(e.stats().status, Status::Halted(_))
    })
    .await;
    match e.stats().status {
        Status::Halted(reason) => reason,
        other => panic!("not halted: {other:?}"),
    }
}

async fn append(stream: &MemoryStream, payload: &'static [u8]) -> Cursor {
    let mut cursors = stream
        .append(vec![Bytes::from_static(payload)])
        .await
        .unwrap();
    cursors.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_cluster_resumes_past_exactly_the_named_record() {
    let stream = MemoryStream::new();
    let snaps = tempfile::tempdir().unwrap();
    let a = node(&stream, "a", Some(snaps.path()))
        .start()
        .await
        .unwrap();
    let b = node(&stream, "b", None).start().await.unwrap();
    let c = node(&stream, "c", None).start().await.unwrap();
    incr(&a, "before").await;
    incr(&b, "before").await;
    a.snapshot().await.unwrap();
    incr(&c, "before").await;

    let bad = append(&stream, FUTURE_FRAME).await;
    let mut skips = Vec::new();
    for e in [&a, &b, &c] {
        let reason = halted(e).await;
        match &reason {
            HaltReason::UnknownFormat { cursor, skip, .. } => {
                assert_eq!(*cursor, bad);
                assert!(
                    reason.to_string().contains(&skip.to_string()),
                    "the halt message prints the entry: {reason}"
                );
                skips.push(skip.clone());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(skips.iter().all(|s| *s == skips[0]), "{skips:?}");
    for e in [&a, &b, &c] {
        e.shutdown().await;
    }

    // Without the entry a node still halts at the record.
    let refused = node(&stream, "x", None).start().await;
    assert!(
        matches!(
            refused,
            Err(Error::Halted(HaltReason::UnknownFormat { .. }))
        ),
        "{refused:?}"
    );

    // The operator copies the entry from the halt message onto every node:
    // one restores its snapshot, two replay the whole log.
    let entry: RecordSkip = skips[0].to_string().parse().unwrap();
    let restart = |id: &str, snaps: Option<&Path>| {
        node(&stream, id, snaps)
            .skip_records([entry.clone()])
            .start()
    };
    let a = restart("a", Some(snaps.path())).await.unwrap();
    let b = restart("b", None).await.unwrap();
    let c = restart("c", None).await.unwrap();
    assert!(a.stats().snapshots.restored_from.is_some());
    for e in [&a, &b, &c] {
        incr(e, "after").await;
    }

    let states = [state(&a).await, state(&b).await, state(&c).await];
    let expected: BTreeMap<String, u64> =
        [("after".to_owned(), 3), ("before".to_owned(), 3)].into();
    assert_eq!(states[0].0.0, expected);
    assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
    for e in [&a, &b, &c] {
        assert_eq!(e.stats().bad_records_skipped, 1);
        assert_eq!(e.stats().status, Status::Running);
        e.shutdown().await;
    }
}

#[tokio::test]
async fn an_entry_whose_checksum_does_not_match_changes_nothing() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a", None).start().await.unwrap();
    let valid = {
        incr(&a, "k").await;
        a.stats().cursor.unwrap()
    };
    let bad = append(&stream, FUTURE_FRAME).await;
    halted(&a).await;
    a.shutdown().await;

    // Right cursors, wrong checksums: the bad record still halts, the valid
    // one is still applied.
    let wrong = [RecordSkip::new(bad.clone(), 0), RecordSkip::new(valid, 0)];
    let start = node(&stream, "b", None).skip_records(wrong).start().await;
    match start {
        Err(Error::Halted(HaltReason::UnknownFormat { cursor, .. })) => assert_eq!(cursor, bad),
        other => panic!("{other:?}"),
    }
    let b = History::<String>::open(stream.clone())
        .await
        .unwrap()
        .skip_records([RecordSkip::new(bad, 0)]);
    let mut b = b.until_head().await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap().command, "k");
    assert!(matches!(
        b.next().await,
        Err(Error::Halted(HaltReason::UnknownFormat { .. }))
    ));
}

#[tokio::test]
async fn garbage_under_the_halt_policy_is_passed_over_alike_by_history_and_engines() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a", None).start().await.unwrap();
    incr(&a, "one").await;
    let bad = append(&stream, b"\x00 not a frame").await;
    let skip = match halted(&a).await {
        HaltReason::BadRecord { cursor, skip, .. } => {
            assert_eq!(cursor, bad);
            assert_eq!(*skip.cursor(), bad);
            skip
        }
        other => panic!("{other:?}"),
    };
    a.shutdown().await;
    let a = node(&stream, "a", None)
        .skip_records([skip.clone()])
        .start()
        .await
        .unwrap();
    let index = incr(&a, "two").await;
    // Time travel from the engine carries its skip list.
    let past = a
        .time_travel(Counters::default())
        .as_of(AsOf::Index(index))
        .await
        .unwrap();
    assert_eq!(past.model.0.get("two"), Some(&1));
    a.shutdown().await;

    let mut history = History::<String>::open(stream.clone())
        .await
        .unwrap()
        .skip_records([skip])
        .until_head()
        .await
        .unwrap();
    let mut read = Vec::new();
    while let Some(entry) = history.next().await.unwrap() {
        read.push((entry.index, entry.command));
    }
    assert_eq!(read, [(2, "one".to_owned()), (index, "two".to_owned())]);
}

/// A build that can read the record passes over it too, so that it agrees
/// with the nodes that could not: the entry is matched by cursor and
/// checksum, not by whether the record opens.
#[tokio::test]
async fn a_matching_entry_is_obeyed_even_by_a_node_that_could_apply_the_record() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a", None).start().await.unwrap();
    incr(&a, "kept").await;
    incr(&a, "dropped").await;
    let dropped = a.stats().cursor.unwrap();
    incr(&a, "kept").await;
    a.shutdown().await;

    let record = stream
        .subscribe(None)
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_ne!(record.cursor, dropped, "the first record is the Genesis");
    let mut sub = stream.subscribe(Some(record.cursor)).await.unwrap();
    let mut target = None;
    while target.is_none() {
        let r = sub.next().await.unwrap().unwrap();
        if r.cursor == dropped {
            target = Some(RecordSkip::of(&r));
        }
    }
    let entry = target.unwrap();
    let start = |id: &str| {
        node(&stream, id, None)
            .skip_records([entry.clone()])
            .start()
    };
    let (b, c) = (start("b").await.unwrap(), start("c").await.unwrap());
    let states = [state(&b).await, state(&c).await];
    let expected: BTreeMap<String, u64> = [("kept".to_owned(), 2)].into();
    assert_eq!(states[0].0.0, expected);
    assert_eq!(states[0], states[1]);
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn execute_on_a_halted_node_names_the_entry() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a", None).start().await.unwrap();
    append(&stream, FUTURE_FRAME).await;
    let err = a.execute("k".to_owned()).await.unwrap_err();
    let ExecuteError::Engine(Error::Halted(HaltReason::UnknownFormat { skip, .. })) = &err else {
        panic!("{err:?}")
    };
    assert!(
        err.to_string()
            .contains(&format!("skip_records [\"{skip}\"]")),
        "{err}"
    );
    a.shutdown().await;
}
