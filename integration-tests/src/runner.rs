//! Running the suite: as a libtest-compatible test binary (one test per case,
//! skips shown as ignored), or as a table for the CLI.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::cases::{self, CASE_TIMEOUT, Case, Outcome};
use crate::fixture::Backend;
use crate::provision::{Provision, is_required};

/// The result of one case in a table run.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub case: &'static str,
    /// The rule it checks.
    pub rule: &'static str,
    /// Passed, ignored (with reason), or failed (with message).
    pub result: Result<Outcome, String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs one case with a timeout, catching panics as failures.
pub async fn run_case(case: Case, backend: Arc<dyn Backend>) -> Result<Outcome, String> {
    let task = tokio::spawn(case.run(backend));
    match tokio::time::timeout(CASE_TIMEOUT, task).await {
        Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
        Ok(Err(join)) => Err(format!("panicked: {join}")),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Ok(Ok(outcome))) => Ok(outcome),
    }
}

/// Runs the cases whose names contain `filter` (all when `None`), one after
/// another, and reports each.
pub async fn run_table(backend: Arc<dyn Backend>, filter: Option<&str>) -> Vec<CaseReport> {
    let mut out = Vec::new();
    for case in cases::all() {
        if filter.is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let result = run_case(case, Arc::clone(&backend)).await;
        out.push(CaseReport {
            case: case.name,
            rule: case.rule,
            result,
            elapsed: started.elapsed(),
        });
    }
    out
}

/// Formats reports as a plain-text table.
pub fn format_table(backend: &str, location: &str, reports: &[CaseReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.case.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!("conformance: {backend} at {location}\n\n");
    s.push_str(&format!(
        "{:<width$}  {:<8}  {:>9}  {}\n",
        "case", "result", "time", "note"
    ));
    for r in reports {
        let (word, note) = match &r.result {
            Ok(Outcome::Passed) => ("passed", String::new()),
            Ok(Outcome::Ignored(why)) => ("ignored", why.clone()),
            Err(e) => ("FAILED", e.clone()),
        };
        s.push_str(&format!(
            "{:<width$}  {:<8}  {:>8.2}s  {}\n",
            r.case,
            word,
            r.elapsed.as_secs_f64(),
            note
        ));
    }
    let passed = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Outcome::Passed)))
        .count();
    let ignored = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Outcome::Ignored(_))))
        .count();
    let failed = reports.iter().filter(|r| r.result.is_err()).count();
    s.push_str(&format!(
        "\n{passed} passed, {ignored} ignored, {failed} failed\n"
    ));
    s
}

/// The `main` of an adapter's conformance test target (`harness = false`):
/// provisions the backend once, then runs every case as one test. When the
/// backend is unavailable every case shows as ignored with the reason, or
/// fails when `MEMSTATE_REQUIRE` names the backend.
pub fn run_libtest<F, Fut>(backend: &'static str, provision: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Provision>,
{
    let args = Arguments::from_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conformance: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listing = args.list;
    let provision = if listing {
        Provision::Skipped("listing only".into())
    } else {
        runtime.block_on(provision())
    };
    let required = is_required(backend);
    match &provision {
        Provision::Ready(b) => eprintln!("conformance: {backend} at {}", b.location()),
        Provision::Skipped(why) if !listing => eprintln!(
            "conformance: {backend} not available, its cases are {}: {why}",
            if required {
                "FAILED (MEMSTATE_REQUIRE names it)"
            } else {
                "ignored"
            }
        ),
        _ => {}
    }
    let handle = runtime.handle().clone();
    let trials: Vec<Trial> = cases::all()
        .into_iter()
        .map(|case| {
            let name = format!("{backend}::{}", case.name);
            match &provision {
                Provision::Ready(b) => {
                    let b = Arc::clone(b);
                    let handle = handle.clone();
                    Trial::ignorable_test(name, move || match handle.block_on(run_case(case, b)) {
                        Ok(Outcome::Passed) => Ok(Completion::Completed),
                        Ok(Outcome::Ignored(why)) => Ok(Completion::ignored_with(why)),
                        Err(e) => Err(Failed::from(e)),
                    })
                }
                Provision::Skipped(why) if required => {
                    let msg = format!(
                        "{backend} is required by MEMSTATE_REQUIRE but not available: {why}"
                    );
                    Trial::test(name, move || Err(Failed::from(msg)))
                }
                Provision::Skipped(why) => {
                    let why = why.clone();
                    Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why)))
                }
            }
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(provision);
    runtime.shutdown_timeout(Duration::from_secs(10));
    conclusion.exit_code()
}
