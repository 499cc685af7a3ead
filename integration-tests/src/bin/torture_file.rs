//! Fault harness for the file journal: writer processes SIGKILLed at random
//! moments, torn tails, and files cut at random offsets.
//!
//! ```text
//! torture_file [--rounds N] [--seed S] [--dir DIR]
//! ```
//!
//! Each round starts a writer process (this binary, `child` mode) running an
//! engine over the journal with several concurrent callers; it prints `SENT t`
//! before executing command `t` and `ACK t` once it is acknowledged. After a
//! random delay the writer is SIGKILLed. Commands sent but never acknowledged
//! are retried, under the same command ids, by the next writer. Between
//! rounds: garbage is sometimes appended to the last segment (a torn write),
//! the journal must reopen, and a copy of it is cut at a random offset and
//! must open cleanly when the cut lies past the durable watermark and be
//! refused as data loss when it lies inside it.
//!
//! At the end an engine replays the journal: every acknowledged command must
//! be applied exactly once, and no command more than once. The counts are
//! printed; the exit status is non-zero on any violation.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memstate_core::{
    CommandContext, CommandId, Consistency, DeterministicRng, EngineBuilder, Error, ExecuteError,
    Model, StreamError,
};
use memstate_file::{FileStream, FileStreamConfig, Position, inspect};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// How many times each token was applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied(BTreeMap<u64, u32>);

impl Model for Applied {
    type Command = u64;
    type Output = ();
    type Error = String;
    fn apply(&mut self, token: u64, _ctx: &mut CommandContext<'_>) -> Result<(), String> {
        *self.0.entry(token).or_default() += 1;
        Ok(())
    }
}

fn command_id(token: u64) -> CommandId {
    CommandId(uuid::Uuid::from_u128(
        0x7073_0000_0000_0000_0000_0000_0000_0000 | u128::from(token),
    ))
}

/// Small segments, so that kills also land around segment rolls.
fn config(dir: &Path) -> FileStreamConfig {
    FileStreamConfig::new(dir)
        .with_segment_size(64 * 1024)
        .with_max_record_size(16 * 1024)
}

const CALLERS: u64 = 8;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("torture_file: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.get(1).map(String::as_str) == Some("child") {
        runtime.block_on(child(&args[2..]))
    } else {
        runtime.block_on(parent(&args[1..]))
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("torture_file: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The writer: `child DIR FIRST_TOKEN [RETRY,RETRY,...]`. Runs until killed.
async fn child(args: &[String]) -> Result<bool, String> {
    let dir = PathBuf::from(args.first().ok_or("child: no directory")?);
    let first: u64 = args
        .get(1)
        .and_then(|t| t.parse().ok())
        .ok_or("child: no first token")?;
    let retries: Vec<u64> = args
        .get(2)
        .map(|l| l.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_default();
    let stream = FileStream::open_with(config(&dir))
        .await
        .map_err(|e| format!("child: opening the journal: {e}"))?;
    let engine = EngineBuilder::new(Applied::default(), stream)
        .start()
        .await
        .map_err(|e| format!("child: starting the engine: {e}"))?;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = |out: Arc<Mutex<std::io::Stdout>>, line: String| async move {
        let mut out = out.lock().await;
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(Arc::clone(&out), "READY".to_owned()).await;
    let next = Arc::new(AtomicU64::new(first));
    let retries = Arc::new(std::sync::Mutex::new(retries));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let engine = engine.clone();
        let next = Arc::clone(&next);
        let retries = Arc::clone(&retries);
        let out = Arc::clone(&out);
        tasks.push(tokio::spawn(async move {
            loop {
                let retry = retries.lock().ok().and_then(|mut r| r.pop());
                let token = retry.unwrap_or_else(|| next.fetch_add(1, Ordering::SeqCst));
                say(Arc::clone(&out), format!("SENT {token}")).await;
                match engine.execute_with_id(command_id(token), token).await {
                    Ok(_) | Err(ExecuteError::Engine(Error::AlreadyApplied { .. })) => {
                        say(Arc::clone(&out), format!("ACK {token}")).await;
                    }
                    Err(e) => {
                        say(Arc::clone(&out), format!("FAILED {token} {e}")).await;
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(false)
}

#[derive(Default)]
struct Counts {
    rounds: u64,
    kills_after_ready: u64,
    kills_before_ready: u64,
    sent: u64,
    acked: u64,
    retried: u64,
    reopen_failures: u64,
    torn_tails_made: u64,
    torn_bytes_cut: u64,
    cuts_inside_watermark: u64,
    cuts_reported_as_loss: u64,
    cuts_past_watermark: u64,
    cuts_past_opened: u64,
    failures: Vec<String>,
}

async fn parent(args: &[String]) -> Result<bool, String> {
    let mut rounds = 20u64;
    let mut seed = 1u64;
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--rounds" => rounds = value.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--seed" => seed = value.parse().map_err(|e| format!("--seed: {e}"))?,
            "--dir" => dir = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work = dir.unwrap_or_else(|| temp.path().to_path_buf());
    let journal = work.join("journal");
    std::fs::create_dir_all(&journal).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut rng = DeterministicRng::seeded(u128::from(seed));
    let mut c = Counts::default();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut next_token = 1u64;
    let started = Instant::now();

    for round in 0..rounds {
        c.rounds += 1;
        let retries: Vec<String> = pending.iter().map(u64::to_string).collect();
        c.retried += pending.len() as u64;
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(&journal)
            .arg(next_token.to_string())
            .arg(retries.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning a writer: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // A random moment: from during start-up to well into the load.
        let delay = Duration::from_millis(rng.below(600));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let lines = reader.join().map_err(|_| "reader thread failed")?;
        let mut ready = false;
        for line in &lines {
            let mut parts = line.splitn(3, ' ');
            match (
                parts.next(),
                parts.next().and_then(|t| t.parse::<u64>().ok()),
            ) {
                (Some("READY"), _) => ready = true,
                (Some("SENT"), Some(t)) => {
                    c.sent += 1;
                    pending.insert(t);
                    next_token = next_token.max(t + 1);
                }
                (Some("ACK"), Some(t)) => {
                    acked.insert(t);
                    pending.remove(&t);
                }
                (Some("FAILED"), Some(_)) => {
                    c.failures
                        .push(format!("round {round}: writer reported {line}"));
                }
                _ => {}
            }
        }
        if ready {
            c.kills_after_ready += 1;
        } else {
            c.kills_before_ready += 1;
        }

        // Sometimes a torn write: garbage past the end of the last segment.
        if rng.below(3) == 0 {
            let garbage_len = 1 + rng.below(300) as usize;
            let garbage: Vec<u8> = (0..garbage_len).map(|_| rng.below(256) as u8).collect();
            // Nothing is ever written after a seal, so no torn write can be there.
            let sealed = inspect::scan(&journal, |_| ())
                .map_err(|e| e.to_string())?
                .segments
                .last()
                .is_some_and(|s| s.sealed);
            if let Some(last) = last_segment(&journal).filter(|_| !sealed) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&last)
                    .map_err(|e| e.to_string())?;
                f.write_all(&garbage).map_err(|e| e.to_string())?;
                c.torn_tails_made += 1;
            }
        }

        // The journal always reopens.
        match FileStream::open_with(config(&journal)).await {
            Ok(s) => {
                c.torn_bytes_cut += s.open_report().truncated_bytes();
                s.close();
            }
            Err(e) => {
                c.reopen_failures += 1;
                c.failures
                    .push(format!("round {round}: reopening failed: {e}"));
            }
        }

        // A copy cut at a random offset: data loss inside the watermark,
        // an ordinary torn tail past it.
        cut_a_copy(&journal, &work.join("cut"), &mut rng, &mut c).await?;
    }
    c.acked = acked.len() as u64;

    // Replay everything and account for every acknowledged id.
    let stream = FileStream::open_with(config(&journal))
        .await
        .map_err(|e| format!("final open: {e}"))?;
    let engine = EngineBuilder::new(Applied::default(), stream)
        .start()
        .await
        .map_err(|e| format!("final replay: {e}"))?;
    let applied = engine
        .query(Consistency::Linearizable, |m| m.0.clone())
        .await
        .map_err(|e| format!("final query: {e}"))?;
    engine.shutdown().await;
    let lost: Vec<u64> = acked
        .iter()
        .filter(|t| !applied.contains_key(t))
        .copied()
        .collect();
    let twice: Vec<u64> = applied
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| *t)
        .collect();
    let applied_unacked = applied.keys().filter(|t| !acked.contains(t)).count();

    println!(
        "torture_file: seed {seed}, {} rounds in {:.1} s",
        c.rounds,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  writers SIGKILLed: {} after start-up, {} during start-up",
        c.kills_after_ready, c.kills_before_ready
    );
    println!(
        "  commands sent: {}, acknowledged: {}, retried by a later writer: {}",
        c.sent, c.acked, c.retried
    );
    println!(
        "  applied: {} ids ({} of them never acknowledged: in flight at a kill)",
        applied.len(),
        applied_unacked
    );
    println!("  acknowledged but lost: {}", lost.len());
    println!("  applied more than once: {}", twice.len());
    println!("  reopen failures: {}", c.reopen_failures);
    println!(
        "  torn tails made: {}, bytes cut by reopening: {}",
        c.torn_tails_made, c.torn_bytes_cut
    );
    println!(
        "  copies cut inside the watermark: {}, reported as data loss: {}",
        c.cuts_inside_watermark, c.cuts_reported_as_loss
    );
    println!(
        "  copies cut past the watermark: {}, opened as a torn tail: {}",
        c.cuts_past_watermark, c.cuts_past_opened
    );
    for f in &c.failures {
        println!("  FAILURE: {f}");
    }
    if !lost.is_empty() {
        println!("  lost ids (first 20): {:?}", &lost[..lost.len().min(20)]);
    }
    if !twice.is_empty() {
        println!(
            "  ids applied twice (first 20): {:?}",
            &twice[..twice.len().min(20)]
        );
    }
    let ok = lost.is_empty()
        && twice.is_empty()
        && c.reopen_failures == 0
        && c.failures.is_empty()
        && c.cuts_inside_watermark == c.cuts_reported_as_loss
        && c.cuts_past_watermark == c.cuts_past_opened
        && c.acked > 0;
    println!("torture_file: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

fn last_segment(journal: &Path) -> Option<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(journal)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop()
}

/// Copies the journal, cuts the copy's last segment at a random offset and
/// checks that opening judges the cut by the watermark.
async fn cut_a_copy(
    journal: &Path,
    copy: &Path,
    rng: &mut DeterministicRng,
    c: &mut Counts,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(copy);
    std::fs::create_dir_all(copy).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(journal).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".seg") || name == "journal.watermark" {
            std::fs::copy(entry.path(), copy.join(&*name)).map_err(|e| e.to_string())?;
        }
    }
    let report = inspect::read_all(copy).map_err(|e| e.to_string())?;
    let (Some(watermark), Some(last)) = (report.watermark, last_segment(copy)) else {
        return Ok(());
    };
    let len = std::fs::metadata(&last).map_err(|e| e.to_string())?.len();
    let number: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or("segment name")?;
    if len <= 32 {
        return Ok(());
    }
    // Half the cuts fall anywhere in the segment; the other half first add
    // an unfinished write past the end and cut inside it.
    let (len, sealed) = (len, report.segments.last().is_some_and(|s| s.sealed));
    let at = if sealed || rng.below(2) == 0 {
        32 + rng.below(len - 32)
    } else {
        let extra = 1 + rng.below(200);
        let garbage: Vec<u8> = (0..extra).map(|_| rng.below(256) as u8).collect();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .map_err(|e| e.to_string())?;
        f.write_all(&garbage).map_err(|e| e.to_string())?;
        len + rng.below(extra)
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .and_then(|f| f.set_len(at))
        .map_err(|e| e.to_string())?;
    let inside = watermark.end > Position::new(number, at);
    let opened = FileStream::open_with(config(copy)).await;
    match (inside, opened) {
        (true, Err(StreamError::Corrupt { reason, .. })) if reason.starts_with("data loss") => {
            c.cuts_inside_watermark += 1;
            c.cuts_reported_as_loss += 1;
        }
        (true, other) => {
            c.cuts_inside_watermark += 1;
            c.failures.push(format!(
                "a cut at {number}:{at} inside the watermark {} was not reported as data loss: {:?}",
                watermark.end,
                other.map(|s| s.open_report().clone())
            ));
        }
        (false, Ok(s)) => {
            c.cuts_past_watermark += 1;
            c.cuts_past_opened += 1;
            s.close();
        }
        (false, Err(e)) => {
            c.cuts_past_watermark += 1;
            c.failures.push(format!(
                "a cut at {number}:{at} past the watermark {} did not open: {e}",
                watermark.end
            ));
        }
    }
    Ok(())
}
