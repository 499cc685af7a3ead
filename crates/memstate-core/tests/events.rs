//! Events through the engine: what is emitted, when it is handed out, what a
//! failing command leaves behind, and what a slow subscriber gets. Time
//! travel over the same log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use memstate_core::{
    ApplyMode, AsOf, CommandContext, CommandId, Consistency, Engine, EngineBuilder, Error,
    EventError, EventModel, EventWindow, EventsFrom, ExecuteError, FileSnapshotStore, MemoryStream,
    Model, Settings, SnapshotPolicy, Stream, TimeTravel,
};
use serde::{Deserialize, Serialize};

/// A counter that reports what each command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Cmd {
    /// Adds; emits `Added`.
    Add(i64),
    /// Emits `Added`, then refuses.
    AddThenRefuse(i64),
    /// Emits `Added`, mutates, then panics (safe mode rolls it back).
    AddThenPanic(i64),
    /// Adds and emits an event JSON cannot encode (a map with non-string keys).
    AddWithBadEvent(i64),
    /// Emits `n` events.
    Burst(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum CounterEvent {
    Added { by: i64, total: i64 },
    Tick(u32),
    Odd(HashMap<(u8, u8), u8>),
}

impl Model for Counter {
    type Command = Cmd;
    type Output = i64;
    type Error = String;

    fn apply(&mut self, cmd: Cmd, ctx: &mut CommandContext<'_>) -> Result<i64, String> {
        match cmd {
            Cmd::Add(n) => {
                self.total += n;
                ctx.emit(CounterEvent::Added {
                    by: n,
                    total: self.total,
                });
            }
            Cmd::AddThenRefuse(n) => {
                ctx.emit(CounterEvent::Added {
                    by: n,
                    total: self.total + n,
                });
                return Err("refused".into());
            }
            Cmd::AddThenPanic(n) => {
                ctx.emit(CounterEvent::Added {
                    by: n,
                    total: self.total + n,
                });
                self.total += n;
                panic!("a bug in the model");
            }
            Cmd::AddWithBadEvent(n) => {
                let odd = CounterEvent::Odd(HashMap::from([((1, 2), 3)]));
                assert!(ctx.try_emit(&odd).is_err());
                self.total += n;
            }
            Cmd::Burst(n) => {
                for i in 0..n {
                    ctx.emit(CounterEvent::Tick(i));
                }
            }
        }
        Ok(self.total)
    }
}

impl EventModel for Counter {
    type Event = CounterEvent;
}

fn safe() -> Settings {
    let mut s = Settings::default();
    s.apply_mode = ApplyMode::Safe;
    s
}

fn node(stream: &MemoryStream, id: &str) -> EngineBuilder<Counter> {
    EngineBuilder::new(Counter::default(), stream.clone())
        .node_id(id)
        .settings(safe())
        .execute_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
}

async fn next<E>(sub: &mut memstate_core::EventSubscription<E>) -> memstate_core::Event<E> {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("an event within 30 s")
        .expect("an event, not an error")
}

// Several threads: the subscriber runs while the apply loop is still busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_handed_out_only_once_its_state_is_visible() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    let mut sub = engine.events(EventsFrom::Now);
    let writer = engine.clone();
    let writes = tokio::spawn(async move {
        for i in 1..=200 {
            writer.execute(Cmd::Add(i)).await.unwrap();
        }
    });
    for _ in 0..200 {
        let event = next(&mut sub).await;
        let CounterEvent::Added { total, .. } = event.event else {
            panic!("unexpected {event:?}")
        };
        // Read without waiting: the state must already include the event's
        // command, and a read at its index must not have to wait for it.
        let seen = engine.query(Consistency::Local, |c| c.total).await.unwrap();
        assert!(seen >= total, "event says {total}, a query sees {seen}");
        // Unconstrained: a read spends a unit of the task's cooperative
        // budget and yields when it is spent (tests/fairness.rs); what this
        // checks is that the read does not wait for the apply loop.
        let at_index = tokio::task::coop::unconstrained(
            engine.query(Consistency::AtLeast(event.index), |c| c.total),
        )
        .now_or_never();
        assert!(
            matches!(at_index, Some(Ok(t)) if t >= total),
            "a read at the event's index {} was not ready: {at_index:?}",
            event.index
        );
    }
    writes.await.unwrap();
    engine.shutdown().await;
}

#[tokio::test]
async fn failed_rolled_back_skipped_and_duplicate_commands_emit_nothing() {
    let stream = MemoryStream::new();
    let skipped = CommandId::random();
    let engine = node(&stream, "a")
        .skip_commands([skipped])
        .start()
        .await
        .unwrap();
    let mut sub = engine.events(EventsFrom::Now);
    let first = engine.execute(Cmd::Add(1)).await.unwrap();
    assert!(matches!(
        engine.execute(Cmd::AddThenRefuse(10)).await,
        Err(ExecuteError::Rejected { .. })
    ));
    assert!(matches!(
        engine.execute(Cmd::AddThenPanic(100)).await,
        Err(ExecuteError::Engine(Error::CommandPanicked { .. }))
    ));
    assert!(matches!(
        engine.execute_with_id(skipped, Cmd::Add(1000)).await,
        Err(ExecuteError::Engine(Error::Skipped(_)))
    ));
    let dup = CommandId::random();
    engine.execute_with_id(dup, Cmd::Add(2)).await.unwrap();
    assert!(matches!(
        engine.execute_with_id(dup, Cmd::Add(2)).await,
        Err(ExecuteError::Engine(Error::AlreadyApplied { .. }))
    ));
    let last = engine.execute(Cmd::Add(3)).await.unwrap();

    let got: Vec<_> = [
        next(&mut sub).await,
        next(&mut sub).await,
        next(&mut sub).await,
    ]
    .into_iter()
    .map(|e| (e.index, e.event))
    .collect();
    assert_eq!(
        got[0],
        (first.index, CounterEvent::Added { by: 1, total: 1 })
    );
    assert_eq!(got[1].1, CounterEvent::Added { by: 2, total: 3 });
    assert_eq!(
        got[2],
        (last.index, CounterEvent::Added { by: 3, total: 6 })
    );
    assert_eq!(sub.try_next(), Ok(None));
    engine.shutdown().await;
}

/// Found by cargo-mutants: in direct mode too (the model's change cannot be
/// undone there), a command whose event cannot be serialized fails, and its
/// event is not delivered.
#[tokio::test]
async fn an_event_that_cannot_be_serialized_fails_its_command_in_direct_mode() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a")
        .settings(Settings::default())
        .start()
        .await
        .unwrap();
    let mut sub = a.events(EventsFrom::Now);
    let result = a.execute(Cmd::AddWithBadEvent(50)).await;
    assert!(
        matches!(result, Err(ExecuteError::Engine(Error::EventEncode { .. }))),
        "{result:?}"
    );
    a.execute(Cmd::Add(2)).await.unwrap();
    assert_eq!(
        next(&mut sub).await.event,
        CounterEvent::Added { by: 2, total: 52 }
    );
    a.shutdown().await;
}

#[tokio::test]
async fn an_event_that_cannot_be_serialized_fails_its_command_alike_on_every_node() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a").start().await.unwrap();
    let mut sub = a.events(EventsFrom::Now);
    a.execute(Cmd::Add(1)).await.unwrap();
    match a.execute(Cmd::AddWithBadEvent(50)).await {
        Err(ExecuteError::Engine(Error::EventEncode { reason, .. })) => {
            assert!(reason.contains("key must be a string"), "{reason}");
        }
        other => panic!("expected an event encoding error, got {other:?}"),
    }
    a.execute(Cmd::Add(2)).await.unwrap();
    // Safe mode: the failed command's change is discarded.
    assert_eq!(a.query(Consistency::Local, |c| c.total).await.unwrap(), 3);
    assert_eq!(
        next(&mut sub).await.event,
        CounterEvent::Added { by: 1, total: 1 }
    );
    assert_eq!(
        next(&mut sub).await.event,
        CounterEvent::Added { by: 2, total: 3 }
    );
    // A node replaying the log decides the same.
    let b = node(&stream, "b").start().await.unwrap();
    assert_eq!(b.query(Consistency::Local, |c| c.total).await.unwrap(), 3);
    let mut replayed = b.events(EventsFrom::After(0));
    assert_eq!(
        next(&mut replayed).await.event,
        CounterEvent::Added { by: 1, total: 1 }
    );
    assert_eq!(
        next(&mut replayed).await.event,
        CounterEvent::Added { by: 2, total: 3 }
    );
    assert_eq!(replayed.try_next(), Ok(None));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_never_slows_apply_and_is_told_of_its_gap() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a")
        .event_window(EventWindow {
            max_events: 8,
            max_bytes: usize::MAX,
        })
        .start()
        .await
        .unwrap();
    let mut idle = engine.events(EventsFrom::Now);
    let start = engine.stats().applied_index;
    for i in 0..50 {
        engine.execute(Cmd::Add(i)).await.unwrap();
    }
    let stats = engine.stats().events;
    assert_eq!(stats.retained, 8);
    assert_eq!(stats.subscribers, 1);
    assert_eq!(stats.max_subscriber_lag, 50);
    match idle.next().await {
        Err(EventError::Gap {
            after,
            resumable_after,
        }) => {
            assert_eq!(after, start);
            assert!(resumable_after > start);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    // It continues with what the window still holds: the last 8.
    let mut rest = Vec::new();
    while let Ok(Some(e)) = idle.try_next() {
        rest.push(e.event);
    }
    assert_eq!(rest.len(), 8);
    assert_eq!(engine.stats().events.gaps_reported, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_resume_token_from_one_node_continues_on_another() {
    let stream = MemoryStream::new();
    let a = node(&stream, "a").start().await.unwrap();
    let b = node(&stream, "b").start().await.unwrap();
    let mut on_a = a.events(EventsFrom::Now);
    for i in 1..=5 {
        a.execute(Cmd::Burst(i)).await.unwrap();
    }
    // Read the whole first three commands on a, and part of the fourth.
    for _ in 0..(1 + 2 + 3 + 2) {
        next(&mut on_a).await;
    }
    let token = on_a.resume_after();
    let mut on_b = b.events(EventsFrom::After(token));
    let mut got = Vec::new();
    for _ in 0..(4 + 5) {
        got.push(next(&mut on_b).await.event);
    }
    // The fourth command is handed out whole again, the fifth follows.
    let expected: Vec<_> = (0..4).chain(0..5).map(CounterEvent::Tick).collect();
    assert_eq!(got, expected);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_future_index_waits_and_a_filter_keeps_the_chosen_events() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    let now = engine.stats().applied_index;
    let mut big = engine.events_filtered(
        EventsFrom::After(now + 2),
        |e| matches!(e, CounterEvent::Added { by, .. } if *by >= 100),
    );
    assert_eq!(big.try_next(), Ok(None));
    for n in [500, 1, 200, 2, 300] {
        engine.execute(Cmd::Add(n)).await.unwrap();
    }
    // 500 is at index now+1, before the requested start: not delivered.
    assert_eq!(next(&mut big).await.index, now + 3);
    assert_eq!(next(&mut big).await.index, now + 5);
    assert_eq!(big.try_next(), Ok(None));
    assert_eq!(big.resume_after(), now + 5);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_read_model_built_from_a_query_and_the_events_after_it_stays_exact() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    for i in 0..10 {
        engine.execute(Cmd::Add(i)).await.unwrap();
    }
    let (mut mirror, index) = engine
        .query_with_index(Consistency::Local, |c| c.total)
        .await
        .unwrap();
    let mut events = engine.events(EventsFrom::After(index));
    for i in 10..30 {
        engine.execute(Cmd::Add(i)).await.unwrap();
    }
    for _ in 10..30 {
        if let CounterEvent::Added { by, .. } = next(&mut events).await.event {
            mirror += by;
        }
    }
    let actual = engine.query(Consistency::Local, |c| c.total).await.unwrap();
    assert_eq!(mirror, actual);
    engine.shutdown().await;
}

#[tokio::test]
async fn raw_events_are_the_json_of_the_typed_ones() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    let mut raw = engine.raw_events(EventsFrom::Now);
    engine.execute(Cmd::Add(7)).await.unwrap();
    let event = next(&mut raw).await;
    assert_eq!(&*event.event, r#"{"Added":{"by":7,"total":7}}"#);
    engine.shutdown().await;
}

#[tokio::test]
async fn subscriptions_end_when_the_engine_stops() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    let mut sub = engine.events(EventsFrom::Now);
    engine.execute(Cmd::Add(1)).await.unwrap();
    engine.shutdown().await;
    assert!(next(&mut sub).await.index > 0);
    assert_eq!(sub.next().await, Err(EventError::Closed));
}

async fn counter_log(
    stream: &MemoryStream,
    snapshots: &std::path::Path,
) -> (Vec<(u64, i64)>, Engine<Counter>) {
    let engine = node(stream, "a")
        .snapshots(
            FileSnapshotStore::new(snapshots),
            SnapshotPolicy::on_demand(),
        )
        .start()
        .await
        .unwrap();
    let mut points = Vec::new();
    for i in 1..=30 {
        let done = engine.execute(Cmd::Add(i)).await.unwrap();
        points.push((done.index, done.output));
        if i % 10 == 0 {
            engine.snapshot().await.unwrap();
        }
    }
    (points, engine)
}

#[tokio::test]
async fn time_travel_to_any_index_matches_what_the_engine_had_there() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let (points, engine) = counter_log(&stream, dir.path()).await;
    let shared: Arc<dyn Stream> = Arc::new(stream.clone());
    for &(index, total) in &points {
        let past = TimeTravel::new(Counter::default(), Arc::clone(&shared))
            .settings(safe())
            .snapshots(FileSnapshotStore::new(dir.path()))
            .as_of(AsOf::Index(index))
            .await
            .unwrap();
        assert_eq!((past.applied_index, past.model.total), (index, total));
        if let Some(from) = past.restored_from {
            assert!(from <= index, "snapshot at {from} used for index {index}");
        }
    }
    // Without snapshots: from the beginning, same answers.
    let (index, total) = points[4];
    let past = engine
        .time_travel(Counter::default())
        .as_of(AsOf::Index(index))
        .await
        .unwrap();
    assert_eq!(past.model.total, total);
    // The engine is undisturbed.
    engine.execute(Cmd::Add(1)).await.unwrap();
    engine.shutdown().await;
}

#[tokio::test]
async fn time_travel_uses_the_nearest_snapshot_at_or_before_the_point() {
    let stream = MemoryStream::new();
    let dir = tempfile::tempdir().unwrap();
    let (points, engine) = counter_log(&stream, dir.path()).await;
    let travel = engine.time_travel(Counter::default());
    let at_25 = points[24].0;
    let past = travel.as_of(AsOf::Index(at_25)).await.unwrap();
    // Snapshots were taken after commands 10, 20 and 30: 20 is the nearest.
    assert_eq!(past.restored_from, Some(points[19].0));
    assert_eq!(past.model.total, points[24].1);
    engine.shutdown().await;
}

#[tokio::test]
async fn time_travel_to_an_index_the_log_has_not_reached_times_out() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    engine.execute(Cmd::Add(1)).await.unwrap();
    let far = engine.stats().applied_index + 10;
    let result = engine
        .time_travel(Counter::default())
        .timeout(Duration::from_millis(200))
        .as_of(AsOf::Index(far))
        .await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn time_travel_to_a_moment_stops_before_the_first_command_stamped_later() {
    let stream = MemoryStream::new();
    let engine = node(&stream, "a").start().await.unwrap();
    engine.execute(Cmd::Add(1)).await.unwrap();
    let second = engine.execute(Cmd::Add(2)).await.unwrap();
    let moment = std::time::SystemTime::now();
    // Commands after this are stamped later than `moment` (milliseconds).
    while std::time::SystemTime::now() <= moment + Duration::from_millis(2) {
        tokio::task::yield_now().await;
    }
    engine.execute(Cmd::Add(4)).await.unwrap();
    let past = engine
        .time_travel(Counter::default())
        .as_of(AsOf::Time(moment))
        .await
        .unwrap();
    assert_eq!((past.model.total, past.applied_index), (3, second.index));
    // A moment after the whole log: the whole log (the memory stream knows its end).
    let later = moment + Duration::from_secs(3600);
    let all = engine
        .time_travel(Counter::default())
        .as_of(AsOf::Time(later))
        .await
        .unwrap();
    assert_eq!(all.model.total, 7);
    engine.shutdown().await;
}
