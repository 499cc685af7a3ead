//! The `memstate` command: demo, inspect, conformance, bench, serve.

mod backend;
mod bank;
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "conformance")]
mod conformance;
mod demo;
mod history;
mod inspect;
mod serve;
mod stats;
mod truncate;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The binary's allocator. Commands, frames and envelopes are allocated on
/// one thread and freed on another (caller, writer, journal, apply loop);
/// glibc's allocator spent about a sixth of the CPU of a 256-client file
/// journal run on that (docs/benchmarks.md, "Profiles"). A library user
/// chooses their own; this is the `memstate` command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// memstate: an in-memory state machine replicated through a stream.
#[derive(Debug, Parser)]
#[command(name = "memstate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Several nodes share one stream, write concurrently, converge.
    Demo(demo::DemoArgs),
    /// Print a file journal's records as decoded envelopes (JSON lines).
    Inspect(inspect::InspectArgs),
    /// Print a stream's commands as JSON lines (index, time, node, id, command).
    History(history::HistoryArgs),
    /// Run the shared conformance suite against a backend.
    #[cfg(feature = "conformance")]
    Conformance(conformance::ConformanceArgs),
    /// Measure memstate against the raw backends and SQLite (results in target/bench/).
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Serve the built-in JSON key-value model over HTTP (API, events, metrics, console).
    Serve(serve::ServeArgs),
    /// One node process of `memstate bench`'s cluster tier (run by the bench).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchNode(bench::cluster::node::NodeArgs),
    /// One case of `memstate bench`'s snapshot tier (run by the bench).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchSnapshotCase(bench::snapshot_case::CaseArgs),
    /// Drop file-journal segments before every node's oldest snapshot (opt-in).
    Truncate(truncate::TruncateArgs),
    /// Model versions of a stream: status, activate a version, forget a node.
    Upgrade(upgrade::UpgradeArgs),
}

/// Errors the command reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] memstate_core::Error),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Demo(String),
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memstate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Inspect(args) => inspect::run(&args).await,
            Command::History(args) => history::run(args).await.map(|_| true),
            #[cfg(feature = "conformance")]
            Command::Conformance(args) => conformance::run(args).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => bench::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            #[cfg(feature = "bench")]
            Command::BenchNode(args) => bench::cluster::node::run(args).await,
            #[cfg(feature = "bench")]
            Command::BenchSnapshotCase(args) => bench::snapshot_case::run(args).await,
            Command::Truncate(args) => truncate::run(args).await,
            Command::Upgrade(args) => upgrade::run(args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("memstate: {e}");
            ExitCode::FAILURE
        }
    }
}
