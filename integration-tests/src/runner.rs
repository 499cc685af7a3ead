//! Running the suite: as a libtest-compatible test binary (one test per case,
//! skips shown as ignored), or as a table for the CLI.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::cases::{self, CASE_TIMEOUT, Case, Outcome};
use crate::fixture::{Backend, BoxError, Cleanup, Fixture};
use crate::provision::{Provision, is_required};

/// The variable that keeps the topics and streams cases create on Kafka and
/// Kinesis (`MEMSTATE_KEEP_STREAMS=1`), for a post-mortem. By default the
/// suite deletes them when each case ends: it may run against a cluster
/// someone else owns.
pub const KEEP_STREAMS_ENV: &str = "MEMSTATE_KEEP_STREAMS";

/// Whether [`KEEP_STREAMS_ENV`] asks to keep what cases create (any value
/// but empty, `0` or `false`).
pub fn keep_streams() -> bool {
    std::env::var(KEEP_STREAMS_ENV).is_ok_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

/// One case's view of the backend: remembers what every fixture it hands out
/// must delete when the case ends.
struct Tracked {
    inner: Arc<dyn Backend>,
    cleanups: parking_lot::Mutex<Vec<Cleanup>>,
}

#[async_trait]
impl Backend for Tracked {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn volume_limit(&self) -> Option<String> {
        self.inner.volume_limit()
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let fixture = self.inner.fresh().await?;
        if let Some(cleanup) = fixture.cleanup() {
            self.cleanups.lock().push(cleanup.clone());
        }
        Ok(fixture)
    }
}

/// The result of one case in a table run.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub case: &'static str,
    /// The rules it checks (see [`Case::cites`]).
    pub rule: String,
    /// Passed, ignored (with reason), or failed (with message).
    pub result: Result<Outcome, String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Runs one case with a timeout, catching panics as failures, then deletes
/// the topics and streams it created unless [`keep_streams`] says otherwise.
pub async fn run_case(case: Case, backend: Arc<dyn Backend>) -> Result<Outcome, String> {
    run_case_keeping(case, backend, keep_streams()).await
}

/// [`run_case`], with the choice to keep what the case created made here.
/// A cleanup that fails fails the case: the suite must not litter a cluster
/// unnoticed.
pub async fn run_case_keeping(
    case: Case,
    backend: Arc<dyn Backend>,
    keep: bool,
) -> Result<Outcome, String> {
    let tracked = Arc::new(Tracked {
        inner: backend,
        cleanups: parking_lot::Mutex::new(Vec::new()),
    });
    let task = tokio::spawn(case.run(Arc::clone(&tracked) as Arc<dyn Backend>));
    let abort = task.abort_handle();
    let mut result = match tokio::time::timeout(CASE_TIMEOUT, task).await {
        Err(_) => {
            // Its engines and clients go away with it, before the cleanup.
            abort.abort();
            Err(format!("timed out after {CASE_TIMEOUT:?}"))
        }
        Ok(Err(join)) => Err(format!("panicked: {join}")),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Ok(Ok(outcome))) => Ok(outcome),
    };
    let cleanups = std::mem::take(&mut *tracked.cleanups.lock());
    for cleanup in cleanups {
        if keep {
            eprintln!(
                "conformance: {}: kept {} ({KEEP_STREAMS_ENV} is set)",
                case.name, cleanup.what
            );
            continue;
        }
        let deleted = match tokio::time::timeout(CLEANUP_TIMEOUT, cleanup.run()).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CLEANUP_TIMEOUT:?}"),
        };
        let problem = format!("could not delete {}: {deleted}", cleanup.what);
        result = match result {
            Ok(_) => Err(problem),
            Err(e) => Err(format!("{e}; and {problem}")),
        };
    }
    result
}

/// The bound on deleting one case's stream.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

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
            rule: case.cites(),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::provision::MemoryBackend;

    /// The memory backend, with a cleanup that counts its runs.
    struct Counting {
        deletions: Arc<AtomicUsize>,
        fail: bool,
    }

    #[async_trait]
    impl Backend for Counting {
        fn name(&self) -> String {
            "counting".into()
        }

        fn location(&self) -> String {
            "this process".into()
        }

        async fn fresh(&self) -> Result<Fixture, BoxError> {
            let deletions = Arc::clone(&self.deletions);
            let fail = self.fail;
            let fixture = MemoryBackend.fresh().await?;
            Ok(fixture.with_cleanup(Cleanup::new("a test stream", move || {
                let deletions = Arc::clone(&deletions);
                Box::pin(async move {
                    deletions.fetch_add(1, Ordering::SeqCst);
                    if fail {
                        Err("the backend refused".into())
                    } else {
                        Ok(())
                    }
                })
            })))
        }
    }

    fn case(name: &str) -> Case {
        cases::all()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    }

    fn counting(fail: bool) -> (Arc<AtomicUsize>, Arc<dyn Backend>) {
        let deletions = Arc::new(AtomicUsize::new(0));
        let backend = Arc::new(Counting {
            deletions: Arc::clone(&deletions),
            fail,
        });
        (deletions, backend)
    }

    #[tokio::test]
    async fn every_stream_a_case_creates_is_deleted_when_it_ends() {
        let (deletions, backend) = counting(false);
        // This case opens one fixture.
        let result =
            run_case_keeping(case("payload_bytes_come_back_unchanged"), backend, false).await;
        assert_eq!(result, Ok(Outcome::Passed));
        assert_eq!(deletions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn streams_are_kept_when_asked() {
        let (deletions, backend) = counting(false);
        let result =
            run_case_keeping(case("payload_bytes_come_back_unchanged"), backend, true).await;
        assert_eq!(result, Ok(Outcome::Passed));
        assert_eq!(deletions.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_deletion_fails_the_case_and_names_the_stream() {
        let (deletions, backend) = counting(true);
        let result =
            run_case_keeping(case("payload_bytes_come_back_unchanged"), backend, false).await;
        assert_eq!(deletions.load(Ordering::SeqCst), 1);
        let error = result.expect_err("the deletion failed");
        assert!(error.contains("a test stream"), "{error}");
    }
}
