//! The cases: each an async function over a [`Backend`]; each is one test in
//! every adapter's output.

mod engine;
mod events;
mod leadership;
mod stream;
mod upgrades;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use memstate_core::{Record, Subscription};

use crate::fixture::{Backend, BoxError};

/// How a case ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The backend cannot support what the case checks; the reason says why.
    Ignored(String),
}

/// A case's result: `Err` is a failure.
pub type CaseResult = Result<Outcome, BoxError>;

type CaseFn = fn(Arc<dyn Backend>) -> Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name: the behaviour it checks.
    pub name: &'static str,
    /// The numbered rules of the `Stream` contract (`memstate_core::stream`)
    /// it checks or, for engine cases, the rules the engine relies on there.
    pub rules: &'static [u8],
    /// What it checks, in a few words.
    pub checks: &'static str,
    run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

impl Case {
    /// Runs the case against `backend`.
    pub fn run(
        &self,
        backend: Arc<dyn Backend>,
    ) -> Pin<Box<dyn Future<Output = CaseResult> + Send>> {
        (self.run)(backend)
    }

    /// The citation for reports: `"Stream rules 4, 8: restart replays"`.
    pub fn cites(&self) -> String {
        let numbers: Vec<String> = self.rules.iter().map(u8::to_string).collect();
        let word = if self.rules.len() == 1 {
            "rule"
        } else {
            "rules"
        };
        format!("Stream {word} {}: {}", numbers.join(", "), self.checks)
    }
}

macro_rules! case {
    ($module:ident :: $name:ident, $rules:expr, $checks:expr) => {
        Case {
            name: stringify!($name),
            rules: &$rules,
            checks: $checks,
            run: |b| Box::pin($module::$name(b)),
        }
    };
}

/// Every case, in a stable order. Stream cases check one rule each; engine
/// cases check the engine's behaviour over the rules it relies on.
pub fn all() -> Vec<Case> {
    vec![
        case!(
            stream::append_returns_increasing_cursors,
            [1, 9],
            "appends return cursors in stream order"
        ),
        case!(
            stream::concurrent_appends_through_one_handle_land_once_each,
            [1, 4],
            "appends in flight on one handle land once, at the cursors returned"
        ),
        case!(
            stream::records_of_one_append_land_contiguously,
            [2],
            "a multi-record append stays contiguous among writers"
        ),
        case!(
            stream::a_multi_record_append_is_refused_unless_declared,
            [2],
            "several records are refused before I/O where not declared"
        ),
        case!(
            stream::subscribe_from_the_start_sees_every_record_in_order,
            [4],
            "gap-free subscription from the start"
        ),
        case!(
            stream::subscribe_after_a_cursor_sees_only_the_suffix,
            [4],
            "resume after a cursor"
        ),
        case!(
            stream::a_subscription_follows_the_tail,
            [4],
            "follow the tail"
        ),
        case!(
            stream::several_subscribers_see_the_same_sequence,
            [4],
            "several subscribers"
        ),
        case!(
            stream::concurrent_writers_are_seen_in_one_interleaving,
            [4],
            "several writers, one order"
        ),
        case!(
            stream::a_record_a_reader_has_seen_survives_a_reopen,
            [5],
            "readers see only durable records"
        ),
        case!(stream::head_agrees_with_the_last_append, [6], "exact head"),
        case!(
            stream::an_oversized_record_is_refused_before_any_io,
            [7],
            "limits before I/O, and the limit is real"
        ),
        case!(stream::a_reopened_stream_returns_everything, [8], "restart"),
        case!(
            stream::an_invalid_cursor_is_refused,
            [9],
            "foreign cursors refused"
        ),
        case!(
            stream::payload_bytes_come_back_unchanged,
            [10],
            "opaque payloads"
        ),
        case!(
            stream::optimistic_append_succeeds_only_at_the_expected_end,
            [11],
            "optimistic appends where declared"
        ),
        case!(
            engine::engines_converge_under_concurrent_writes,
            [4],
            "any node writes, every node converges"
        ),
        case!(
            engine::engine_restart_replays_everything,
            [8],
            "an engine restart replays the log"
        ),
        case!(
            engine::the_same_envelope_appended_twice_is_applied_once,
            [3],
            "ambiguous appends retried: de-duplication"
        ),
        case!(
            engine::an_oversized_command_gets_a_clear_error_and_nothing_is_written,
            [7],
            "an oversized command is refused"
        ),
        case!(
            engine::garbage_in_the_stream_is_skipped_alike_by_every_node,
            [4, 10],
            "bad records skipped alike"
        ),
        case!(
            engine::linearizable_read_sees_a_write_made_on_another_node,
            [4, 6],
            "linearizable reads"
        ),
        case!(
            engine::exactly_one_leader_wins_each_epoch,
            [4],
            "leader election through the stream"
        ),
        case!(
            engine::linearizable_reads_see_every_write_completed_before_them,
            [4, 6],
            "linearizable reads under concurrent writers"
        ),
        case!(
            leadership::nodes_started_together_elect_exactly_one_leader,
            [4],
            "leader election: one winner per epoch"
        ),
        case!(
            leadership::a_deposed_leaders_in_flight_commands_are_fenced_on_every_node,
            [4],
            "fencing at apply time"
        ),
        case!(
            leadership::a_follower_takes_over_when_the_leader_goes_silent,
            [4],
            "failover"
        ),
        case!(
            engine::restart_from_a_snapshot_replays_only_the_tail,
            [4, 9],
            "a snapshot resumes the subscription after its cursor"
        ),
        case!(
            events::every_node_yields_the_same_events_under_concurrent_writers,
            [4],
            "events are derived alike on every node"
        ),
        case!(
            events::a_restarted_node_resumes_events_by_index_without_gap_or_repeat,
            [4, 8, 9],
            "events resume by applied index across a restart from a snapshot"
        ),
        case!(
            events::failed_and_fenced_commands_emit_nothing,
            [4],
            "events only from commands that took effect"
        ),
        case!(
            events::state_as_of_an_index_equals_a_node_that_stopped_there,
            [4, 9],
            "time travel from the nearest snapshot at or before the point"
        ),
        case!(
            upgrades::a_rolling_upgrade_through_three_versions_keeps_every_node_equal,
            [4, 8],
            "a rolling model upgrade v1 -> v2 -> v3 through the stream"
        ),
        case!(
            engine::smoke_ten_thousand_commands,
            [1, 4],
            "ten thousand commands through the engine"
        ),
    ]
}

/// The default bound on one case.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Reads `n` records from `sub`, failing after `within`.
pub(crate) async fn take(
    sub: &mut Box<dyn Subscription>,
    n: usize,
    within: Duration,
) -> Result<Vec<Record>, BoxError> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => {
                return Err(format!(
                    "only {} of {n} records arrived within {within:?}",
                    out.len()
                )
                .into());
            }
            Ok(Ok(Some(r))) => out.push(r),
            Ok(Ok(None)) => {
                return Err(
                    format!("subscription ended after {} of {n} records", out.len()).into(),
                );
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "subscription failed after {} of {n} records: {e}",
                    out.len()
                )
                .into());
            }
        }
    }
    Ok(out)
}

/// Fails with `message` unless `condition` holds.
pub(crate) fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), BoxError> {
    if condition {
        Ok(())
    } else {
        Err(message().into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    /// The contract's text, where the numbered rules are written.
    const CONTRACT: &str = include_str!("../../../crates/memstate-core/src/stream.rs");

    fn numbered_rules() -> HashSet<u8> {
        CONTRACT
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("//! ")?;
                let (number, text) = rest.split_once(". **")?;
                (!text.is_empty()).then(|| number.trim().parse().ok())?
            })
            .collect()
    }

    #[test]
    fn every_case_cites_rules_the_contract_numbers() {
        let rules = numbered_rules();
        assert!(rules.len() >= 10, "found only rules {rules:?}");
        for case in super::all() {
            assert!(!case.rules.is_empty(), "{} cites no rule", case.name);
            for rule in case.rules {
                assert!(
                    rules.contains(rule),
                    "{} cites rule {rule}, which the Stream docs do not number",
                    case.name
                );
            }
        }
    }

    #[test]
    fn every_numbered_rule_has_a_case() {
        let cited: HashSet<u8> = super::all()
            .iter()
            .flat_map(|c| c.rules.iter().copied())
            .collect();
        for rule in numbered_rules() {
            assert!(cited.contains(&rule), "no case checks rule {rule}");
        }
    }

    #[test]
    fn case_names_are_unique() {
        let all = super::all();
        let names: HashSet<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), all.len());
    }
}
