//! The snapshot tier: what a snapshot costs as the model grows. For each
//! model design (`std`: a `BTreeMap` that a clone copies; `imbl`: a
//! persistent `OrdMap` that a clone shares) and each size, one process
//! (`snapshot_case.rs`) builds the model, replays a journal that fills the
//! de-duplication window, takes one snapshot through `Engine::snapshot` and
//! restarts from it, once while nothing is written and once per number of
//! `--snapshot-writers` executing deposits while the snapshot is taken.
//! Reported: the model's resident memory, the pause of applying, the
//! resident high-water mark during the snapshot and its ratio to the resident
//! size before it, the snapshot's size, its write time, the restart's time
//! and, under writes, the deposits done during the snapshot and the longest
//! a writer waited. See `docs/operations.md`.

use std::path::Path;
use std::process::Stdio;

use serde::Serialize;

use super::snapshot_case::{CaseFigures, Design};
use super::{BenchArgs, Extra, Plan};

/// The tier's figures.
#[derive(Debug, Serialize)]
struct Tier {
    /// Deposits replayed before each snapshot (ids in the window).
    commands: u64,
    cases: Vec<Result<CaseFigures, String>>,
}

/// Runs every case, one process each.
pub(crate) async fn run(plan: &Plan, args: &BenchArgs, work: &Path) -> Extra {
    let mut sizes = args.snapshot_accounts.clone();
    if sizes.is_empty() {
        sizes = if args.quick {
            vec![100_000]
        } else {
            vec![1_000_000, 10_000_000]
        };
    }
    let commands = args
        .snapshot_commands
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    let mut writer_counts = args.snapshot_writers.clone();
    if writer_counts.is_empty() {
        writer_counts = vec![0, 16];
    }
    let mut cases = Vec::new();
    for &accounts in &sizes {
        for (design, writers) in [Design::Std, Design::Imbl]
            .into_iter()
            .flat_map(|d| writer_counts.iter().map(move |&w| (d, w)))
        {
            plan.progress(&format!(
                "snapshot: {} model of {accounts} accounts, {commands} ids in the window, {writers} writers",
                design.name()
            ));
            let dir = work.join(format!("snapshot-{}-{accounts}-{writers}", design.name()));
            let result = case(design, accounts, commands, writers, &dir).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
            if let Ok(f) = &result {
                plan.progress(&format!(
                    "snapshot: pause {:.2} ms, peak/before {}, write {:.2} s, restore {:.2} s",
                    f.pause_ms,
                    f.peak_ratio.map_or("n/a".into(), |r| format!("{r:.2}")),
                    f.write_seconds,
                    f.restore_seconds
                ));
            }
            cases.push(result);
        }
    }
    let failed = cases.iter().any(Result::is_err);
    let tier = Tier { commands, cases };
    let table = table(&tier);
    Extra::new("snapshot", serde_json::to_value(&tier), table, failed)
}

/// One case in a child process (`memstate bench-snapshot-case`).
async fn case(
    design: Design,
    accounts: u64,
    commands: u64,
    writers: u32,
    dir: &Path,
) -> Result<CaseFigures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let _ = tokio::fs::remove_dir_all(dir).await;
    let output = tokio::process::Command::new(exe)
        .arg("bench-snapshot-case")
        .args(["--design", design.name()])
        .args(["--accounts", &accounts.to_string()])
        .args(["--commands", &commands.to_string()])
        .args(["--writers", &writers.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running the case: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the {} case of {accounts} accounts failed ({})",
            design.name(),
            output.status
        ));
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("the case printed {line:?}: {e}"))
}

fn table(tier: &Tier) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsnapshot (ledger model built directly, {} deposits replayed into the window, file journal, one snapshot; under writers: deposits done during it, longest wait)",
        tier.commands
    );
    let _ = writeln!(
        out,
        "{:>6} {:>10} {:>7} | {:>9} {:>9} {:>10} {:>9} {:>6} {:>9} {:>8} {:>9} {:>8} {:>9}",
        "design",
        "accounts",
        "writers",
        "model MiB",
        "RSS MiB",
        "pause ms",
        "peak MiB",
        "peak/x",
        "size MB",
        "write s",
        "restore s",
        "writes",
        "wait ms"
    );
    for case in &tier.cases {
        match case {
            Ok(f) => {
                let _ = writeln!(
                    out,
                    "{:>6} {:>10} {:>7} | {:>9.0} {:>9.0} {:>10.2} {:>9} {:>6} {:>9.1} {:>8.2} {:>9.2} {:>8} {:>9.2}",
                    f.design.name(),
                    f.accounts,
                    f.writers,
                    f.model_mib,
                    f.rss_before_mib,
                    f.pause_ms,
                    f.peak_mib.map_or("n/a".into(), |p| format!("{p:.0}")),
                    f.peak_ratio.map_or("n/a".into(), |r| format!("{r:.2}")),
                    f.snapshot_bytes as f64 / 1e6,
                    f.write_seconds,
                    f.restore_seconds,
                    f.writes_during,
                    f.writer_max_wait_ms
                );
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED: {e}");
            }
        }
    }
    out
}
