//! Fault harness for the Kafka adapter: engines write under load while a
//! broker is SIGKILLed and restarted, then every acknowledged command is
//! accounted for.
//!
//! Each writer gives each command its own id and key (`Add { key, 1 }`), so a
//! key's value is how many times that command was applied. A command whose
//! `execute` failed (an ambiguous append, a timeout) is retried with the same
//! id until it is acknowledged; `AlreadyApplied` counts as acknowledged. At
//! the end every node, and one more node replaying the topic from the start,
//! reads linearizably and the harness counts:
//!
//! - lost: acknowledged commands that no node applied (must be 0);
//! - applied twice: keys whose value is above 1 (must be 0);
//! - the state hash of every node (must be equal).
//!
//! The broker is killed and restarted by shell commands, so the same binary
//! serves a single broker (`kafka.sh kill` / `kafka.sh start`) and a cluster
//! (`kafka-cluster.sh kill {node}` / `start-node {node}`, `{node}` being the
//! partition's current leader). `make torture-kafka` and
//! `make torture-kafka-cluster` run it; see docs/testing.md.
//!
//! ```text
//! torture_kafka --bootstrap 127.0.0.1:19292 --replication 1 \
//!     --kill-cmd 'bash kafka.sh kill' --restart-cmd 'bash kafka.sh start' \
//!     [--kills 3] [--nodes 3] [--writers 8] [--pause-secs 4] [--seed N]
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memstate_conformance::model::{Tally, TallyCommand};
use memstate_core::{CommandId, Consistency, Engine, EngineBuilder, Error, ExecuteError, Stream};
use memstate_kafka::{KafkaConfig, KafkaStream};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::Mutex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one command may keep being retried before the writer gives up on
/// it (it then counts as "given up", never as acknowledged).
const RETRY_HORIZON: Duration = Duration::from_secs(240);

#[derive(Debug)]
struct Options {
    bootstrap: String,
    replication: i32,
    kill_cmd: String,
    restart_cmd: String,
    kills: u32,
    nodes: usize,
    writers: usize,
    pause: Duration,
    seed: u64,
}

fn usage() -> String {
    "usage: torture_kafka --bootstrap HOST:PORT --kill-cmd CMD --restart-cmd CMD \
     [--replication N] [--kills N] [--nodes N] [--writers N] [--pause-secs S] [--seed N]\n\
     CMD may contain {node}: the broker id of the partition's current leader"
        .to_owned()
}

fn parse_options() -> Result<Options, String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument {flag:?}\n{}", usage()));
        };
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        args.insert(name.to_owned(), value);
    }
    let take = |name: &str| args.get(name).cloned();
    let number = |name: &str, default: u64| -> Result<u64, String> {
        take(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name} {v:?} is not a number"))
        })
    };
    let required =
        |name: &str| take(name).ok_or_else(|| format!("--{name} is required\n{}", usage()));
    let options = Options {
        bootstrap: required("bootstrap")?,
        kill_cmd: required("kill-cmd")?,
        restart_cmd: required("restart-cmd")?,
        replication: i32::try_from(number("replication", 1)?).map_err(|e| e.to_string())?,
        kills: u32::try_from(number("kills", 3)?).map_err(|e| e.to_string())?,
        nodes: usize::try_from(number("nodes", 3)?).map_err(|e| e.to_string())?,
        writers: usize::try_from(number("writers", 8)?).map_err(|e| e.to_string())?,
        pause: Duration::from_secs(number("pause-secs", 4)?),
        seed: number(
            "seed",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs()),
        )?,
    };
    if options.nodes == 0 || options.writers == 0 {
        return Err("--nodes and --writers must be at least 1".to_owned());
    }
    Ok(options)
}

/// xorshift64*: reproducible pauses from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration between `base / 2` and `base * 3 / 2`.
    fn around(&mut self, base: Duration) -> Duration {
        let millis = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(millis / 2 + self.next() % millis)
    }
}

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    acknowledged: AtomicU64,
    acknowledged_as_already_applied: AtomicU64,
    errors_retried: AtomicU64,
    given_up: AtomicU64,
    /// Retried errors by kind (the variant's name).
    error_kinds: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// A short name for an execute error: the variant, without its details.
fn error_kind(error: &ExecuteError<String>) -> String {
    let text = format!("{error:?}");
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '(' || c == '_'))
        .unwrap_or(text.len());
    let kind = text[..end].trim_end_matches('(');
    let open = kind.matches('(').count();
    format!("{kind}{}", ")".repeat(open))
}

fn kafka_config(options: &Options, topic: &str) -> KafkaConfig {
    KafkaConfig::new(options.bootstrap.clone(), topic)
        .with_operation_timeout(Duration::from_secs(10))
        .with_delivery_timeout(Duration::from_secs(20))
}

async fn start_node(options: &Options, topic: &str, name: &str) -> Result<Engine<Tally>, BoxError> {
    let stream = KafkaStream::connect(kafka_config(options, topic)).await?;
    let engine =
        EngineBuilder::with_shared_stream(Tally::default(), Arc::new(stream) as Arc<dyn Stream>)
            .node_id(name)
            .execute_timeout(Duration::from_secs(60))
            .read_timeout(Duration::from_secs(120))
            .startup_timeout(Duration::from_secs(120))
            .start()
            .await?;
    Ok(engine)
}

/// The broker id of the leader of the topic's partition, if known now.
fn partition_leader(options: &Options, topic: &str) -> Option<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &options.bootstrap)
        .create()
        .ok()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let leader = metadata.topics().first()?.partitions().first()?.leader();
    (leader >= 0).then_some(leader)
}

async fn run_shell(what: &str, command: &str) -> Result<(), BoxError> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} command {command:?} failed: {status}").into())
    }
}

/// One writer: commands one after another, round-robin over the nodes, each
/// retried under its own id until acknowledged.
async fn writer(
    w: usize,
    engines: Arc<Vec<Engine<Tally>>>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    acknowledged: Arc<Mutex<Vec<String>>>,
) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("w{w}-{seq}");
        let id = CommandId(uuid::Uuid::new_v4());
        let first_try = Instant::now();
        let mut attempt = 0usize;
        loop {
            let engine = &engines[(w + seq as usize + attempt) % engines.len()];
            attempt += 1;
            counts.attempts.fetch_add(1, Ordering::Relaxed);
            match engine
                .execute_with_id(id, TallyCommand::add(key.clone(), 1))
                .await
            {
                Ok(_) => {
                    counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                    acknowledged.lock().await.push(key);
                    break;
                }
                Err(ExecuteError::Engine(Error::AlreadyApplied { .. })) => {
                    counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                    counts
                        .acknowledged_as_already_applied
                        .fetch_add(1, Ordering::Relaxed);
                    acknowledged.lock().await.push(key);
                    break;
                }
                Err(error) => {
                    counts.errors_retried.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut kinds) = counts.error_kinds.lock() {
                        *kinds.entry(error_kind(&error)).or_default() += 1;
                    }
                    if first_try.elapsed() > RETRY_HORIZON {
                        eprintln!(
                            "torture_kafka: {key} given up after {attempt} attempts: {error}"
                        );
                        counts.given_up.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

struct NodeState {
    name: String,
    tally: Tally,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("torture_kafka: error: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(options: Options) -> Result<bool, BoxError> {
    let started = Instant::now();
    let mut rng = Rng(options.seed.max(1));
    let topic = format!("memstate-torture-{}", uuid::Uuid::new_v4().simple());
    KafkaStream::create_topic(&kafka_config(&options, &topic), options.replication).await?;
    println!(
        "torture_kafka: seed {} topic {topic} on {} (replication factor {}), {} nodes, {} writers, {} kills",
        options.seed,
        options.bootstrap,
        options.replication,
        options.nodes,
        options.writers,
        options.kills
    );
    let mut engines = Vec::new();
    for n in 0..options.nodes {
        engines.push(start_node(&options, &topic, &format!("node-{n}")).await?);
    }
    let engines = Arc::new(engines);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..options.writers)
        .map(|w| {
            tokio::spawn(writer(
                w,
                Arc::clone(&engines),
                Arc::clone(&stop),
                Arc::clone(&counts),
                Arc::clone(&acknowledged),
            ))
        })
        .collect();

    for kill in 1..=options.kills {
        tokio::time::sleep(rng.around(options.pause)).await;
        let leader = partition_leader(&options, &topic);
        let node = leader.map_or_else(|| "1".to_owned(), |l| l.to_string());
        let acked_before = counts.acknowledged.load(Ordering::Relaxed);
        let killed_at = started.elapsed();
        run_shell("kill", &options.kill_cmd.replace("{node}", &node)).await?;
        tokio::time::sleep(rng.around(Duration::from_secs(2))).await;
        let restart_at = started.elapsed();
        run_shell("restart", &options.restart_cmd.replace("{node}", &node)).await?;
        let back_at = started.elapsed();
        println!(
            "kill {kill}: broker {node} (partition leader: {}) SIGKILLed at {:.1} s, restarted at {:.1} s, ready at {:.1} s; {} commands acknowledged meanwhile",
            leader.map_or("unknown".to_owned(), |l| l.to_string()),
            killed_at.as_secs_f64(),
            restart_at.as_secs_f64(),
            back_at.as_secs_f64(),
            counts.acknowledged.load(Ordering::Relaxed) - acked_before
        );
    }
    tokio::time::sleep(rng.around(options.pause)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let load_secs = started.elapsed().as_secs_f64();

    // Every node, plus one that replays the topic from its first record.
    let replay = start_node(&options, &topic, "replay").await?;
    let mut states = Vec::new();
    for engine in engines.iter().chain(std::iter::once(&replay)) {
        let tally = engine
            .query(Consistency::Linearizable, Clone::clone)
            .await?;
        states.push(NodeState {
            name: engine.node_id().to_string(),
            tally,
        });
    }
    for engine in engines.iter().chain(std::iter::once(&replay)) {
        engine.shutdown().await;
    }
    let _ = KafkaStream::delete_topic(&kafka_config(&options, &topic)).await;

    let acknowledged = acknowledged.lock().await;
    let reference = &states[0].tally;
    let lost = acknowledged
        .iter()
        .filter(|key| !reference.values.contains_key(key.as_str()))
        .count();
    let twice = reference.values.values().filter(|v| **v > 1).count();
    let equal = states.iter().all(|s| s.tally == *reference);
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "load ran {load_secs:.1} s; then {} nodes read the topic",
        states.len()
    );
    println!(
        "commands acknowledged:             {}",
        c(&counts.acknowledged)
    );
    println!(
        "  of which by a retry that found them applied (AlreadyApplied): {}",
        c(&counts.acknowledged_as_already_applied)
    );
    println!("execute attempts:                  {}", c(&counts.attempts));
    println!(
        "errors retried under the same id:  {}",
        c(&counts.errors_retried)
    );
    if let Ok(kinds) = counts.error_kinds.lock() {
        for (kind, n) in kinds.iter() {
            println!("  {kind}: {n}");
        }
    }
    println!("given up (never acknowledged):     {}", c(&counts.given_up));
    println!("commands applied:                  {}", reference.applied);
    println!("lost (acknowledged, not applied):  {lost}");
    println!("applied twice:                     {twice}");
    for s in &states {
        println!(
            "  {:<8} applied {:>7}  hash {:016x}",
            s.name, s.tally.applied, s.tally.hash
        );
    }
    println!(
        "state hash equal on every node:    {}",
        if equal { "yes" } else { "NO" }
    );
    let ok = lost == 0 && twice == 0 && equal && c(&counts.acknowledged) > 0;
    println!("torture_kafka: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
