//! `memstate conformance`: the shared suite against a backend, as a table.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use memstate_conformance::{Backend, Outcome, provision};

use crate::CliError;

/// Backends the suite can run against from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteBackend {
    /// The file journal, in temporary directories.
    File,
    /// The in-process reference stream.
    Memory,
}

/// Runs the conformance suite and prints a table (case, result, time).
#[derive(Debug, Clone, Args)]
pub struct ConformanceArgs {
    /// Which backend to check.
    #[arg(long, value_enum, default_value = "file")]
    pub backend: SuiteBackend,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Runs the suite; `Ok(false)` when a case failed.
pub async fn run(args: ConformanceArgs) -> Result<bool, CliError> {
    let backend: Arc<dyn Backend> = match args.backend {
        SuiteBackend::File => Arc::new(provision::FileBackend),
        SuiteBackend::Memory => Arc::new(provision::MemoryBackend),
    };
    let reports =
        memstate_conformance::run_table(Arc::clone(&backend), args.filter.as_deref()).await;
    print!(
        "{}",
        memstate_conformance::format_table(&backend.name(), &backend.location(), &reports)
    );
    Ok(reports
        .iter()
        .all(|r| matches!(r.result, Ok(Outcome::Passed | Outcome::Ignored(_)))))
}
