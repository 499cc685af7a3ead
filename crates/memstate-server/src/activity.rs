//! What the console charts: per-second samples of the applied index and of
//! the commands this node served, and its latest commands.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds of history kept for the console's chart.
pub(crate) const SECONDS_KEPT: usize = 300;
/// Latest commands kept for the console.
pub(crate) const RECENT_KEPT: usize = 50;

/// One second of this node's activity.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Second {
    /// End of the second, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node's applied index at that moment (its rise is the cluster's throughput).
    pub applied_index: u64,
    /// Commands this node served over HTTP in that second.
    pub commands: u64,
    /// Of those, how many failed (rejections and engine errors).
    pub failures: u64,
    /// Median latency of those commands, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of those commands, milliseconds.
    pub p99_ms: Option<f64>,
}

/// A command this node served.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecentCommand {
    /// When it finished, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Its name (the variant), or `command` when posted whole.
    pub name: String,
    /// Its command id.
    pub command_id: String,
    /// Its applied index, when it reached the log.
    pub index: Option<u64>,
    /// `applied`, `rejected`, `already_applied` or `failed`.
    pub outcome: String,
    /// Milliseconds from receipt to answer.
    pub latency_ms: f64,
}

#[derive(Debug, Default)]
struct Inner {
    seconds: VecDeque<Second>,
    recent: VecDeque<RecentCommand>,
    latencies_ms: Vec<f64>,
    failures: u64,
}

/// The console's memory of this node's recent past.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    inner: Mutex<Inner>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

impl Activity {
    pub(crate) fn command(&self, command: RecentCommand, failed: bool) {
        let mut inner = self.inner.lock();
        inner.latencies_ms.push(command.latency_ms);
        if failed {
            inner.failures += 1;
        }
        if inner.recent.len() == RECENT_KEPT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(command);
    }

    /// Closes the current second.
    pub(crate) fn tick(&self, applied_index: u64) {
        let mut inner = self.inner.lock();
        let mut latencies = std::mem::take(&mut inner.latencies_ms);
        latencies.sort_by(f64::total_cmp);
        let second = Second {
            at_ms: now_ms(),
            applied_index,
            commands: latencies.len() as u64,
            failures: std::mem::take(&mut inner.failures),
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
        };
        if inner.seconds.len() == SECONDS_KEPT {
            inner.seconds.pop_front();
        }
        inner.seconds.push_back(second);
    }

    pub(crate) fn seconds(&self) -> Vec<Second> {
        self.inner.lock().seconds.iter().cloned().collect()
    }

    pub(crate) fn recent(&self) -> Vec<RecentCommand> {
        self.inner.lock().recent.iter().rev().cloned().collect()
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(latency_ms: f64) -> RecentCommand {
        RecentCommand {
            at_ms: 0,
            name: "put".into(),
            command_id: "x".into(),
            index: Some(1),
            outcome: "applied".into(),
            latency_ms,
        }
    }

    #[test]
    fn a_second_summarises_its_commands_then_starts_afresh() {
        let a = Activity::default();
        for l in 1..=100 {
            a.command(served(l as f64), l == 100);
        }
        a.tick(7);
        a.tick(9);
        let s = a.seconds();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].commands, s[0].failures, s[0].applied_index),
            (100, 1, 7)
        );
        assert_eq!((s[0].p50_ms, s[0].p99_ms), (Some(50.0), Some(99.0)));
        assert_eq!(
            (s[1].commands, s[1].p99_ms, s[1].applied_index),
            (0, None, 9)
        );
    }

    #[test]
    fn history_is_bounded() {
        let a = Activity::default();
        for i in 0..(SECONDS_KEPT + 5) {
            a.tick(i as u64);
        }
        for _ in 0..(RECENT_KEPT + 5) {
            a.command(served(1.0), false);
        }
        assert_eq!(a.seconds().len(), SECONDS_KEPT);
        assert_eq!(a.seconds()[0].applied_index, 5);
        assert_eq!(a.recent().len(), RECENT_KEPT);
    }
}
