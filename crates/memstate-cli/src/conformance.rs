//! `memstate conformance`: the shared suite against a backend, as a table.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use memstate_conformance::Backend;
use memstate_conformance::provision::{
    EventStoreBackend, FileBackend, KafkaBackend, KinesisBackend, MemoryBackend,
};

use crate::CliError;
use crate::backend::EndpointArgs;

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
    /// Where the servers answer.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Runs the suite; `Ok(false)` when a case failed.
pub async fn run(args: ConformanceArgs) -> Result<bool, CliError> {
    let backend: Arc<dyn Backend> = match args.backend {
        SuiteBackend::File => Arc::new(FileBackend),
        SuiteBackend::Memory => Arc::new(MemoryBackend),
        SuiteBackend::Kafka => Arc::new(KafkaBackend::new(EndpointArgs::needed(
            &args.endpoints.bootstrap,
            "--bootstrap HOST:PORT",
        )?)),
        SuiteBackend::Kinesis => Arc::new(KinesisBackend::new(EndpointArgs::needed(
            &args.endpoints.endpoint,
            "--endpoint URL",
        )?)),
        SuiteBackend::Eventstore => Arc::new(EventStoreBackend::new(EndpointArgs::needed(
            &args.endpoints.url,
            "--url esdb://...",
        )?)),
    };
    let reports =
        memstate_conformance::run_table(Arc::clone(&backend), args.filter.as_deref()).await;
    print!(
        "{}",
        memstate_conformance::format_table(&backend.name(), &backend.location(), &reports)
    );
    Ok(reports.iter().all(|r| r.result.is_ok()))
}
