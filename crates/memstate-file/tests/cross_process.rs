//! Processes sharing one journal: wake-ups by file events, the polling
//! fallback, `head()` waking this process's subscribers, and the fairness of
//! the writer lock. The children are this test binary re-executed to run
//! `child_process` with what to do in environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{b, wait_for_file};
use memstate_core::{Stream, Subscription};
use memstate_file::{FileStream, FileStreamConfig};

const CHILD_DIR: &str = "MEMSTATE_FILE_CROSS_DIR";
const CHILD_ROLE: &str = "MEMSTATE_FILE_CROSS_ROLE";
/// Far above any hang guard below: a subscriber that waits for its poll
/// fails the test.
const NEVER: Duration = Duration::from_secs(3600);
/// Hang guard only; never a speed requirement.
const GUARD: Duration = Duration::from_secs(60);

/// Tasks per writer process in the fairness test.
const TASKS: usize = 4;
/// Records the fairness test counts.
const FAIRNESS_RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the other tests of this file in a separate process"]
async fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let role = std::env::var(CHILD_ROLE).unwrap();
    let stream = FileStream::open(&dir).await.unwrap();
    if let Some(tag) = role.strip_prefix("writer-") {
        // Append in a closed loop from several tasks until told to stop.
        std::fs::write(dir.join(format!("{tag}.ready")), b"").unwrap();
        wait_for_file(&dir.join("go")).await;
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let stream = stream.clone();
            let stop = dir.join("stop");
            let tag = tag.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.exists() {
                    stream
                        .append(vec![b(&format!("{tag}-{t}-{i}"))])
                        .await
                        .unwrap();
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    } else {
        stream.append(vec![b(&role)]).await.unwrap();
    }
    println!("child {role} done");
}

/// Runs `child_process` in a new process with `role`, to completion.
async fn run_child(dir: &Path, role: &str) {
    let output = spawn_child(dir, role).wait_with_output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the child finishes within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("child {role} done")),
        "child {role} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn spawn_child(dir: &Path, role: &str) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_process", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROLE, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn next_within_guard(sub: &mut Box<dyn Subscription>) -> bytes::Bytes {
    tokio::time::timeout(GUARD, sub.next())
        .await
        .expect("the record arrives without waiting for the poll")
        .unwrap()
        .unwrap()
        .payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_append_wakes_a_subscriber_before_its_poll() {
    let dir = tempfile::tempdir().unwrap();
    let stream = FileStream::open_with(FileStreamConfig::new(dir.path()).with_poll_interval(NEVER))
        .await
        .unwrap();
    assert!(stream.watches_file_events());
    let mut sub = stream.subscribe(None).await.unwrap();
    let (payload, ()) = tokio::join!(next_within_guard(&mut sub), run_child(dir.path(), "ping"));
    assert_eq!(payload, b("ping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_file_events_off_a_subscriber_still_sees_another_process_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let stream = FileStream::open_with(
        FileStreamConfig::new(dir.path())
            .with_file_events(false)
            .with_poll_interval(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert!(!stream.watches_file_events());
    let mut sub = stream.subscribe(None).await.unwrap();
    let (payload, ()) = tokio::join!(next_within_guard(&mut sub), run_child(dir.path(), "polled"));
    assert_eq!(payload, b("polled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_head_wakes_this_process_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    // Neither events nor polls: only the head read can wake the subscriber.
    let stream = FileStream::open_with(
        FileStreamConfig::new(dir.path())
            .with_file_events(false)
            .with_poll_interval(NEVER),
    )
    .await
    .unwrap();
    let mut sub = stream.subscribe(None).await.unwrap();
    // Let the subscription settle into its wait before the other process appends.
    let waiting = tokio::spawn(async move { next_within_guard(&mut sub).await });
    run_child(dir.path(), "behind").await;
    assert!(!waiting.is_finished(), "nothing woke the subscriber yet");
    let head = stream.head().await.unwrap();
    assert!(head.is_some());
    assert_eq!(waiting.await.unwrap(), b("behind"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writer_process_starves() {
    let dir = tempfile::tempdir().unwrap();
    let stream = FileStream::open(dir.path()).await.unwrap();
    let mut sub = stream.subscribe(None).await.unwrap();
    let tags = ["w0", "w1", "w2"];
    let children: Vec<_> = tags
        .iter()
        .map(|tag| spawn_child(dir.path(), &format!("writer-{tag}")))
        .collect();
    for tag in tags {
        wait_for_file(&dir.path().join(format!("{tag}.ready"))).await;
    }
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let mut counts = [0usize; 3];
    for _ in 0..FAIRNESS_RECORDS {
        let payload = next_within_guard(&mut sub).await;
        let i = tags
            .iter()
            .position(|t| payload.starts_with(t.as_bytes()))
            .unwrap();
        counts[i] += 1;
    }
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    for (tag, child) in tags.iter().zip(children) {
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the writer stops within 120 s")
            .unwrap();
        assert!(
            output.status.success(),
            "writer {tag} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!("records per writer process among the first {FAIRNESS_RECORDS}: {counts:?}");
    for (tag, count) in tags.iter().zip(counts) {
        assert!(
            count >= FAIRNESS_RECORDS / 4,
            "writer {tag} got {count} of {FAIRNESS_RECORDS} records: {counts:?}"
        );
    }
    let queue = std::fs::read_dir(dir.path().join("journal.queue")).unwrap();
    let left: Vec<_> = queue.map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "every lock ticket was removed: {left:?}");
}
