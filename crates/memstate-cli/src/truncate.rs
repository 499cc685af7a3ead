//! `memstate truncate`: drop journal segments no node can need any more.

use std::path::PathBuf;

use clap::Args;
use memstate_core::FileSnapshotStore;
use memstate_core::truncation::{self, Reader, Truncation, WholeLog};
use memstate_file::Position;

use crate::CliError;

/// Removes file-journal segments that lie wholly before the OLDEST retained
/// snapshot of EVERY node reading the journal (the rule is
/// `memstate_core::truncation`; this command applies it to a journal).
///
/// Name every node's snapshot directory: the cut point is the minimum, over
/// all of them, of each node's oldest valid snapshot, so every node can still
/// restart from any snapshot it keeps (its fallback included). A node with no
/// valid snapshot needs the whole log: then nothing is removed. Without
/// --apply this only prints what it would remove. A node not named here, or
/// one that joins later, cannot rebuild from the journal alone after a
/// truncation: give it a copy of another node's snapshot.
#[derive(Debug, Clone, Args)]
pub struct TruncateArgs {
    /// The journal directory.
    pub journal: PathBuf,
    /// A node's snapshot directory; repeat for every node reading the journal.
    #[arg(long = "snapshots", value_name = "DIR", required = true)]
    pub snapshots: Vec<PathBuf>,
    /// Delete the segments (default: only report).
    #[arg(long)]
    pub apply: bool,
}

/// Runs it; `Ok(false)` when a node's snapshots forbid any truncation.
pub async fn run(args: TruncateArgs) -> Result<bool, CliError> {
    let stores: Vec<(String, FileSnapshotStore)> = args
        .snapshots
        .iter()
        .map(|dir| (dir.display().to_string(), FileSnapshotStore::new(dir)))
        .collect();
    let readers: Vec<Reader<'_>> = stores
        .iter()
        .map(|(name, store)| Reader { name, store })
        .collect();
    let plan = truncation::plan(&readers, |a, b| {
        Ok(Position::from_cursor(a)?.cmp(&Position::from_cursor(b)?))
    })
    .await
    .map_err(|e| CliError::Backend(e.to_string()))?;
    for node in &plan.readers {
        for (location, why) in &node.skipped {
            eprintln!("{}: skipping {location}: {why}", node.name);
        }
        if let Some(meta) = &node.oldest_valid {
            let cursor = meta
                .cursor
                .as_ref()
                .map_or("none".into(), ToString::to_string);
            println!(
                "{}: oldest valid snapshot of {} at index {}, cursor {cursor}",
                node.name, meta.node_id, meta.applied_index
            );
        }
    }
    let cut = match plan.truncation {
        Truncation::Before { cursor, .. } => cursor,
        Truncation::Nothing {
            node,
            reason: WholeLog::NoValidSnapshot,
        } => {
            println!("{node}: no valid snapshot; that node needs the whole log: nothing removed");
            return Ok(false);
        }
        Truncation::Nothing { node, .. } => {
            println!("{node}: its oldest snapshot precedes the log: nothing removed");
            return Ok(false);
        }
        other => {
            println!("nothing removed: {other:?}");
            return Ok(false);
        }
    };
    let report = memstate_file::truncate::remove_segments_before(&args.journal, &cut, args.apply)
        .map_err(|e| {
        CliError::Backend(format!("cannot truncate {}: {e}", args.journal.display()))
    })?;
    println!(
        "{} {} segment(s) before cursor {cut} ({} bytes): {:?}",
        if report.applied {
            "removed"
        } else {
            "would remove"
        },
        report.segments.len(),
        report.bytes,
        report.segments
    );
    if !report.applied && !report.segments.is_empty() {
        println!("(dry run: pass --apply to delete them)");
    }
    Ok(true)
}
