//! Two processes appending to one journal. The child is this test binary
//! itself, re-executed to run `child_process_appender` with the journal
//! directory in an environment variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{b, payloads, take, wait_for_file};
use memstate_core::Stream;
use memstate_file::{FileStream, FileStreamConfig, inspect};

const CHILD_DIR: &str = "MEMSTATE_FILE_TEST_CHILD_DIR";
const TASKS: usize = 4;
const APPENDS_PER_TASK: usize = 100;
/// Each append carries two records.
const RECORDS_PER_PROCESS: usize = TASKS * APPENDS_PER_TASK * 2;

/// Appends `RECORDS_PER_PROCESS` records tagged `tag` from several tasks.
async fn append_from_tasks(stream: &FileStream, tag: &'static str) {
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..APPENDS_PER_TASK {
                let cursors = stream
                    .append(vec![
                        b(&format!("{tag}-{t}-{i}-a")),
                        b(&format!("{tag}-{t}-{i}-b")),
                    ])
                    .await
                    .unwrap();
                assert_eq!(cursors.len(), 2);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child half of two_processes_append_to_one_journal, which runs it in a separate process"]
async fn child_process_appender() {
    // Run by hand (without the variable) it appends to a journal of its own.
    let own = tempfile::tempdir().unwrap();
    let dir = std::env::var_os(CHILD_DIR).map_or_else(|| own.path().to_path_buf(), PathBuf::from);
    let stream = FileStream::open(&dir).await.unwrap();
    if std::env::var_os(CHILD_DIR).is_some() {
        // Start together with the parent, so the appends really interleave.
        std::fs::write(dir.join("child.ready"), b"").unwrap();
        wait_for_file(&dir.join("go")).await;
    }
    append_from_tasks(&stream, "child").await;
    let head = stream.head().await.unwrap();
    assert!(head.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_append_to_one_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileStreamConfig::new(dir.path())
        .with_poll_interval(Duration::from_millis(5))
        // Small segments, so the processes also roll segments under each other.
        .with_segment_size(4096)
        .with_max_record_size(512);
    let stream = FileStream::open_with(config.clone()).await.unwrap();
    // A live subscriber from before either process starts appending; it sees
    // the child's records only through the watermark file.
    let mut live = stream.subscribe(None).await.unwrap();

    let exe = std::env::current_exe().unwrap();
    let child = tokio::process::Command::new(exe)
        .args([
            "child_process_appender",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .kill_on_drop(true)
        .output();
    let (child, ()) = tokio::join!(
        async { tokio::time::timeout(Duration::from_secs(120), child).await },
        async {
            wait_for_file(&dir.path().join("child.ready")).await;
            std::fs::write(dir.path().join("go"), b"").unwrap();
            append_from_tasks(&stream, "parent").await;
        },
    );
    let output = child.expect("the child finishes within 120 s").unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child ran its test: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let total = 2 * RECORDS_PER_PROCESS;
    let followed = take(&mut live, total).await;
    let reopened = FileStream::open_with(config).await.unwrap();
    assert_eq!(reopened.open_report().records_verified as usize, total);
    let mut fresh = reopened.subscribe(None).await.unwrap();
    let replayed = take(&mut fresh, total).await;
    assert_eq!(followed, replayed, "two readers see one order");

    let all: Vec<Bytes> = payloads(&replayed);
    let unique: HashSet<&Bytes> = all.iter().collect();
    assert_eq!(unique.len(), total, "every record exactly once");
    for tag in ["parent", "child"] {
        for t in 0..TASKS {
            let mine: Vec<&Bytes> = all
                .iter()
                .filter(|p| p.starts_with(format!("{tag}-{t}-").as_bytes()))
                .collect();
            assert_eq!(mine.len(), APPENDS_PER_TASK * 2);
            // A task's appends keep their order, and each call's two records are adjacent.
            for (i, pair) in mine.chunks(2).enumerate() {
                assert_eq!(*pair[0], b(&format!("{tag}-{t}-{i}-a")));
                assert_eq!(*pair[1], b(&format!("{tag}-{t}-{i}-b")));
            }
        }
    }
    let switches = all
        .windows(2)
        .filter(|w| w[0].starts_with(b"parent") != w[1].starts_with(b"parent"))
        .count();
    eprintln!("parent/child switches in the journal order: {switches}");
    assert!(
        switches >= 2,
        "the two processes' appends interleaved ({switches} switches)"
    );
    let report = inspect::read_all(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(payloads_of(&report), all);
    assert!(report.segments.len() > 1, "segments rolled");
}

fn payloads_of(report: &inspect::InspectReport) -> Vec<Bytes> {
    report.records.iter().map(|r| r.payload.clone()).collect()
}
