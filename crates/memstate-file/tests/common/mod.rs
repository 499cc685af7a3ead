//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Record, Subscription};

/// The file of segment `n` (the naming the README documents).
pub fn segment_file(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The next `n` records, failing the test if they take longer than 20 s.
pub async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("a record within 20 s")
            .expect("no error")
            .expect("the stream is open");
        out.push(next);
    }
    out
}

/// Asserts that the subscription yields nothing for `wait`.
pub async fn assert_quiet(sub: &mut Box<dyn Subscription>, wait: Duration) {
    if let Ok(got) = tokio::time::timeout(wait, sub.next()).await {
        panic!("expected no record, got {got:?}");
    }
}

pub fn payloads(records: &[Record]) -> Vec<Bytes> {
    records.iter().map(|r| r.payload.clone()).collect()
}

/// Waits (at most 60 s) until `path` exists.
pub async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
