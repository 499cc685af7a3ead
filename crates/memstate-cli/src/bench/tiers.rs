//! The two tiers every backend shares: the engine (`memstate`) and the
//! adapter alone (`adapter`: the `Stream` trait, one command-sized record per
//! append, read back through a subscription). The third tier, `raw`, is the
//! backend's own client and lives in each backend's module.

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{
    Capabilities, Cursor, Engine, EngineBuilder, Model, Stream, StreamError, Subscription,
};
use serde::Serialize;

use tokio::task::JoinHandle;

use super::Plan;
use super::load::{Measurement, closed_loop};
use super::workload::{
    READ_BACK_TIMEOUT, Tag, Waiters, execute, next_point, open_accounts, read_back, tagged_payload,
    transfer,
};
use crate::bank::Bank;

/// One measured point of a tier, with what it wrote where that is known.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TierPoint {
    #[serde(flatten)]
    pub measured: Measurement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appends: Option<AppendStats>,
    /// Throughput of every round, when the point was measured more than
    /// once (the best round is the one reported).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds_per_sec: Vec<f64>,
}

impl TierPoint {
    pub(crate) fn plain(measured: Measurement) -> Self {
        Self {
            measured,
            appends: None,
            rounds_per_sec: Vec::new(),
        }
    }
}

/// One way of doing the workload's writes, measured at a given concurrency.
#[async_trait]
pub(crate) trait Tier: Send + Sync {
    /// Runs the plan's budget with `clients` concurrent clients.
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String>;
    /// Stops background tasks (engines, readers, writer threads).
    async fn close(&self);
}

/// Measures every tier at every concurrency, interleaved: at each
/// concurrency the tiers run one after the other, `plan.rounds` times, in a
/// rotating order, and each keeps its best round. On a shared machine the
/// disk and the CPUs are slowed by whatever else runs; interleaving exposes
/// the tiers to the same conditions, best-of-rounds filters out the bursts.
///
/// # Errors
///
/// The first tier failure (every tier is closed either way).
pub(crate) async fn interleave(
    plan: &Plan,
    backend: &str,
    tiers: &[(&str, &dyn Tier)],
) -> Result<Vec<Vec<TierPoint>>, String> {
    let result = interleave_inner(plan, backend, tiers).await;
    for (_, tier) in tiers {
        tier.close().await;
    }
    result
}

/// [`interleave`] over the three tiers every backend measures: the engine,
/// the adapter alone, and the raw client. Closes all three.
pub(crate) async fn interleave_three(
    plan: &Plan,
    backend: &str,
    memstate: &dyn Tier,
    adapter: &dyn Tier,
    raw: &dyn Tier,
) -> Result<(Vec<TierPoint>, Vec<TierPoint>, Vec<TierPoint>), String> {
    let mut tiers = interleave(
        plan,
        backend,
        &[("memstate", memstate), ("adapter", adapter), ("raw", raw)],
    )
    .await?
    .into_iter();
    match (tiers.next(), tiers.next(), tiers.next()) {
        (Some(m), Some(a), Some(r)) => Ok((m, a, r)),
        _ => Err("three tiers expected".into()),
    }
}

async fn interleave_inner(
    plan: &Plan,
    backend: &str,
    tiers: &[(&str, &dyn Tier)],
) -> Result<Vec<Vec<TierPoint>>, String> {
    let mut out: Vec<Vec<TierPoint>> = tiers.iter().map(|_| Vec::new()).collect();
    for &clients in &plan.clients {
        let mut best: Vec<Option<TierPoint>> = tiers.iter().map(|_| None).collect();
        let mut rounds: Vec<Vec<f64>> = tiers.iter().map(|_| Vec::new()).collect();
        for round in 0..plan.rounds {
            for k in 0..tiers.len() {
                let i = (k + round) % tiers.len();
                let (name, tier) = tiers[i];
                let point = tier
                    .point(clients, plan)
                    .await
                    .map_err(|e| format!("{name} tier, {clients} clients: {e}"))?;
                plan.progress(&format!(
                    "{backend} {name:<8} {clients:>3} clients, round {}: {:>9.0}/s, p50 {:.2} ms{}",
                    round + 1,
                    point.measured.per_sec,
                    point.measured.p50_ms.unwrap_or(0.0),
                    point.appends.as_ref().map_or_else(String::new, |a| format!(
                        ", {:.1} commands per append{}",
                        a.commands_per_append,
                        a.window
                            .map_or_else(String::new, |w| format!(", window {w}"))
                    ))
                ));
                rounds[i].push(point.measured.per_sec);
                if best[i]
                    .as_ref()
                    .is_none_or(|b| point.measured.per_sec > b.measured.per_sec)
                {
                    best[i] = Some(point);
                }
            }
        }
        for ((slot, best), rounds) in out.iter_mut().zip(best).zip(rounds) {
            if let Some(mut point) = best {
                if rounds.len() > 1 {
                    point.rounds_per_sec = rounds;
                }
                slot.push(point);
            }
        }
    }
    Ok(out)
}

/// What one point appended, over its whole run (warm-up included).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct AppendStats {
    /// `Stream::append` calls.
    pub appends: u64,
    /// Records in them (the engine writes one frame per append).
    pub records: u64,
    /// Commands the clients completed meanwhile.
    pub commands: u64,
    /// Commands per append: how much group commit packed.
    pub commands_per_append: f64,
    /// Mean payload bytes per append.
    pub bytes_per_append: f64,
    /// The engine's window of appends in flight at the end of the point
    /// (`Stats::appends_in_flight_limit`; engine tier only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
}

/// Counts what goes through a stream, so group commit can be seen.
#[derive(Debug)]
pub(crate) struct CountingStream {
    inner: Arc<dyn Stream>,
    appends: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl CountingStream {
    pub(crate) fn new(inner: Arc<dyn Stream>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            appends: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.appends.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The counts since `before`, with `commands` completed meanwhile.
    fn since(&self, before: (u64, u64, u64), commands: u64) -> AppendStats {
        let (a, r, b) = self.snapshot();
        let appends = a - before.0;
        let per = |x: u64| {
            if appends == 0 {
                0.0
            } else {
                x as f64 / appends as f64
            }
        };
        AppendStats {
            appends,
            records: r - before.1,
            commands,
            commands_per_append: per(commands),
            bytes_per_append: per(b - before.2),
            window: None,
        }
    }
}

#[async_trait]
impl Stream for CountingStream {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(
            records.iter().map(|r| r.len() as u64).sum(),
            Ordering::Relaxed,
        );
        self.inner.append(records).await
    }

    async fn append_expecting(
        &self,
        records: Vec<Bytes>,
        expected: Option<Cursor>,
    ) -> Result<Vec<Cursor>, StreamError> {
        self.inner.append_expecting(records, expected).await
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        self.inner.subscribe(after).await
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        self.inner.head().await
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<CmpOrdering, StreamError> {
        self.inner.compare_cursors(a, b)
    }
}

/// Starts a bank engine on `stream` and opens the plan's accounts.
///
/// # Errors
///
/// Engine start or account opening failures, as text.
pub(crate) async fn start_bank(
    stream: Arc<dyn Stream>,
    node: &str,
    plan: &Plan,
) -> Result<Engine<Bank>, String> {
    let engine = start_engine(Bank::default(), stream, node, plan).await?;
    if let Err(e) = open_accounts(&engine, plan.accounts, 256).await {
        engine.shutdown().await;
        return Err(e);
    }
    Ok(engine)
}

/// Starts an engine of `model` on `stream` with the plan's settings.
///
/// # Errors
///
/// The engine does not start, as text.
pub(crate) async fn start_engine<M: Model>(
    model: M,
    stream: Arc<dyn Stream>,
    node: &str,
    plan: &Plan,
) -> Result<Engine<M>, String> {
    let mut builder = EngineBuilder::with_shared_stream(model, stream)
        .node_id(node)
        .codec(plan.codec);
    if let Some(n) = plan.max_in_flight_appends {
        builder = builder.max_in_flight_appends(n);
    }
    builder = builder.adaptive_in_flight_appends(plan.adaptive_in_flight_appends);
    builder
        .start()
        .await
        .map_err(|e| format!("starting the engine failed: {e}"))
}

/// The engine tier: bank transfers through `Engine::execute`.
pub(crate) struct EngineTier {
    engine: Engine<Bank>,
    counting: Arc<CountingStream>,
}

impl EngineTier {
    /// Starts an engine on `stream` with the plan's accounts open.
    ///
    /// # Errors
    ///
    /// Engine failures, as text.
    pub(crate) async fn start(
        stream: Arc<dyn Stream>,
        node: &str,
        plan: &Plan,
    ) -> Result<Self, String> {
        let counting = CountingStream::new(stream);
        let engine = start_bank(Arc::clone(&counting) as Arc<dyn Stream>, node, plan).await?;
        Ok(Self { engine, counting })
    }
}

#[async_trait]
impl Tier for EngineTier {
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String> {
        let before = self.counting.snapshot();
        let done = Arc::new(AtomicU64::new(0));
        let (e, d, accounts) = (self.engine.clone(), Arc::clone(&done), plan.accounts);
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let (engine, done) = (e.clone(), Arc::clone(&d));
            async move {
                execute(&engine, transfer(accounts, client, seq)).await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
        let mut appends = self.counting.since(before, done.load(Ordering::Relaxed));
        appends.window = Some(self.engine.stats().appends_in_flight_limit);
        Ok(TierPoint {
            measured,
            appends: Some(appends),
            rounds_per_sec: Vec::new(),
        })
    }

    async fn close(&self) {
        self.engine.shutdown().await;
    }
}

/// The adapter tier: each operation appends one command-sized record through
/// the `Stream` trait and waits until a subscription reads it back.
pub(crate) struct AdapterTier {
    counting: Arc<CountingStream>,
    waiters: Waiters,
    reader: JoinHandle<()>,
}

impl AdapterTier {
    /// Subscribes to `stream` from its start and reads in the background.
    ///
    /// # Errors
    ///
    /// Stream failures, as text.
    pub(crate) async fn start(stream: Arc<dyn Stream>) -> Result<Self, String> {
        let counting = CountingStream::new(stream);
        let waiters = Waiters::default();
        let mut subscription = counting
            .subscribe(None)
            .await
            .map_err(|e| format!("subscribing failed: {e}"))?;
        let reader_waiters = waiters.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(record)) = subscription.next().await {
                reader_waiters.seen(&record.payload);
            }
        });
        Ok(Self {
            counting,
            waiters,
            reader,
        })
    }
}

#[async_trait]
impl Tier for AdapterTier {
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String> {
        let before = self.counting.snapshot();
        let size = plan.payload_size;
        let done = Arc::new(AtomicU64::new(0));
        let point = next_point();
        let (s, w, d) = (
            Arc::clone(&self.counting),
            self.waiters.clone(),
            Arc::clone(&done),
        );
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let (stream, waiters, done) = (Arc::clone(&s), w.clone(), Arc::clone(&d));
            async move {
                let tag = Tag::new(point, client, seq);
                let rx = waiters.register(tag);
                if let Err(e) = stream
                    .append(vec![Bytes::from(tagged_payload(tag, size))])
                    .await
                {
                    waiters.forget(tag);
                    return Err(format!("append failed: {e}"));
                }
                read_back(&waiters, tag, rx, READ_BACK_TIMEOUT).await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
        Ok(TierPoint {
            measured,
            appends: Some(self.counting.since(before, done.load(Ordering::Relaxed))),
            rounds_per_sec: Vec::new(),
        })
    }

    async fn close(&self) {
        self.reader.abort();
    }
}
