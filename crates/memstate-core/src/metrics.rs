//! The figures an engine records about itself through the `metrics`
//! facade, so an application that embeds the engine gets them with whatever
//! exporter it installed (`memstate-server` exports them in Prometheus text
//! format at `/metrics`). Without a recorder installed, recording costs
//! next to nothing. Install the recorder before starting an engine: an engine
//! takes its metric handles when it starts.
//!
//! Every metric carries a `node` label (the engine's node id).
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `memstate_commands_total{outcome}` | counter | commands executed through this node: `applied`, `rejected` (domain error), `failed` (engine error) |
//! | `memstate_command_latency_seconds` | histogram | `execute`: from the call to the answer |
//! | `memstate_applied_index` | gauge | envelopes applied (the cross-node token) |
//! | `memstate_commands_applied_total` | counter | commands applied, from any node |
//! | `memstate_behind` | gauge | 1 while the node has not applied the last tail it learned |
//! | `memstate_caught_up_age_seconds` | gauge | how long ago the node last knew it had applied everything the stream held (its lag, in time) |
//! | `memstate_snapshot_age_seconds` | gauge | age of the newest snapshot this node wrote |
//! | `memstate_snapshot_index` | gauge | its applied index |
//! | `memstate_leader_epoch` | gauge | the leadership epoch |
//! | `memstate_is_leader` | gauge | 1 when this node leads |
//! | `memstate_commands_fenced_total` | counter | commands refused at apply time for not coming from the current leader |
//! | `memstate_bad_records_skipped_total` | counter | records skipped under the skip bad-record policy |
//! | `memstate_duplicates_dropped_total` | counter | duplicate deliveries dropped |
//! | `memstate_halted` | gauge | 1 once the node stopped applying |
//! | `memstate_appends_in_flight_limit` | gauge | appends the writer allows in flight now (its window, sized to the stream's latency) |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{Counter, Gauge, Histogram, Unit};

use crate::engine::{Executed, Lag, Stats, Status};
use crate::envelope::NodeId;
use crate::error::ExecuteError;

/// Describes every metric to the installed recorder (units and help texts).
/// Call it once after installing a recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "memstate_commands_total",
        "Commands executed through this node, by outcome (applied, rejected, failed)"
    );
    describe_histogram!(
        "memstate_command_latency_seconds",
        Unit::Seconds,
        "Time from execute to its answer on this node"
    );
    describe_gauge!("memstate_applied_index", "Envelopes applied by this node");
    describe_counter!(
        "memstate_commands_applied_total",
        "Commands applied by this node, from any node"
    );
    describe_gauge!(
        "memstate_behind",
        "1 while this node has not applied the last tail of the stream it learned"
    );
    describe_gauge!(
        "memstate_caught_up_age_seconds",
        Unit::Seconds,
        "How long ago this node last knew it had applied everything the stream held"
    );
    describe_gauge!(
        "memstate_snapshot_age_seconds",
        Unit::Seconds,
        "Age of the newest snapshot this node wrote"
    );
    describe_gauge!(
        "memstate_snapshot_index",
        "Applied index of the newest snapshot this node wrote"
    );
    describe_gauge!("memstate_leader_epoch", "The leadership epoch");
    describe_gauge!("memstate_is_leader", "1 when this node is the leader");
    describe_counter!(
        "memstate_commands_fenced_total",
        "Commands refused at apply time for not coming from the current leader"
    );
    describe_counter!(
        "memstate_bad_records_skipped_total",
        "Records skipped under the skip bad-record policy"
    );
    describe_counter!(
        "memstate_duplicates_dropped_total",
        "Duplicate deliveries dropped"
    );
    describe_gauge!("memstate_halted", "1 once this node stopped applying");
    describe_gauge!(
        "memstate_appends_in_flight_limit",
        "Appends the writer allows in flight now (its window, sized to the stream's latency)"
    );
}

/// The metric handles of one engine (labelled with its node id).
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    applied: Counter,
    rejected: Counter,
    failed: Counter,
    latency: Histogram,
    applied_index: Gauge,
    commands_applied: Counter,
    behind: Gauge,
    caught_up_age: Gauge,
    snapshot_age: Gauge,
    snapshot_index: Gauge,
    epoch: Gauge,
    is_leader: Gauge,
    fenced: Counter,
    bad_records: Counter,
    duplicates: Counter,
    halted: Gauge,
    in_flight_limit: Gauge,
}

impl EngineMetrics {
    /// Registers the handles of `node` with the installed recorder.
    pub fn new(node: &NodeId) -> Self {
        let node = node.to_string();
        let outcome = |o: &'static str| ::metrics::counter!("memstate_commands_total", "node" => node.clone(), "outcome" => o);
        Self {
            applied: outcome("applied"),
            rejected: outcome("rejected"),
            failed: outcome("failed"),
            latency: ::metrics::histogram!("memstate_command_latency_seconds", "node" => node.clone()),
            applied_index: ::metrics::gauge!("memstate_applied_index", "node" => node.clone()),
            commands_applied: ::metrics::counter!("memstate_commands_applied_total", "node" => node.clone()),
            behind: ::metrics::gauge!("memstate_behind", "node" => node.clone()),
            caught_up_age: ::metrics::gauge!("memstate_caught_up_age_seconds", "node" => node.clone()),
            snapshot_age: ::metrics::gauge!("memstate_snapshot_age_seconds", "node" => node.clone()),
            snapshot_index: ::metrics::gauge!("memstate_snapshot_index", "node" => node.clone()),
            epoch: ::metrics::gauge!("memstate_leader_epoch", "node" => node.clone()),
            is_leader: ::metrics::gauge!("memstate_is_leader", "node" => node.clone()),
            fenced: ::metrics::counter!("memstate_commands_fenced_total", "node" => node.clone()),
            bad_records: ::metrics::counter!("memstate_bad_records_skipped_total", "node" => node.clone()),
            duplicates: ::metrics::counter!("memstate_duplicates_dropped_total", "node" => node.clone()),
            halted: ::metrics::gauge!("memstate_halted", "node" => node.clone()),
            in_flight_limit: ::metrics::gauge!("memstate_appends_in_flight_limit", "node" => node),
        }
    }

    /// Records one `execute`: its outcome and how long it took.
    pub fn executed<T, E>(&self, took: Duration, result: &Result<Executed<T>, ExecuteError<E>>) {
        self.latency.record(took.as_secs_f64());
        match result {
            Ok(_) => self.applied.increment(1),
            Err(ExecuteError::Rejected { .. }) => self.rejected.increment(1),
            Err(_) => self.failed.increment(1),
        }
    }

    /// Sets the gauges and totals from a moment's view of the engine.
    pub fn observe(&self, stats: &Stats) {
        self.applied_index.set(stats.applied_index as f64);
        self.commands_applied.absolute(stats.commands_applied);
        self.behind
            .set(if stats.lag == Lag::Behind { 1.0 } else { 0.0 });
        if let Some(age) = stats.caught_up_age {
            self.caught_up_age.set(age.as_secs_f64());
        }
        if let Some(last) = &stats.snapshots.last_taken {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            self.snapshot_age
                .set(now_ms.saturating_sub(last.taken_at_ms) as f64 / 1000.0);
            self.snapshot_index.set(last.applied_index as f64);
        }
        self.epoch.set(stats.leadership.epoch as f64);
        self.is_leader.set(if stats.is_leader { 1.0 } else { 0.0 });
        self.fenced.absolute(stats.commands_fenced);
        self.bad_records.absolute(stats.bad_records_skipped);
        self.duplicates.absolute(stats.duplicates_dropped);
        self.in_flight_limit
            .set(stats.appends_in_flight_limit as f64);
        self.halted
            .set(if matches!(stats.status, Status::Halted(_)) {
                1.0
            } else {
                0.0
            });
    }
}
