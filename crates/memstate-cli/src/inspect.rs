//! `memstate inspect PATH`: a journal's records as decoded envelopes, in
//! either codec (a binary frame's commands are shown as the JSON they hold).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use memstate_core::envelope::{FrameError, decode_frame_with_codec};
use memstate_core::{Body, Control};
use memstate_file::{FileStream, FileStreamConfig};
use serde_json::json;

use crate::CliError;

/// Prints every record of a file journal as decoded envelopes, one JSON line
/// each (with the codec of its frame; commands of a binary frame are shown
/// as JSON), then names the stream's codec (from its Genesis record) and reports a torn tail, corruption or data loss the way the engine
/// would. Never modifies the journal, unless `--accept-data-loss` is given.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The journal directory.
    pub path: PathBuf,
    /// Print only the summary, not the records.
    #[arg(long)]
    pub summary: bool,
    /// When acknowledged data is missing (the journal ends before its durable
    /// watermark), accept the loss: open the journal as a writer would, cut
    /// what is left of a partial record and rewrite the watermark to where
    /// the data now ends, so that nodes can open it again. Those records are
    /// gone for good; do it only after deciding that nothing else holds them.
    #[arg(long)]
    pub accept_data_loss: bool,
}

/// Runs the inspection; `Ok(false)` when the journal is torn, corrupt, or
/// lost acknowledged data (and the loss was not accepted).
pub async fn run(args: &InspectArgs) -> Result<bool, CliError> {
    let report = memstate_file::inspect::read_all(&args.path)
        .map_err(|e| CliError::Backend(format!("cannot inspect {}: {e}", args.path.display())))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut envelopes = 0u64;
    let mut bad = 0u64;
    let mut stream_codec = None;
    for record in &report.records {
        match decode_frame_with_codec(&record.payload) {
            Ok((codec, list)) => {
                for (i, e) in list.iter().enumerate() {
                    envelopes += 1;
                    if let (None, Body::Control(Control::Genesis(settings))) =
                        (&stream_codec, &e.body)
                    {
                        stream_codec = Some(settings.command_codec.to_string());
                    }
                    if !args.summary {
                        let line = json!({
                            "cursor": record.cursor.as_str(),
                            "codec": codec,
                            "index_in_frame": i,
                            "kind": e.kind(),
                            "model_version": e.model_version,
                            "envelope": e,
                        });
                        writeln!(out, "{line}").map_err(CliError::Io)?;
                    }
                }
            }
            Err(err) => {
                if let (None, FrameError::UnknownCodec { codec }) = (&stream_codec, &err) {
                    stream_codec = Some(format!(
                        "{codec:?}, which this build does not read: a newer build wrote this journal"
                    ));
                }
                bad += 1;
                if !args.summary {
                    let line = json!({
                        "cursor": record.cursor.as_str(),
                        "bad_record": err.to_string(),
                        "bytes": record.payload.len(),
                    });
                    writeln!(out, "{line}").map_err(CliError::Io)?;
                }
            }
        }
    }
    drop(out);
    let codec = stream_codec.unwrap_or_else(|| "unknown (no Genesis record)".to_owned());
    eprintln!(
        "{}: {} segment(s), {} record(s), {envelopes} envelope(s), {bad} record(s) that are not frames; command codec {codec}",
        report.dir.display(),
        report.segments.len(),
        report.records.len()
    );
    let mut clean = true;
    if let Some(t) = &report.torn_tail {
        clean = false;
        eprintln!("torn tail: {t:?} (the next writer to open the journal truncates it)");
    }
    if let Some(c) = &report.corruption {
        clean = false;
        eprintln!(
            "CORRUPT: {} at offset {}: {} (the engine refuses to read past it)",
            c.path.display(),
            c.offset,
            c.reason
        );
    }
    if let Some(loss) = &report.data_loss {
        clean = false;
        eprintln!("DATA LOSS: {loss} (the engine refuses to open the journal)");
        if args.accept_data_loss {
            return accept_data_loss(args).await;
        }
        eprintln!("to continue without the missing records: memstate inspect --accept-data-loss");
    }
    Ok(clean)
}

/// Opens the journal accepting the loss, and reports what that did.
async fn accept_data_loss(args: &InspectArgs) -> Result<bool, CliError> {
    let config = FileStreamConfig::new(&args.path).with_accept_data_loss(true);
    let stream = FileStream::open_with(config)
        .await
        .map_err(|e| CliError::Backend(format!("cannot open {}: {e}", args.path.display())))?;
    let opened = stream.open_report();
    if let Some(loss) = &opened.accepted_data_loss {
        eprintln!("accepted the loss: {loss}");
    }
    if let Some(t) = &opened.torn_tail {
        eprintln!(
            "cut {} byte(s) of a partial record at offset {} of {}",
            t.dropped_bytes,
            t.offset,
            t.path.display()
        );
    }
    let head = opened.head.as_ref().map_or("none", |c| c.as_str());
    eprintln!("the journal now ends after record {head}");
    stream.close();
    Ok(true)
}
