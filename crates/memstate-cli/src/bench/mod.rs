//! `memstate bench`: memstate against the raw backends, and against SQLite.
//!
//! For every backend that is available (the file journal always; Kafka when
//! `MEMSTATE_KAFKA_BOOTSTRAP` names a broker; Kinesis when
//! `MEMSTATE_KINESIS_ENDPOINT` names an emulator), three tiers run the bank
//! workload at each concurrency, one after the other in the same run:
//!
//! - `memstate`: `Engine::execute` of transfers (append, read back, apply);
//! - `adapter`: the `Stream` trait alone, one command-sized record per append,
//!   read back through a subscription;
//! - `raw`: the backend's own client doing the same durable appends and reads.
//!
//! Beside them: SQLite doing the same transfers, replay speed from a journal
//! of a million commands, queries while writes run, and memory per million
//! accounts. The cluster tier runs several node processes on one stream of
//! each backend (`cluster/`); the HTTP tier compares `POST /commands/put` to
//! the server `memstate serve` runs with `Engine::execute` on the same
//! engine (`http.rs`). Results go to `target/bench/<time>.json` and
//! `latest.json`.
//! See `docs/benchmarks.md`.

pub(crate) mod cluster;
mod codec;
mod events;
mod file;
mod http;
mod kafka;
mod kinesis;
mod load;
mod memory;
mod query;
mod replay;
mod report;
mod snapshot;
pub(crate) mod snapshot_case;
mod snapshot_writes;
mod sqlite;
mod targets;
mod tiers;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::CliError;
use load::Budget;
use report::{BackendRun, Machine, Report, Section};

/// What `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Engine, adapter and raw tiers on the file journal.
    File,
    /// Engine, adapter and raw tiers on Kafka.
    Kafka,
    /// Engine, adapter and raw tiers on Kinesis.
    Kinesis,
    /// SQLite doing the same transfers.
    Sqlite,
    /// Rebuilding state from a journal of a million commands.
    Replay,
    /// Resident memory per million accounts.
    Memory,
    /// Query throughput while writes run.
    Query,
    /// Writes with 0 and 4 event subscribers.
    Events,
    /// Several node processes on one stream of each backend.
    Cluster,
    /// `POST /commands/put` to a `memstate serve`-equivalent server against
    /// `Engine::execute` on the same engine and file journal.
    Http,
    /// Encoding and decoding a command and a frame in each codec candidate.
    Codec,
    /// Snapshot pause, peak memory, size, write and restore time of a
    /// 1M- and a 10M-account model, copied (`std`) and shared (`imbl`).
    Snapshot,
}

/// Measures memstate against the raw backends and SQLite.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Small counts and short windows: a smoke run of every part in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Run only these parts (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Seconds each measurement point is measured, after a fifth as much warm-up (default 3; --quick 0.5).
    #[arg(long, value_name = "SECS", conflicts_with = "commands")]
    pub duration: Option<f64>,
    /// Instead of a time window: exactly this many operations per point, all measured.
    #[arg(long, value_name = "N")]
    pub commands: Option<u64>,
    /// Times each point is measured; tiers alternate and each keeps its best round (default 2; --quick 1).
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Concurrent clients of each point (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
    pub clients: Vec<usize>,
    /// The engine's cap on appends in flight (`EngineBuilder::max_in_flight_appends`; default: the engine's own).
    #[arg(long, value_name = "N")]
    pub max_in_flight_appends: Option<usize>,
    /// Keep the engine's window of appends in flight fixed at its cap instead
    /// of sizing it to the stream's latency (`EngineBuilder::adaptive_in_flight_appends(false)`).
    #[arg(long)]
    pub fixed_in_flight_appends: bool,
    /// Bank accounts the transfers move money between (default 1000; --quick 100).
    #[arg(long, value_name = "N")]
    pub accounts: Option<u64>,
    /// Commands in the replay journal (default 1000000; --quick 20000).
    #[arg(long, value_name = "N")]
    pub replay_commands: Option<u64>,
    /// Accounts built for the memory figure (default 1000000; --quick 100000).
    #[arg(long, value_name = "N")]
    pub memory_accounts: Option<u64>,
    /// Accounts of the snapshot tier's models (comma-separated; default
    /// 1000000,10000000; --quick 100000).
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub snapshot_accounts: Vec<u64>,
    /// Deposits replayed before each snapshot, so the de-duplication window
    /// holds their ids (default 1000000, the window's count bound; --quick 20000).
    #[arg(long, value_name = "N")]
    pub snapshot_commands: Option<u64>,
    /// Writers executing deposits while the snapshot tier's snapshot is
    /// taken, one case per number (comma-separated; default 0,16: once while
    /// nothing is written, once under 16 writers).
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub snapshot_writers: Vec<u32>,
    /// Where the servers answer; Kafka and Kinesis are not run without them.
    #[command(flatten)]
    pub endpoints: crate::backend::EndpointArgs,
    /// Node processes of the cluster tier.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub cluster_nodes: usize,
    /// Closed-loop clients of the cluster tier, spread over its nodes.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub cluster_clients: usize,
    /// Commands per second node 0 writes while node 1 reads (the cluster tier's pair phase).
    #[arg(long, value_name = "PER_SEC", default_value_t = 500.0)]
    pub cluster_rate: f64,
    /// Another Kafka run of the cluster tier with these consumer/producer
    /// properties (`key=value;key=value`; repeatable).
    #[arg(long, value_name = "PROPERTIES")]
    pub cluster_kafka_variant: Vec<String>,
    /// Run the Kafka part once per value, with the producers' `linger.ms` set
    /// to it in every tier (comma-separated; default: one run with
    /// librdkafka's default, 5 ms).
    #[arg(long, value_name = "MS", value_delimiter = ',')]
    pub kafka_linger_ms: Vec<u64>,
    /// `FileStreamConfig::preallocate` of the file part's engine and adapter
    /// journals, in bytes (default 0: off, the journal's default; the raw
    /// tier's file grows with every write either way).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub file_preallocate: u64,
    /// Closed-loop HTTP clients of the HTTP tier (and embedded callers it is compared with).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub http_clients: usize,
    /// The command codec of the streams the engine tiers create (json or
    /// msgpack; the replay part always runs both).
    #[arg(long, value_name = "CODEC", default_value = "json")]
    pub codec: memstate_core::Codec,
    /// Where the JSON results go.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Where journals and databases are written (default: a temporary
    /// directory inside --out-dir, so on the same disk as the build, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// What every part needs to know.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Plan {
    pub clients: Vec<usize>,
    #[serde(serialize_with = "budget_json")]
    pub budget: Budget,
    pub rounds: usize,
    /// `EngineBuilder::max_in_flight_appends`, when not the engine's default.
    pub max_in_flight_appends: Option<usize>,
    /// `EngineBuilder::adaptive_in_flight_appends` (`true` by default).
    pub adaptive_in_flight_appends: bool,
    /// `FileStreamConfig::preallocate` of the file part's journals.
    pub file_preallocate: u64,
    pub accounts: u64,
    pub replay_commands: u64,
    pub memory_accounts: u64,
    /// The command codec of the streams the engine tiers create.
    pub codec: memstate_core::Codec,
    /// Bytes of one raw operation: a one-command frame as the engine writes it.
    pub payload_size: usize,
}

fn budget_json<S: serde::Serializer>(budget: &Budget, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(2))?;
    match budget {
        Budget::Time { warmup, measure } => {
            map.serialize_entry("warmup_seconds", &warmup.as_secs_f64())?;
            map.serialize_entry("measure_seconds", &measure.as_secs_f64())?;
        }
        Budget::Count(n) => {
            map.serialize_entry("operations_per_point", n)?;
        }
    }
    map.end()
}

#[cfg(test)]
impl Plan {
    /// A tiny plan for unit tests: `clients`, `operations` per point, `rounds`.
    pub(crate) fn for_tests(clients: Vec<usize>, operations: u64, rounds: usize) -> Self {
        Self {
            clients,
            budget: Budget::Count(operations),
            rounds,
            max_in_flight_appends: None,
            adaptive_in_flight_appends: true,
            file_preallocate: 0,
            accounts: 10,
            replay_commands: 1,
            memory_accounts: 0,
            codec: memstate_core::Codec::Json,
            payload_size: 0,
        }
    }
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Result<Self, CliError> {
        let budget = match (args.commands, args.duration) {
            (Some(n), _) => Budget::Count(n.max(1)),
            (None, Some(secs)) if !(secs.is_finite() && secs > 0.0) => {
                return Err(CliError::Demo(format!(
                    "--duration must be a positive number of seconds, not {secs}"
                )));
            }
            (None, secs) => {
                let measure =
                    Duration::from_secs_f64(secs.unwrap_or(if args.quick { 0.5 } else { 3.0 }));
                Budget::Time {
                    warmup: measure / 5,
                    measure,
                }
            }
        };
        let mut clients: Vec<usize> = args.clients.iter().map(|&c| c.max(1)).collect();
        if clients.is_empty() {
            clients = vec![1, 16, 64, 256, 1024];
        }
        let pick = |given: Option<u64>, full: u64, quick: u64| {
            given.unwrap_or(if args.quick { quick } else { full })
        };
        Ok(Self {
            clients,
            budget,
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 2 }).max(1),
            max_in_flight_appends: args.max_in_flight_appends,
            adaptive_in_flight_appends: !args.fixed_in_flight_appends,
            file_preallocate: args.file_preallocate,
            accounts: pick(args.accounts, 1000, 100).max(2),
            replay_commands: pick(args.replay_commands, 1_000_000, 20_000).max(1),
            memory_accounts: pick(args.memory_accounts, 1_000_000, 100_000),
            codec: args.codec,
            payload_size: workload::command_frame_size(args.codec, "bench-file"),
        })
    }

    /// A progress line on stderr (the table goes to stdout).
    pub(crate) fn progress(&self, line: &str) {
        eprintln!("  {line}");
    }

    /// Writer clients of the query part: 16 when measured (the figure
    /// earlier runs used), else the middle concurrency.
    pub(crate) fn query_writers(&self) -> usize {
        if self.clients.contains(&16) {
            return 16;
        }
        let mut sorted = self.clients.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(16)
    }
}

/// A tier beside the built-in parts (the cluster tier; others add theirs the
/// same way: a `Part`, a module whose `run` returns an `Extra`, one line in
/// [`run`]). Its figures go into the JSON under `name`, its table lines after
/// the built-in ones.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Extra {
    pub name: &'static str,
    pub figures: serde_json::Value,
    #[serde(skip)]
    pub table: String,
    pub failed: bool,
}

impl Extra {
    pub(crate) fn new(
        name: &'static str,
        figures: Result<serde_json::Value, serde_json::Error>,
        table: String,
        failed: bool,
    ) -> Self {
        match figures {
            Ok(figures) => Self {
                name,
                figures,
                table,
                failed,
            },
            Err(e) => Self {
                name,
                figures: serde_json::Value::Null,
                table: format!("{name}: the figures could not be serialized: {e}\n"),
                failed: true,
            },
        }
    }
}

fn wanted(args: &BenchArgs, part: Part) -> bool {
    args.only.is_empty() || args.only.contains(&part)
}

fn not_selected<T>() -> Section<T> {
    Section::NotRun {
        reason: "not selected by --only".into(),
    }
}

/// Runs the selected parts, prints the table and writes the JSON.
/// `Ok(false)` when a part that was asked for failed.
///
/// # Errors
///
/// Bad arguments, or the work directory or results cannot be written.
pub async fn run(args: BenchArgs) -> Result<bool, CliError> {
    let plan = Plan::from_args(&args)?;
    let started_at = report::utc_now();
    let machine = Machine::probe();
    if machine.build == "debug" {
        eprintln!(
            "memstate bench: this is a debug build; figures are not representative (use --release)"
        );
    }
    std::fs::create_dir_all(&args.out_dir).map_err(CliError::Io)?;
    let temp = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(CliError::Io)?;
            tempfile::Builder::new()
                .prefix("memstate-bench-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&args.out_dir),
    }
    .map_err(CliError::Io)?;
    let work = temp.path().to_path_buf();
    eprintln!(
        "memstate bench: {} clients, payload {} bytes per command, work dir {}",
        plan.clients
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        plan.payload_size,
        work.display()
    );

    // Memory first: later parts leave freed memory the allocator would reuse.
    let memory = if wanted(&args, Part::Memory) {
        Section::from_result(memory::run(&plan))
    } else {
        not_selected()
    };

    let mut backends = Vec::new();
    if wanted(&args, Part::File) {
        let dir = work.join("file");
        backends.push(match file::run(&plan, &dir).await {
            Ok(run) => run,
            Err(e) => BackendRun::failed("file", e),
        });
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    if wanted(&args, Part::Kafka) {
        let lingers: Vec<Option<u64>> = if args.kafka_linger_ms.is_empty() {
            vec![None]
        } else {
            args.kafka_linger_ms.iter().copied().map(Some).collect()
        };
        for linger in lingers {
            backends.push(
                match crate::backend::EndpointArgs::given(&args.endpoints.bootstrap) {
                    Some(bootstrap) => match kafka::run(&plan, bootstrap, linger).await {
                        Ok(run) => run,
                        Err(e) => BackendRun::failed("kafka", e),
                    },
                    None => BackendRun::not_run(
                        "kafka",
                        "MEMSTATE_KAFKA_BOOTSTRAP is not set (make backends-up starts a local broker)",
                    ),
                },
            );
        }
    }
    if wanted(&args, Part::Kinesis) {
        backends.push(
            match crate::backend::EndpointArgs::given(&args.endpoints.endpoint) {
                Some(endpoint) => match kinesis::run(&plan, endpoint).await {
                    Ok(run) => run,
                    Err(e) => BackendRun::failed("kinesis", e),
                },
                None => BackendRun::not_run(
                    "kinesis",
                    "MEMSTATE_KINESIS_ENDPOINT is not set (make backends-up starts the emulator)",
                ),
            },
        );
    }
    if args.only.is_empty() {
        backends.push(BackendRun::not_run(
            "eventstore",
            "no EventStoreDB/KurrentDB server runs on this machine, and no raw baseline is implemented for it",
        ));
    }

    let sqlite = if wanted(&args, Part::Sqlite) {
        plan.progress("sqlite: transfers as transactions (WAL, synchronous=FULL)");
        let dir = work.join("sqlite");
        let result = match std::fs::create_dir_all(&dir) {
            Ok(()) => sqlite::run(&plan, &dir).await,
            Err(e) => Err(format!("creating {}: {e}", dir.display())),
        };
        Section::from_result(result)
    } else {
        not_selected()
    };
    let replay = if wanted(&args, Part::Replay) {
        Section::from_result(replay::run(&plan, &work).await)
    } else {
        not_selected()
    };
    let query = if wanted(&args, Part::Query) {
        Section::from_result(query::run(&plan, &work).await)
    } else {
        not_selected()
    };

    let events = if wanted(&args, Part::Events) {
        Section::from_result(events::run(&plan, &work).await)
    } else {
        not_selected()
    };
    // Tiers added beside the built-in parts: each returns an `Extra`.
    let mut extras = Vec::new();
    if wanted(&args, Part::Cluster) {
        extras.push(cluster::run(&plan, &args, &work).await);
    }
    if wanted(&args, Part::Http) {
        extras.push(http::run(&plan, args.http_clients, &work).await);
    }
    if wanted(&args, Part::Codec) {
        extras.push(codec::run(&plan));
    }
    if wanted(&args, Part::Snapshot) {
        extras.push(snapshot::run(&plan, &args, &work).await);
    }

    let mut report = Report {
        started_at,
        finished_at: report::utc_now(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        plan: serde_json::to_value(&plan).unwrap_or_default(),
        memory,
        backends,
        sqlite,
        replay,
        query,
        events,
        extras,
        targets: Vec::new(),
    };
    report.targets = targets::compute(&serde_json::to_value(&report).unwrap_or_default());
    print!("{}", report::table(&report));
    let path = report::write(&report, &args.out_dir).map_err(CliError::Demo)?;
    println!("\nresults: {} (and latest.json beside it)", path.display());
    drop(temp);
    let failed = report.memory.failed()
        || report.sqlite.failed()
        || report.replay.failed()
        || report.query.failed()
        || report.events.failed()
        || report.backends.iter().any(|b| b.outcome.failed())
        || report.extras.iter().any(|e| e.failed);
    Ok(!failed)
}
