//! The accounting at the end: every node's state, a reader that replays the
//! stream from its first record, the fate of every copy of every command in
//! the log, and the verdict.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use memstate_conformance::model::{Tally, TallyCommand};
use memstate_core::history::{Fate, History};
use memstate_core::{CommandId, Consistency, EngineBuilder};

use crate::clients::Clients;
use crate::cluster::{Cluster, Copy, lock};
use crate::failover::{Fault, Order};
use crate::{Backend, key, single_leader, token_of};

/// One failover as it happened.
#[derive(Debug)]
pub struct FailoverRecord {
    pub number: u64,
    pub fault: Fault,
    pub order: Order,
    /// The deposed leader and its epoch.
    pub old: String,
    pub epoch: u64,
    pub new: String,
    pub new_epoch: u64,
    /// From the moment the leader stopped writing to the new claim seen.
    pub elected: Duration,
    /// From the same moment to the first command the new leader acknowledged.
    pub unavailable: Duration,
    pub held_records: usize,
    /// The command envelopes held back.
    pub held: HashSet<Copy>,
}

impl fmt::Display for FailoverRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fault = match self.fault {
            Fault::Kill => "SIGKILL",
            Fault::Stop => "SIGSTOP (resumed after the election)",
        };
        let order = match self.order {
            Order::LateCopyFirst => "late copies landed before the retries",
            Order::RetryFirst => "retries applied before the late copies landed",
        };
        write!(
            f,
            "failover {}: {} (leader of epoch {}) {fault}; {} leads epoch {} after {:.2} s; its first acknowledgement after {:.2} s; {} records held back ({} commands), {order}",
            self.number,
            self.old,
            self.epoch,
            self.new,
            self.new_epoch,
            self.elected.as_secs_f64(),
            self.unavailable.as_secs_f64(),
            self.held_records,
            self.held.len()
        )
    }
}

/// Nearest-rank percentile `p` (0–100) of `values`, in seconds.
fn percentile(values: &[Duration], p: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64()
}

fn spread(values: &[Duration]) -> String {
    format!(
        "median {:.2} s, p90 {:.2} s, max {:.2} s (over {})",
        percentile(values, 50),
        percentile(values, 90),
        percentile(values, 100),
        values.len()
    )
}

/// What the log says became of the copies of the commands.
#[derive(Debug, Default)]
struct LogCounts {
    applied_copies: HashMap<CommandId, u32>,
    fenced: u64,
    /// Fenced copies whose id a later copy applied.
    fenced_then_applied: u64,
    /// Copies from an older epoch than the newest applied before them,
    /// dropped as duplicates.
    old_epoch_duplicates: u64,
    /// Late held copies by fate, per failover: (fenced, duplicate, applied).
    late: Vec<(u64, u64, u64)>,
}

async fn read_log(backend: &Backend, records: &[FailoverRecord]) -> Result<LogCounts, String> {
    let stream = backend.open().await?;
    let mut history = History::<TallyCommand>::open(stream)
        .await
        .map_err(|e| format!("reading the history: {e}"))?
        .until_head()
        .await
        .map_err(|e| format!("reading the history: {e}"))?;
    let mut counts = LogCounts {
        late: vec![(0, 0, 0); records.len()],
        ..LogCounts::default()
    };
    let mut fenced_ids = HashSet::new();
    let mut newest_epoch = 0;
    while let Some(entry) = history
        .next()
        .await
        .map_err(|e| format!("reading the history: {e}"))?
    {
        let epoch = entry.epoch.unwrap_or(0);
        let late = records.iter().position(|r| {
            entry.origin.to_string() == r.old
                && epoch == r.epoch
                && r.held.contains(&(entry.command_id, entry.timestamp_ms))
        });
        let slot = late.map(|i| &mut counts.late[i]);
        match entry.fate {
            Fate::Applied => {
                *counts.applied_copies.entry(entry.command_id).or_default() += 1;
                newest_epoch = newest_epoch.max(epoch);
                if fenced_ids.remove(&entry.command_id) {
                    counts.fenced_then_applied += 1;
                }
                if let Some(s) = slot {
                    s.2 += 1;
                }
            }
            Fate::Fenced { .. } => {
                counts.fenced += 1;
                fenced_ids.insert(entry.command_id);
                if let Some(s) = slot {
                    s.0 += 1;
                }
            }
            Fate::Duplicate { .. } => {
                if epoch < newest_epoch {
                    counts.old_epoch_duplicates += 1;
                }
                if let Some(s) = slot {
                    s.1 += 1;
                }
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// A node's `STATE` line: applied, hash, fenced, duplicates.
fn parse_state(line: &str) -> Option<(u64, String, u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["STATE", applied, hash, fenced, dups] => Some((
            applied.parse().ok()?,
            (*hash).to_owned(),
            fenced.parse().ok()?,
            dups.parse().ok()?,
        )),
        _ => None,
    }
}

pub async fn account(
    cluster: &Cluster,
    clients: &Clients,
    backend: &Backend,
    records: &[FailoverRecord],
    load: Duration,
) -> Result<bool, String> {
    let mut hashes = Vec::new();
    for (slot, s) in cluster.slots.iter().enumerate() {
        let line = cluster.state(slot).await?;
        let (applied, hash, fenced, dups) =
            parse_state(&line).ok_or_else(|| format!("{}: {line}", s.name))?;
        hashes.push((s.name.clone(), applied, hash, fenced, dups));
    }
    let replay = EngineBuilder::new(Tally::default(), backend.open().await?)
        .node_id("replay")
        .settings(single_leader())
        .start()
        .await
        .map_err(|e| format!("replaying: {e}"))?;
    let tally = replay
        .query(Consistency::Linearizable, Clone::clone)
        .await
        .map_err(|e| format!("replaying: {e}"))?;
    let stats = replay.stats();
    replay.shutdown().await;
    hashes.push((
        "replay".to_owned(),
        tally.applied,
        format!("{:016x}", tally.hash),
        stats.commands_fenced,
        stats.duplicates_dropped,
    ));
    let log = read_log(backend, records).await?;

    let acked = clients.acked_ids();
    let lost = acked
        .iter()
        .filter(|id| tally.values.get(&key(token_of(id))).is_none_or(|v| *v < 1))
        .count();
    // By the model's counters and by the log's applied copies alike.
    let mut twice: HashSet<String> = tally
        .values
        .iter()
        .filter(|(_, v)| **v > 1)
        .map(|(k, _)| k.clone())
        .collect();
    twice.extend(
        log.applied_copies
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| key(token_of(id))),
    );
    let twice = twice.len();
    let equal = hashes
        .iter()
        .all(|h| h.2 == hashes[0].2 && h.1 == hashes[0].1);
    let late_fenced: u64 = log.late.iter().map(|l| l.0).sum();
    let late_dup: u64 = log.late.iter().map(|l| l.1).sum();
    let late_applied: u64 = log.late.iter().map(|l| l.2).sum();
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::SeqCst);
    let counts = &clients.counts;

    println!(
        "load ran {:.1} s; then the 3 nodes and a reader replaying the stream from its start read it",
        load.as_secs_f64()
    );
    println!(
        "acknowledged:                          {}",
        c(&counts.acknowledged)
    );
    println!(
        "  retries answered AlreadyApplied:     {}",
        c(&counts.already_applied)
    );
    println!(
        "execute attempts:                      {}",
        c(&counts.attempts)
    );
    println!("answers that led to a retry, by kind:");
    for (kind, n) in lock(&counts.retried).iter() {
        println!("  {kind}: {n}");
    }
    println!(
        "given up (never acknowledged):         {}",
        c(&counts.given_up)
    );
    println!("commands applied:                      {}", tally.applied);
    println!("lost (acknowledged, not applied):      {lost}");
    println!("applied twice:                         {twice}");
    println!("fenced (old-epoch copies refused):     {}", log.fenced);
    println!(
        "  of which applied later by a retry:   {}",
        log.fenced_then_applied
    );
    println!(
        "old-epoch copies dropped as duplicates: {}",
        log.old_epoch_duplicates
    );
    println!(
        "late copies of held commands:          {late_fenced} fenced, {late_dup} duplicates, {late_applied} applied (must be 0)"
    );
    for (r, (f, d, a)) in records.iter().zip(&log.late) {
        println!(
            "  failover {}: {} held, {f} fenced, {d} duplicates, {a} applied",
            r.number,
            r.held.len()
        );
    }
    for (name, applied, hash, fenced, dups) in &hashes {
        println!(
            "  {name:<8} applied {applied:>7}  hash {hash}  fenced {fenced:>5}  duplicates dropped {dups:>5}"
        );
    }
    println!(
        "state hashes equal:                    {}",
        if equal { "yes" } else { "NO" }
    );
    // Epoch 1 at start, one per failover; any more were elections of a live
    // leader (safe, but writes stall: the price of a short election timeout).
    let epoch = cluster
        .views()
        .into_iter()
        .flatten()
        .map(|(e, _)| e)
        .max()
        .unwrap_or(0);
    let unforced = epoch.saturating_sub(1 + records.len() as u64);
    println!(
        "epochs:                                {epoch} ({unforced} elections the harness did not cause)"
    );
    let elected: Vec<Duration> = records.iter().map(|r| r.elected).collect();
    let unavailable: Vec<Duration> = records.iter().map(|r| r.unavailable).collect();
    println!(
        "election (leader stops writing -> new claim applied): {}",
        spread(&elected)
    );
    println!(
        "unavailability (leader stops writing -> first write acknowledged by the new leader): {}",
        spread(&unavailable)
    );

    let mut failures = Vec::new();
    if c(&counts.acknowledged) == 0 {
        failures.push("nothing was acknowledged".to_owned());
    }
    if lost > 0 {
        failures.push(format!("{lost} acknowledged commands lost"));
    }
    if twice > 0 {
        failures.push(format!("{twice} commands applied twice"));
    }
    if !equal {
        failures.push("state hashes differ".to_owned());
    }
    if late_applied > 0 {
        failures.push(format!("{late_applied} late old-epoch copies applied"));
    }
    if late_fenced == 0 {
        failures.push("no late old-epoch record was fenced: the case was not exercised".to_owned());
    }
    if records.iter().any(|r| r.order == Order::RetryFirst) && late_dup == 0 {
        failures.push(
            "no late old-epoch copy landed after its retry: that case was not exercised".to_owned(),
        );
    }
    for f in &failures {
        println!("FAIL: {f}");
    }
    println!(
        "torture_failover: {}",
        if failures.is_empty() { "PASS" } else { "FAIL" }
    );
    Ok(failures.is_empty())
}
