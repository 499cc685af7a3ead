//! The targets of issue 14, computed from a run's own figures: met, missed,
//! or not measured (with the reason), each with the figures it was judged on.
//!
//! They are read from the report's JSON rather than from the parts' types, so
//! that a part which grows a field (a codec, a packing) is judged without
//! this module changing, and a part that did not run is reported as not
//! measured instead of failing the report.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// Whether a target was met in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

/// One target and how this run fared.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Target {
    /// What is measured, e.g. `kafka memstate/raw, 64 clients`.
    pub name: String,
    /// The bar, e.g. `>= 0.95`.
    pub requirement: String,
    pub verdict: Verdict,
    /// The figures it was judged on, or why it was not measured.
    pub figures: String,
}

impl Target {
    fn judged(name: String, requirement: String, met: bool, figures: String) -> Self {
        Self {
            name,
            requirement,
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            figures,
        }
    }

    fn not_measured(name: String, requirement: String, why: impl Into<String>) -> Self {
        Self {
            name,
            requirement,
            verdict: Verdict::NotMeasured,
            figures: why.into(),
        }
    }
}

/// The concurrencies each ratio target names.
const FILE_RATIO_CLIENTS: [u64; 4] = [16, 64, 256, 1024];
const KAFKA_RATIO_CLIENTS: [u64; 4] = [1, 16, 64, 256];

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// A part's result, or why there is none.
fn result(section: &Value) -> Result<&Value, String> {
    match section.get("status").and_then(Value::as_str) {
        Some("run") => section.get("result").ok_or_else(|| "no result".to_owned()),
        Some("not_run") => Err(format!(
            "not run: {}",
            section.get("reason").and_then(Value::as_str).unwrap_or("")
        )),
        Some("failed") => Err(format!(
            "failed: {}",
            section.get("error").and_then(Value::as_str).unwrap_or("")
        )),
        _ => Err("not in the report".to_owned()),
    }
}

/// The runs of `backend` in the report, each with a label (the backend's
/// name, and its description when it ran more than once) and its points or
/// why there are none.
fn backend_runs<'a>(
    report: &'a Value,
    backend: &str,
) -> Vec<(String, Result<&'a [Value], String>)> {
    let runs: Vec<&Value> = report["backends"]
        .as_array()
        .map(|a| a.iter().filter(|b| b["backend"] == backend).collect())
        .unwrap_or_default();
    let several = runs.len() > 1;
    runs.into_iter()
        .map(|run| {
            let label = if several {
                let description = run["result"]["description"].as_str().unwrap_or("");
                let variant = description.rsplit(", ").next().unwrap_or(description);
                format!("{backend} ({variant})")
            } else {
                backend.to_owned()
            };
            let points = result(run).and_then(|r| {
                r["points"]
                    .as_array()
                    .map(Vec::as_slice)
                    .ok_or_else(|| "no points".to_owned())
            });
            (label, points)
        })
        .collect()
}

fn point(points: &[Value], clients: u64) -> Option<&Value> {
    points
        .iter()
        .find(|p| p["clients"].as_u64() == Some(clients))
}

/// `memstate` (or `adapter`) over `raw` at each of `clients`.
fn ratio_targets(
    out: &mut Vec<Target>,
    report: &Value,
    backend: &str,
    tier: &str,
    clients: &[u64],
    bar: f64,
) {
    let runs = backend_runs(report, backend);
    if runs.is_empty() {
        for &c in clients {
            out.push(Target::not_measured(
                format!("{backend} {tier}/raw, {c} clients"),
                format!(">= {bar}"),
                format!("{backend} not selected"),
            ));
        }
    }
    for (label, points) in runs {
        for &c in clients {
            let name = format!("{label} {tier}/raw, {c} clients");
            let requirement = format!(">= {bar}");
            let target = match &points {
                Err(why) => Target::not_measured(name, requirement, why.clone()),
                Ok(points) => match point(points, c) {
                    None => Target::not_measured(
                        name,
                        requirement,
                        format!("{c} clients not in --clients"),
                    ),
                    Some(p) => match (f(p, &[tier, "per_sec"]), f(p, &["raw", "per_sec"])) {
                        (Some(t), Some(r)) if r > 0.0 => Target::judged(
                            name,
                            requirement,
                            t / r >= bar,
                            format!("{:.3} ({t:.0} / {r:.0} per s)", t / r),
                        ),
                        _ => Target::not_measured(
                            name,
                            requirement,
                            format!("no {tier} or raw figure"),
                        ),
                    },
                },
            };
            out.push(target);
        }
    }
}

/// CPU per command of the engine against the raw tier, per backend and concurrency.
fn cpu_targets(out: &mut Vec<Target>, report: &Value) {
    let bar = 1.5;
    for backend in ["file", "kafka", "kinesis"] {
        for (label, points) in backend_runs(report, backend) {
            let Ok(points) = points else { continue };
            for p in points {
                let c = p["clients"].as_u64().unwrap_or(0);
                let name = format!("{label} CPU µs per command, memstate/raw, {c} clients");
                let requirement = format!("<= {bar}");
                out.push(
                    match (
                        f(p, &["memstate", "cpu_us_per_op"]),
                        f(p, &["raw", "cpu_us_per_op"]),
                    ) {
                        (Some(m), Some(r)) if r > 0.0 => Target::judged(
                            name,
                            requirement,
                            m / r <= bar,
                            format!("{:.2} ({m:.1} / {r:.1} µs)", m / r),
                        ),
                        _ => Target::not_measured(name, requirement, "no CPU figure"),
                    },
                );
            }
        }
    }
}

/// Replay rates per codec and packing, and engine/decode.
fn replay_targets(out: &mut Vec<Target>, report: &Value) {
    // (codec, commands per record, commands/s)
    let bars: [(&str, u64, f64); 4] = [
        ("msgpack", 64, 2_000_000.0),
        ("msgpack", 1, 1_000_000.0),
        ("json", 64, 1_000_000.0),
        ("json", 1, 600_000.0),
    ];
    let replays = result(&report["replay"]).and_then(|r| {
        r.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| "no replay figures".to_owned())
    });
    let codec_of = |r: &Value| r["codec"].as_str().unwrap_or("json").to_ascii_lowercase();
    for (codec, per_record, bar) in bars {
        let name =
            format!("replay, {codec} codec, {per_record} commands/record: engine commands/s");
        let requirement = format!(">= {bar:.0}");
        let found = replays.as_ref().map(|rs| {
            rs.iter().find(|r| {
                codec_of(r) == codec && r["commands_per_record"].as_u64() == Some(per_record)
            })
        });
        out.push(match found {
            Err(why) => Target::not_measured(name, requirement, why.clone()),
            Ok(None) => Target::not_measured(
                name,
                requirement,
                format!("no {codec} replay at {per_record} per record in this run"),
            ),
            Ok(Some(r)) => match f(r, &["engine", "commands_per_sec"]) {
                Some(v) => Target::judged(name, requirement, v >= bar, format!("{v:.0}")),
                None => Target::not_measured(name, requirement, "no engine rate"),
            },
        });
    }
    match &replays {
        Err(why) => out.push(Target::not_measured(
            "replay engine/decode".into(),
            ">= 0.8".into(),
            why.clone(),
        )),
        Ok(rs) => {
            for r in rs.iter() {
                let name = format!(
                    "replay engine/decode, {} codec, {} commands/record",
                    codec_of(r),
                    r["commands_per_record"].as_u64().unwrap_or(0)
                );
                out.push(match f(r, &["ratio_to_decode"]) {
                    Some(v) => Target::judged(name, ">= 0.8".into(), v >= 0.8, format!("{v:.3}")),
                    None => Target::not_measured(name, ">= 0.8".into(), "no ratio"),
                });
            }
            for r in rs.iter() {
                let name = format!(
                    "memory overhead per million commands replayed, {} codec, {} commands/record",
                    codec_of(r),
                    r["commands_per_record"].as_u64().unwrap_or(0)
                );
                out.push(
                    match f(r, &["window", "rss_growth_mib_per_million_commands"]) {
                        Some(v) => Target::judged(
                            name,
                            "reported".into(),
                            true,
                            format!(
                                "{v:.1} MiB resident growth; window {:.1} MiB accounted per million ids",
                                f(r, &["window", "accounted_mib_per_million"]).unwrap_or(f64::NAN)
                            ),
                        ),
                        None => Target::not_measured(name, "reported".into(), "no resident figure (not Linux?)"),
                    },
                );
            }
        }
    }
}

/// Writes with 4 `Local` query clients spinning against writes alone.
fn fairness_target(out: &mut Vec<Target>, report: &Value) {
    let name = "writes with 4 Local query clients / writes alone".to_owned();
    let requirement = ">= 0.8".to_owned();
    out.push(match result(&report["query"]) {
        Err(why) => Target::not_measured(name, requirement, why),
        Ok(q) => match (
            f(q, &["local", "writes", "per_sec"]),
            f(q, &["writes_alone", "per_sec"]),
        ) {
            (Some(mixed), Some(alone)) if alone > 0.0 => Target::judged(
                name,
                requirement,
                mixed / alone >= 0.8,
                format!("{:.3} ({mixed:.0} / {alone:.0} per s)", mixed / alone),
            ),
            _ => Target::not_measured(name, requirement, "no write rates"),
        },
    });
}

/// Every target of issue 14, judged on `report` (the run's JSON).
pub(crate) fn compute(report: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    ratio_targets(
        &mut out,
        report,
        "file",
        "memstate",
        &FILE_RATIO_CLIENTS,
        0.9,
    );
    ratio_targets(&mut out, report, "file", "memstate", &[1], 0.8);
    let file_clients: Vec<u64> = backend_runs(report, "file")
        .first()
        .and_then(|(_, p)| p.as_ref().ok().copied())
        .map(|ps| ps.iter().filter_map(|p| p["clients"].as_u64()).collect())
        .unwrap_or_else(|| vec![1, 16, 64, 256, 1024]);
    ratio_targets(&mut out, report, "file", "adapter", &file_clients, 0.95);
    ratio_targets(
        &mut out,
        report,
        "kafka",
        "memstate",
        &KAFKA_RATIO_CLIENTS,
        0.95,
    );
    replay_targets(&mut out, report);
    cpu_targets(&mut out, report);
    fairness_target(&mut out, report);
    out
}

/// The printed section.
pub(crate) fn table(targets: &[Target]) -> String {
    let mut out = String::new();
    let count = |v: Verdict| targets.iter().filter(|t| t.verdict == v).count();
    let _ = writeln!(
        out,
        "\ntargets (issue 14): {} met, {} missed, {} not measured",
        count(Verdict::Met),
        count(Verdict::Missed),
        count(Verdict::NotMeasured)
    );
    for t in targets {
        let verdict = match t.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        };
        let _ = writeln!(
            out,
            "  {verdict:<12} {} {}: {}",
            t.name, t.requirement, t.figures
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tier(per_sec: f64, cpu: f64) -> Value {
        json!({"per_sec": per_sec, "cpu_us_per_op": cpu})
    }

    fn find<'a>(targets: &'a [Target], name: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no target {name:?} in {targets:#?}"))
    }

    fn report() -> Value {
        json!({
            "backends": [
                {"backend": "file", "status": "run", "result": {"description": "d", "points": [
                    {"clients": 1, "memstate": tier(85.0, 30.0), "adapter": tier(96.0, 20.0), "raw": tier(100.0, 20.0)},
                    {"clients": 16, "memstate": tier(89.0, 31.0), "adapter": tier(94.0, 20.0), "raw": tier(100.0, 20.0)},
                ]}},
                {"backend": "kafka", "status": "run", "result": {"description": "d", "points": [
                    {"clients": 64, "memstate": tier(960.0, 10.0), "adapter": tier(1.0, 1.0), "raw": tier(1000.0, 10.0)},
                ]}},
                {"backend": "kinesis", "status": "not_run", "reason": "unset"},
            ],
            "replay": {"status": "run", "result": [
                {"commands_per_record": 64, "engine": {"commands_per_sec": 1_200_000.0}, "ratio_to_decode": 0.7,
                 "window": {"rss_growth_mib_per_million_commands": 90.0, "accounted_mib_per_million": 91.6}},
                {"codec": "msgpack", "commands_per_record": 1, "engine": {"commands_per_sec": 900_000.0}, "ratio_to_decode": 0.85,
                 "window": {}},
            ]},
            "query": {"status": "run", "result": {"writes_alone": {"per_sec": 1000.0}, "local": {"writes": {"per_sec": 850.0}}}},
        })
    }

    #[test]
    fn ratios_are_judged_against_their_bars() {
        let t = compute(&report());
        assert_eq!(
            find(&t, "file memstate/raw, 1 clients").verdict,
            Verdict::Met
        );
        assert_eq!(
            find(&t, "file memstate/raw, 16 clients").verdict,
            Verdict::Missed
        );
        assert_eq!(
            find(&t, "file memstate/raw, 64 clients").verdict,
            Verdict::NotMeasured
        );
        assert_eq!(
            find(&t, "file adapter/raw, 1 clients").verdict,
            Verdict::Met
        );
        assert_eq!(
            find(&t, "file adapter/raw, 16 clients").verdict,
            Verdict::Missed
        );
        let kafka = find(&t, "kafka memstate/raw, 64 clients");
        assert_eq!(kafka.verdict, Verdict::Met);
        assert!(kafka.figures.starts_with("0.960"), "{}", kafka.figures);
        assert_eq!(
            find(&t, "kafka memstate/raw, 256 clients").verdict,
            Verdict::NotMeasured
        );
    }

    #[test]
    fn cpu_fairness_replay_and_memory_are_judged() {
        let t = compute(&report());
        assert_eq!(
            find(&t, "file CPU µs per command, memstate/raw, 1 clients").verdict,
            Verdict::Met
        );
        assert_eq!(
            find(&t, "file CPU µs per command, memstate/raw, 16 clients").verdict,
            Verdict::Missed
        );
        assert_eq!(
            find(&t, "writes with 4 Local query clients / writes alone").verdict,
            Verdict::Met
        );
        let json64 = "replay, json codec, 64 commands/record: engine commands/s";
        assert_eq!(find(&t, json64).verdict, Verdict::Met);
        let compact1 = "replay, msgpack codec, 1 commands/record: engine commands/s";
        assert_eq!(find(&t, compact1).verdict, Verdict::Missed);
        let compact64 = "replay, msgpack codec, 64 commands/record: engine commands/s";
        assert_eq!(find(&t, compact64).verdict, Verdict::NotMeasured);
        assert_eq!(
            find(&t, "replay engine/decode, json codec, 64 commands/record").verdict,
            Verdict::Missed
        );
        assert_eq!(
            find(&t, "replay engine/decode, msgpack codec, 1 commands/record").verdict,
            Verdict::Met
        );
        assert_eq!(
            find(
                &t,
                "memory overhead per million commands replayed, json codec, 64 commands/record"
            )
            .verdict,
            Verdict::Met
        );
        assert_eq!(
            find(
                &t,
                "memory overhead per million commands replayed, msgpack codec, 1 commands/record"
            )
            .verdict,
            Verdict::NotMeasured
        );
    }

    #[test]
    fn parts_not_run_are_not_measured_with_the_reason() {
        let t = compute(
            &json!({"backends": [], "replay": {"status": "not_run", "reason": "not selected by --only"}}),
        );
        let kafka = find(&t, "kafka memstate/raw, 16 clients");
        assert_eq!(kafka.verdict, Verdict::NotMeasured);
        let replay = find(
            &t,
            "replay, json codec, 1 commands/record: engine commands/s",
        );
        assert_eq!(replay.verdict, Verdict::NotMeasured);
        assert!(
            replay.figures.contains("not selected"),
            "{}",
            replay.figures
        );
        assert!(t.iter().all(|t| t.verdict == Verdict::NotMeasured));
        assert!(table(&t).contains("0 met, 0 missed"));
    }
}
