//! Cases for domain events and time travel over a real stream: events are
//! derived from the log alike on every node, resume by applied index across a
//! restart, are dropped with failed and fenced commands, and a past state
//! rebuilt from a snapshot and the log equals what a node held at that index.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::{
    AsOf, Body, CommandId, CommandJson, Consistency, Engine, EngineBuilder, Envelope, Error, Event,
    EventError, EventSubscription, EventsFrom, ExecuteError, FileSnapshotStore, NodeId, Settings,
    SnapshotPolicy, Stream, TimeTravel, WriteMode,
};

use super::{CaseResult, Outcome, ensure};
use crate::fixture::{Backend, BoxError};
use crate::model::{Tally, TallyCommand, TallyEvent};

const WAIT: Duration = Duration::from_secs(120);

fn builder(stream: Arc<dyn Stream>, node: &str) -> EngineBuilder<Tally> {
    EngineBuilder::with_shared_stream(Tally::default(), stream)
        .node_id(node)
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60))
        .startup_timeout(Duration::from_secs(120))
}

async fn shutdown(engines: Vec<Engine<Tally>>) {
    for e in engines {
        e.shutdown().await;
    }
}

/// Takes `n` events, checking each is visible to a query on `engine` when it arrives.
async fn take_events(
    engine: &Engine<Tally>,
    sub: &mut EventSubscription<TallyEvent>,
    n: usize,
) -> Result<Vec<Event<TallyEvent>>, BoxError> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let event = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => return Err(format!("after {} of {n} events: {e}", out.len()).into()),
            Err(_) => {
                return Err(
                    format!("only {} of {n} events arrived within {WAIT:?}", out.len()).into(),
                );
            }
        };
        let applied = engine.stats().applied_index;
        ensure(applied >= event.index, || {
            format!(
                "event of index {} handed out while queries see index {applied}",
                event.index
            )
        })?;
        out.push(event);
    }
    Ok(out)
}

/// FNV-1a over (index, command id, seq, event JSON) of every event, in order.
fn hash(events: &[Event<TallyEvent>]) -> Result<u64, BoxError> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        let json = serde_json::to_vec(&e.event)?;
        let fields = [
            &e.index.to_le_bytes()[..],
            e.command_id.0.as_bytes(),
            &e.seq.to_le_bytes(),
            &json,
        ];
        for b in fields.into_iter().flatten() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok(h)
}

async fn add_many(engines: &[Engine<Tally>], per_node: usize) -> Result<(), BoxError> {
    let mut tasks = Vec::new();
    for (n, e) in engines.iter().enumerate() {
        for lane in 0..4 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for i in (lane..per_node).step_by(4) {
                    e.execute(TallyCommand::add(
                        format!("k{}", i % 5),
                        (n * 100 + i) as i64,
                    ))
                    .await?;
                }
                Ok::<_, ExecuteError<String>>(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub(super) async fn every_node_yields_the_same_events_under_concurrent_writers(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let mut engines = vec![builder(Arc::clone(&f.stream), "node-0").start().await?];
    for i in 1..3 {
        engines.push(
            builder(f.new_client().await?, &format!("node-{i}"))
                .start()
                .await?,
        );
    }
    // Every node derives the events of the whole log, from index 0.
    let mut subs: Vec<_> = engines
        .iter()
        .map(|e| e.events(EventsFrom::After(0)))
        .collect();
    add_many(&engines, 40).await?;
    let mut hashes = Vec::new();
    for (e, sub) in engines.iter().zip(&mut subs) {
        let events = take_events(e, sub, 120).await?;
        ensure(events.windows(2).all(|w| w[0].index < w[1].index), || {
            "events are not in applied-index order".into()
        })?;
        hashes.push(hash(&events)?);
    }
    ensure(hashes.iter().all(|h| *h == hashes[0]), || {
        format!("event sequence hashes differ between nodes: {hashes:x?}")
    })?;
    shutdown(engines).await;
    Ok(Outcome::Passed)
}

pub(super) async fn a_restarted_node_resumes_events_by_index_without_gap_or_repeat(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let dir = tempfile::tempdir()?;
    let with_snapshots = |stream: Arc<dyn Stream>| {
        builder(stream, "node-0").snapshots(
            FileSnapshotStore::new(dir.path()),
            SnapshotPolicy::on_demand(),
        )
    };
    let first = with_snapshots(Arc::clone(&f.stream)).start().await?;
    let reference = builder(f.new_client().await?, "node-1").start().await?;
    let mut all = reference.events(EventsFrom::After(0));
    let mut sub = first.events(EventsFrom::After(0));
    add_many(std::slice::from_ref(&first), 20).await?;
    let snapshot = first.snapshot().await?;
    add_many(std::slice::from_ref(&first), 20).await?;
    let seen = take_events(&first, &mut sub, 40).await?;
    let resume_after = sub.resume_after();
    ensure(resume_after > snapshot.applied_index, || {
        format!(
            "resume point {resume_after} not after the snapshot's index {}",
            snapshot.applied_index
        )
    })?;
    drop(sub);
    first.shutdown().await;
    // The cluster goes on while the node is down.
    add_many(std::slice::from_ref(&reference), 20).await?;

    let restarted = with_snapshots(f.new_client().await?).start().await?;
    let restored_from = restarted
        .stats()
        .snapshots
        .restored_from
        .map(|m| m.applied_index);
    ensure(restored_from == Some(snapshot.applied_index), || {
        format!("restored from {restored_from:?}, expected the snapshot")
    })?;
    let mut resumed = restarted.events(EventsFrom::After(resume_after));
    let after_restart = take_events(&restarted, &mut resumed, 20).await?;
    let everything = take_events(&reference, &mut all, 60).await?;
    ensure(everything[..40] == seen[..], || {
        "before the restart, the node's events differ from the reference node's".into()
    })?;
    ensure(everything[40..] == after_restart[..], || {
        format!(
            "after resuming at {resume_after}: got indexes {:?}, expected {:?}",
            after_restart.iter().map(|e| e.index).collect::<Vec<_>>(),
            everything[40..].iter().map(|e| e.index).collect::<Vec<_>>()
        )
    })?;
    // Nothing before the snapshot can be served by the restored node: a gap, named.
    let mut early = restarted.events(EventsFrom::After(snapshot.applied_index - 1));
    match early.try_next() {
        Err(EventError::Gap {
            resumable_after, ..
        }) if resumable_after == snapshot.applied_index => {}
        other => return Err(format!("resuming before the snapshot gave {other:?}").into()),
    }
    shutdown(vec![restarted, reference]).await;
    Ok(Outcome::Passed)
}

fn single_leader() -> Settings {
    let mut settings = Settings::default();
    settings.write_mode = WriteMode::SingleLeader;
    settings
}

pub(super) async fn failed_and_fenced_commands_emit_nothing(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let leader = builder(Arc::clone(&f.stream), "node-0")
        .settings(single_leader())
        .start()
        .await?;
    leader.claim_leadership().await?;
    let mut sub = leader.events(EventsFrom::After(0));
    let kept = leader.execute(TallyCommand::add("a", 5)).await?;
    // `Take` emits before it checks: the engine must drop what a refused command emitted.
    let refused = CommandId::random();
    match leader
        .execute_with_id(
            refused,
            TallyCommand::Take {
                key: "a".into(),
                amount: 50,
            },
        )
        .await
    {
        Err(ExecuteError::Rejected { .. }) => {}
        other => return Err(format!("an overdraft was not refused: {other:?}").into()),
    }
    // A command from a node that never led, as a deposed leader's late write would arrive.
    let fenced = Envelope {
        id: CommandId::random(),
        origin: NodeId::new("intruder"),
        ts: 0,
        epoch: Some(0),
        model_version: 1,
        reads: 1,
        body: Body::Command(CommandJson::encode(&TallyCommand::add("a", 1000))?),
    };
    let bytes = encode_envelope(&fenced)?;
    f.stream
        .append(vec![Bytes::from(encode_frame([bytes.as_slice()]))])
        .await?;
    let last = leader.execute(TallyCommand::add("a", 1)).await?;
    let events = take_events(&leader, &mut sub, 2).await?;
    let ids: Vec<CommandId> = events.iter().map(|e| e.command_id).collect();
    ensure(
        events[0].index == kept.index && events[1].index == last.index,
        || {
            format!(
                "events at {:?}, expected the two accepted commands at {} and {}",
                events.iter().map(|e| e.index).collect::<Vec<_>>(),
                kept.index,
                last.index
            )
        },
    )?;
    ensure(!ids.contains(&refused) && !ids.contains(&fenced.id), || {
        "a refused or fenced command emitted an event".into()
    })?;
    ensure(leader.stats().commands_fenced == 1, || {
        format!(
            "{} commands fenced, expected 1",
            leader.stats().commands_fenced
        )
    })?;
    // A node replaying the same log derives the same two events, and nothing else.
    let replica = builder(f.new_client().await?, "node-1")
        .settings(single_leader())
        .start()
        .await?;
    let mut replayed = replica.events(EventsFrom::After(0));
    let again = take_events(&replica, &mut replayed, 2).await?;
    ensure(again == events, || {
        "a replaying node derived other events".into()
    })?;
    match replayed.try_next() {
        Ok(None) => {}
        other => return Err(format!("a third event on the replica: {other:?}").into()),
    }
    shutdown(vec![leader, replica]).await;
    Ok(Outcome::Passed)
}

pub(super) async fn state_as_of_an_index_equals_a_node_that_stopped_there(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let dir = tempfile::tempdir()?;
    let live = builder(Arc::clone(&f.stream), "node-0")
        .snapshots(
            FileSnapshotStore::new(dir.path()),
            SnapshotPolicy::on_demand(),
        )
        .start()
        .await?;
    let stopping = builder(f.new_client().await?, "node-1").start().await?;
    add_many(&[live.clone(), stopping.clone()], 16).await?;
    // node-1 stops here: its state and index are the reference for time travel.
    let at_stop = stopping
        .query(Consistency::Linearizable, Clone::clone)
        .await?;
    let stop_index = stopping.stats().applied_index;
    stopping.shutdown().await;
    let stop_time = SystemTime::now();
    // Commands stamped after `stop_time` (the clock must have moved on).
    while SystemTime::now() <= stop_time + Duration::from_millis(2) {
        tokio::task::yield_now().await;
    }
    add_many(std::slice::from_ref(&live), 16).await?;
    // A snapshot after the stop point must not be used for it.
    let snapshot = live.snapshot().await?;
    add_many(std::slice::from_ref(&live), 16).await?;
    let now = live.query(Consistency::Linearizable, Clone::clone).await?;
    let now_index = live.stats().applied_index;

    let travel = || {
        TimeTravel::new(Tally::default(), Arc::clone(&f.stream))
            .snapshots(FileSnapshotStore::new(dir.path()))
    };
    let past = travel().as_of(AsOf::Index(stop_index)).await?;
    ensure(
        past.applied_index == stop_index && past.model == at_stop,
        || {
            format!(
                "as of {stop_index}: index {}, hash {:x}; the stopped node had hash {:x}",
                past.applied_index, past.model.hash, at_stop.hash
            )
        },
    )?;
    ensure(past.restored_from.is_none(), || {
        format!(
            "a snapshot after the point was used: {:?}",
            past.restored_from
        )
    })?;
    let by_time = travel().as_of(AsOf::Time(stop_time)).await?;
    ensure(by_time.model == at_stop, || {
        format!(
            "as of the stop time: hash {:x} at index {}, the stopped node had {:x} at {stop_index}",
            by_time.model.hash, by_time.applied_index, at_stop.hash
        )
    })?;
    let latest = travel().as_of(AsOf::Index(now_index)).await?;
    ensure(latest.model == now, || {
        "as of the live node's index: a different state".into()
    })?;
    ensure(latest.restored_from == Some(snapshot.applied_index), || {
        format!(
            "rebuilt from {:?}, expected the snapshot at {}",
            latest.restored_from, snapshot.applied_index
        )
    })?;
    // Travelling did not disturb the live engine, which still writes and reads.
    live.execute(TallyCommand::add("after", 1)).await?;
    ensure(live.status() == memstate_core::Status::Running, || {
        format!("the live engine is {:?}", live.status())
    })?;
    // An index the log has not reached is waited for, then refused.
    let beyond = travel()
        .timeout(Duration::from_secs(2))
        .as_of(AsOf::Index(now_index + 1_000))
        .await;
    match beyond {
        Err(Error::Timeout { .. }) => {}
        other => {
            return Err(format!(
                "an index beyond the log gave {:?}",
                other.map(|p| p.applied_index)
            )
            .into());
        }
    }
    live.shutdown().await;
    Ok(Outcome::Passed)
}
