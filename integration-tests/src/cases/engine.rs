//! Cases for the engine's cluster behaviour over a real stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use memstate_core::{
    Consistency, Engine, EngineBuilder, Error, ExecuteError, FileSnapshotStore, Settings,
    SnapshotPolicy, Stream, WriteMode,
};

use super::{CaseResult, Outcome, ensure};
use crate::fixture::{Backend, BoxError, Fixture};
use crate::model::{Tally, TallyCommand};

async fn engine(stream: Arc<dyn Stream>, node: &str) -> Result<Engine<Tally>, BoxError> {
    engine_with(stream, node, Settings::default()).await
}

async fn engine_with(
    stream: Arc<dyn Stream>,
    node: &str,
    settings: Settings,
) -> Result<Engine<Tally>, BoxError> {
    Ok(EngineBuilder::with_shared_stream(Tally::default(), stream)
        .node_id(node)
        .settings(settings)
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60))
        .startup_timeout(Duration::from_secs(120))
        .start()
        .await?)
}

async fn state(e: &Engine<Tally>) -> Result<Tally, BoxError> {
    Ok(e.query(Consistency::Linearizable, Clone::clone).await?)
}

/// `nodes` engines, the first on the fixture's client, the others on their own.
async fn cluster(f: &Fixture, nodes: usize) -> Result<Vec<Engine<Tally>>, BoxError> {
    let mut out = vec![engine(Arc::clone(&f.stream), "node-0").await?];
    for i in 1..nodes {
        out.push(engine(f.new_client().await?, &format!("node-{i}")).await?);
    }
    Ok(out)
}

async fn shutdown(engines: Vec<Engine<Tally>>) {
    for e in engines {
        e.shutdown().await;
    }
}

async fn drive(
    engines: &[Engine<Tally>],
    per_node: usize,
    concurrency: usize,
) -> Result<(), BoxError> {
    let mut tasks = Vec::new();
    for (n, e) in engines.iter().enumerate() {
        for lane in 0..concurrency {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for i in (lane..per_node).step_by(concurrency) {
                    e.execute(TallyCommand::add(
                        format!("k{}", i % 7),
                        (n * 1000 + i) as i64,
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

pub(super) async fn engines_converge_under_concurrent_writes(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let engines = cluster(&f, 3).await?;
    drive(&engines, 60, 4).await?;
    let mut states = Vec::new();
    for e in &engines {
        states.push(state(e).await?);
    }
    ensure(states[0].applied == 180, || {
        format!("{} commands applied, expected 180", states[0].applied)
    })?;
    for (i, s) in states.iter().enumerate() {
        ensure(s == &states[0], || {
            format!(
                "node {i} has hash {:x}, node 0 has {:x}",
                s.hash, states[0].hash
            )
        })?;
    }
    shutdown(engines).await;
    Ok(Outcome::Passed)
}

pub(super) async fn engine_restart_replays_everything(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let first = engine(Arc::clone(&f.stream), "node-0").await?;
    drive(std::slice::from_ref(&first), 50, 5).await?;
    let before = state(&first).await?;
    first.shutdown().await;
    let again = engine(f.new_client().await?, "node-0").await?;
    let after = again.query(Consistency::Local, Clone::clone).await?;
    ensure(after == before, || {
        format!(
            "after restart hash {:x}, before {:x}",
            after.hash, before.hash
        )
    })?;
    again.shutdown().await;
    Ok(Outcome::Passed)
}

pub(super) async fn the_same_envelope_appended_twice_is_applied_once(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let e = engine(Arc::clone(&f.stream), "node-0").await?;
    e.execute(TallyCommand::add("a", 5)).await?;
    // Re-append the frame that carried the command, as an ambiguous retry would.
    let mut sub = f.stream.subscribe(None).await?;
    let mut frame = None;
    while frame.is_none() {
        let r = super::take(&mut sub, 1, Duration::from_secs(30)).await?;
        if std::str::from_utf8(&r[0].payload).is_ok_and(|s| s.contains("\"command\"")) {
            frame = Some(r[0].payload.clone());
        }
    }
    let frame = frame.ok_or("no command frame found")?;
    f.stream.append(vec![frame]).await?;
    e.execute(TallyCommand::add("a", 1)).await?;
    let s = state(&e).await?;
    ensure(s.values.get("a") == Some(&6), || {
        format!("a = {:?}, expected 6", s.values.get("a"))
    })?;
    ensure(e.stats().duplicates_dropped == 1, || {
        format!("{} duplicates dropped", e.stats().duplicates_dropped)
    })?;
    let other = engine(f.new_client().await?, "node-1").await?;
    ensure(state(&other).await? == s, || {
        "a replaying node disagrees".into()
    })?;
    shutdown(vec![e, other]).await;
    Ok(Outcome::Passed)
}

pub(super) async fn an_oversized_command_gets_a_clear_error_and_nothing_is_written(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let e = engine(Arc::clone(&f.stream), "node-0").await?;
    let limit = f.stream.capabilities().max_record_size;
    let before = e.stats().applied_index;
    match e.execute(TallyCommand::Blob("x".repeat(limit + 1))).await {
        Err(ExecuteError::Engine(Error::CommandTooLarge { limit: named, .. })) => {
            ensure(named == limit, || {
                format!("error names limit {named}, stream's is {limit}")
            })?;
        }
        other => return Err(format!("expected CommandTooLarge, got {other:?}").into()),
    }
    e.execute(TallyCommand::add("a", 1)).await?;
    let s = state(&e).await?;
    ensure(s.applied == 1 && !s.values.contains_key("blob"), || {
        format!("state after refusal: {s:?}")
    })?;
    ensure(
        e.stats().applied_index == before + 1 || e.stats().applied_index > before,
        || "nothing applied".into(),
    )?;
    e.shutdown().await;
    Ok(Outcome::Passed)
}

pub(super) async fn garbage_in_the_stream_is_skipped_alike_by_every_node(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let a = engine(Arc::clone(&f.stream), "node-0").await?;
    a.execute(TallyCommand::add("a", 1)).await?;
    f.stream
        .append(vec![Bytes::from_static(b"\x00\x01 not a frame \xff")])
        .await?;
    f.stream
        .append(vec![Bytes::from_static(br#"{"v":1,"envelopes":"nope"}"#)])
        .await?;
    a.execute(TallyCommand::add("a", 1)).await?;
    let b = engine(f.new_client().await?, "node-1").await?;
    let (sa, sb) = (state(&a).await?, state(&b).await?);
    ensure(sa == sb, || "nodes diverged over garbage records".into())?;
    ensure(sa.values.get("a") == Some(&2), || {
        format!("a = {:?}", sa.values.get("a"))
    })?;
    ensure(
        a.stats().bad_records_skipped == 2 && b.stats().bad_records_skipped == 2,
        || {
            format!(
                "skipped {} and {}",
                a.stats().bad_records_skipped,
                b.stats().bad_records_skipped
            )
        },
    )?;
    shutdown(vec![a, b]).await;
    Ok(Outcome::Passed)
}

pub(super) async fn linearizable_read_sees_a_write_made_on_another_node(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let engines = cluster(&f, 2).await?;
    for i in 1..=10 {
        engines[0].execute(TallyCommand::add("lin", 1)).await?;
        let seen = engines[1]
            .query(Consistency::Linearizable, |t| t.values.get("lin").copied())
            .await?;
        ensure(seen == Some(i), || {
            format!("linearizable read after write {i} saw {seen:?}")
        })?;
    }
    let token = engines[1].execute(TallyCommand::add("tok", 1)).await?.index;
    let seen = engines[0]
        .query(Consistency::AtLeast(token), |t| {
            t.values.get("tok").copied()
        })
        .await?;
    ensure(seen == Some(1), || format!("AtLeast({token}) saw {seen:?}"))?;
    shutdown(engines).await;
    Ok(Outcome::Passed)
}

pub(super) async fn exactly_one_leader_wins_each_epoch(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let mut settings = Settings::default();
    settings.write_mode = WriteMode::SingleLeader;
    let mut engines = vec![engine_with(Arc::clone(&f.stream), "node-0", settings.clone()).await?];
    for i in 1..3 {
        engines.push(
            engine_with(
                f.new_client().await?,
                &format!("node-{i}"),
                settings.clone(),
            )
            .await?,
        );
    }
    let claims: Vec<_> = engines
        .iter()
        .map(|e| {
            let e = e.clone();
            tokio::spawn(async move { e.claim_leadership().await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, c) in claims.into_iter().enumerate() {
        match c.await? {
            Ok(epoch) => winners.push((i, epoch)),
            Err(Error::NotLeader { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A claim made after another one was applied targets the next epoch, so
    // on a fast stream several claims may win: but never two the same epoch,
    // and every epoch up to the last has its one winner.
    winners.sort_by_key(|w| w.1);
    let epochs: Vec<u64> = winners.iter().map(|w| w.1).collect();
    ensure(
        !epochs.is_empty() && epochs == (1..=epochs.len() as u64).collect::<Vec<_>>(),
        || format!("claims won (node, epoch): {winners:?}"),
    )?;
    let (leader, epoch) = winners[winners.len() - 1];
    for e in &engines {
        e.query(Consistency::Linearizable, |_| ()).await?;
        let lead = e.stats().leadership;
        ensure(
            lead.epoch == epoch && lead.leader.as_ref() == Some(engines[leader].node_id()),
            || format!("{} sees {lead:?}", e.node_id()),
        )?;
    }
    engines[leader].execute(TallyCommand::add("l", 1)).await?;
    let follower = (leader + 1) % 3;
    match engines[follower].execute(TallyCommand::add("l", 1)).await {
        Err(ExecuteError::Engine(Error::NotLeader {
            leader: Some(named),
            ..
        })) => {
            ensure(&named == engines[leader].node_id(), || {
                format!("follower names {named} as leader")
            })?;
        }
        other => return Err(format!("a follower's write was not refused: {other:?}").into()),
    }
    // A new election deposes the old leader: its writes are fenced on every node.
    let new_epoch = engines[follower].claim_leadership().await?;
    ensure(new_epoch == epoch + 1, || {
        format!("epoch {new_epoch} won after epoch {epoch}")
    })?;
    for e in &engines {
        e.wait_for_index(engines[follower].stats().applied_index)
            .await?;
    }
    match engines[leader].execute(TallyCommand::add("l", 100)).await {
        Err(ExecuteError::Engine(Error::NotLeader { .. })) => {}
        other => {
            return Err(format!("the deposed leader's write was not fenced: {other:?}").into());
        }
    }
    let mut states = Vec::new();
    for e in &engines {
        states.push(state(e).await?);
    }
    ensure(
        states
            .iter()
            .all(|s| s == &states[0] && s.values.get("l") == Some(&1)),
        || {
            format!(
                "states after fencing: {:?}",
                states.iter().map(|s| s.values.get("l")).collect::<Vec<_>>()
            )
        },
    )?;
    shutdown(engines).await;
    Ok(Outcome::Passed)
}

/// Two writers increment one counter while a reader on every node reads it
/// `Linearizable`. Moments are ticks of one shared counter taken just before
/// a call and just after it returns. Linearizability demands of each read a
/// value no lower than the writes that returned before it began and no
/// higher than the writes begun before it returned, and of two reads in
/// real-time order that the later sees no less.
pub(super) async fn linearizable_reads_see_every_write_completed_before_them(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let engines = cluster(&f, 3).await?;
    let clock = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for e in engines.iter().take(2) {
        let (e, clock) = (e.clone(), Arc::clone(&clock));
        writers.push(tokio::spawn(async move {
            let mut spans = Vec::new();
            for _ in 0..15 {
                let invoked = clock.fetch_add(1, AtomicOrdering::SeqCst);
                e.execute(TallyCommand::add("lin", 1)).await?;
                spans.push((invoked, clock.fetch_add(1, AtomicOrdering::SeqCst)));
            }
            Ok::<_, ExecuteError<String>>(spans)
        }));
    }
    let mut readers = Vec::new();
    for e in engines.iter() {
        let e = e.clone();
        let (clock, writing) = (Arc::clone(&clock), Arc::clone(&writing));
        readers.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            loop {
                let more = writing.load(AtomicOrdering::SeqCst);
                let invoked = clock.fetch_add(1, AtomicOrdering::SeqCst);
                let value = e
                    .query(Consistency::Linearizable, |t| {
                        t.values.get("lin").copied().unwrap_or(0)
                    })
                    .await?;
                reads.push((invoked, clock.fetch_add(1, AtomicOrdering::SeqCst), value));
                if !more {
                    return Ok::<_, Error>(reads);
                }
                // Think time: a read that needs no waiting never yields, and
                // a reader in a tight loop would starve the writers.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await??);
    }
    writing.store(false, AtomicOrdering::SeqCst);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await??);
    }
    shutdown(engines).await;
    for &(invoked, returned, value) in &reads {
        let before = writes.iter().filter(|w| w.1 < invoked).count() as i64;
        let begun = writes.iter().filter(|w| w.0 < returned).count() as i64;
        ensure(before <= value && value <= begun, || {
            format!(
                "a read spanning ticks {invoked}..{returned} saw {value}; {before} writes had returned before it, {begun} had begun before it returned"
            )
        })?;
    }
    for a in &reads {
        for b in &reads {
            ensure(!(a.1 < b.0 && a.2 > b.2), || {
                format!("a read saw {} and a later read saw {}", a.2, b.2)
            })?;
        }
    }
    ensure(reads.len() >= 6, || format!("only {} reads", reads.len()))?;
    Ok(Outcome::Passed)
}

pub(super) async fn smoke_ten_thousand_commands(backend: Arc<dyn Backend>) -> CaseResult {
    if let Some(reason) = backend.volume_limit() {
        return Ok(Outcome::Ignored(reason));
    }
    let f = backend.fresh().await?;
    let engines = cluster(&f, 2).await?;
    drive(&engines, 5_000, 32).await?;
    let (a, b) = (state(&engines[0]).await?, state(&engines[1]).await?);
    ensure(a.applied == 10_000, || {
        format!("{} of 10000 applied", a.applied)
    })?;
    ensure(a == b, || {
        "the two nodes disagree after 10,000 commands".into()
    })?;
    shutdown(engines).await;
    Ok(Outcome::Passed)
}

pub(super) async fn restart_from_a_snapshot_replays_only_the_tail(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let snapshots = tempfile::tempdir()?;
    let with_snapshots = |stream: Arc<dyn Stream>| {
        EngineBuilder::with_shared_stream(Tally::default(), stream)
            .node_id("node-0")
            .snapshots(
                FileSnapshotStore::new(snapshots.path()),
                SnapshotPolicy::on_demand(),
            )
            .execute_timeout(Duration::from_secs(60))
            .read_timeout(Duration::from_secs(60))
            .startup_timeout(Duration::from_secs(120))
            .start()
    };
    let first = with_snapshots(Arc::clone(&f.stream)).await?;
    drive(std::slice::from_ref(&first), 40, 4).await?;
    let taken = first.snapshot().await?;
    drive(std::slice::from_ref(&first), 20, 4).await?;
    let expected = state(&first).await?;
    first.shutdown().await;

    // A new client resumes after the snapshot's cursor: only the tail is applied.
    let restored = with_snapshots(f.new_client().await?).await?;
    let stats = restored.stats();
    let from = stats
        .snapshots
        .restored_from
        .as_ref()
        .map(|m| m.applied_index);
    ensure(from == Some(taken.applied_index), || {
        format!("restored from {from:?}, expected {}", taken.applied_index)
    })?;
    ensure(stats.commands_applied == 20, || {
        format!(
            "{} commands replayed after the snapshot, expected the 20 of the tail",
            stats.commands_applied
        )
    })?;
    let got = state(&restored).await?;
    ensure(got == expected, || {
        format!(
            "restored hash {:x}, before restart {:x}",
            got.hash, expected.hash
        )
    })?;
    // A full replay on another node reaches the same state hash.
    let full = engine(f.new_client().await?, "node-1").await?;
    let replayed = state(&full).await?;
    ensure(full.stats().commands_applied == 60, || {
        format!("a full replay applied {}", full.stats().commands_applied)
    })?;
    ensure(replayed == expected, || {
        format!(
            "full replay hash {:x}, snapshot restore {:x}",
            replayed.hash, expected.hash
        )
    })?;
    shutdown(vec![restored, full]).await;
    Ok(Outcome::Passed)
}
