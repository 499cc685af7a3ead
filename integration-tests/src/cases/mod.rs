//! The cases: each an async function over a [`Backend`]; each is one test in
//! every adapter's output.

mod engine;
mod leadership;
mod stream;

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
    /// Which rule of the contract it checks.
    pub rule: &'static str,
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
}

macro_rules! case {
    ($module:ident :: $name:ident, $rule:expr) => {
        Case {
            name: stringify!($name),
            rule: $rule,
            run: |b| Box::pin($module::$name(b)),
        }
    };
}

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    vec![
        case!(
            stream::append_returns_increasing_cursors,
            "§6 durable appends, cursor order"
        ),
        case!(
            stream::subscribe_from_the_start_sees_every_record_in_order,
            "§6 gap-free subscriptions"
        ),
        case!(
            stream::subscribe_after_a_cursor_sees_only_the_suffix,
            "§6 resume after a cursor"
        ),
        case!(
            stream::a_subscription_follows_the_tail,
            "§6 follow the tail"
        ),
        case!(
            stream::several_subscribers_see_the_same_sequence,
            "§6 several subscribers"
        ),
        case!(
            stream::records_of_one_append_land_contiguously,
            "§6 contiguous appends"
        ),
        case!(
            stream::concurrent_writers_are_seen_in_one_interleaving,
            "§6 several writers, one order"
        ),
        case!(stream::a_reopened_stream_returns_everything, "§6 restart"),
        case!(stream::head_agrees_with_the_last_append, "§6 exact head"),
        case!(
            stream::an_oversized_record_is_refused_before_any_io,
            "§6 limits before I/O"
        ),
        case!(
            stream::a_record_a_reader_has_seen_survives_a_reopen,
            "§6 readers see only durable records"
        ),
        case!(
            stream::payload_bytes_come_back_unchanged,
            "§6 opaque records"
        ),
        case!(stream::an_invalid_cursor_is_refused, "§6 cursors"),
        case!(
            engine::engines_converge_under_concurrent_writes,
            "§3 any node writes, every node converges"
        ),
        case!(
            engine::engine_restart_replays_everything,
            "§3 restart replays"
        ),
        case!(
            engine::the_same_envelope_appended_twice_is_applied_once,
            "§3 de-duplication"
        ),
        case!(
            engine::an_oversized_command_gets_a_clear_error_and_nothing_is_written,
            "§3 limits"
        ),
        case!(
            engine::garbage_in_the_stream_is_skipped_alike_by_every_node,
            "§3 bad records"
        ),
        case!(
            engine::linearizable_read_sees_a_write_made_on_another_node,
            "§4 linearizable reads"
        ),
        case!(
            engine::exactly_one_leader_wins_each_epoch,
            "§4 leader election through the stream"
        ),
        case!(
            engine::linearizable_reads_see_every_write_completed_before_them,
            "§4 linearizable reads under concurrent writers"
        ),
        case!(
            leadership::nodes_started_together_elect_exactly_one_leader,
            "§4 leader election: one winner per epoch"
        ),
        case!(
            leadership::a_deposed_leaders_in_flight_commands_are_fenced_on_every_node,
            "§4 fencing at apply time"
        ),
        case!(
            leadership::a_follower_takes_over_when_the_leader_goes_silent,
            "§4 failover"
        ),
        case!(
            engine::restart_from_a_snapshot_replays_only_the_tail,
            "§5 snapshots resume the subscription after their cursor"
        ),
        case!(engine::smoke_ten_thousand_commands, "§3 smoke"),
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
