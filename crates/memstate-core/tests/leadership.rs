//! Single-leader mode: elections through the stream, fencing at apply time,
//! heartbeats and failover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use memstate_core::{
    BadRecordPolicy, Consistency, DeterministicRng, Engine, EngineBuilder, Error, ExecuteError,
    LeadershipConfig, MemoryStream, NodeId, Settings, Status, Stream, SubscriberFaults,
};
use support::{
    Board, BoardCmd, TestStream, builder, count_kind, eventually, leader_node, paused_runtime,
    single_leader, winners_from_log,
};

const MS: Duration = Duration::from_millis(1);

async fn manual_node(stream: impl memstate_core::Stream, id: &str) -> Engine<Board> {
    builder(stream, id)
        .settings(single_leader())
        .max_in_flight_appends(16)
        .start()
        .await
        .unwrap()
}

async fn register(e: &Engine<Board>) -> Board {
    e.query(Consistency::Linearizable, Clone::clone)
        .await
        .unwrap()
}

struct Race {
    /// Who won epoch 1.
    first_winner: NodeId,
    epochs: u64,
    claims: usize,
}

/// Several nodes, each with seeded subscriber lag and append jitter, claim
/// leadership three times each at seeded moments, without coordinating.
async fn claim_race(seed: u64) -> Race {
    let mut rng = DeterministicRng::seeded(u128::from(seed));
    let memory = MemoryStream::new();
    let n = 3 + rng.below(3) as usize;
    let mut nodes = Vec::new();
    for i in 0..n {
        memory.set_subscriber_faults(SubscriberFaults::delayed(Duration::from_micros(
            rng.below(3000),
        )));
        let client = TestStream::new(memory.clone())
            .with_append_jitter(seed * 1000 + i as u64, Duration::from_millis(5));
        nodes.push(manual_node(client, &format!("n{i}")).await);
    }
    memory.set_subscriber_faults(SubscriberFaults::none());

    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let mut rng = DeterministicRng::seeded(u128::from(seed * 1000 + 500 + i as u64));
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_micros(rng.below(8000))).await;
                results.push(node.claim_leadership().await);
            }
            results
        }));
    }
    let mut won: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    let mut claims = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        for result in t.await.unwrap() {
            claims += 1;
            match result {
                Ok(epoch) => won
                    .entry(epoch)
                    .or_default()
                    .push(NodeId::new(format!("n{i}"))),
                Err(Error::NotLeader { .. }) => {}
                Err(e) => panic!("seed {seed}: a claim failed: {e:?}"),
            }
        }
    }
    let from_log = winners_from_log(&memory);
    assert_eq!(
        count_kind(&memory, "assume_leadership"),
        claims,
        "seed {seed}: every claim is appended once"
    );
    // Exactly one winner per epoch, 1..=last, and it is the log's winner.
    let epochs = from_log.len() as u64;
    assert!(epochs >= 1, "seed {seed}: nobody won");
    assert_eq!(
        won.keys().copied().collect::<Vec<_>>(),
        (1..=epochs).collect::<Vec<_>>(),
        "seed {seed}"
    );
    for (epoch, winners) in &won {
        assert_eq!(
            winners,
            &vec![from_log[*epoch as usize - 1].clone()],
            "seed {seed}: epoch {epoch}"
        );
    }
    // Every node, caught up, holds the same leadership: the log's.
    for node in &nodes {
        node.query(Consistency::Linearizable, |_| ()).await.unwrap();
        let lead = node.stats().leadership;
        assert_eq!(lead.epoch, epochs, "seed {seed}");
        assert_eq!(lead.leader.as_ref(), from_log.last(), "seed {seed}");
    }
    for node in nodes {
        node.shutdown().await;
    }
    Race {
        first_winner: from_log[0].clone(),
        epochs,
        claims,
    }
}

#[test]
fn claim_races_elect_exactly_one_leader_per_epoch_over_200_seeded_interleavings() {
    let mut first_winners = BTreeSet::new();
    let (mut epochs, mut claims) = (0, 0);
    for seed in 0..200 {
        let race = paused_runtime().block_on(claim_race(seed));
        first_winners.insert(race.first_winner);
        epochs += race.epochs;
        claims += race.claims;
    }
    println!(
        "200 races: {claims} claims, {epochs} epochs won, epoch 1 won by {} different nodes",
        first_winners.len()
    );
    // The seeds must really vary the interleaving, or the test proves little.
    assert!(
        first_winners.len() >= 3,
        "epoch 1 was always won by {first_winners:?}"
    );
    assert!(claims > epochs as usize, "no claim ever lost a race");
}

#[test]
fn a_deposed_leaders_in_flight_commands_are_fenced_on_every_node_alike() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let old_client = TestStream::new(memory.clone());
        let old = manual_node(old_client.clone(), "old").await;
        let new = manual_node(memory.clone(), "new").await;
        let bystander = manual_node(memory.clone(), "bystander").await;
        assert_eq!(old.claim_leadership().await.unwrap(), 1);
        old.execute(BoardCmd::Incr("kept".into())).await.unwrap();

        // The old leader's next commands are appended with epoch 1 but held
        // on their way to the stream...
        old_client.close_gate();
        let in_flight: Vec<_> = (0..5)
            .map(|i| {
                let old = old.clone();
                tokio::spawn(async move { old.execute(BoardCmd::Incr(format!("lost{i}"))).await })
            })
            .collect();
        old_client.wait_held(5).await;
        // ...until another node's claim on epoch 2 is in the log.
        assert_eq!(new.claim_leadership().await.unwrap(), 2);
        old_client.open_gate();

        for call in in_flight {
            match call.await.unwrap() {
                Err(ExecuteError::Engine(Error::NotLeader { leader, epoch })) => {
                    assert_eq!(leader, Some(NodeId::new("new")));
                    assert_eq!(epoch, 2);
                }
                other => {
                    panic!("an in-flight command of the deposed leader was not fenced: {other:?}")
                }
            }
        }
        // The deposed leader now refuses locally, naming the new one.
        let before = memory.len();
        match old.execute(BoardCmd::Incr("late".into())).await {
            Err(ExecuteError::Engine(Error::NotLeader { leader, .. })) => {
                assert_eq!(leader, Some(NodeId::new("new")))
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert_eq!(memory.len(), before, "a refused command is not appended");
        new.execute(BoardCmd::Incr("kept".into())).await.unwrap();

        // Every node, and one that replays the log from scratch, fenced alike.
        let late = manual_node(memory.clone(), "late").await;
        let nodes = [&old, &new, &bystander, &late];
        let expected = register(&new).await;
        assert_eq!(expected.counters.get("kept"), Some(&2));
        assert!(
            expected.counters.keys().all(|k| k == "kept"),
            "{expected:?}"
        );
        for node in nodes {
            assert_eq!(register(node).await, expected);
            assert_eq!(node.stats().commands_fenced, 5, "{}", node.node_id());
        }
        for node in nodes {
            node.shutdown().await;
        }
    });
}

#[test]
fn a_re_elected_leaders_commands_from_its_older_epoch_are_fenced_too() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let client = TestStream::new(memory.clone());
        let a = manual_node(client.clone(), "a").await;
        let b = manual_node(memory.clone(), "b").await;
        assert_eq!(a.claim_leadership().await.unwrap(), 1);
        // a's commands of epoch 1 are held; meanwhile b takes epoch 2 and a
        // takes epoch 3 back, its claim passing the gate.
        client.close_gate_for_commands();
        let zombie = {
            let a = a.clone();
            tokio::spawn(async move { a.execute(BoardCmd::Set(66)).await })
        };
        client.wait_held(1).await;
        assert_eq!(b.claim_leadership().await.unwrap(), 2);
        a.query(Consistency::Linearizable, |_| ()).await.unwrap();
        assert_eq!(a.claim_leadership().await.unwrap(), 3);
        client.open_gate();
        // Same origin, older epoch: fenced, as Kafka fences a zombie producer.
        match zombie.await.unwrap() {
            Err(ExecuteError::Engine(Error::NotLeader { leader, epoch })) => {
                assert_eq!((leader, epoch), (Some(NodeId::new("a")), 3));
            }
            other => panic!("a command of epoch 1 was applied in epoch 3: {other:?}"),
        }
        a.execute(BoardCmd::Set(7)).await.unwrap();
        for n in [&a, &b] {
            assert_eq!(register(n).await.register, 7);
            assert_eq!(n.stats().commands_fenced, 1);
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn execute_on_a_follower_fails_fast_naming_the_leader_and_writes_nothing() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let a = manual_node(memory.clone(), "a").await;
        let b = manual_node(memory.clone(), "b").await;
        // No leader yet: nobody may write.
        assert!(matches!(
            a.execute(BoardCmd::Set(1)).await,
            Err(ExecuteError::Engine(Error::NotLeader {
                leader: None,
                epoch: 0
            }))
        ));
        a.claim_leadership().await.unwrap();
        b.query(Consistency::Linearizable, |_| ()).await.unwrap();
        let before = memory.len();
        match b.execute(BoardCmd::Set(1)).await {
            Err(ExecuteError::Engine(Error::NotLeader { leader, epoch })) => {
                assert_eq!(leader, Some(NodeId::new("a")));
                assert_eq!(epoch, 1);
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert_eq!(memory.len(), before);
        assert!(a.is_leader() && !b.is_leader());
        assert!(a.stats().is_leader);
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn a_follower_takes_over_within_the_election_timeout_after_the_leader_goes_silent() {
    paused_runtime().block_on(async {
        let heartbeat = 100 * MS;
        let timeout = 1000 * MS;
        let config = LeadershipConfig::new(heartbeat, timeout);
        let memory = MemoryStream::new();
        let a = leader_node(memory.clone(), "a", config.clone()).await;
        eventually(Duration::from_secs(5), "a claims at start", || {
            a.is_leader()
        })
        .await;
        let b = leader_node(memory.clone(), "b", config.clone()).await;
        let c = leader_node(memory.clone(), "c", config.clone()).await;

        // While a heartbeats, nobody else claims.
        tokio::time::sleep(10 * timeout).await;
        for n in [&a, &b, &c] {
            let lead = n.stats().leadership;
            assert_eq!((lead.epoch, lead.leader), (1, Some(NodeId::new("a"))));
        }
        let silence = b.stats().leader_silence.unwrap();
        assert!(
            silence <= heartbeat,
            "follower heard the leader {silence:?} ago"
        );
        a.execute(BoardCmd::Set(1)).await.unwrap();

        let gone = tokio::time::Instant::now();
        a.shutdown().await;
        eventually(2 * timeout, "a follower takes over", || {
            b.stats().leadership.epoch == 2 && c.stats().leadership.epoch == 2
        })
        .await;
        let took = gone.elapsed();
        assert!(
            took >= timeout - heartbeat,
            "claimed after {took:?} of silence, before the election timeout"
        );
        assert!(took <= timeout + heartbeat, "took over after {took:?}");

        // One election, one new leader, agreed by both, and writes continue.
        tokio::time::sleep(5 * timeout).await;
        let lead = b.stats().leadership;
        assert_eq!(lead.epoch, 2);
        assert_eq!(c.stats().leadership, lead);
        let (leader, follower) = if b.is_leader() { (&b, &c) } else { (&c, &b) };
        assert!(leader.is_leader() && !follower.is_leader());
        assert_eq!(leader.execute(BoardCmd::Set(2)).await.unwrap().output, 1);
        assert!(follower.execute(BoardCmd::Set(3)).await.is_err());
        assert_eq!(register(follower).await.register, 2);
        assert_eq!(
            winners_from_log(&memory),
            vec![NodeId::new("a"), leader.node_id().clone()]
        );
        b.shutdown().await;
        c.shutdown().await;
    });
}

/// Node "a" leads (heartbeat 100 ms, election timeout 1 s) on a shared stream;
/// node "b" follows through a [`TestStream`] client of it.
async fn leader_and_follower_on_a_client()
-> (MemoryStream, Engine<Board>, TestStream, Engine<Board>) {
    let config = LeadershipConfig::new(100 * MS, 1000 * MS);
    let memory = MemoryStream::new();
    let leader = leader_node(memory.clone(), "a", config.clone()).await;
    eventually(Duration::from_secs(5), "a claims at start", || {
        leader.is_leader()
    })
    .await;
    let client = TestStream::new(memory.clone());
    let follower = leader_node(client.clone(), "b", config).await;
    (memory, leader, client, follower)
}

#[test]
fn a_follower_that_fell_behind_catches_up_instead_of_deposing_a_live_leader() {
    paused_runtime().block_on(async {
        let (memory, leader, client, follower) = leader_and_follower_on_a_client().await;
        // The follower hears nothing for five election timeouts.
        client.set_cut_off(true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(follower.stats().leader_silence.unwrap() >= Duration::from_secs(5));
        client.set_cut_off(false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lead = follower.stats().leadership;
        assert_eq!((lead.epoch, lead.leader), (1, Some(NodeId::new("a"))));
        assert_eq!(count_kind(&memory, "assume_leadership"), 1);
        leader.execute(BoardCmd::Set(1)).await.unwrap();
        leader.shutdown().await;
        follower.shutdown().await;
    });
}

#[test]
fn with_auto_claim_off_a_node_never_claims_but_heartbeats_once_it_leads() {
    paused_runtime().block_on(async {
        let config = LeadershipConfig::new(100 * MS, 500 * MS).with_auto_claim(false);
        let memory = MemoryStream::new();
        let node = leader_node(memory.clone(), "a", config).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(node.stats().leadership.epoch, 0);
        assert_eq!(count_kind(&memory, "heartbeat"), 0);
        node.claim_leadership().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let beats = count_kind(&memory, "heartbeat");
        assert!(
            (9..=12).contains(&beats),
            "{beats} heartbeats in 1 s at 100 ms"
        );
        node.shutdown().await;
    });
}

/// On a log that never had a leader, a node claims at once by default, and
/// only after a whole election timeout without `claim_at_start`.
#[test]
fn claim_at_start_decides_whether_a_leaderless_log_waits_out_the_election_timeout() {
    paused_runtime().block_on(async {
        let timeout = 1000 * MS;
        for claim_at_start in [true, false] {
            let config =
                LeadershipConfig::new(100 * MS, timeout).with_claim_at_start(claim_at_start);
            let memory = MemoryStream::new();
            let started = tokio::time::Instant::now();
            let node = leader_node(memory.clone(), "a", config).await;
            eventually(3 * timeout, "the node claims", || node.is_leader()).await;
            let took = started.elapsed();
            if claim_at_start {
                assert!(took < timeout / 2, "claimed after {took:?}");
            } else {
                assert!(took >= timeout, "claimed after {took:?}");
                assert!(took <= timeout + 200 * MS, "claimed after {took:?}");
            }
            assert_eq!(count_kind(&memory, "assume_leadership"), 1);
            node.shutdown().await;
        }
    });
}

/// A follower whose claims keep failing (cut off from the stream, it cannot
/// catch up) pauses one heartbeat interval after each failed attempt: never
/// attempts back to back.
#[test]
fn a_follower_whose_claims_fail_pauses_a_heartbeat_between_attempts() {
    paused_runtime().block_on(async {
        let config = LeadershipConfig::new(250 * MS, 500 * MS).with_claim_at_start(false);
        let client = TestStream::new(MemoryStream::new());
        let node = leader_node(client.clone(), "a", config).await;
        client.set_cut_off(true);
        let before = client.heads();
        tokio::time::sleep(Duration::from_secs(15)).await;
        // The first attempt after 500 ms of silence; each waits out its
        // catch-up (500 ms) and then a heartbeat (250 ms): 20 in 15 s.
        // Without the pause it would be 30.
        let attempts = client.heads() - before;
        assert!((19..=21).contains(&attempts), "{attempts} attempts in 15 s");
        client.set_cut_off(false);
        node.shutdown().await;
    });
}

/// A follower that hears its leader's heartbeats waits out the election
/// timeout from the last one: it does not prepare claims meanwhile (each would
/// ask the stream for its head and find the leader alive).
#[test]
fn a_follower_that_hears_its_leader_prepares_no_claim() {
    paused_runtime().block_on(async {
        let (memory, leader, client, follower) = leader_and_follower_on_a_client().await;
        eventually(Duration::from_secs(5), "b hears a lead", || {
            follower.stats().leadership.leader == Some(NodeId::new("a"))
        })
        .await;
        let heads = client.heads();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            client.heads(),
            heads,
            "a follower asked for the head while its leader was heartbeating"
        );
        let lead = follower.stats().leadership;
        assert_eq!((lead.epoch, lead.leader), (1, Some(NodeId::new("a"))));
        assert!(count_kind(&memory, "heartbeat") >= 90);
        follower.shutdown().await;
        leader.shutdown().await;
    });
}

/// A halted node takes no further part in elections: it neither claims nor
/// asks the stream for its head to prepare a claim.
#[test]
fn a_halted_follower_stops_taking_part_in_elections() {
    paused_runtime().block_on(async {
        let mut settings = single_leader();
        settings.bad_records = BadRecordPolicy::Halt;
        let config = LeadershipConfig::new(100 * MS, 500 * MS).with_claim_at_start(false);
        let client = TestStream::new(MemoryStream::new());
        let node = builder(client.clone(), "a")
            .settings(settings)
            .leadership(config)
            .start()
            .await
            .unwrap();
        client
            .append(vec![bytes::Bytes::from_static(b"not a frame")])
            .await
            .unwrap();
        eventually(Duration::from_secs(5), "the node halts", || {
            matches!(node.status(), Status::Halted(_))
        })
        .await;
        let heads = client.heads();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(client.heads(), heads, "a halted node kept preparing claims");
        assert_eq!(count_kind(client.memory(), "assume_leadership"), 0);
        node.shutdown().await;
    });
}

#[test]
fn leadership_needs_single_leader_mode_and_sane_timings() {
    paused_runtime().block_on(async {
        let memory = MemoryStream::new();
        let multi = EngineBuilder::new(Board::default(), memory.clone())
            .leadership(LeadershipConfig::default())
            .start()
            .await;
        assert!(matches!(multi, Err(Error::Config(m)) if m.contains("SingleLeader")));
        let too_tight = builder(memory.clone(), "x")
            .settings(single_leader())
            .leadership(LeadershipConfig::new(
                Duration::from_secs(1),
                Duration::from_millis(1500),
            ))
            .start()
            .await;
        assert!(matches!(too_tight, Err(Error::Config(m)) if m.contains("twice")));
        // Exactly twice is enough.
        let just_enough = builder(MemoryStream::new(), "y")
            .settings(single_leader())
            .leadership(LeadershipConfig::new(
                Duration::from_secs(1),
                Duration::from_secs(2),
            ))
            .start()
            .await;
        assert!(just_enough.is_ok(), "{:?}", just_enough.err());
        just_enough.unwrap().shutdown().await;
        // Multi-writer (the default) is untouched: any node writes, claims are refused.
        let a = builder(memory.clone(), "a").start().await.unwrap();
        let b = builder(memory.clone(), "b").start().await.unwrap();
        a.execute(BoardCmd::Set(1)).await.unwrap();
        b.execute(BoardCmd::Set(2)).await.unwrap();
        assert!(matches!(a.claim_leadership().await, Err(Error::Config(_))));
        assert_eq!(
            Settings::default().write_mode,
            memstate_core::WriteMode::MultiWriter
        );
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// A node whose subscription lags behind the log still claims the epoch after
/// the one the log holds: it learns the epoch from the tail, not from the
/// part of the log it happens to have applied. (Claiming from a stale view
/// would pick an epoch already taken and lose to a claim it had not read.)
#[tokio::test]
async fn an_explicit_claim_by_a_lagging_node_takes_the_epoch_after_the_tail() {
    let memory = MemoryStream::new();
    let first = manual_node(memory.clone(), "first").await;
    memory.set_subscriber_faults(SubscriberFaults::delayed(Duration::from_millis(200)));
    let lagging = manual_node(memory.clone(), "lagging").await;
    memory.set_subscriber_faults(SubscriberFaults::none());

    assert_eq!(first.claim_leadership().await.unwrap(), 1);
    // `lagging` reads every record 200 ms late: first's claim is in the log but
    // not yet applied there when it claims.
    assert_eq!(lagging.claim_leadership().await.unwrap(), 2);
    assert!(lagging.is_leader());
    first
        .wait_for_index(lagging.stats().applied_index)
        .await
        .unwrap();
    assert!(!first.is_leader());
    first.shutdown().await;
    lagging.shutdown().await;
}
