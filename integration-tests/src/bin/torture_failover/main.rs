//! Leader-failover harness: three node processes in single-leader mode on one
//! stream (a file journal or a Kafka topic), the leader SIGKILLed or
//! SIGSTOPped and resumed after the election, while clients keep commands in
//! flight and retry them, under the same command id, on the next leader.
//!
//! ```text
//! torture_failover --backend file [--dir DIR]
//! torture_failover --backend kafka --bootstrap HOST:PORT [--replication N]
//!     [--failovers 4] [--faults mixed|kill|stop] [--clients 16] [--pause-ms 2000]
//!     [--heartbeat-ms 1000] [--election-timeout-ms 5000] [--attempt-timeout-ms 2000] [--seed N]
//! ```
//!
//! Every node's stream is wrapped in [`hold::HoldBack`]. Before each fault the
//! harness tells the leader to hold its appends, so its in-flight writes are
//! still unwritten when it is deposed, and lands them only after the next
//! leader's claim is in the log: a SIGSTOPped leader (a zombie) writes them
//! itself when it wakes up with its old epoch; the writes of a SIGKILLed one
//! are handed to the harness, which appends them late, as a network that
//! delivers a dead node's request would. Failovers alternate between the two
//! orders a client can meet: the late copy lands before the client's retry
//! (it must be fenced and the retry applied), or after it (it must be dropped
//! as a duplicate). See docs/testing.md.
//!
//! The harness prints acknowledged, lost, applied twice, fenced, retries
//! answered `AlreadyApplied`, whether the nodes' state hashes are equal, and
//! the unavailability of each failover; it exits non-zero on any loss, double
//! apply or hash mismatch, or when no late old-epoch record was fenced.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod clients;
mod cluster;
mod failover;
mod hold;
mod node;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use memstate_conformance::model::TallyCommand;
use memstate_core::{CommandId, LeadershipConfig, Settings, Stream, WriteMode};
use memstate_file::FileStream;
use memstate_kafka::{KafkaConfig, KafkaStream};

/// `--name value` pairs.
#[derive(Debug, Default)]
pub struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    pub fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name} {v:?} is not a number"))
        })
    }

    pub fn millis(&self, name: &str, default: Duration) -> Result<Duration, String> {
        let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        Ok(Duration::from_millis(self.number(name, default)?))
    }
}

/// Where the nodes' stream lives.
#[derive(Clone, Debug)]
pub enum Backend {
    File { journal: PathBuf },
    Kafka { bootstrap: String, topic: String },
}

impl Backend {
    fn from_args(args: &Args) -> Result<Self, String> {
        match args.required("backend")? {
            "file" => Ok(Self::File {
                journal: PathBuf::from(args.required("journal")?),
            }),
            "kafka" => Ok(Self::Kafka {
                bootstrap: args.required("bootstrap")?.to_owned(),
                topic: args.required("topic")?.to_owned(),
            }),
            other => Err(format!("--backend {other:?}: file or kafka")),
        }
    }

    /// The arguments that name this backend to a node process.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Self::File { journal } => vec![
                "--backend".into(),
                "file".into(),
                "--journal".into(),
                journal.display().to_string(),
            ],
            Self::Kafka { bootstrap, topic } => vec![
                "--backend".into(),
                "kafka".into(),
                "--bootstrap".into(),
                bootstrap.clone(),
                "--topic".into(),
                topic.clone(),
            ],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::File { journal } => format!("file journal {}", journal.display()),
            Self::Kafka { bootstrap, topic } => format!("Kafka topic {topic} on {bootstrap}"),
        }
    }

    fn kafka_config(bootstrap: &str, topic: &str) -> KafkaConfig {
        KafkaConfig::new(bootstrap, topic)
            .with_operation_timeout(Duration::from_secs(10))
            .with_delivery_timeout(Duration::from_secs(20))
    }

    /// A new client of the stream.
    pub async fn open(&self) -> Result<Arc<dyn Stream>, String> {
        match self {
            Self::File { journal } => FileStream::open(journal)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Stream>)
                .map_err(|e| format!("opening {}: {e}", journal.display())),
            Self::Kafka { bootstrap, topic } => {
                KafkaStream::connect(Self::kafka_config(bootstrap, topic))
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Stream>)
                    .map_err(|e| format!("connecting to {topic} on {bootstrap}: {e}"))
            }
        }
    }
}

/// The settings every node and the replaying reader share.
pub fn single_leader() -> Settings {
    let mut settings = Settings::default();
    settings.write_mode = WriteMode::SingleLeader;
    settings
}

/// Heartbeat and election timeout: the engine's defaults unless given.
pub fn leadership(args: &Args) -> Result<LeadershipConfig, String> {
    let defaults = LeadershipConfig::default();
    Ok(LeadershipConfig::new(
        args.millis("heartbeat-ms", defaults.heartbeat_interval)?,
        args.millis("election-timeout-ms", defaults.election_timeout)?,
    ))
}

/// Command `token`'s id: fixed, so every retry of it carries the same id.
pub fn command_id(token: u64) -> CommandId {
    CommandId(uuid::Uuid::from_u128(
        0x6661_696c_0000_0000_0000_0000_0000_0000 | u128::from(token),
    ))
}

/// Command `token` adds one to its own key: a key's value is how many times
/// that command was applied.
pub fn command(token: u64) -> TallyCommand {
    TallyCommand::add(key(token), 1)
}

pub fn key(token: u64) -> String {
    format!("t{token}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((mode, rest)) if mode == "node" => match Args::parse(rest) {
            Ok(args) => node::run(&args).await.map(|()| true),
            Err(e) => Err(e),
        },
        _ => match Args::parse(&argv) {
            Ok(args) => failover::run(&args).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("torture_failover: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The token of a command id made by [`command_id`].
pub fn token_of(id: &CommandId) -> u64 {
    (id.0.as_u128() & u128::from(u64::MAX)) as u64
}
