//! A node process: one engine in single-leader mode over the harness's
//! stream, driven by lines on stdin and answering on stdout.
//!
//! In: `EXEC <req> <token>`, `HOLD first|quiet`, `RELEASE`, `STATE`, `QUIT`.
//! Out: `READY`; `LEAD <epoch> <leader|->` whenever its view of the
//! leadership changes; `RES <req> OK|ALREADY <index>`,
//! `RES <req> NOTLEADER <leader|-> <epoch>`, `RES <req> ERR <kind> <message>`;
//! `FRAME <hex>` for each record held back; `HELD <appends>` once an append
//! carrying a command is held (`first`) or once, besides, no append is left
//! inside the stream (`quiet`); `RELEASED` once the held records are appended;
//! no `RES` from `HOLD` to `RELEASE`;
//! `STATE <applied> <hash> <fenced> <duplicates>`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use memstate_conformance::model::Tally;
use memstate_core::envelope::decode_frame;
use memstate_core::{Consistency, Engine, EngineBuilder, Error, ExecuteError, Stream};
use tokio::sync::mpsc;

use crate::hold::HoldBack;
use crate::{Args, Backend, command, command_id, hex, leadership, single_leader};

/// Whole lines to stdout, one writer at a time.
#[derive(Clone, Debug)]
struct Out(Arc<Mutex<std::io::Stdout>>);

impl Out {
    fn say(&self, line: &str) {
        if let Ok(mut out) = self.0.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

pub async fn run(args: &Args) -> Result<(), String> {
    let name = args.required("name")?.to_owned();
    let backend = Backend::from_args(args)?;
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    let on_hold = {
        let out = out.clone();
        // Every held record is reported; appends that carry a command count.
        Box::new(move |records: &[Bytes]| {
            let mut commands = false;
            for record in records {
                out.say(&format!("FRAME {}", hex(record)));
                commands |= decode_frame(record)
                    .is_ok_and(|envelopes| envelopes.iter().any(|e| e.kind() == "command"));
            }
            commands
        })
    };
    let hold = Arc::new(HoldBack::new(backend.open().await?, on_hold));
    let engine =
        EngineBuilder::with_shared_stream(Tally::default(), Arc::clone(&hold) as Arc<dyn Stream>)
            .node_id(name.clone())
            .settings(single_leader())
            .leadership(leadership(args)?)
            .startup_timeout(Duration::from_secs(120))
            .start()
            .await
            .map_err(|e| format!("{name}: starting the engine: {e}"))?;
    out.say("READY");
    tokio::spawn(report_leadership(engine.clone(), out.clone()));

    // From HOLD to RELEASE no answer leaves the node: commands that were
    // inside the stream when the leader stopped are applied, but their
    // callers never hear of it, as when a leader dies between its append and
    // its answer. Their retries meet AlreadyApplied.
    let mute = Arc::new(AtomicBool::new(false));
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["EXEC", req, token] => {
                let (Ok(req), Ok(token)) = (req.parse::<u64>(), token.parse::<u64>()) else {
                    eprintln!("{name}: bad line {line:?}");
                    continue;
                };
                let (engine, out, mute) = (engine.clone(), out.clone(), Arc::clone(&mute));
                tokio::spawn(async move {
                    let answer = execute(&engine, token).await;
                    if !mute.load(Ordering::SeqCst) {
                        out.say(&format!("RES {req} {answer}"));
                    }
                });
            }
            ["HOLD", when] => {
                let quiet = *when == "quiet";
                mute.store(true, Ordering::SeqCst);
                let before = hold.hold();
                let (hold, out) = (Arc::clone(&hold), out.clone());
                tokio::spawn(async move {
                    let held = hold.wait_held(before, quiet).await;
                    out.say(&format!("HELD {held}"));
                });
            }
            ["RELEASE"] => {
                mute.store(false, Ordering::SeqCst);
                hold.release();
                let (hold, out) = (Arc::clone(&hold), out.clone());
                tokio::spawn(async move {
                    hold.wait_landed().await;
                    out.say("RELEASED");
                });
            }
            ["STATE"] => {
                let state = engine
                    .query(Consistency::Linearizable, |t| (t.applied, t.hash))
                    .await;
                let stats = engine.stats();
                match state {
                    Ok((applied, hash)) => out.say(&format!(
                        "STATE {applied} {hash:016x} {} {}",
                        stats.commands_fenced, stats.duplicates_dropped
                    )),
                    Err(e) => out.say(&format!("STATE error {e}")),
                }
            }
            ["QUIT"] => break,
            _ => eprintln!("{name}: unknown line {line:?}"),
        }
    }
    engine.shutdown().await;
    Ok(())
}

/// The lines of stdin, read on a thread of their own (tokio's stdin needs a
/// feature the workspace does not enable); ends at end of file.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs command `token` and says what became of it, in one protocol word
/// and its details.
async fn execute(engine: &Engine<Tally>, token: u64) -> String {
    match engine
        .execute_with_id(command_id(token), command(token))
        .await
    {
        Ok(done) => format!("OK {}", done.index),
        Err(ExecuteError::Engine(Error::AlreadyApplied { index, .. })) => {
            format!("ALREADY {index}")
        }
        Err(ExecuteError::Engine(Error::NotLeader { leader, epoch })) => format!(
            "NOTLEADER {} {epoch}",
            leader.map_or_else(|| "-".to_owned(), |l| l.to_string())
        ),
        Err(error) => format!("ERR {} {error}", error_kind(&error)),
    }
}

/// The variant's name, without its fields.
fn error_kind<E: std::fmt::Debug>(error: &ExecuteError<E>) -> String {
    let text = match error {
        ExecuteError::Engine(e) => format!("{e:?}"),
        other => format!("{other:?}"),
    };
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Says `LEAD <epoch> <leader>` whenever this node's view changes.
async fn report_leadership(engine: Engine<Tally>, out: Out) {
    let mut last = None;
    loop {
        let lead = engine.stats().leadership;
        let view = (lead.epoch, lead.leader.map(|l| l.to_string()));
        if last.as_ref() != Some(&view) {
            out.say(&format!(
                "LEAD {} {}",
                view.0,
                view.1.as_deref().unwrap_or("-")
            ));
            last = Some(view);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
