//! The load driver: N closed-loop clients, each waiting for its operation
//! before issuing the next, for a time window or a number of operations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::Latency;

/// How long one measurement point runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Budget {
    /// Run `warmup` unmeasured, then count what completes within `measure`.
    Time { warmup: Duration, measure: Duration },
    /// Run exactly this many operations (spread over the clients), all measured.
    Count(u64),
}

/// What one point measured: operations completed in the window and their latencies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// Concurrent clients.
    pub clients: usize,
    /// Operations completed in the measured window.
    pub ops: u64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// `ops / seconds`.
    pub per_sec: f64,
    /// Latency percentiles in milliseconds (absent when nothing completed).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// CPU time of the whole benchmark process (user + system, every
    /// thread: clients, engine, adapter and client-library threads) over the
    /// measured window, divided by the operations in it, in microseconds.
    /// Processes outside it (a broker, an emulator) are not counted. Absent
    /// where `/proc/self/stat` cannot be read.
    pub cpu_us_per_op: Option<f64>,
}

impl Measurement {
    /// Summarises `latencies` of `ops` operations over `window`.
    pub(crate) fn of(clients: usize, window: Duration, latencies: &mut [Duration]) -> Self {
        let ops = latencies.len() as u64;
        let seconds = window.as_secs_f64();
        let summary = Latency::of(latencies);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            clients,
            ops,
            seconds,
            per_sec: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            p50_ms: summary.map(|l| ms(l.p50)),
            p99_ms: summary.map(|l| ms(l.p99)),
            p999_ms: summary.map(|l| ms(l.p999)),
            max_ms: summary.map(|l| ms(l.max)),
            cpu_us_per_op: None,
        }
    }

    /// Sets [`Measurement::cpu_us_per_op`] from the CPU time `cpu` spent over
    /// the measured window.
    pub(crate) fn with_cpu(mut self, cpu: Option<Duration>) -> Self {
        self.cpu_us_per_op = cpu
            .filter(|_| self.ops > 0)
            .map(|c| c.as_secs_f64() * 1e6 / self.ops as f64);
        self
    }
}

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on
/// every Linux architecture's user-space ABI).
const USER_HZ: f64 = 100.0;

/// CPU time used so far by this process, every thread, user plus system:
/// the counters `getrusage(RUSAGE_SELF)` reports, read from
/// `/proc/self/stat` (the workspace forbids the `unsafe` a libc call needs),
/// at clock-tick resolution (10 ms; a 3 s window on 2 cores holds up to 600
/// ticks). `None` where the file is missing or unreadable.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_of_stat(&stat)
}

/// `utime + stime` of a `/proc/<pid>/stat` line.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count
    // fields after its closing parenthesis, where field 3 is the first.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// CPU time between two samples.
fn cpu_between(start: Option<Duration>, end: Option<Duration>) -> Option<Duration> {
    start.zip(end).map(|(a, b)| b.saturating_sub(a))
}

/// Runs `clients` concurrent closed loops of `op(client, seq)`.
///
/// With [`Budget::Time`], an operation is counted (and its latency kept) when
/// it completes inside the measured window, wherever it started: the window's
/// throughput is then unbiased even when operations are slow compared with it.
///
/// # Errors
///
/// The first error an operation returns (the other clients stop at their
/// next operation).
pub(crate) async fn closed_loop<F, Fut>(
    clients: usize,
    budget: Budget,
    op: F,
) -> Result<Measurement, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let clients = clients.max(1);
    let op = Arc::new(op);
    let started = Instant::now();
    let (window_start, window_end) = match budget {
        Budget::Time { warmup, measure } => (started + warmup, Some(started + warmup + measure)),
        Budget::Count(_) => (started, None),
    };
    // CPU over the measured window: sampled by a timer task at the window's
    // edges (it may wake a little late on a busy runtime), or around the
    // whole run for a count budget.
    let cpu_sampler = window_end.map(|end| {
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let start = process_cpu();
            tokio::time::sleep_until(end.into()).await;
            cpu_between(start, process_cpu())
        })
    });
    let cpu_at_start = process_cpu();
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = Arc::clone(&op);
        let failed = Arc::clone(&failed);
        let quota = match budget {
            Budget::Count(n) => Some(share(n, clients, client)),
            Budget::Time { .. } => None,
        };
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if quota.is_some_and(|q| seq >= q) {
                    break;
                }
                let began = Instant::now();
                if window_end.is_some_and(|end| began >= end) {
                    break;
                }
                if let Err(e) = op(client, seq).await {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
                seq += 1;
                let done = Instant::now();
                if done >= window_start && window_end.is_none_or(|end| done <= end) {
                    latencies.push(done - began);
                }
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(latencies)) => all.extend(latencies),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("a client task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let window = match window_end {
        Some(end) => end - window_start,
        None => started.elapsed(),
    };
    let cpu = match cpu_sampler {
        Some(sampler) => sampler.await.ok().flatten(),
        None => cpu_between(cpu_at_start, process_cpu()),
    };
    Ok(Measurement::of(clients, window, &mut all).with_cpu(cpu))
}

/// Client `client`'s share of `total` operations among `clients`.
pub(crate) fn share(total: u64, clients: usize, client: usize) -> u64 {
    let clients = clients.max(1) as u64;
    let client = client as u64;
    total / clients + u64::from(client < total % clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, clients) in [(10, 3), (0, 4), (64, 64), (5, 16)] {
            let sum: u64 = (0..clients).map(|c| share(total, clients, c)).sum();
            assert_eq!(sum, total, "{total} over {clients}");
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn measurement_reports_rate_and_percentiles_in_milliseconds() {
        let mut latencies: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let m = Measurement::of(4, Duration::from_secs(2), &mut latencies);
        assert_eq!(m.ops, 1000);
        assert!((m.per_sec - 500.0).abs() < 1e-9);
        let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);
        assert!(close(m.p50_ms, 0.5), "{:?}", m.p50_ms);
        assert!(close(m.p999_ms, 0.999), "{:?}", m.p999_ms);
        assert!(close(m.max_ms, 1.0), "{:?}", m.max_ms);
        let empty = Measurement::of(1, Duration::from_secs(1), &mut []);
        assert_eq!((empty.ops, empty.p50_ms), (0, None));
    }

    #[test]
    fn cpu_time_is_read_from_a_proc_stat_line() {
        // pid (comm with a space) state ppid ... utime=250 stime=50 ticks.
        let line = "4242 (memstate x) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_of_stat(line), Some(Duration::from_secs(3)));
        assert_eq!(cpu_of_stat("garbage"), None);
        let m = Measurement {
            ops: 1000,
            ..Measurement::default()
        }
        .with_cpu(Some(Duration::from_millis(50)));
        assert_eq!(m.cpu_us_per_op, Some(50.0));
        let none = Measurement::default().with_cpu(Some(Duration::from_millis(50)));
        assert_eq!(none.cpu_us_per_op, None, "no operations, no figure");
    }

    #[tokio::test]
    async fn count_budget_runs_exactly_that_many_operations() {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::clone(&counter);
        let m = closed_loop(3, Budget::Count(10), move |_, _| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(m.ops, 10);
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn an_operation_error_is_returned() {
        let err = closed_loop(2, Budget::Count(4), |_, seq| async move {
            if seq == 1 {
                Err("boom".to_owned())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err, "boom");
    }
}
