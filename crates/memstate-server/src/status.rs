//! `/healthz`, `/readyz` and `/status`: what the node knows about itself.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use memstate_core::{Lag, Stats, Status};
use serde::Serialize;
use utoipa::ToSchema;

use crate::activity::{RecentCommand, Second, now_ms};
use crate::{ApiError, AppState, Hosted};

/// A node's view of itself, as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: String,
    /// The stream it reads and writes.
    pub stream: String,
    /// `starting`, `running`, `halted` or `stopped`.
    pub status: String,
    /// Why it stopped applying, when halted.
    pub halt_reason: Option<String>,
    /// Envelopes applied: the same on every node for the same log prefix.
    pub applied_index: u64,
    /// `caught_up`, `behind` or `unknown` (relative to the last tail learned).
    pub lag: String,
    /// Milliseconds since this node last knew it had applied everything the stream held.
    pub caught_up_age_ms: Option<u64>,
    /// `multi_writer` or `single_leader`.
    pub write_mode: Option<String>,
    /// The leader (single-leader mode).
    pub leader: Option<String>,
    /// The leadership epoch (0 before any claim).
    pub epoch: u64,
    /// Whether this node leads.
    pub is_leader: bool,
    /// Commands applied (with those that returned a domain error).
    pub commands_applied: u64,
    /// Commands refused at apply time for not coming from the current leader.
    pub commands_fenced: u64,
    /// Records skipped under the skip bad-record policy.
    pub bad_records_skipped: u64,
    /// Duplicate deliveries dropped.
    pub duplicates_dropped: u64,
    /// Snapshots of this node.
    pub snapshot: SnapshotStatus,
    /// Whether `/events` is served.
    pub events: bool,
    /// Per-second samples, oldest first (up to five minutes).
    pub seconds: Vec<Second>,
    /// The latest commands this node served, newest first.
    pub recent_commands: Vec<RecentCommand>,
}

/// Snapshot figures of a node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotStatus {
    /// Applied index of the newest snapshot this node wrote.
    pub last_index: Option<u64>,
    /// Milliseconds since it was written.
    pub last_age_ms: Option<u64>,
    /// Applied index of the snapshot this node started from.
    pub restored_from_index: Option<u64>,
    /// Snapshots written since start.
    pub taken: u64,
    /// Snapshot writes that failed since start.
    pub failed: u64,
}

pub(crate) fn status_name(status: &Status) -> (&'static str, Option<String>) {
    match status {
        Status::Starting => ("starting", None),
        Status::Running => ("running", None),
        Status::Halted(reason) => ("halted", Some(reason.to_string())),
        Status::Stopped => ("stopped", None),
        _ => ("unknown", None),
    }
}

fn lag_name(lag: Lag) -> &'static str {
    match lag {
        Lag::CaughtUp => "caught_up",
        Lag::Behind => "behind",
        _ => "unknown",
    }
}

pub(crate) fn node_status(stats: &Stats, stream: String) -> NodeStatus {
    let (status, halt_reason) = status_name(&stats.status);
    let snapshots = &stats.snapshots;
    NodeStatus {
        node_id: stats.node_id.to_string(),
        stream,
        status: status.to_owned(),
        halt_reason,
        applied_index: stats.applied_index,
        lag: lag_name(stats.lag).to_owned(),
        caught_up_age_ms: stats.caught_up_age.map(|a| a.as_millis() as u64),
        write_mode: stats.settings.as_ref().and_then(|s| {
            serde_json::to_value(s.write_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }),
        leader: stats.leadership.leader.as_ref().map(|l| l.to_string()),
        epoch: stats.leadership.epoch,
        is_leader: stats.is_leader,
        commands_applied: stats.commands_applied,
        commands_fenced: stats.commands_fenced,
        bad_records_skipped: stats.bad_records_skipped,
        duplicates_dropped: stats.duplicates_dropped,
        snapshot: SnapshotStatus {
            last_index: snapshots.last_taken.as_ref().map(|m| m.applied_index),
            last_age_ms: snapshots
                .last_taken
                .as_ref()
                .map(|m| now_ms().saturating_sub(m.taken_at_ms)),
            restored_from_index: snapshots.restored_from.as_ref().map(|m| m.applied_index),
            taken: snapshots.taken,
            failed: snapshots.failed,
        },
        events: false,
        seconds: Vec::new(),
        recent_commands: Vec::new(),
    }
}

pub(crate) async fn status<M: Hosted>(State(state): State<Arc<AppState<M>>>) -> Json<NodeStatus> {
    let mut status = node_status(&state.engine.stats(), state.engine.stream().describe());
    status.events = state.events.is_some();
    status.seconds = state.activity.seconds();
    status.recent_commands = state.activity.recent();
    Json(status)
}

/// The process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: running, not halted, not behind the last tail it learned.
pub(crate) async fn readyz<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
) -> Result<&'static str, ApiError> {
    let stats = state.engine.stats();
    match &stats.status {
        Status::Running if stats.lag != Lag::Behind => Ok("ready\n"),
        Status::Running => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching_up",
            "this node has not yet applied the stream's last known tail",
        )
        .retry_after(1)),
        Status::Halted(reason) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "halted",
                format!("this node stopped applying: {reason}"),
            );
            e.body.halt_reason = Some(reason.to_string());
            Err(e)
        }
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            status_name(other).0,
            format!("this node is {}", status_name(other).0),
        )
        .retry_after(1)),
    }
}
