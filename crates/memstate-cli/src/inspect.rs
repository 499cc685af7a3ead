//! `memstate inspect PATH`: a journal's records as decoded envelopes.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use memstate_core::envelope::decode_frame;
use serde_json::json;

use crate::CliError;

/// Prints every record of a file journal as decoded envelopes, one JSON line
/// each, then reports a torn tail or corruption the way the engine would.
/// Never modifies the journal.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The journal directory.
    pub path: PathBuf,
    /// Print only the summary, not the records.
    #[arg(long)]
    pub summary: bool,
}

/// Runs the inspection; `Ok(false)` when the journal is torn or corrupt.
pub fn run(args: &InspectArgs) -> Result<bool, CliError> {
    let report = memstate_file::inspect::read_all(&args.path)
        .map_err(|e| CliError::Backend(format!("cannot inspect {}: {e}", args.path.display())))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut envelopes = 0u64;
    let mut bad = 0u64;
    for record in &report.records {
        match decode_frame(&record.payload) {
            Ok(list) => {
                for (i, e) in list.iter().enumerate() {
                    envelopes += 1;
                    if !args.summary {
                        let line = json!({
                            "cursor": record.cursor.as_str(),
                            "index_in_frame": i,
                            "kind": e.kind(),
                            "envelope": e,
                        });
                        writeln!(out, "{line}").map_err(CliError::Io)?;
                    }
                }
            }
            Err(err) => {
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
    eprintln!(
        "{}: {} segment(s), {} record(s), {envelopes} envelope(s), {bad} record(s) that are not frames",
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
    Ok(clean)
}
