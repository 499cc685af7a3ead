//! `memstate demo`: several nodes share one stream, write concurrently, and
//! converge on the same state.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use memstate_core::{
    Codec, Consistency, Engine, EngineBuilder, EventError, EventWindow, EventsFrom, ExecuteError,
    FileSnapshotStore, SnapshotPolicy,
};
use tokio::task::JoinHandle;

use crate::CliError;
use crate::backend::BackendArgs;
use crate::bank::{Bank, BankCommand, BankError, BankEvent};
use crate::stats::{Latency, ms};

/// Runs a bank on several nodes sharing one stream.
///
/// Every node opens its own client of the stream (on the file journal: its
/// own file handles and lock, as a separate process would), opens the
/// accounts, then all nodes drive random transfers at once. At the end each
/// node's state hash is printed: they must all be equal, and the money total
/// must be what was deposited.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Number of nodes (engines) sharing the stream.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Number of accounts.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub accounts: u32,
    /// Initial balance of each account.
    #[arg(long, default_value_t = 10_000)]
    pub initial: u64,
    /// Total number of transfers, spread over the nodes.
    #[arg(long, default_value_t = 30_000)]
    pub transfers: u64,
    /// Transfers in flight at once on each node (callers waiting on execute).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Largest transfer amount (amounts are uniform in 1..=max).
    #[arg(long, default_value_t = 500)]
    pub max_amount: u64,
    /// Seed of the transfer generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Each node snapshots its state every this many envelopes (the demo ends
    /// by restarting a node from its snapshot and from the whole log).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Transfers of at least this amount are "large": the last node
    /// subscribes to the events of those written by the other nodes and
    /// prints them (default: the top 2% of --max-amount).
    #[arg(long)]
    pub large: Option<u64>,
    /// The command codec of the stream the demo creates (json or msgpack);
    /// on an existing stream (--dir, --stream-name) it must be the stream's,
    /// or the nodes refuse it. The final state is the same either way.
    #[arg(long, default_value = "json", value_name = "CODEC")]
    pub codec: Codec,
    /// Print no progress bar.
    #[arg(long)]
    pub quiet: bool,
}

struct Lane {
    latencies: Vec<Duration>,
    refused: u64,
    /// Large transfers this lane wrote that succeeded.
    large: u64,
}

/// Large transfers one node learned of through its event subscription.
struct Watched {
    node: String,
    seen: u64,
}

/// Subscribes `watcher` to large transfers written by the other nodes; prints
/// the first few as they arrive and counts all of them until the engine stops.
fn watch_large_transfers(
    watcher: &Engine<Bank>,
    large: u64,
) -> JoinHandle<Result<Watched, CliError>> {
    let node = watcher.stats().node_id.to_string();
    let me = node.clone();
    let mut events = watcher.events_filtered(EventsFrom::Now, move |e: &BankEvent| {
        let BankEvent::Transferred { amount, by, .. } = e;
        *amount >= large && *by != me
    });
    tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            match events.next().await {
                Ok(event) => {
                    seen += 1;
                    let BankEvent::Transferred {
                        from,
                        to,
                        amount,
                        by,
                    } = event.event;
                    if seen <= 5 {
                        println!(
                            "  {node} event at index {}: {by} moved {amount} from {from} to {to}",
                            event.index
                        );
                    }
                }
                Err(EventError::Closed) => return Ok(Watched { node, seen }),
                Err(e) => {
                    return Err(CliError::Demo(format!(
                        "the event subscription failed: {e}"
                    )));
                }
            }
        }
    })
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the demo; `Ok(false)` when the nodes disagree or money was not conserved.
pub async fn run(args: DemoArgs) -> Result<bool, CliError> {
    let opened = args.backend.open().await?;
    println!(
        "memstate demo: {} nodes on {}, command codec {}",
        args.nodes, opened.description, args.codec
    );
    let mut nodes: Vec<Engine<Bank>> = Vec::new();
    let snapshot_root = tempfile::Builder::new()
        .prefix("memstate-demo-snapshots-")
        .tempdir()
        .map_err(CliError::Io)?;
    let snapshot_dir = |i: u16| snapshot_root.path().join(format!("node-{i}"));
    let policy = SnapshotPolicy::every_envelopes(args.snapshot_every.max(1));
    for i in 0..args.nodes {
        let engine = node(&opened, args.codec, i, snapshot_dir(i), policy.clone()).await?;
        nodes.push(engine);
    }

    println!(
        "opening {} accounts with {} each...",
        args.accounts, args.initial
    );
    let mut opens = Vec::new();
    for a in 0..args.accounts {
        let node = nodes[a as usize % nodes.len()].clone();
        let initial = args.initial;
        opens.push(tokio::spawn(async move {
            node.execute(BankCommand::Open {
                account: account(a),
                initial,
            })
            .await
        }));
    }
    for o in opens {
        match o
            .await
            .map_err(|e| CliError::Demo(format!("an open task failed: {e}")))?
        {
            Ok(_)
            | Err(ExecuteError::Rejected {
                error: BankError::AccountExists(_),
                ..
            }) => {}
            Err(e) => return Err(CliError::Demo(format!("opening accounts failed: {e}"))),
        }
    }

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.transfers)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} transfers [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .map_err(|e| CliError::Demo(e.to_string()))?
        .progress_chars("=> "),
    );
    let large = args
        .large
        .unwrap_or_else(|| args.max_amount.max(1) - args.max_amount.max(1) / 50);
    let watcher = nodes.last().filter(|_| nodes.len() > 1);
    let watch = watcher.map(|w| {
        println!(
            "{} prints large transfers (>= {large}) written by the other nodes, from its event subscription:",
            w.stats().node_id
        );
        watch_large_transfers(w, large)
    });
    let watcher_lane = u64::from(args.nodes) - 1;
    let lanes_total = u64::from(args.nodes) * u64::from(args.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..lanes_total {
        let node = nodes[(lane % u64::from(args.nodes)) as usize].clone();
        let watched = watch.is_some() && lane % u64::from(args.nodes) != watcher_lane;
        let count = args.transfers / lanes_total + u64::from(lane < args.transfers % lanes_total);
        let bar = bar.clone();
        let (accounts, max_amount) = (args.accounts, args.max_amount.max(1));
        let mut rng = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (lane + 1);
        tasks.push(tokio::spawn(async move {
            let mut out = Lane {
                latencies: Vec::with_capacity(count as usize),
                refused: 0,
                large: 0,
            };
            for _ in 0..count {
                let from = xorshift(&mut rng) % u64::from(accounts);
                let to =
                    (from + 1 + xorshift(&mut rng) % u64::from(accounts - 1)) % u64::from(accounts);
                let amount = 1 + xorshift(&mut rng) % max_amount;
                let cmd = BankCommand::Transfer {
                    from: account(from as u32),
                    to: account(to as u32),
                    amount,
                };
                let t = Instant::now();
                match node.execute(cmd).await {
                    Ok(_) if watched && amount >= large => out.large += 1,
                    Ok(_) => {}
                    Err(ExecuteError::Rejected { .. }) => out.refused += 1,
                    Err(e) => return Err(CliError::Demo(format!("a transfer failed: {e}"))),
                }
                out.latencies.push(t.elapsed());
                bar.inc(1);
            }
            Ok(out)
        }));
    }
    let mut latencies = Vec::with_capacity(args.transfers as usize);
    let mut refused = 0;
    let mut large_written = 0;
    for t in tasks {
        let lane = t
            .await
            .map_err(|e| CliError::Demo(format!("a transfer task failed: {e}")))??;
        latencies.extend(lane.latencies);
        refused += lane.refused;
        large_written += lane.large;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let done = latencies.len() as u64;
    println!(
        "{done} transfers in {:.2} s: {} applied, {refused} refused (insufficient funds)",
        elapsed.as_secs_f64(),
        done - refused
    );
    if let Some(l) = Latency::of(&mut latencies) {
        println!(
            "throughput {:.0} commands/s; execute latency p50 {}, p99 {}, max {}",
            done as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }

    let expected_total = u128::from(args.accounts) * u128::from(args.initial);
    let mut hashes = Vec::new();
    let mut ok = true;
    for node in &nodes {
        let (hash, total, len) = node
            .query(Consistency::Linearizable, |b| {
                (b.state_hash(), b.total(), b.len())
            })
            .await?;
        let stats = node.stats();
        println!(
            "{:<8} applied index {:>8}  state hash {hash:016x}  accounts {len}  total {total}",
            stats.node_id.to_string(),
            stats.applied_index
        );
        ok &= total == expected_total;
        hashes.push(hash);
    }
    let agree = hashes.windows(2).all(|w| w[0] == w[1]);
    println!(
        "all nodes agree: {}; money conserved: {} (expected {expected_total})",
        if agree { "yes" } else { "NO" },
        if ok { "yes" } else { "NO" }
    );
    let applied = nodes.first().map(|n| n.stats().applied_index).unwrap_or(0);
    let hash_before = hashes.first().copied();
    if let Some(first) = nodes.first() {
        let snaps = first.stats().snapshots;
        if let (Some(pause), Some(last)) = (snaps.last_pause, snaps.last_taken) {
            println!(
                "node-0 took {} snapshot(s); the last, at index {} ({} bytes), paused applying for {} while the state was copied",
                snaps.taken,
                last.applied_index,
                last.bytes,
                ms(pause)
            );
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
    // A stopped engine closes its subscriptions once everything is handed out.
    let mut events_complete = true;
    if let Some(watch) = watch {
        let watched = watch
            .await
            .map_err(|e| CliError::Demo(format!("the event task failed: {e}")))??;
        events_complete = watched.seen == large_written;
        println!(
            "{} received {} large-transfer events; the other nodes wrote {large_written} large transfers that succeeded: {}",
            watched.node,
            watched.seen,
            if events_complete {
                "all delivered"
            } else {
                "MISMATCH"
            }
        );
    }

    // Restart node-0 twice: from its newest snapshot, then from nothing.
    let started = Instant::now();
    let restored = node(&opened, args.codec, 0, snapshot_dir(0), policy.clone()).await?;
    let from_snapshot = started.elapsed();
    let stats = restored.stats();
    let restored_hash = restored.query(Consistency::Local, Bank::state_hash).await?;
    restored.shutdown().await;
    let started = Instant::now();
    let empty_dir = snapshot_root.path().join("none");
    let replayed = node(
        &opened,
        args.codec,
        0,
        empty_dir,
        SnapshotPolicy::on_demand(),
    )
    .await?;
    let full = started.elapsed();
    let replayed_hash = replayed.query(Consistency::Local, Bank::state_hash).await?;
    let replayed_commands = replayed.stats().commands_applied;
    replayed.shutdown().await;
    match &stats.snapshots.restored_from {
        Some(meta) => println!(
            "restart of node-0 from its snapshot at index {} ({} bytes): {}, replayed {} commands after it",
            meta.applied_index,
            meta.bytes,
            ms(from_snapshot),
            stats.commands_applied
        ),
        None => println!(
            "restart of node-0: no snapshot was taken (run more than --snapshot-every envelopes)"
        ),
    }
    println!(
        "restart of node-0 from the whole log: {}, replayed {replayed_commands} commands",
        ms(full)
    );
    let same = Some(restored_hash) == hash_before && Some(replayed_hash) == hash_before;
    println!(
        "state hash after both restarts equals the cluster's: {}",
        if same { "yes" } else { "NO" }
    );
    if let Some(report) = opened
        .journal_dir()
        .and_then(|dir| memstate_file::inspect::read_all(dir).ok())
    {
        let records = report.records.len().max(1);
        println!(
            "journal: {applied} envelopes in {records} records ({:.1} per frame); appends queued together share one fsync",
            applied as f64 / records as f64
        );
    }
    if args.backend.dir.is_none() && opened.journal_dir().is_some() {
        println!("(the journal was in a temporary directory; pass --dir DIR to keep it)");
    }
    Ok(agree && ok && same && events_complete)
}

async fn node(
    opened: &crate::backend::Opened,
    codec: Codec,
    i: u16,
    snapshots: std::path::PathBuf,
    policy: SnapshotPolicy,
) -> Result<Engine<Bank>, CliError> {
    let stream = opened.client().await?;
    // On a stream that deletes records by age (Kinesis), every node must
    // snapshot within the retention window or it cannot start again.
    let retention = stream.retention();
    let policy = policy.covering_retention(retention);
    if let (0, Some(retention), Some(interval)) = (i, retention, policy.interval) {
        println!(
            "the stream keeps records {} h: each node also snapshots at least every {} h",
            retention.as_secs() / 3600,
            interval.as_secs() / 3600
        );
    }
    Ok(EngineBuilder::with_shared_stream(Bank::default(), stream)
        .node_id(format!("node-{i}"))
        .codec(codec)
        .snapshots(FileSnapshotStore::new(snapshots), policy)
        // Room for the watching node's subscriber to fall well behind a
        // fast run without losing events.
        .event_window(EventWindow {
            max_events: 100_000,
            max_bytes: 64 * 1024 * 1024,
        })
        .start()
        .await?)
}

fn account(i: u32) -> String {
    format!("acct-{i:05}")
}
