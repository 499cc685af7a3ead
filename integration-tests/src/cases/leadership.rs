//! Cases for single-leader mode over a real stream: an election among nodes
//! started together, failover after the leader goes silent, and fencing of a
//! deposed leader's commands that were already on their way.
//!
//! Timings are generous (heartbeat 300–500 ms, election timeout 3–5 s, waits
//! of a minute or more) so that slow backends — an emulator polling once a
//! second, a broker on a busy machine — pass on behaviour, not speed.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::envelope::decode_frame;
use memstate_core::{
    Body, Capabilities, Consistency, Control, Cursor, Engine, EngineBuilder, Envelope, Error,
    ExecuteError, LeadershipConfig, NodeId, Settings, Stream, StreamError, Subscription, WriteMode,
};
use tokio::sync::watch;

use super::{CaseResult, Outcome, ensure};
use crate::fixture::{Backend, BoxError, Fixture};
use crate::model::{Tally, TallyCommand};

fn single_leader() -> Settings {
    let mut settings = Settings::default();
    settings.write_mode = WriteMode::SingleLeader;
    settings
}

async fn node(
    stream: Arc<dyn Stream>,
    id: &str,
    leadership: Option<LeadershipConfig>,
) -> Result<Engine<Tally>, BoxError> {
    let builder = EngineBuilder::with_shared_stream(Tally::default(), stream)
        .node_id(id)
        .settings(single_leader())
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60))
        .startup_timeout(Duration::from_secs(120))
        .max_in_flight_appends(8);
    let builder = match leadership {
        Some(config) => builder.leadership(config),
        None => builder,
    };
    Ok(builder.start().await?)
}

async fn shutdown(engines: &[Engine<Tally>]) {
    for e in engines {
        e.shutdown().await;
    }
}

/// Waits until every engine names the same leader; returns it and its epoch.
async fn agreed_leader(
    engines: &[Engine<Tally>],
    within: Duration,
    unlike: Option<&NodeId>,
) -> Result<(NodeId, u64), BoxError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Epoch and leader only: heartbeat timestamps differ while nodes read.
        let views: Vec<_> = engines
            .iter()
            .map(|e| {
                let lead = e.stats().leadership;
                (lead.epoch, lead.leader)
            })
            .collect();
        if let (epoch, Some(leader)) = &views[0]
            && Some(leader) != unlike
            && views.iter().all(|v| v == &views[0])
        {
            return Ok((leader.clone(), *epoch));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no agreed leader within {within:?}: {views:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Executes through whichever engine leads, retrying while leadership moves.
async fn execute_via_leader(
    engines: &[Engine<Tally>],
    command: TallyCommand,
    within: Duration,
) -> Result<NodeId, BoxError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(leader) = engines.iter().find(|e| e.is_leader()) {
            match leader.execute(command.clone()).await {
                Ok(_) => return Ok(leader.node_id().clone()),
                Err(ExecuteError::Engine(Error::NotLeader { .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no leader accepted a command within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every envelope of the stream, from the start up to `upto`.
async fn envelopes_up_to(
    stream: &Arc<dyn Stream>,
    upto: &Cursor,
) -> Result<Vec<Envelope>, BoxError> {
    let mut sub = stream.subscribe(None).await?;
    let mut out = Vec::new();
    loop {
        let record = super::take(&mut sub, 1, Duration::from_secs(30))
            .await?
            .remove(0);
        if let Ok(envelopes) = decode_frame(&record.payload) {
            out.extend(envelopes);
        }
        if stream.compare_cursors(&record.cursor, upto)? != Ordering::Less {
            return Ok(out);
        }
    }
}

/// The winner of each epoch by the rule: the first claim of `current + 1`.
fn winners(envelopes: &[Envelope]) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = Vec::new();
    for e in envelopes {
        if let Body::Control(Control::AssumeLeadership { epoch }) = e.body
            && epoch == out.len() as u64 + 1
        {
            out.push(e.origin.clone());
        }
    }
    out
}

pub(super) async fn nodes_started_together_elect_exactly_one_leader(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let config = LeadershipConfig::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut streams = vec![Arc::clone(&f.stream)];
    for _ in 1..3 {
        streams.push(f.new_client().await?);
    }
    // Started at once on an empty stream: each finds no leader and claims epoch 1.
    let starts: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let config = config.clone();
            tokio::spawn(async move { node(s, &format!("node-{i}"), Some(config)).await })
        })
        .collect();
    let mut engines = Vec::new();
    for s in starts {
        engines.push(s.await??);
    }
    let result = elect_and_check(&f, &engines).await;
    shutdown(&engines).await;
    result
}

async fn elect_and_check(f: &Fixture, engines: &[Engine<Tally>]) -> CaseResult {
    agreed_leader(engines, Duration::from_secs(60), None).await?;
    for e in engines {
        e.query(Consistency::Linearizable, |_| ()).await?;
    }
    let mut upto: Option<Cursor> = None;
    for e in engines {
        if let Some(c) = e.stats().cursor
            && upto
                .as_ref()
                .is_none_or(|u| matches!(f.stream.compare_cursors(&c, u), Ok(Ordering::Greater)))
        {
            upto = Some(c);
        }
    }
    let upto = upto.ok_or("no node has applied anything")?;
    let log = envelopes_up_to(&f.stream, &upto).await?;
    let won = winners(&log);
    let claims = log
        .iter()
        .filter(|e| e.kind() == "assume_leadership")
        .count();
    ensure(!won.is_empty(), || "no claim won".into())?;
    // Every node's view is the log's: the winner of the epoch it is in.
    for e in engines {
        let lead = e.stats().leadership;
        let expected = (lead.epoch as usize)
            .checked_sub(1)
            .and_then(|i| won.get(i))
            .cloned();
        ensure(lead.epoch >= 1 && lead.leader == expected, || {
            format!(
                "{} holds epoch {} led by {:?}; the log says {:?}",
                e.node_id(),
                lead.epoch,
                lead.leader,
                expected
            )
        })?;
    }
    // Several nodes claimed epoch 1 at once; exactly one claim won it.
    let first_claims = log
        .iter()
        .filter(|e| {
            matches!(
                e.body,
                Body::Control(Control::AssumeLeadership { epoch: 1 })
            )
        })
        .count();
    ensure(first_claims >= 1 && claims >= won.len(), || {
        format!(
            "{first_claims} claims of epoch 1, {claims} claims, {} epochs",
            won.len()
        )
    })?;
    let writer = execute_via_leader(
        engines,
        TallyCommand::add("led", 1),
        Duration::from_secs(60),
    )
    .await?;
    if let Some(follower) = engines
        .iter()
        .find(|e| e.node_id() != &writer && !e.is_leader())
    {
        match follower.execute(TallyCommand::add("led", 1)).await {
            Err(ExecuteError::Engine(Error::NotLeader {
                leader: Some(_), ..
            })) => {}
            other => {
                return Err(format!("a follower's write was not refused: {other:?}").into());
            }
        }
    }
    Ok(Outcome::Passed)
}

pub(super) async fn a_follower_takes_over_when_the_leader_goes_silent(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let config = LeadershipConfig::new(Duration::from_millis(300), Duration::from_secs(3));
    let mut engines = vec![node(Arc::clone(&f.stream), "node-0", Some(config.clone())).await?];
    for i in 1..3 {
        engines.push(
            node(
                f.new_client().await?,
                &format!("node-{i}"),
                Some(config.clone()),
            )
            .await?,
        );
    }
    let result = failover(&engines).await;
    shutdown(&engines).await;
    result
}

async fn failover(engines: &[Engine<Tally>]) -> CaseResult {
    let (old, old_epoch) = agreed_leader(engines, Duration::from_secs(60), None).await?;
    execute_via_leader(
        engines,
        TallyCommand::add("before", 1),
        Duration::from_secs(60),
    )
    .await?;
    let (gone, rest): (Vec<_>, Vec<_>) = engines.iter().cloned().partition(|e| e.node_id() == &old);
    for e in &gone {
        e.shutdown().await;
    }
    let (new, new_epoch) = agreed_leader(&rest, Duration::from_secs(90), Some(&old)).await?;
    ensure(new_epoch > old_epoch, || {
        format!("new leader {new} holds epoch {new_epoch}, the old one held {old_epoch}")
    })?;
    execute_via_leader(
        &rest,
        TallyCommand::add("after", 1),
        Duration::from_secs(60),
    )
    .await?;
    let mut states = Vec::new();
    for e in &rest {
        states.push(e.query(Consistency::Linearizable, Clone::clone).await?);
    }
    ensure(
        states.iter().all(|s| {
            s == &states[0]
                && s.values.get("before") == Some(&1)
                && s.values.get("after") == Some(&1)
        }),
        || {
            format!(
                "states after failover: {:?}",
                states.iter().map(|s| &s.values).collect::<Vec<_>>()
            )
        },
    )?;
    Ok(Outcome::Passed)
}

pub(super) async fn a_deposed_leaders_in_flight_commands_are_fenced_on_every_node(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let gated = GatedStream::new(f.new_client().await?);
    let old = node(Arc::new(gated.clone()), "old", None).await?;
    let new = node(Arc::clone(&f.stream), "new", None).await?;
    let bystander = node(f.new_client().await?, "bystander", None).await?;
    let engines = [old.clone(), new.clone(), bystander.clone()];
    let result = fence(&f, &gated, &engines).await;
    shutdown(&engines).await;
    result
}

async fn fence(f: &Fixture, gated: &GatedStream, engines: &[Engine<Tally>]) -> CaseResult {
    let (old, new) = (&engines[0], &engines[1]);
    ensure(old.claim_leadership().await? == 1, || {
        "old did not win epoch 1".into()
    })?;
    old.execute(TallyCommand::add("kept", 1)).await?;
    // The old leader's commands leave with epoch 1 but are held on the way...
    gated.close();
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let old = old.clone();
            tokio::spawn(async move { old.execute(TallyCommand::add(format!("lost{i}"), 1)).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), gated.wait_held(3))
        .await
        .map_err(|_| "the old leader's commands never reached the stream client")?;
    // ...until the new leader's claim is in the log.
    let epoch = new.claim_leadership().await?;
    ensure(epoch == 2, || format!("new won epoch {epoch}"))?;
    gated.open();
    for call in in_flight {
        match call.await? {
            Err(ExecuteError::Engine(Error::NotLeader { leader, epoch: 2 }))
                if leader.as_ref() == Some(new.node_id()) => {}
            other => {
                return Err(format!(
                    "an in-flight command of the deposed leader was not fenced: {other:?}"
                )
                .into());
            }
        }
    }
    new.execute(TallyCommand::add("kept", 1)).await?;
    let replay = node(f.new_client().await?, "replay", None).await?;
    let mut all = engines.to_vec();
    all.push(replay.clone());
    let mut states = Vec::new();
    for e in &all {
        states.push(e.query(Consistency::Linearizable, Clone::clone).await?);
    }
    replay.shutdown().await;
    ensure(
        states.iter().all(|s| s == &states[0])
            && states[0].values.get("kept") == Some(&2)
            && states[0].values.len() == 1,
        || {
            format!(
                "states: {:?}",
                states.iter().map(|s| &s.values).collect::<Vec<_>>()
            )
        },
    )?;
    for e in &all {
        ensure(e.stats().commands_fenced == 3, || {
            format!(
                "{} fenced {} commands, expected 3",
                e.node_id(),
                e.stats().commands_fenced
            )
        })?;
    }
    Ok(Outcome::Passed)
}

/// A client whose appends can be held back (the other calls pass through):
/// makes "appended before the new claim, landed after it" certain.
#[derive(Clone, Debug)]
struct GatedStream {
    inner: Arc<dyn Stream>,
    open: Arc<watch::Sender<bool>>,
    held: Arc<watch::Sender<usize>>,
}

impl GatedStream {
    fn new(inner: Arc<dyn Stream>) -> Self {
        Self {
            inner,
            open: Arc::new(watch::channel(true).0),
            held: Arc::new(watch::channel(0).0),
        }
    }

    fn close(&self) {
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    async fn wait_held(&self, envelopes: usize) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| *held >= envelopes).await;
    }
}

#[async_trait]
impl Stream for GatedStream {
    fn describe(&self) -> String {
        format!("gated {}", self.inner.describe())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        if !*self.open.borrow() {
            let n: usize = records
                .iter()
                .map(|r| decode_frame(r).map(|e| e.len()).unwrap_or(0))
                .sum();
            self.held.send_modify(|h| *h += n);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        self.inner.append(records).await
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        self.inner.subscribe(after).await
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        self.inner.head().await
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        self.inner.compare_cursors(a, b)
    }
}
