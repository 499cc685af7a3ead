//! Choosing and opening a backend from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use memstate_core::Stream;
#[cfg(feature = "backends")]
use memstate_eventstore::{EventStoreConfig, EventStoreStream};
use memstate_file::FileStream;
#[cfg(feature = "backends")]
use memstate_kafka::{KafkaConfig, KafkaStream};
#[cfg(feature = "backends")]
use memstate_kinesis::{KinesisConfig, KinesisStream};

use crate::CliError;

/// The stream databases memstate runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The embedded file journal (the default).
    File,
    /// In-process memory (for trying things; nothing is kept).
    Memory,
    #[cfg(feature = "backends")]
    /// Apache Kafka (needs --bootstrap or MEMSTATE_KAFKA_BOOTSTRAP).
    Kafka,
    #[cfg(feature = "backends")]
    /// AWS Kinesis or an emulator (--endpoint or MEMSTATE_KINESIS_ENDPOINT for an emulator; AWS otherwise).
    Kinesis,
    #[cfg(feature = "backends")]
    /// EventStoreDB / KurrentDB (needs --url or MEMSTATE_EVENTSTORE_URL).
    Eventstore,
}

/// Where each networked backend answers: the options every command that
/// reaches a server shares (`demo`, `conformance`, `bench`), declared once.
#[derive(Debug, Clone, Default, Args)]
pub struct EndpointArgs {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT", env = "MEMSTATE_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Kinesis endpoint override (an emulator); static test credentials are then used.
    #[arg(long, value_name = "URL", env = "MEMSTATE_KINESIS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// EventStoreDB / KurrentDB connection string (esdb:// or kurrentdb://).
    #[arg(long, value_name = "URL", env = "MEMSTATE_EVENTSTORE_URL")]
    pub url: Option<String>,
}

#[cfg_attr(not(feature = "backends"), allow(dead_code))]
impl EndpointArgs {
    /// The value of an option, when given and not blank.
    pub fn given(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value of an option the chosen backend needs.
    ///
    /// # Errors
    ///
    /// [`CliError::Backend`] naming the option (`what`) when it is missing.
    pub fn needed(value: &Option<String>, what: &str) -> Result<String, CliError> {
        Self::given(value)
            .map(str::to_owned)
            .ok_or_else(|| CliError::Backend(format!("this backend needs {what}")))
    }
}

/// Where the stream lives.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Which backend to run on.
    #[arg(long, value_enum, default_value = "file")]
    pub backend: BackendKind,
    /// File journal directory (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where the servers answer.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Topic / stream name (default: a fresh unique name, created for the run).
    #[arg(long, value_name = "NAME")]
    pub stream_name: Option<String>,
    /// What each backend is required to keep.
    #[command(flatten)]
    pub keeping: KeepingArgs,
}

/// What each backend is required to keep, checked when a stream is opened:
/// history (retention, trimming metadata) and durability.
#[derive(Debug, Clone, Args)]
#[cfg_attr(not(feature = "backends"), allow(dead_code))]
pub struct KeepingArgs {
    /// Kinesis: refuse a stream that keeps records for fewer hours than this
    /// (Kinesis deletes older records; default 8760 = 365 days, the maximum).
    #[arg(long, value_name = "HOURS", default_value_t = 8760)]
    pub kinesis_min_retention_hours: u64,
    /// Kinesis: open a stream whose retention is shorter than
    /// --kinesis-min-retention-hours anyway, with a warning. Every node must
    /// then snapshot within the retention (--snapshot-dir for `serve`).
    #[arg(long)]
    pub kinesis_accept_short_retention: bool,
    /// Kinesis: the retention given to a stream this command creates, in
    /// hours (24 to 8760; retention beyond 24 h is billed by AWS).
    #[arg(long, value_name = "HOURS", default_value_t = 8760)]
    pub kinesis_retention_on_create_hours: u64,
    /// Kafka: refuse a topic on which an acknowledged record would not
    /// survive the loss of one broker (replication factor 1,
    /// min.insync.replicas below 2, unclean leader election).
    #[arg(long)]
    pub kafka_strict_durability: bool,
    /// Kafka: the replication factor of a topic this command creates (-1:
    /// the broker's default.replication.factor).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub kafka_replication_factor: i32,
    /// EventStoreDB / KurrentDB: open a stream whose metadata lets the server
    /// delete events ($maxAge, $maxCount, $tb), or cannot be read, anyway.
    /// Every node must then keep snapshots newer than what is deleted.
    #[arg(long)]
    pub eventstore_accept_trimming_metadata: bool,
}

#[cfg(feature = "backends")]
impl KeepingArgs {
    fn hours(hours: u64) -> std::time::Duration {
        std::time::Duration::from_secs(hours.saturating_mul(3600))
    }

    /// `config` with the Kafka settings of these options.
    pub fn kafka(&self, config: KafkaConfig) -> KafkaConfig {
        config.with_strict_durability(self.kafka_strict_durability)
    }

    /// `config` with the Kinesis settings of these options.
    pub fn kinesis(&self, config: KinesisConfig) -> KinesisConfig {
        config
            .with_min_retention(Self::hours(self.kinesis_min_retention_hours))
            .with_short_retention_accepted(self.kinesis_accept_short_retention)
            .with_retention_on_create(Self::hours(self.kinesis_retention_on_create_hours))
    }

    /// `config` with the EventStoreDB settings of these options.
    pub fn eventstore(&self, config: EventStoreConfig) -> EventStoreConfig {
        config.with_accept_trimming_metadata(self.eventstore_accept_trimming_metadata)
    }
}

/// An opened backend: a way to open clients of one stream.
pub struct Opened {
    /// What and where, for printing.
    pub description: String,
    kind: OpenedKind,
    _temp: Option<tempfile::TempDir>,
}

enum OpenedKind {
    File(PathBuf),
    Memory(memstate_core::MemoryStream),
    #[cfg(feature = "backends")]
    Kafka(KafkaConfig),
    #[cfg(feature = "backends")]
    Kinesis(KinesisConfig),
    #[cfg(feature = "backends")]
    EventStore(EventStoreConfig),
}

#[cfg(feature = "backends")]
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl Opened {
    /// The journal directory, for the file backend.
    pub fn journal_dir(&self) -> Option<&std::path::Path> {
        match &self.kind {
            OpenedKind::File(dir) => Some(dir),
            _ => None,
        }
    }

    /// A new client of the stream, as a separate node would open it.
    pub async fn client(&self) -> Result<Arc<dyn Stream>, CliError> {
        #[cfg(feature = "backends")]
        let failed = |what: &str, e: memstate_core::StreamError| {
            CliError::Backend(format!("cannot open {what}: {e}"))
        };
        Ok(match &self.kind {
            OpenedKind::File(dir) => Arc::new(FileStream::open(dir).await.map_err(|e| {
                CliError::Backend(format!("cannot open the journal at {}: {e}", dir.display()))
            })?),
            OpenedKind::Memory(m) => Arc::new(m.clone()),
            #[cfg(feature = "backends")]
            OpenedKind::Kafka(c) => Arc::new(
                KafkaStream::connect(c.clone())
                    .await
                    .map_err(|e| failed("the Kafka topic", e))?,
            ),
            #[cfg(feature = "backends")]
            OpenedKind::Kinesis(c) => Arc::new(
                KinesisStream::connect(c.clone())
                    .await
                    .map_err(|e| failed("the Kinesis stream", e))?,
            ),
            #[cfg(feature = "backends")]
            OpenedKind::EventStore(c) => Arc::new(
                EventStoreStream::connect(c.clone())
                    .await
                    .map_err(|e| failed("the EventStoreDB stream", e))?,
            ),
        })
    }
}

impl BackendArgs {
    /// Opens (creating where needed) the stream these arguments name.
    pub async fn open(&self) -> Result<Opened, CliError> {
        match self.backend {
            BackendKind::File => {
                let (dir, temp) = match &self.dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let t = tempfile::Builder::new()
                            .prefix("memstate-demo-")
                            .tempdir()
                            .map_err(|e| {
                                CliError::Backend(format!(
                                    "cannot create a temporary directory: {e}"
                                ))
                            })?;
                        (t.path().to_path_buf(), Some(t))
                    }
                };
                Ok(Opened {
                    description: format!("file journal {}", dir.display()),
                    kind: OpenedKind::File(dir),
                    _temp: temp,
                })
            }
            BackendKind::Memory => Ok(Opened {
                description: "in-process memory stream".into(),
                kind: OpenedKind::Memory(memstate_core::MemoryStream::new()),
                _temp: None,
            }),
            #[cfg(feature = "backends")]
            BackendKind::Kafka => {
                let bootstrap = EndpointArgs::needed(
                    &self.endpoints.bootstrap,
                    "--bootstrap HOST:PORT (or MEMSTATE_KAFKA_BOOTSTRAP)",
                )?;
                let topic = self
                    .stream_name
                    .clone()
                    .unwrap_or_else(|| unique("memstate-demo"));
                let config = self
                    .keeping
                    .kafka(KafkaConfig::new(bootstrap.clone(), topic.clone()));
                let replication = self.keeping.kafka_replication_factor;
                KafkaStream::create_topic(&config, replication)
                    .await
                    .map_err(|e| {
                        CliError::Backend(format!("cannot create Kafka topic {topic:?}: {e}"))
                    })?;
                Ok(Opened {
                    description: format!("Kafka topic {topic} at {bootstrap}"),
                    kind: OpenedKind::Kafka(config),
                    _temp: None,
                })
            }
            #[cfg(feature = "backends")]
            BackendKind::Kinesis => {
                let name = self
                    .stream_name
                    .clone()
                    .unwrap_or_else(|| unique("memstate-demo"));
                let config =
                    self.keeping
                        .kinesis(match EndpointArgs::given(&self.endpoints.endpoint) {
                            Some(endpoint) => KinesisConfig::emulator(endpoint, name.clone()),
                            None => KinesisConfig::new(name.clone()).with_create_if_missing(true),
                        });
                let where_ = config.endpoint_url.clone().unwrap_or_else(|| "AWS".into());
                // Create it once, so the nodes' clients find it.
                KinesisStream::connect(config.clone()).await.map_err(|e| {
                    CliError::Backend(format!("cannot open Kinesis stream {name:?}: {e}"))
                })?;
                Ok(Opened {
                    description: format!("Kinesis stream {name} at {where_}"),
                    kind: OpenedKind::Kinesis(config.with_create_if_missing(false)),
                    _temp: None,
                })
            }
            #[cfg(feature = "backends")]
            BackendKind::Eventstore => {
                let url = EndpointArgs::needed(
                    &self.endpoints.url,
                    "--url esdb://... (or MEMSTATE_EVENTSTORE_URL)",
                )?;
                let name = self
                    .stream_name
                    .clone()
                    .unwrap_or_else(|| unique("memstate-demo"));
                Ok(Opened {
                    description: format!("EventStoreDB stream {name}"),
                    kind: OpenedKind::EventStore(
                        self.keeping.eventstore(EventStoreConfig::new(url, name)),
                    ),
                    _temp: None,
                })
            }
        }
    }
}

#[cfg(test)]
#[cfg(feature = "backends")]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        backend: BackendArgs,
    }

    fn keeping(args: &[&str]) -> KeepingArgs {
        let argv = std::iter::once("memstate").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.backend.keeping,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn by_default_every_backend_keeps_its_strictest_history_checks() {
        let k = keeping(&[]);
        let kinesis = k.kinesis(KinesisConfig::new("s"));
        assert_eq!(kinesis.min_retention, KeepingArgs::hours(8760));
        assert!(!kinesis.accept_short_retention);
        assert_eq!(kinesis.retention_on_create, KeepingArgs::hours(8760));
        assert!(
            !k.eventstore(EventStoreConfig::new("esdb://h", "s"))
                .accept_trimming_metadata
        );
        // Durability is a warning unless asked for: a one-broker topic is fine for a demo.
        assert!(!k.kafka(KafkaConfig::new("h:9092", "t")).strict_durability);
        assert_eq!(k.kafka_replication_factor, 1);
    }

    #[test]
    fn the_options_reach_each_adapters_configuration() {
        let k = keeping(&[
            "--kinesis-min-retention-hours",
            "168",
            "--kinesis-accept-short-retention",
            "--kinesis-retention-on-create-hours",
            "48",
            "--kafka-strict-durability",
            "--kafka-replication-factor",
            "-1",
            "--eventstore-accept-trimming-metadata",
        ]);
        let kinesis = k.kinesis(KinesisConfig::new("s"));
        assert_eq!(kinesis.min_retention, KeepingArgs::hours(168));
        assert!(kinesis.accept_short_retention);
        assert_eq!(kinesis.retention_on_create, KeepingArgs::hours(48));
        assert!(k.kafka(KafkaConfig::new("h:9092", "t")).strict_durability);
        assert_eq!(k.kafka_replication_factor, -1);
        assert!(
            k.eventstore(EventStoreConfig::new("esdb://h", "s"))
                .accept_trimming_metadata
        );
    }
}
