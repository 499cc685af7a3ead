//! The results: what the JSON holds, where it goes, and the printed table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::events::EventCost;
use super::load::Measurement;
use super::memory::Memory;
use super::query::Queries;
use super::replay::Replay;
use super::tiers::TierPoint;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub started_at: String,
    pub finished_at: String,
    pub command_line: String,
    pub machine: Machine,
    pub plan: serde_json::Value,
    pub memory: Section<Memory>,
    pub backends: Vec<BackendRun>,
    pub sqlite: Section<Vec<TierPoint>>,
    pub replay: Section<Vec<Replay>>,
    pub query: Section<Queries>,
    pub events: Section<EventCost>,
    /// Tiers beside the built-in parts (see `super::Extra`).
    pub extras: Vec<super::Extra>,
    /// The targets of issue 14, judged on this run's figures.
    pub targets: Vec<super::targets::Target>,
}

/// A part of the run: its result, or why there is none.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Section<T> {
    Run { result: T },
    NotRun { reason: String },
    Failed { error: String },
}

impl<T> Section<T> {
    pub(crate) fn from_result(result: Result<T, String>) -> Self {
        match result {
            Ok(result) => Self::Run { result },
            Err(error) => Self::Failed { error },
        }
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// One backend's tiers at each concurrency.
#[derive(Debug, Serialize)]
pub(crate) struct BackendRun {
    pub backend: &'static str,
    #[serde(flatten)]
    pub outcome: Section<BackendFigures>,
}

/// The figures of a backend that ran.
#[derive(Debug, Serialize)]
pub(crate) struct BackendFigures {
    pub description: String,
    pub points: Vec<Point>,
}

/// The tiers at one concurrency.
#[derive(Debug, Serialize)]
pub(crate) struct Point {
    pub clients: usize,
    pub memstate: TierPoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<TierPoint>,
    pub raw: TierPoint,
    /// memstate commands/s over raw operations/s.
    pub ratio: f64,
    /// adapter records/s over raw operations/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_ratio: Option<f64>,
}

fn ratio(a: &Measurement, b: &Measurement) -> f64 {
    if b.per_sec > 0.0 {
        a.per_sec / b.per_sec
    } else {
        0.0
    }
}

impl BackendRun {
    /// Pairs the tiers' points by position (they ran the same concurrencies).
    pub(crate) fn new(
        backend: &'static str,
        description: String,
        memstate: Vec<TierPoint>,
        adapter: Option<Vec<TierPoint>>,
        raw: Vec<TierPoint>,
    ) -> Self {
        let mut adapter = adapter.map(Vec::into_iter);
        let points = memstate
            .into_iter()
            .zip(raw)
            .map(|(memstate, raw)| {
                let adapter = adapter.as_mut().and_then(Iterator::next);
                Point {
                    clients: memstate.measured.clients,
                    ratio: ratio(&memstate.measured, &raw.measured),
                    adapter_ratio: adapter.as_ref().map(|a| ratio(&a.measured, &raw.measured)),
                    memstate,
                    adapter,
                    raw,
                }
            })
            .collect();
        Self {
            backend,
            outcome: Section::Run {
                result: BackendFigures {
                    description,
                    points,
                },
            },
        }
    }

    pub(crate) fn not_run(backend: &'static str, reason: impl Into<String>) -> Self {
        Self {
            backend,
            outcome: Section::NotRun {
                reason: reason.into(),
            },
        }
    }

    pub(crate) fn failed(backend: &'static str, error: String) -> Self {
        Self {
            backend,
            outcome: Section::Failed { error },
        }
    }
}

/// The machine and build the figures come from.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub cpu: Option<String>,
    pub cores: usize,
    pub memory_kib: Option<u64>,
    pub kernel: Option<String>,
    pub rustc: Option<String>,
    pub git_commit: Option<String>,
    pub build: &'static str,
}

impl Machine {
    pub(crate) fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpu: proc_field(&cpuinfo, "model name"),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib: proc_field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            rustc: command_output("rustc", &["--version"]),
            git_commit: command_output("git", &["rev-parse", "--short", "HEAD"]),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// The value of the first `key: value` line of a /proc text.
pub(crate) fn proc_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, as [`utc`].
pub(crate) fn utc_now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// Writes the report as `<dir>/<started_at>.json` and `<dir>/latest.json`;
/// returns the first path.
///
/// # Errors
///
/// I/O failures, as text.
pub(crate) fn write(report: &Report, dir: &Path) -> Result<PathBuf, String> {
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let stamp: String = report
        .started_at
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let path = dir.join(format!("{stamp}.json"));
    for p in [&path, &dir.join("latest.json")] {
        std::fs::write(p, &json).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(path)
}

pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

pub(crate) fn cells(m: &Measurement) -> String {
    format!(
        "{:>9.0} {:>7} {:>7} {:>7} {:>6}",
        m.per_sec,
        opt(m.p50_ms),
        opt(m.p99_ms),
        opt(m.p999_ms),
        m.cpu_us_per_op
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}"))
    )
}

/// The printed summary.
pub(crate) fn table(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "\nmemstate bench, {} ({} build), {} cores, {}",
        report.started_at,
        m.build,
        m.cores,
        m.cpu.as_deref().unwrap_or("unknown CPU")
    );
    let _ = writeln!(
        out,
        "throughput per second; latency p50 / p99 / p999 in ms; CPU µs per operation (whole process); ratio = memstate / raw"
    );
    for run in &report.backends {
        match &run.outcome {
            Section::Run { result } => {
                let _ = writeln!(out, "\n{} ({})", run.backend, result.description);
                let _ = writeln!(
                    out,
                    "{:>7} | {:^40} | {:^40} | {:^40} | {:>5} | {:>10}",
                    "clients",
                    "memstate cmd/s  p50 p99 p999 cpu",
                    "adapter rec/s  p50 p99 p999 cpu",
                    "raw ops/s  p50 p99 p999 cpu",
                    "ratio",
                    "cmd/app/win"
                );
                for p in &result.points {
                    let adapter = p
                        .adapter
                        .as_ref()
                        .map_or_else(|| format!("{:>40}", "-"), |a| cells(&a.measured));
                    let packing = p.memstate.appends.as_ref().map_or_else(
                        || "-".into(),
                        |a| match a.window {
                            Some(w) => format!("{:.1}/w{w}", a.commands_per_append),
                            None => format!("{:.1}", a.commands_per_append),
                        },
                    );
                    let _ = writeln!(
                        out,
                        "{:>7} | {} | {} | {} | {:>5.2} | {:>10}",
                        p.clients,
                        cells(&p.memstate.measured),
                        adapter,
                        cells(&p.raw.measured),
                        p.ratio,
                        packing
                    );
                }
            }
            Section::NotRun { reason } => {
                let _ = writeln!(out, "\n{}: not run ({reason})", run.backend);
            }
            Section::Failed { error } => {
                let _ = writeln!(out, "\n{}: FAILED: {error}", run.backend);
            }
        }
    }
    match &report.sqlite {
        Section::Run { result } => {
            let _ = writeln!(
                out,
                "\nsqlite (WAL, synchronous=FULL, one connection per client)"
            );
            for p in result {
                let _ = writeln!(out, "{:>7} | {}", p.measured.clients, cells(&p.measured));
            }
        }
        other => section_line(&mut out, "sqlite", other),
    }
    match &report.replay {
        Section::Run { result } => {
            let _ = writeln!(out, "\nreplay (file journal)");
            for r in result {
                let _ = writeln!(
                    out,
                    "{:>7} {:>2} commands/record, {} commands in {} records ({} bytes): read {:.0} records/s; decode {:.0} commands/s; engine start {:.2} s = {:.0} records/s, {:.0} commands/s (engine/read {:.2}, engine/decode {:.2})",
                    r.codec,
                    r.commands_per_record,
                    r.commands,
                    r.records,
                    r.payload_bytes,
                    r.read.records_per_sec,
                    r.decode.commands_per_sec,
                    r.engine.seconds,
                    r.engine.records_per_sec,
                    r.engine.commands_per_sec,
                    r.ratio_to_read,
                    r.ratio_to_decode
                );
                let w = &r.window;
                let rss = w
                    .rss_growth_mib_per_million_commands
                    .map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} MiB"));
                let _ = writeln!(
                    out,
                    "   de-duplication window: {} ids, {:.1} MiB accounted ({:.1} MiB per million ids); resident growth per million commands: {rss}",
                    w.ids, w.accounted_mib, w.accounted_mib_per_million
                );
            }
        }
        other => section_line(&mut out, "replay", other),
    }
    match &report.query {
        Section::Run { result } => {
            let _ = writeln!(
                out,
                "\nqueries ({} query clients, {} writer clients, file journal); writes alone {:.0} commands/s",
                result.query_clients, result.writers, result.writes_alone.per_sec
            );
            for (name, mixed) in [
                ("local", &result.local),
                ("linearizable", &result.linearizable),
            ] {
                let _ = writeln!(
                    out,
                    "{name:>12}: {} queries/s ms | writes meanwhile {:.0} commands/s",
                    cells(&mixed.queries),
                    mixed.writes.per_sec
                );
            }
        }
        other => section_line(&mut out, "query", other),
    }
    match &report.events {
        Section::Run { result } => {
            let _ = writeln!(
                out,
                "\nevents ({} writer clients, file journal): {:.0} commands/s without subscribers, {:.0} with {} ({:.2}x; {} events received, {} gaps)",
                result.writers,
                result.without_subscribers.per_sec,
                result.with_subscribers.per_sec,
                result.subscribers,
                result.ratio,
                result.events_received,
                result.gaps
            );
        }
        other => section_line(&mut out, "events", other),
    }
    match &report.memory {
        Section::Run { result } => {
            let _ = writeln!(
                out,
                "\nmemory: {:.1} MiB per million accounts ({:.0} bytes per account, {} accounts built)",
                result.mib_per_million_accounts, result.bytes_per_account, result.accounts
            );
        }
        other => section_line(&mut out, "memory", other),
    }
    for extra in &report.extras {
        out.push_str(&extra.table);
    }
    out.push_str(&super::targets::table(&report.targets));
    out
}

fn section_line<T>(out: &mut String, name: &str, section: &Section<T>) {
    let _ = match section {
        Section::Run { .. } => Ok(()),
        Section::NotRun { reason } => writeln!(out, "\n{name}: not run ({reason})"),
        Section::Failed { error } => writeln!(out, "\n{name}: FAILED: {error}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn proc_fields_are_found_by_key() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\nMemTotal:       24683656 kB\n";
        assert_eq!(proc_field(text, "model name").as_deref(), Some("AMD EPYC"));
        assert_eq!(proc_field(text, "MemTotal").as_deref(), Some("24683656 kB"));
        assert_eq!(proc_field(text, "nope"), None);
    }

    #[test]
    fn backend_points_pair_tiers_and_compute_ratios() {
        let point = |clients, per_sec| {
            TierPoint::plain(Measurement {
                clients,
                per_sec,
                ..Measurement::default()
            })
        };
        let run = BackendRun::new(
            "file",
            "d".into(),
            vec![point(1, 50.0), point(16, 300.0)],
            Some(vec![point(1, 80.0), point(16, 400.0)]),
            vec![point(1, 100.0), point(16, 0.0)],
        );
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["status"], "run");
        assert_eq!(json["result"]["points"][0]["ratio"], 0.5);
        assert_eq!(json["result"]["points"][0]["adapter_ratio"], 0.8);
        assert_eq!(json["result"]["points"][1]["ratio"], 0.0);
        assert_eq!(json["result"]["points"][1]["memstate"]["per_sec"], 300.0);
        let not_run = serde_json::to_value(BackendRun::not_run("kafka", "unset")).unwrap();
        assert_eq!(not_run["status"], "not_run");
        assert_eq!(not_run["reason"], "unset");
    }
}
