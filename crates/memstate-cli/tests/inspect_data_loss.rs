//! `memstate inspect` on a journal that lost acknowledged records: it reports
//! the loss and fails without touching anything; `--accept-data-loss` makes
//! the journal open again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use memstate_core::{Stream, StreamError};
use memstate_file::{FileStream, Position};

fn inspect(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memstate"))
        .arg("inspect")
        .arg(dir)
        .arg("--summary")
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test]
async fn inspect_reports_data_loss_and_accepts_it_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s
        .append(vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")])
        .await
        .unwrap();
    drop(s);
    let seg = dir.path().join("00000000.seg");
    let second = Position::from_cursor(&cursors[1]).unwrap().offset;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(second)
        .unwrap();
    let watermark = std::fs::read(dir.path().join("journal.watermark")).unwrap();

    let out = inspect(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("DATA LOSS"), "{stderr}");
    assert!(stderr.contains("00000000.seg"), "{stderr}");
    assert!(stderr.contains("--accept-data-loss"), "{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("journal.watermark")).unwrap(),
        watermark
    );
    assert!(matches!(
        FileStream::open(dir.path()).await,
        Err(StreamError::Corrupt { reason, .. }) if reason.starts_with("data loss")
    ));

    let out = inspect(dir.path(), &["--accept-data-loss"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("accepted the loss"), "{stderr}");
    let s = FileStream::open(dir.path()).await.unwrap();
    assert_eq!(s.head().await.unwrap(), Some(cursors[0].clone()));
    assert!(inspect(dir.path(), &[]).status.success());
}
