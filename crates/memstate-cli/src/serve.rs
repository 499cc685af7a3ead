//! `memstate serve`: a node of the built-in JSON key-value model over HTTP.
//! Several `serve` processes on one journal (or one topic or stream) form a
//! cluster: each is a node with its own copy of the model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use memstate_core::{Codec, Engine, EngineBuilder, FileSnapshotStore, SnapshotPolicy};
use memstate_server::kv::{self, KvStore};
use memstate_server::{EventFeed, PrometheusHandle, ServerBuilder, TlsConfig};

use crate::CliError;
use crate::backend::BackendArgs;

/// Serves the built-in JSON key-value model over HTTP.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Address to listen on (loopback unless told otherwise; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// This node's id, unique among the nodes of the stream (default: a random UUID).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Require `Authorization: Bearer <TOKEN>` (health checks and the console page excepted).
    #[arg(
        long,
        env = "MEMSTATE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = memstate_server::DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    pub body_limit: usize,
    /// Keep this node's snapshots here (restart replays only the log after the newest).
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// With --snapshot-dir: snapshot every this many envelopes (and, on a
    /// stream that deletes records by age, at least every quarter of its
    /// retention, even when idle).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub snapshot_every: u64,
    /// How long a command may wait to come back from the stream.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub execute_timeout: u64,
    /// The command codec of a stream this node creates (json or msgpack); on
    /// an existing stream it must be the stream's, or the node refuses it.
    #[arg(long, default_value = "json", value_name = "CODEC")]
    pub codec: Codec,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The server `memstate serve` builds around its engine (before its own
/// options: body limit, token): the built-in model's queries, its events
/// and the Prometheus figures. The bench's HTTP tier serves the same.
pub(crate) fn kv_server(
    engine: &Engine<KvStore>,
    prometheus: PrometheusHandle,
) -> ServerBuilder<KvStore> {
    kv::queries(ServerBuilder::new(engine.clone()))
        .events(EventFeed::from_engine(engine))
        .prometheus(prometheus)
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<bool, CliError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsConfig::from_pem_files(cert, key).map_err(|e| CliError::Backend(e.to_string()))?,
        ),
        _ => None,
    };
    // Before the engine starts: it takes its metric handles when it does.
    let prometheus = memstate_server::install_prometheus().map_err(CliError::Backend)?;
    let opened = args.backend.open().await?;
    let stream = opened.client().await?;
    // A stream that deletes records by age (Kinesis; KurrentDB with an
    // accepted $maxAge): a node restarts only from a snapshot within it.
    let retention = stream.retention();
    let mut builder = EngineBuilder::with_shared_stream(KvStore::default(), stream)
        .execute_timeout(Duration::from_secs(args.execute_timeout))
        .codec(args.codec);
    if let Some(id) = &args.node_id {
        builder = builder.node_id(id.clone());
    }
    match (&args.snapshot_dir, retention) {
        (Some(dir), retention) => {
            builder = builder.snapshots(
                FileSnapshotStore::new(dir),
                SnapshotPolicy::every_envelopes(args.snapshot_every).covering_retention(retention),
            );
        }
        (None, Some(retention)) => eprintln!(
            "memstate serve: warning: {} deletes records older than {} h; without --snapshot-dir \
             this node cannot start again once records it has not snapshotted are deleted",
            opened.description,
            retention.as_secs() / 3600
        ),
        (None, None) => {}
    }
    let engine = builder.start().await?;
    let mut server = kv_server(&engine, prometheus).body_limit(args.body_limit);
    if let Some(token) = &args.token {
        server = server.bearer_token(token.clone());
    }
    let server = server.build();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Backend(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener.local_addr().map_err(CliError::Io)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "memstate serve: node {} on {}, listening on {scheme}://{local}",
        engine.node_id(),
        opened.description
    );
    let served = match tls {
        Some(tls) => server.serve_tls(listener, tls, shutdown_signal()).await,
        None => server.serve(listener, shutdown_signal()).await,
    };
    engine.shutdown().await;
    served.map_err(CliError::Io)?;
    println!("memstate serve: stopped");
    Ok(true)
}
