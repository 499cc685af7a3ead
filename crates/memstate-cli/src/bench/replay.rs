//! Replay: how fast a node rebuilds its state from a file journal at start.
//!
//! The journals are written directly with `FileStream::append`, in the
//! engine's own encoding (a Genesis record first, then frames of envelopes),
//! which takes seconds instead of the minutes the engine would need to
//! execute a million commands one by one. Two packings bound what real
//! journals hold: one command per record (a single client, no group commit)
//! and 64 per record (a busy node's group commit). Each journal is read three
//! ways: records only (the adapter's limit), records decoded (frame and
//! command), and a full engine start (decode, de-duplicate, apply). Each
//! codec writes its own pair of journals: the codec is a dimension.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memstate_core::envelope::{decode_frame, encode_envelope_as, encode_frame_as, frame_codec};
use memstate_core::{
    Body, Codec, CommandId, Consistency, Control, EncodedCommand, EngineBuilder, Envelope, NodeId,
    Settings, Stream,
};
use memstate_file::FileStream;
use serde::Serialize;

use super::Plan;
use super::memory::rss_bytes;
use super::workload::{INITIAL_BALANCE, account, now_ms, transfer};
use crate::bank::{Bank, BankCommand};

/// Envelopes per record in the journals replayed.
const PACKINGS: [usize; 2] = [1, 64];
/// Bytes in a mebibyte.
const MIB: f64 = 1024.0 * 1024.0;
/// Envelopes encoded per `append` while generating.
const CHUNK: usize = 64 * 256;

/// One journal's replay figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Replay {
    /// The stream's command codec.
    pub codec: Codec,
    /// Commands per record.
    pub commands_per_record: usize,
    /// Commands in the journal (plus one Genesis record).
    pub commands: u64,
    /// Records in the journal.
    pub records: u64,
    /// Journal size in bytes (payloads).
    pub payload_bytes: u64,
    /// Seconds to write it (not a replay figure).
    pub generate_seconds: f64,
    /// Reading every record through a `FileStream` subscription.
    pub read: Rate,
    /// Reading and decoding every frame and command.
    pub decode: Rate,
    /// `EngineBuilder::start` on the journal until it serves.
    pub engine: Rate,
    /// `engine.records_per_sec / read.records_per_sec`: the engine against
    /// the adapter's read speed.
    pub ratio_to_read: f64,
    /// `engine.commands_per_sec / decode.commands_per_sec`: the engine
    /// against reading and decoding alone.
    pub ratio_to_decode: f64,
    /// Growth of resident memory across the engine start, MiB.
    pub engine_rss_growth_mib: Option<f64>,
    /// The engine's own overhead after the start: the de-duplication window.
    pub window: WindowOverhead,
}

/// The de-duplication window after a replay, and the engine's memory growth
/// scaled to a million commands.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct WindowOverhead {
    /// Command ids in the window (its count bound and age decide how many).
    pub ids: usize,
    /// Its accounted bytes (`Stats::dedup_window_bytes`), MiB.
    pub accounted_mib: f64,
    /// The accounted bytes per million ids, MiB.
    pub accounted_mib_per_million: f64,
    /// The engine start's resident memory growth per million commands
    /// replayed, MiB: the window, the model (small here: its accounts) and
    /// allocator slack.
    pub rss_growth_mib_per_million_commands: Option<f64>,
}

/// A timed pass over a journal.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Rate {
    pub seconds: f64,
    pub records_per_sec: f64,
    pub commands_per_sec: f64,
}

impl Rate {
    fn of(elapsed: Duration, records: u64, commands: u64) -> Self {
        let s = elapsed.as_secs_f64().max(f64::EPSILON);
        Self {
            seconds: elapsed.as_secs_f64(),
            records_per_sec: records as f64 / s,
            commands_per_sec: commands as f64 / s,
        }
    }
}

/// Writes and replays the journals under `work`.
///
/// # Errors
///
/// I/O, decoding or engine failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<Vec<Replay>, String> {
    let mut out = Vec::new();
    for codec in Codec::ALL {
        out.extend(run_codec(plan, work, codec).await?);
    }
    Ok(out)
}

/// Writes and replays the journals of one codec.
async fn run_codec(plan: &Plan, work: &Path, codec: Codec) -> Result<Vec<Replay>, String> {
    let commands = plan.replay_commands;
    plan.progress(&format!(
        "replay ({codec}): writing {commands} commands into journals of {PACKINGS:?} commands per record"
    ));
    let dirs: Vec<_> = PACKINGS
        .iter()
        .map(|k| work.join(format!("replay-{codec}-{k}")))
        .collect();
    let (generated, seconds) = generate(&dirs, commands, plan.accounts, codec).await?;
    let mut out = Vec::new();
    for ((dir, &per_record), (records, bytes)) in dirs.iter().zip(&PACKINGS).zip(generated) {
        let read = read_all(dir, false).await?;
        let decode = read_all(dir, true).await?;
        let (engine, rss, window) =
            start_engine(dir, records, commands, plan.accounts, codec).await?;
        let replay = Replay {
            codec,
            commands_per_record: per_record,
            commands,
            records,
            payload_bytes: bytes,
            generate_seconds: seconds,
            ratio_to_read: engine.records_per_sec / read.records_per_sec.max(f64::EPSILON),
            ratio_to_decode: engine.commands_per_sec / decode.commands_per_sec.max(f64::EPSILON),
            read,
            decode,
            engine,
            engine_rss_growth_mib: rss,
            window,
        };
        plan.progress(&format!(
            "replay {codec:>7} {per_record:>2}/record: read {:>9.0} records/s, decode {:>9.0} commands/s, engine {:>9.0} commands/s ({:.2} s)",
            replay.read.records_per_sec,
            replay.decode.commands_per_sec,
            replay.engine.commands_per_sec,
            replay.engine.seconds
        ));
        out.push(replay);
        // The journals are large; drop each once measured.
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    Ok(out)
}

/// An envelope as the engine writes it for `body` at `ts`.
fn envelope(body: Body, ts: u64) -> Envelope {
    Envelope {
        id: CommandId::random(),
        origin: NodeId::new("bench-replay"),
        ts,
        epoch: None,
        model_version: 1,
        reads: 1,
        body,
    }
}

/// The `i`-th command of the generated history: the accounts first, then transfers.
fn command(i: u64, accounts: u64) -> BankCommand {
    if i < accounts {
        BankCommand::Open {
            account: account(i),
            initial: INITIAL_BALANCE,
        }
    } else {
        transfer(accounts, (i % 64) as usize, i / 64)
    }
}

/// Writes `commands` commands into each journal in `dirs`, packed per
/// [`PACKINGS`]; returns each journal's (records, payload bytes) and the time taken.
async fn generate(
    dirs: &[std::path::PathBuf],
    commands: u64,
    accounts: u64,
    codec: Codec,
) -> Result<(Vec<(u64, u64)>, f64), String> {
    let started = Instant::now();
    let mut streams = Vec::new();
    for dir in dirs {
        let _ = tokio::fs::remove_dir_all(dir).await;
        streams.push(
            FileStream::open(dir)
                .await
                .map_err(|e| format!("creating {}: {e}", dir.display()))?,
        );
    }
    let body = Body::Control(Control::Genesis(Settings::default().with_codec(codec)));
    // A Genesis record is JSON in every stream.
    let genesis_codec = frame_codec(codec, &body);
    let genesis =
        encode_envelope_as(genesis_codec, &envelope(body, now_ms())).map_err(|e| e.to_string())?;
    let genesis = Bytes::from(encode_frame_as(genesis_codec, [genesis.as_slice()]));
    let mut counts = vec![(1u64, genesis.len() as u64); dirs.len()];
    for stream in &streams {
        append(stream, vec![genesis.clone()]).await?;
    }
    let ts = now_ms();
    let mut next = 0u64;
    while next < commands {
        let end = (next + CHUNK as u64).min(commands);
        let encoded: Vec<Vec<u8>> = tokio::task::spawn_blocking(move || {
            (next..end)
                .map(|i| {
                    // A thousand commands per millisecond of envelope time: a
                    // fast but plausible history.
                    let command = EncodedCommand::encode_as(codec, &command(i, accounts))
                        .map_err(|e| e.to_string())?;
                    encode_envelope_as(codec, &envelope(Body::Command(command), ts + i / 1000))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| format!("an encoding task failed: {e}"))??;
        for ((stream, per_record), count) in streams.iter().zip(PACKINGS).zip(counts.iter_mut()) {
            let frames: Vec<Bytes> = encoded
                .chunks(per_record)
                .map(|group| Bytes::from(encode_frame_as(codec, group.iter().map(Vec::as_slice))))
                .collect();
            count.0 += frames.len() as u64;
            count.1 += frames.iter().map(|f| f.len() as u64).sum::<u64>();
            append(stream, frames).await?;
        }
        next = end;
    }
    for stream in &streams {
        stream.close();
    }
    Ok((counts, started.elapsed().as_secs_f64()))
}

async fn append(stream: &FileStream, records: Vec<Bytes>) -> Result<(), String> {
    stream
        .append(records)
        .await
        .map(|_| ())
        .map_err(|e| format!("writing the replay journal: {e}"))
}

/// Reads every record of the journal in `dir` (decoding each when `decode`).
async fn read_all(dir: &Path, decode: bool) -> Result<Rate, String> {
    let stream = FileStream::open(dir)
        .await
        .map_err(|e| format!("opening {}: {e}", dir.display()))?;
    let started = Instant::now();
    let head = stream
        .head()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the replay journal is empty")?;
    let mut subscription = stream.subscribe(None).await.map_err(|e| e.to_string())?;
    let (mut records, mut commands) = (0u64, 0u64);
    loop {
        let record = tokio::time::timeout(Duration::from_secs(60), subscription.next())
            .await
            .map_err(|_| "reading the replay journal stalled for 60 s".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("the journal closed while being read")?;
        records += 1;
        if decode {
            for envelope in decode_frame(&record.payload).map_err(|e| e.to_string())? {
                if let Body::Command(json) = envelope.body {
                    json.decode::<BankCommand>().map_err(|e| e.to_string())?;
                    commands += 1;
                }
            }
        }
        if record.cursor == head {
            break;
        }
    }
    let elapsed = started.elapsed();
    stream.close();
    Ok(Rate::of(elapsed, records, commands))
}

/// Starts an engine on the journal; returns its rate, the RSS growth and
/// the de-duplication window's overhead.
async fn start_engine(
    dir: &Path,
    records: u64,
    commands: u64,
    accounts: u64,
    codec: Codec,
) -> Result<(Rate, Option<f64>, WindowOverhead), String> {
    let before = rss_bytes();
    let started = Instant::now();
    let stream = FileStream::open(dir)
        .await
        .map_err(|e| format!("opening {}: {e}", dir.display()))?;
    let engine = EngineBuilder::new(Bank::default(), stream)
        .node_id("bench-replayer")
        .codec(codec)
        .startup_timeout(Duration::from_secs(600))
        .start()
        .await
        .map_err(|e| format!("replaying {}: {e}", dir.display()))?;
    let elapsed = started.elapsed();
    let after = rss_bytes();
    let stats = engine.stats();
    let len = engine
        .query(Consistency::Local, Bank::len)
        .await
        .map_err(|e| e.to_string())?;
    engine.shutdown().await;
    if stats.commands_applied != commands || len as u64 != accounts.min(commands) {
        return Err(format!(
            "replay applied {} commands and holds {len} accounts; expected {commands} and {}",
            stats.commands_applied,
            accounts.min(commands)
        ));
    }
    let rss = match (before, after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / MIB),
        _ => None,
    };
    let millions = commands.max(1) as f64 / 1e6;
    let accounted_mib = stats.dedup_window_bytes as f64 / MIB;
    let window = WindowOverhead {
        ids: stats.dedup_window_len,
        accounted_mib,
        accounted_mib_per_million: accounted_mib / (stats.dedup_window_len.max(1) as f64 / 1e6),
        rss_growth_mib_per_million_commands: rss.map(|r| r / millions),
    };
    Ok((Rate::of(elapsed, records, commands), rss, window))
}
