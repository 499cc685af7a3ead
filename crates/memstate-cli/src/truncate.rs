//! `memstate truncate`: drop journal segments no node can need any more.

use std::path::PathBuf;

use clap::Args;
use memstate_core::snapshot::{FileSnapshotStore, SnapshotStore, load_meta};
use memstate_core::{Cursor, SnapshotMeta};
use memstate_file::Position;

use crate::CliError;

/// Removes file-journal segments that lie wholly before the OLDEST retained
/// snapshot of EVERY node reading the journal.
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

async fn oldest_valid(dir: &PathBuf) -> Result<Option<SnapshotMeta>, CliError> {
    let store = FileSnapshotStore::new(dir);
    let mut listed = store.list().await.map_err(|e| {
        CliError::Backend(format!("cannot list snapshots in {}: {e}", dir.display()))
    })?;
    listed.reverse();
    for stored in &listed {
        match load_meta(&store, stored).await {
            Ok(meta) => return Ok(Some(meta)),
            Err(e) => eprintln!("skipping {}: {e}", stored.location),
        }
    }
    Ok(None)
}

fn position(cursor: &Cursor) -> Result<(u64, u64), CliError> {
    let p = Position::from_cursor(cursor).map_err(|e| {
        CliError::Backend(format!(
            "snapshot cursor {cursor} is not a file-journal cursor: {e}"
        ))
    })?;
    Ok((p.segment, p.offset))
}

/// Runs it; `Ok(false)` when a node's snapshots forbid any truncation.
pub async fn run(args: TruncateArgs) -> Result<bool, CliError> {
    let mut cut: Option<Cursor> = None;
    for dir in &args.snapshots {
        let Some(meta) = oldest_valid(dir).await? else {
            println!(
                "{}: no valid snapshot; that node needs the whole log: nothing removed",
                dir.display()
            );
            return Ok(false);
        };
        let Some(cursor) = meta.cursor.clone() else {
            println!(
                "{}: its oldest snapshot precedes the log: nothing removed",
                dir.display()
            );
            return Ok(false);
        };
        println!(
            "{}: oldest valid snapshot of {} at index {}, cursor {cursor}",
            dir.display(),
            meta.node_id,
            meta.applied_index
        );
        let earlier = match &cut {
            None => true,
            Some(c) => position(&cursor)? < position(c)?,
        };
        if earlier {
            cut = Some(cursor);
        }
    }
    let Some(cut) = cut else { return Ok(false) };
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
