//! Consistency levels: linearizable histories (checked by a Wing–Gong
//! checker), the same history failing with local reads on a lagging node,
//! bounded staleness, read-your-writes across sessions and nodes, and the
//! lag figures in stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memstate_core::{
    Consistency, DeterministicRng, Engine, Error, Lag, LeadershipConfig, MemoryStream,
    SubscriberFaults,
};
use support::linearizability::{Event, Op, Recorder, check_register};
use support::{Board, BoardCmd, TestStream, builder, count_kind, leader_node, paused_runtime};

const MS: Duration = Duration::from_millis(1);

/// Nodes over one stream; node `i` reads with a delay of `delays[i]` per record.
async fn lagging_cluster(memory: &MemoryStream, delays: &[Duration]) -> Vec<Engine<Board>> {
    let mut nodes = Vec::new();
    for (i, delay) in delays.iter().enumerate() {
        memory.set_subscriber_faults(SubscriberFaults::delayed(*delay));
        nodes.push(
            builder(memory.clone(), &format!("n{i}"))
                .start()
                .await
                .unwrap(),
        );
    }
    memory.set_subscriber_faults(SubscriberFaults::none());
    nodes
}

async fn write(rec: &Recorder, nodes: &[Engine<Board>], node: usize, value: u64) {
    let t = rec.invoke();
    nodes[node].execute(BoardCmd::Set(value)).await.unwrap();
    rec.complete(t, Op::Write(value), node);
}

async fn read(rec: &Recorder, nodes: &[Engine<Board>], node: usize, level: Consistency) {
    let t = rec.invoke();
    let value = nodes[node].query(level, |b| b.register).await.unwrap();
    rec.complete(t, Op::Read(value), node);
}

/// Records a history over three nodes (no lag, 2 ms and 7 ms per record).
///
/// First a probe: a write on the node without lag, then at once a read on the
/// most lagging one, three times. Then `clients` concurrent clients each run
/// `ops` seeded random writes (of unique values) and reads on random nodes.
async fn record_history(seed: u64, level: Consistency, clients: usize, ops: usize) -> Vec<Event> {
    let memory = MemoryStream::new();
    let nodes = Arc::new(lagging_cluster(&memory, &[Duration::ZERO, 2 * MS, 7 * MS]).await);
    let rec = Arc::new(Recorder::default());
    let values = Arc::new(AtomicU64::new(1));
    for _ in 0..3 {
        let v = values.fetch_add(1, Ordering::SeqCst);
        write(&rec, &nodes, 0, v).await;
        read(&rec, &nodes, 2, level).await;
    }
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (nodes, rec, values) = (Arc::clone(&nodes), Arc::clone(&rec), Arc::clone(&values));
        let mut rng = DeterministicRng::seeded(u128::from(seed * 100 + c as u64));
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops {
                tokio::time::sleep(Duration::from_micros(rng.below(3000))).await;
                let node = rng.below(3) as usize;
                if rng.below(2) == 0 {
                    let v = values.fetch_add(1, Ordering::SeqCst);
                    write(&rec, &nodes, node, v).await;
                } else {
                    read(&rec, &nodes, node, level).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in nodes.iter() {
        n.shutdown().await;
    }
    rec.events()
}

fn ev(op: Op, invoked: u64, returned: u64) -> Event {
    Event {
        op,
        invoked,
        returned,
        node: 0,
    }
}

#[test]
fn the_checker_accepts_legal_register_histories() {
    // Sequential: w1, r1, w2, r2.
    let h = [
        ev(Op::Write(1), 0, 1),
        ev(Op::Read(1), 2, 3),
        ev(Op::Write(2), 4, 5),
        ev(Op::Read(2), 6, 7),
    ];
    assert!(check_register(0, &h).is_ok());
    // A read overlapping a write may see either value.
    let old = [ev(Op::Write(1), 0, 5), ev(Op::Read(0), 1, 2)];
    let new = [ev(Op::Write(1), 0, 5), ev(Op::Read(1), 1, 2)];
    assert!(check_register(0, &old).is_ok());
    assert!(check_register(0, &new).is_ok());
    // Two overlapping writes may land in either order.
    let h = [
        ev(Op::Write(1), 0, 10),
        ev(Op::Write(2), 1, 9),
        ev(Op::Read(1), 11, 12),
    ];
    assert_eq!(check_register(0, &h).unwrap().last(), Some(&2));
}

#[test]
fn the_checker_rejects_stale_and_inverted_reads() {
    // A read invoked after a write returned must not see the older value.
    let stale = [ev(Op::Write(1), 0, 1), ev(Op::Read(0), 2, 3)];
    let v = check_register(0, &stale).unwrap_err();
    assert_eq!(v.stuck_on, vec![ev(Op::Read(0), 2, 3)]);
    // New-then-old: two reads in sequence during one long write.
    let inverted = [
        ev(Op::Write(1), 0, 10),
        ev(Op::Read(1), 1, 2),
        ev(Op::Read(0), 3, 4),
    ];
    assert!(check_register(0, &inverted).is_err());
    // A value nobody wrote.
    assert!(check_register(0, &[ev(Op::Read(7), 0, 1)]).is_err());
}

#[test]
fn linearizable_reads_over_lagging_nodes_pass_the_checker_over_50_seeded_histories() {
    for seed in 0..50 {
        let events =
            paused_runtime().block_on(record_history(seed, Consistency::Linearizable, 4, 8));
        assert_eq!(events.len(), 6 + 4 * 8);
        if let Err(v) = check_register(0, &events) {
            panic!("seed {seed}: a linearizable history was rejected: {v:#?}");
        }
    }
}

#[test]
fn linearizable_reads_pass_the_checker_under_real_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for seed in 0..8 {
        let events = rt.block_on(record_history(1000 + seed, Consistency::Linearizable, 4, 8));
        if let Err(v) = check_register(0, &events) {
            panic!("seed {seed}: a linearizable history was rejected: {v:#?}");
        }
    }
}

#[test]
fn local_reads_on_a_lagging_node_fail_the_checker_in_every_seeded_history() {
    for seed in 0..20 {
        let events = paused_runtime().block_on(record_history(seed, Consistency::Local, 4, 8));
        let violation = check_register(0, &events)
            .expect_err("local reads on a lagging node must not look linearizable");
        // The probe's first stale read is where no order can go on.
        assert!(
            violation
                .stuck_on
                .iter()
                .any(|e| matches!(e.op, Op::Read(_)) && e.node == 2),
            "seed {seed}: {violation:#?}"
        );
    }
}

#[test]
fn read_your_writes_holds_for_thirty_sessions_and_their_tokens_on_other_nodes() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let nodes = Arc::new(lagging_cluster(&memory, &[Duration::ZERO, 5 * MS, 11 * MS]).await);
        // The lag is real: a write on n0 is not yet visible locally on n2.
        nodes[0]
            .execute(BoardCmd::Incr("probe".into()))
            .await
            .unwrap();
        let local = nodes[2]
            .query(Consistency::Local, |b| b.counters.get("probe").copied())
            .await
            .unwrap();
        assert_eq!(local, None, "n2 was expected to lag");

        let mut tasks = Vec::new();
        for s in 0..30usize {
            let nodes = Arc::clone(&nodes);
            tasks.push(tokio::spawn(async move {
                let home = s % 3;
                let session = nodes[home].session();
                let key = format!("s{s}");
                for k in 1..=5u64 {
                    session.execute(BoardCmd::Incr(key.clone())).await.unwrap();
                    let own = session
                        .query(Consistency::ReadYourWrites, |b| {
                            b.counters.get(&key).copied()
                        })
                        .await
                        .unwrap();
                    assert_eq!(own, Some(k), "session {s} on n{home}");
                    // The session moves to the next node, carrying its token.
                    let away = nodes[(home + 1) % 3].session_with_token(session.last_write());
                    let there = away
                        .query(Consistency::ReadYourWrites, |b| {
                            b.counters.get(&key).copied()
                        })
                        .await
                        .unwrap();
                    assert_eq!(there, Some(k), "session {s} moved to n{}", (home + 1) % 3);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for n in nodes.iter() {
            n.shutdown().await;
        }
    });
}

#[test]
fn bounded_staleness_answers_locally_while_fresh_and_catches_up_once_stale() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let writer = builder(memory.clone(), "w").start().await.unwrap();
        memory.set_subscriber_faults(SubscriberFaults::delayed(200 * MS));
        let client = TestStream::new(memory.clone());
        let reader = builder(client.clone(), "r").start().await.unwrap();
        memory.set_subscriber_faults(SubscriberFaults::none());
        let bound = Consistency::BoundedStaleness(Duration::from_secs(1));

        // Just started, hence caught up moments ago: a local answer, stale
        // but within the bound, and no question to the stream.
        writer.execute(BoardCmd::Set(1)).await.unwrap();
        assert_eq!(reader.query(bound, |b| b.register).await.unwrap(), 0);
        assert_eq!(client.heads(), 0);

        // Past the bound: the reader learns the head and plays forward first.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        writer.execute(BoardCmd::Set(2)).await.unwrap();
        assert_eq!(reader.query(bound, |b| b.register).await.unwrap(), 2);
        assert_eq!(client.heads(), 1);
        // ...which makes it fresh again.
        writer.execute(BoardCmd::Set(3)).await.unwrap();
        assert_eq!(reader.query(bound, |b| b.register).await.unwrap(), 2);
        assert_eq!(client.heads(), 1);
        assert!(reader.stats().caught_up_age.unwrap() < Duration::from_secs(1));
        writer.shutdown().await;
        reader.shutdown().await;
    });
}

#[test]
fn bounded_staleness_fails_clearly_when_cut_off_while_local_reads_still_answer() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let writer = builder(memory.clone(), "w").start().await.unwrap();
        let client = TestStream::new(memory.clone());
        let reader = builder(client.clone(), "r")
            .read_timeout(Duration::from_secs(2))
            .start()
            .await
            .unwrap();
        writer.execute(BoardCmd::Set(1)).await.unwrap();
        reader
            .query(Consistency::Linearizable, |_| ())
            .await
            .unwrap();
        client.set_cut_off(true);
        writer.execute(BoardCmd::Set(2)).await.unwrap();

        let bound = Duration::from_secs(1);
        // Within the bound the node still answers from what it has.
        assert_eq!(
            reader
                .query(Consistency::BoundedStaleness(bound), |b| b.register)
                .await
                .unwrap(),
            1
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let err = reader
            .query(Consistency::BoundedStaleness(bound), |b| b.register)
            .await
            .unwrap_err();
        match &err {
            Error::TooStale {
                bound: b,
                caught_up_age: Some(age),
                source,
            } => {
                assert_eq!(*b, bound);
                assert!(*age >= Duration::from_secs(3), "{age:?}");
                assert!(matches!(**source, Error::Timeout { .. }), "{source:?}");
            }
            other => panic!("expected TooStale, got {other:?}"),
        }
        assert!(err.to_string().contains("staleness bound"), "{err}");
        assert!(matches!(
            reader.query(Consistency::Linearizable, |_| ()).await,
            Err(Error::Timeout { .. })
        ));
        // Local reads stay available: the last consistent prefix this node has.
        assert_eq!(
            reader
                .query(Consistency::Local, |b| b.register)
                .await
                .unwrap(),
            1
        );
        client.set_cut_off(false);
        assert_eq!(
            reader
                .query(Consistency::BoundedStaleness(bound), |b| b.register)
                .await
                .unwrap(),
            2
        );
        writer.shutdown().await;
        reader.shutdown().await;
    });
}

#[test]
fn without_an_exact_head_a_stale_read_appends_one_sync_marker_and_a_fresh_one_none() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let client = TestStream::new(memory.clone()).without_exact_head();
        let node = builder(client.clone(), "n").start().await.unwrap();
        let bound = Consistency::BoundedStaleness(Duration::from_secs(1));
        node.query(bound, |_| ()).await.unwrap();
        assert_eq!(count_kind(&memory, "sync"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        node.query(bound, |_| ()).await.unwrap();
        assert_eq!(count_kind(&memory, "sync"), 1);
        node.query(bound, |_| ()).await.unwrap();
        assert_eq!(count_kind(&memory, "sync"), 1);
        node.query(Consistency::Linearizable, |_| ()).await.unwrap();
        assert_eq!(count_kind(&memory, "sync"), 2);
        assert_eq!(client.heads(), 0, "an inexact head is never asked");
        node.shutdown().await;
    });
}

#[test]
fn a_leaders_own_heartbeats_keep_its_bounded_staleness_reads_local() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let client = TestStream::new(memory.clone());
        let config = LeadershipConfig::new(100 * MS, 1000 * MS);
        let leader = leader_node(client.clone(), "l", config).await;
        support::eventually(Duration::from_secs(5), "leader elected", || {
            leader.is_leader()
        })
        .await;
        // Claiming at start asked for the head once; nothing after that may.
        let heads = client.heads();
        tokio::time::sleep(Duration::from_secs(10)).await;
        leader
            .query(
                Consistency::BoundedStaleness(Duration::from_millis(500)),
                |_| (),
            )
            .await
            .unwrap();
        assert_eq!(client.heads(), heads);
        assert!(count_kind(&memory, "heartbeat") >= 50);
        leader.shutdown().await;
    });
}

#[test]
fn stats_report_the_known_tail_and_whether_this_node_lags_behind_it() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let writer = builder(memory.clone(), "w").start().await.unwrap();
        memory.set_subscriber_faults(SubscriberFaults::delayed(50 * MS));
        let reader = builder(memory.clone(), "r").start().await.unwrap();
        memory.set_subscriber_faults(SubscriberFaults::none());
        assert_eq!(reader.stats().lag, Lag::Unknown);
        reader
            .query(Consistency::Linearizable, |_| ())
            .await
            .unwrap();
        let stats = reader.stats();
        assert_eq!(stats.lag, Lag::CaughtUp);
        assert_eq!(stats.known_tail, stats.cursor);

        writer.execute(BoardCmd::Set(1)).await.unwrap();
        let pending = {
            let reader = reader.clone();
            tokio::spawn(async move {
                reader
                    .query(Consistency::Linearizable, |b| b.register)
                    .await
            })
        };
        // Let the query learn the head; the delayed record is not applied yet.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let stats = reader.stats();
        assert_eq!(stats.lag, Lag::Behind);
        assert_ne!(stats.known_tail, stats.cursor);
        assert_eq!(pending.await.unwrap().unwrap(), 1);
        assert_eq!(reader.stats().lag, Lag::CaughtUp);
        writer.shutdown().await;
        reader.shutdown().await;
    });
}
