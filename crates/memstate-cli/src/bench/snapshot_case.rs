//! One case of the snapshot tier, in a process of its own (`memstate
//! bench-snapshot-case`, run by `memstate bench`): a model of `--accounts`
//! accounts built directly, an engine started on it over a file journal of
//! `--commands` deposits (so its de-duplication window holds their ids), one
//! snapshot through `Engine::snapshot`, then a restart from that snapshot.
//! With `--writers N`, N tasks keep executing deposits through the engine
//! while the snapshot is taken (`snapshot_writes.rs`): a shared model then
//! grows by the nodes those writes copy, and the writers wait out the pause.
//! A fresh process per case keeps each case's resident memory and high-water
//! mark its own: memory freed by an earlier case would otherwise be reused
//! without showing.
//!
//! The model is a ledger over one of two map designs: `std` (a
//! `std::collections::BTreeMap`, what the demo's bank used) and `imbl` (an
//! `imbl::OrdMap`, a persistent B-tree whose clone shares every node).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::{
    Body, CommandContext, Consistency, Control, EngineBuilder, FileSnapshotStore, Model, Settings,
    SnapshotPolicy, Stream,
};
use memstate_file::FileStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::memory::rss_bytes;
use super::snapshot_writes::Writers;
use super::workload::{INITIAL_BALANCE, account, envelope_for, mix, now_ms};
use crate::CliError;
use crate::bank::BankCommand;

/// Envelopes per record of the journal (a busy node's group commit).
const PER_RECORD: usize = 64;
/// Envelopes encoded per append while generating.
const CHUNK: u64 = 64 * 256;
/// Deposits each writer completes before the snapshot begins.
const WARM_UP_PER_WRITER: u64 = 20;

/// How the model holds its accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// `std::collections::BTreeMap`: a clone copies every entry.
    Std,
    /// `imbl::OrdMap`: a clone shares every node; a write after it copies
    /// only the path it touches.
    Imbl,
}

impl Design {
    /// Its name in the table and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Std => "std",
            Self::Imbl => "imbl",
        }
    }
}

/// `memstate bench-snapshot-case`: run by `memstate bench`, not by hand.
#[derive(Debug, Clone, Args)]
pub struct CaseArgs {
    /// The model's map.
    #[arg(long, value_enum)]
    pub design: Design,
    /// Accounts in the model.
    #[arg(long)]
    pub accounts: u64,
    /// Deposits in the journal replayed before the snapshot.
    #[arg(long)]
    pub commands: u64,
    /// A fresh directory for the journal and the snapshot.
    #[arg(long)]
    pub dir: PathBuf,
    /// Tasks executing deposits through the engine while the snapshot is
    /// taken (0: the snapshot is taken while nothing is written).
    #[arg(long, default_value_t = 0)]
    pub writers: u32,
}

/// What one case measured. Memory in MiB of resident memory (`VmRSS`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CaseFigures {
    pub design: Design,
    pub accounts: u64,
    /// Tasks writing while the snapshot was taken.
    pub writers: u32,
    /// Deposits the writers completed while the snapshot was taken.
    pub writes_during: u64,
    /// The longest a writer's deposit in flight during the snapshot waited,
    /// ms (0 without writers).
    pub writer_max_wait_ms: f64,
    /// Command ids in the de-duplication window when the snapshot was taken.
    pub window_ids: usize,
    /// Seconds to build the model directly (not through commands).
    pub build_seconds: f64,
    /// Resident growth while building the model: the model alone.
    pub model_mib: f64,
    /// Resident memory of the whole process before the snapshot (model,
    /// window, engine, allocator slack).
    pub rss_before_mib: f64,
    /// How long applying paused (`Stats::snapshots.last_pause`), ms.
    pub pause_ms: f64,
    /// The process's resident high-water mark during the snapshot (`VmHWM`
    /// after resetting it through `/proc/self/clear_refs`); `None` where it
    /// cannot be reset.
    pub peak_mib: Option<f64>,
    /// `peak_mib / rss_before_mib`.
    pub peak_ratio: Option<f64>,
    /// The snapshot file's body, bytes.
    pub snapshot_bytes: u64,
    /// `Engine::snapshot` until stored (copy, serialization, write, fsync), s.
    pub write_seconds: f64,
    /// An engine started from the snapshot, until it serves, s.
    pub restore_seconds: f64,
}

/// The ledger: accounts and balances over a map design.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(bound = "A: Accounts")]
pub(crate) struct Ledger<A> {
    accounts: A,
}

/// The few map operations the ledger needs.
pub(crate) trait Accounts:
    Clone + Default + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn put(&mut self, account: String, balance: u64);
    fn balance(&self, account: &str) -> Option<u64>;
    fn count(&self) -> usize;
}

/// Both designs answer the ledger's operations by the same method names.
macro_rules! accounts {
    ($($map:ty),*) => {$(
        impl Accounts for $map {
            fn put(&mut self, account: String, balance: u64) {
                self.insert(account, balance);
            }
            fn balance(&self, account: &str) -> Option<u64> {
                self.get(account).copied()
            }
            fn count(&self) -> usize {
                self.len()
            }
        }
    )*};
}

accounts!(BTreeMap<String, u64>, imbl::OrdMap<String, u64>);

impl<A: Accounts> Model for Ledger<A> {
    type Command = BankCommand;
    type Output = u64;
    type Error = String;

    fn apply(&mut self, command: BankCommand, _: &mut CommandContext<'_>) -> Result<u64, String> {
        match command {
            BankCommand::Open { account, initial } => {
                self.accounts.put(account, initial);
                Ok(initial)
            }
            BankCommand::Deposit { account, amount } => {
                let balance = self
                    .accounts
                    .balance(&account)
                    .ok_or_else(|| format!("no account {account}"))?
                    .saturating_add(amount);
                self.accounts.put(account, balance);
                Ok(balance)
            }
            other => Err(format!("the ledger only opens and deposits: {other:?}")),
        }
    }
}

/// Runs the case and prints its figures as one JSON line on stdout.
///
/// # Errors
///
/// When a step fails; the parent reports the message.
pub async fn run(args: CaseArgs) -> Result<bool, CliError> {
    let figures = match args.design {
        Design::Std => case::<BTreeMap<String, u64>>(&args).await,
        Design::Imbl => case::<imbl::OrdMap<String, u64>>(&args).await,
    }
    .map_err(CliError::Demo)?;
    let line = serde_json::to_string(&figures).map_err(|e| CliError::Demo(e.to_string()))?;
    println!("{line}");
    Ok(true)
}

const MIB: f64 = 1024.0 * 1024.0;

fn rss() -> Result<u64, String> {
    rss_bytes().ok_or_else(|| "cannot read VmRSS from /proc/self/status".to_owned())
}

/// Resets the resident high-water mark to the current resident size
/// (Linux: `5` written to `/proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` of this process, bytes.
fn peak() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

fn start_error(e: memstate_core::Error) -> String {
    format!("starting the engine: {e}")
}

async fn case<A: Accounts>(args: &CaseArgs) -> Result<CaseFigures, String> {
    let journal = args.dir.join("journal");
    let snapshots = args.dir.join("snapshots");
    // The journal first: its generation leaves nothing resident that the
    // model figures would count.
    write_journal(&journal, args.accounts, args.commands).await?;

    let base = rss()?;
    let started = Instant::now();
    let mut ledger = Ledger::<A>::default();
    for i in 0..args.accounts {
        ledger.accounts.put(account(i), INITIAL_BALANCE);
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let model_mib = rss()?.saturating_sub(base) as f64 / MIB;

    let engine = start(ledger, &journal, &snapshots).await?;
    let mut writers = (args.writers > 0).then(|| {
        let writers = Writers::start(&engine, args.writers, args.accounts);
        (writers, u64::from(args.writers) * WARM_UP_PER_WRITER)
    });
    if let Some((writers, warm)) = &writers {
        writers.warm_up(*warm).await;
    }
    let before = rss()?;
    let reset = reset_peak();
    let started = Instant::now();
    if let Some((writers, _)) = &mut writers {
        writers.begin_snapshot();
    }
    let meta = engine
        .snapshot()
        .await
        .map_err(|e| format!("taking the snapshot: {e}"))?;
    let write_seconds = started.elapsed().as_secs_f64();
    let peak_bytes = if reset { peak() } else { None };
    let writes = match writers {
        Some((writers, _)) => Some(writers.stop().await?),
        None => None,
    };
    let stats = engine.stats();
    engine.shutdown().await;
    drop(engine);

    let started = Instant::now();
    let restored = start(Ledger::<A>::default(), &journal, &snapshots).await?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let from = restored.stats().snapshots.restored_from;
    let count = restored
        .query(Consistency::Local, |l: &Ledger<A>| l.accounts.count())
        .await
        .map_err(|e| e.to_string())?;
    restored.shutdown().await;
    if from.as_ref().map(|m| m.applied_index) != Some(meta.applied_index)
        || count as u64 != args.accounts
    {
        return Err(format!(
            "the restart did not start from the snapshot at {} with {} accounts: {from:?}, {count} accounts",
            meta.applied_index, args.accounts
        ));
    }
    Ok(CaseFigures {
        design: args.design,
        accounts: args.accounts,
        writers: args.writers,
        writes_during: writes.as_ref().map_or(0, |w| w.during),
        writer_max_wait_ms: writes.map_or(0.0, |w| w.max_wait.as_secs_f64() * 1000.0),
        window_ids: stats.dedup_window_len,
        build_seconds,
        model_mib,
        rss_before_mib: before as f64 / MIB,
        pause_ms: stats
            .snapshots
            .last_pause
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0,
        peak_mib: peak_bytes.map(|p| p as f64 / MIB),
        peak_ratio: peak_bytes.map(|p| p as f64 / before.max(1) as f64),
        snapshot_bytes: meta.bytes,
        write_seconds,
        restore_seconds,
    })
}

async fn start<A: Accounts>(
    ledger: Ledger<A>,
    journal: &std::path::Path,
    snapshots: &std::path::Path,
) -> Result<memstate_core::Engine<Ledger<A>>, String> {
    let stream = FileStream::open(journal)
        .await
        .map_err(|e| format!("opening {}: {e}", journal.display()))?;
    EngineBuilder::new(ledger, stream)
        .node_id("bench-snapshot")
        .snapshots(
            FileSnapshotStore::new(snapshots).keep(1),
            SnapshotPolicy::on_demand(),
        )
        .startup_timeout(Duration::from_secs(600))
        .start()
        .await
        .map_err(start_error)
}

/// A Genesis record, then `commands` deposits spread over the accounts,
/// `PER_RECORD` to a record.
async fn write_journal(dir: &std::path::Path, accounts: u64, commands: u64) -> Result<(), String> {
    let stream = FileStream::open(dir)
        .await
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let deposit = |i: u64| BankCommand::Deposit {
        account: account(mix(i) % accounts.max(1)),
        amount: 1 + i % 100,
    };
    let genesis = memstate_core::Envelope {
        body: Body::Control(Control::Genesis(Settings::default())),
        ..envelope_for(&deposit(0), "bench-snapshot", now_ms())
    };
    let genesis = encode_envelope(&genesis).map_err(|e| e.to_string())?;
    append(
        &stream,
        vec![Bytes::from(encode_frame([genesis.as_slice()]))],
    )
    .await?;
    let ts = now_ms();
    let mut next = 0;
    while next < commands {
        let end = (next + CHUNK).min(commands);
        let encoded = (next..end)
            .map(|i| {
                encode_envelope(&envelope_for(
                    &deposit(i),
                    "bench-snapshot",
                    ts + i / 10_000,
                ))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let frames = encoded
            .chunks(PER_RECORD)
            .map(|group| Bytes::from(encode_frame(group.iter().map(Vec::as_slice))))
            .collect();
        append(&stream, frames).await?;
        next = end;
    }
    stream.close();
    Ok(())
}

async fn append(stream: &FileStream, records: Vec<Bytes>) -> Result<(), String> {
    stream
        .append(records)
        .await
        .map(|_| ())
        .map_err(|e| format!("writing the journal: {e}"))
}
