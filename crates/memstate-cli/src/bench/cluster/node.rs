//! One node of the cluster tier: a separate OS process (`memstate
//! bench-node`) running an engine on the shared stream. It reads one phase
//! per line on stdin (JSON), runs it, and answers with one line of JSON on
//! stdout; logs go to stderr.
//!
//! The model counts stamps. Each stamp carries its origin node, a sequence
//! number and the wall-clock instant it was sent; applying it on any node
//! notes, outside the replicated state, when it was applied there. All nodes
//! run on one machine, so their wall clocks are the same clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use memstate_core::{CommandContext, Consistency, Engine, EngineBuilder, Model, Stream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::CliError;
use crate::bench::load::Measurement;
use crate::stats::Latency;

/// The backends a node can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeBackend {
    File,
    Kafka,
    Kinesis,
}

/// `memstate bench-node`: run by `memstate bench`, not by hand.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The backend of the shared stream.
    #[arg(long, value_enum)]
    pub backend: NodeBackend,
    /// The journal directory, topic or stream name.
    #[arg(long)]
    pub target: String,
    /// Kafka bootstrap servers or the Kinesis endpoint.
    #[arg(long)]
    pub address: Option<String>,
    /// Extra client properties (`key=value`), for Kafka.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// This node's number (0-based).
    #[arg(long)]
    pub node: u32,
}

/// A stamp: who sent it, its number, and when (ns since the epoch).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Stamp {
    origin: u32,
    seq: u64,
    sent_ns: u64,
}

/// The replicated state: how many stamps were applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stamps {
    count: u64,
}

impl Model for Stamps {
    type Command = Stamp;
    type Output = u64;
    type Error = std::convert::Infallible;

    fn apply(&mut self, stamp: Stamp, _ctx: &mut CommandContext<'_>) -> Result<u64, Self::Error> {
        self.count += 1;
        OBSERVED.lock().note(&stamp);
        Ok(self.count)
    }
}

/// What this process notes while a phase runs (not replicated, not in the model).
#[derive(Debug, Default)]
struct Observed {
    node: u32,
    measuring: bool,
    /// Send -> applied here, for stamps of other nodes.
    lags: Vec<Duration>,
    /// Applied here, ns, by (origin, seq), for the tracked origin.
    tracked: Option<u32>,
    applied: HashMap<u64, u64>,
    /// Stamps applied here per origin.
    per_origin: HashMap<u32, u64>,
}

static OBSERVED: LazyLock<Mutex<Observed>> = LazyLock::new(|| Mutex::new(Observed::default()));

impl Observed {
    fn note(&mut self, stamp: &Stamp) {
        if !self.measuring {
            return;
        }
        let now = now_ns();
        *self.per_origin.entry(stamp.origin).or_default() += 1;
        if stamp.origin != self.node {
            self.lags
                .push(Duration::from_nanos(now.saturating_sub(stamp.sent_ns)));
        }
        if self.tracked == Some(stamp.origin) {
            self.applied.insert(stamp.seq, now);
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One phase, as the coordinator sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Phase {
    /// Closed-loop writer clients on this node (0: none).
    pub writers: usize,
    /// Paced writing instead: one client at this many commands per second.
    pub rate: Option<f64>,
    /// Closed-loop `Linearizable` readers on this node.
    pub readers: usize,
    /// How long the clients run.
    pub seconds: f64,
    /// After the clients stop, how long to keep noting what is applied.
    pub settle_seconds: f64,
    /// Note the apply instant of every stamp from this node.
    pub track: Option<u32>,
}

/// What a node measured in one phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PhaseResult {
    pub node: u32,
    pub execute: Measurement,
    pub reads: Measurement,
    /// Send -> applied here for other nodes' stamps, ms.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    pub lag_samples: u64,
    /// Apply instants (ns) of the tracked origin's stamps, by sequence number.
    pub applied: HashMap<u64, u64>,
    /// Stamps applied here per origin during the phase.
    pub per_origin: HashMap<u32, u64>,
    pub error: Option<String>,
}

/// Runs the node until stdin closes or says `stop`.
///
/// # Errors
///
/// The stream cannot be opened or the engine cannot start.
pub async fn run(args: NodeArgs) -> Result<bool, CliError> {
    let stream = open(&args).await.map_err(CliError::Backend)?;
    OBSERVED.lock().node = args.node;
    let engine = EngineBuilder::with_shared_stream(Stamps::default(), stream)
        .node_id(format!("bench-node-{}", args.node))
        .start()
        .await?;
    // Phases arrive on stdin, read by a plain thread (a phase line is tiny).
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("bench-node-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(CliError::Io)?;
    say(&serde_json::json!({ "ready": args.node }))?;
    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() || line == "stop" {
            break;
        }
        let result = match serde_json::from_str::<Phase>(line) {
            Ok(phase) => run_phase(&engine, args.node, &phase).await,
            Err(e) => PhaseResult {
                node: args.node,
                error: Some(format!("bad phase {line:?}: {e}")),
                ..PhaseResult::default()
            },
        };
        say(&result)?;
    }
    engine.shutdown().await;
    Ok(true)
}

/// One line of JSON on stdout, flushed.
fn say(value: &impl Serialize) -> Result<(), CliError> {
    use std::io::Write as _;
    let line = serde_json::to_string(value).map_err(|e| CliError::Demo(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(CliError::Io)
}

async fn open(args: &NodeArgs) -> Result<Arc<dyn Stream>, String> {
    let address = || {
        args.address
            .clone()
            .ok_or_else(|| format!("--address is needed for {:?}", args.backend))
    };
    Ok(match args.backend {
        NodeBackend::File => Arc::new(
            memstate_file::FileStream::open(&args.target)
                .await
                .map_err(|e| format!("opening {}: {e}", args.target))?,
        ),
        NodeBackend::Kafka => {
            let mut config = memstate_kafka::KafkaConfig::new(address()?, args.target.clone());
            for property in &args.properties {
                let (key, value) = property
                    .split_once('=')
                    .ok_or_else(|| format!("--property {property:?} is not KEY=VALUE"))?;
                config = config.with_property(key, value);
            }
            Arc::new(
                memstate_kafka::KafkaStream::connect(config)
                    .await
                    .map_err(|e| format!("connecting to topic {}: {e}", args.target))?,
            )
        }
        NodeBackend::Kinesis => Arc::new(
            memstate_kinesis::KinesisStream::connect(memstate_kinesis::KinesisConfig::emulator(
                address()?,
                args.target.clone(),
            ))
            .await
            .map_err(|e| format!("connecting to stream {}: {e}", args.target))?,
        ),
    })
}

async fn run_phase(engine: &Engine<Stamps>, node: u32, phase: &Phase) -> PhaseResult {
    {
        let mut observed = OBSERVED.lock();
        observed.measuring = true;
        observed.lags.clear();
        observed.applied.clear();
        observed.per_origin.clear();
        observed.tracked = phase.track;
    }
    let window = Duration::from_secs_f64(phase.seconds.max(0.0));
    let writers = async {
        if let Some(rate) = phase.rate.filter(|r| *r > 0.0) {
            paced(engine, node, rate, window).await
        } else if phase.writers > 0 {
            let engine = engine.clone();
            closed(phase.writers, window, move |seq| {
                let engine = engine.clone();
                async move { write(&engine, node, seq).await }
            })
            .await
        } else {
            Ok(Measurement::default())
        }
    };
    let readers = async {
        if phase.readers > 0 {
            let engine = engine.clone();
            closed(phase.readers, window, move |_| {
                let engine = engine.clone();
                async move { read(&engine).await }
            })
            .await
        } else {
            Ok(Measurement::default())
        }
    };
    let (execute, reads) = tokio::join!(writers, readers);
    tokio::time::sleep(Duration::from_secs_f64(phase.settle_seconds.max(0.0))).await;
    let mut observed = OBSERVED.lock();
    observed.measuring = false;
    let lag = Latency::of(&mut observed.lags);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let error = execute.as_ref().err().or(reads.as_ref().err()).cloned();
    PhaseResult {
        node,
        execute: execute.unwrap_or_default(),
        reads: reads.unwrap_or_default(),
        lag_p50_ms: lag.map(|l| ms(l.p50)),
        lag_p99_ms: lag.map(|l| ms(l.p99)),
        lag_samples: observed.lags.len() as u64,
        applied: std::mem::take(&mut observed.applied),
        per_origin: std::mem::take(&mut observed.per_origin),
        error,
    }
}

/// A sequence number unique to this process, across clients and phases.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn write(engine: &Engine<Stamps>, node: u32, seq: u64) -> Result<(), String> {
    let stamp = Stamp {
        origin: node,
        seq,
        sent_ns: now_ns(),
    };
    engine
        .execute(stamp)
        .await
        .map(drop)
        .map_err(|e| format!("execute failed: {e}"))
}

async fn read(engine: &Engine<Stamps>) -> Result<(), String> {
    engine
        .query(Consistency::Linearizable, |m| m.count)
        .await
        .map(drop)
        .map_err(|e| format!("linearizable read failed: {e}"))
}

/// `clients` closed loops of `op` for `window`, each on its own task;
/// every completed operation counts.
async fn closed<F, Fut>(clients: usize, window: Duration, op: F) -> Result<Measurement, String>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let started = Instant::now();
    let end = started + window;
    let op = Arc::new(op);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let began = Instant::now();
                    op(seq).await?;
                    latencies.push(began.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            task.await
                .map_err(|e| format!("a client task failed: {e}"))??,
        );
    }
    Ok(Measurement::of(clients, started.elapsed(), &mut all))
}

/// One client writing at `rate` per second for `window` (a late command
/// does not make the next ones bunch up: missed ticks are skipped).
async fn paced(
    engine: &Engine<Stamps>,
    node: u32,
    rate: f64,
    window: Duration,
) -> Result<Measurement, String> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut latencies = Vec::new();
    while started.elapsed() < window {
        ticks.tick().await;
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let began = Instant::now();
        write(engine, node, seq).await?;
        latencies.push(began.elapsed());
    }
    Ok(Measurement::of(1, started.elapsed(), &mut latencies))
}
