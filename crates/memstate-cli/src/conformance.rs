//! `memstate conformance`: the shared suite against a backend, as a table.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use memstate_conformance::Backend;
use memstate_conformance::provision::{
    EventStoreBackend, FileBackend, KafkaBackend, KinesisBackend, MemoryBackend,
};

use crate::CliError;

/// Backends the suite can run against from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteBackend {
    /// The file journal, in temporary directories.
    File,
    /// The in-process reference stream.
    Memory,
    /// A Kafka cluster (--bootstrap); one fresh topic per case.
    Kafka,
    /// A Kinesis emulator (--endpoint); one fresh stream per case.
    Kinesis,
    /// An EventStoreDB / KurrentDB server (--url); one fresh stream per case.
    Eventstore,
}

/// Runs the conformance suite and prints a table (case, result, time).
///
/// Each case creates its own stream (a unique topic or stream name) on the
/// backend; Kafka topics and Kinesis streams are deleted when the case ends,
/// unless `MEMSTATE_KEEP_STREAMS=1` asks to keep them.
#[derive(Debug, Clone, Args)]
pub struct ConformanceArgs {
    /// Which backend to check.
    #[arg(long, value_enum, default_value = "file")]
    pub backend: SuiteBackend,
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT", env = "MEMSTATE_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Kinesis endpoint (an emulator; static test credentials are used).
    #[arg(long, value_name = "URL", env = "MEMSTATE_KINESIS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// EventStoreDB / KurrentDB connection string.
    #[arg(long, value_name = "URL", env = "MEMSTATE_EVENTSTORE_URL")]
    pub url: Option<String>,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

fn need(value: &Option<String>, what: &str) -> Result<String, CliError> {
    value
        .clone()
        .ok_or_else(|| CliError::Backend(format!("this backend needs {what}")))
}

/// Runs the suite; `Ok(false)` when a case failed.
pub async fn run(args: ConformanceArgs) -> Result<bool, CliError> {
    let backend: Arc<dyn Backend> = match args.backend {
        SuiteBackend::File => Arc::new(FileBackend),
        SuiteBackend::Memory => Arc::new(MemoryBackend),
        SuiteBackend::Kafka => Arc::new(KafkaBackend::new(need(
            &args.bootstrap,
            "--bootstrap HOST:PORT",
        )?)),
        SuiteBackend::Kinesis => {
            Arc::new(KinesisBackend::new(need(&args.endpoint, "--endpoint URL")?))
        }
        SuiteBackend::Eventstore => {
            Arc::new(EventStoreBackend::new(need(&args.url, "--url esdb://...")?))
        }
    };
    let reports =
        memstate_conformance::run_table(Arc::clone(&backend), args.filter.as_deref()).await;
    print!(
        "{}",
        memstate_conformance::format_table(&backend.name(), &backend.location(), &reports)
    );
    Ok(reports.iter().all(|r| r.result.is_ok()))
}
