//! A journal that ends before its durable watermark lost acknowledged records:
//! opening and inspecting report data loss (never a clean journal or a torn
//! tail), modify nothing, and go on only when the loss is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::{b, payloads, segment_file, take};
use memstate_core::{Cursor, Stream, StreamError};
use memstate_file::{DataLoss, FileStream, FileStreamConfig, Position, inspect};

fn watermark_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("journal.watermark")).unwrap()
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn offset(cursor: &Cursor) -> u64 {
    Position::from_cursor(cursor).unwrap().offset
}

/// Three records in segment 0; returns their cursors and the segment's length.
async fn three_records(dir: &Path) -> (Vec<Cursor>, u64) {
    let s = FileStream::open(dir).await.unwrap();
    let cursors = s
        .append(vec![b("first"), b("second"), b("third-record")])
        .await
        .unwrap();
    drop(s);
    let len = std::fs::metadata(segment_file(dir, 0)).unwrap().len();
    (cursors, len)
}

/// Opening refuses with a `DataLoss` naming the segment and both ends, and
/// leaves every byte where it was.
async fn assert_refused(config: FileStreamConfig) -> DataLoss {
    let dir = config.dir.clone();
    let segments_before: Vec<(String, u64)> = listing(&dir);
    let watermark_before = watermark_bytes(&dir);
    // The inspector names the loss and calls the journal unclean.
    let report = inspect::read_all(&dir).unwrap();
    let loss = report.data_loss.clone().expect("inspect reports data loss");
    assert!(!report.is_clean());
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    let err = FileStream::open_with(config).await.unwrap_err();
    let StreamError::Corrupt { location, reason } = &err else {
        panic!("expected data loss, got {err}");
    };
    assert_eq!(location, &loss.path.display().to_string());
    assert!(reason.starts_with("data loss: "), "{reason}");
    assert!(reason.contains(&loss.missing), "{reason}");
    assert!(reason.contains(&loss.watermark_end.to_string()), "{reason}");
    assert!(reason.contains("accept_data_loss"), "{reason}");
    assert_eq!(listing(&dir), segments_before, "opening modified a segment");
    assert_eq!(
        watermark_bytes(&dir),
        watermark_before,
        "opening rewrote the watermark"
    );
    loss
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_segment_cut_at_a_frame_boundary_is_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (cursors, full) = three_records(dir.path()).await;
    let third = offset(&cursors[2]);
    cut(&segment_file(dir.path(), 0), third);

    let loss = assert_refused(FileStreamConfig::new(dir.path())).await;
    assert_eq!(loss.path.file_name().unwrap(), "00000000.seg");
    assert_eq!(loss.watermark_end, Position::new(0, full));
    assert_eq!(loss.found_end, Position::new(0, third));
    assert!(
        loss.missing
            .contains(&format!("bytes {third} to {full} are missing")),
        "{}",
        loss.missing
    );
    assert!(
        loss.missing.contains("last acknowledged record"),
        "{}",
        loss.missing
    );

    // Accepted once: the journal opens with what is left, reports the loss,
    // and appends continue where the data ends.
    let s = FileStream::open_with(FileStreamConfig::new(dir.path()).with_accept_data_loss(true))
        .await
        .unwrap();
    assert_eq!(s.open_report().accepted_data_loss.as_ref(), Some(&loss));
    assert_eq!(s.head().await.unwrap(), Some(cursors[1].clone()));
    let next = s.append(vec![b("after")]).await.unwrap();
    assert_eq!(next[0], cursors[2]);
    drop(s);
    // Now the watermark matches the data: a plain opening is clean.
    let s = FileStream::open(dir.path()).await.unwrap();
    assert!(s.open_report().accepted_data_loss.is_none());
    assert!(inspect::read_all(dir.path()).unwrap().is_clean());
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(
        payloads(&take(&mut sub, 3).await),
        vec![b("first"), b("second"), b("after")]
    );
}

#[tokio::test]
async fn a_mid_frame_cut_inside_the_watermark_is_data_loss_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (cursors, full) = three_records(dir.path()).await;
    let second = offset(&cursors[1]);
    // Into the second record's payload: the second and third are gone.
    let at = second + 8 + 2;
    cut(&segment_file(dir.path(), 0), at);

    let loss = assert_refused(FileStreamConfig::new(dir.path())).await;
    assert_eq!(loss.watermark_end, Position::new(0, full));
    assert_eq!(loss.found_end, Position::new(0, at));
    assert!(
        loss.missing.contains(&format!("bytes {at} to {full}")),
        "{}",
        loss.missing
    );

    let s = FileStream::open_with(FileStreamConfig::new(dir.path()).with_accept_data_loss(true))
        .await
        .unwrap();
    assert!(s.open_report().accepted_data_loss.is_some());
    // What is left of the partial record is cut as part of accepting.
    let torn = s
        .open_report()
        .torn_tail
        .as_ref()
        .expect("partial record cut");
    assert_eq!(torn.offset, second);
    assert_eq!(
        std::fs::metadata(segment_file(dir.path(), 0))
            .unwrap()
            .len(),
        second
    );
    assert_eq!(s.head().await.unwrap(), Some(cursors[0].clone()));
}

/// Records over several small segments; returns their cursors.
async fn several_segments(config: &FileStreamConfig) -> Vec<Cursor> {
    let s = FileStream::open_with(config.clone()).await.unwrap();
    let mut cursors = Vec::new();
    for i in 0..12 {
        cursors.extend(s.append(vec![b(&format!("{i:040}"))]).await.unwrap());
    }
    cursors
}

fn small_segments(dir: &Path) -> FileStreamConfig {
    FileStreamConfig::new(dir)
        .with_max_record_size(64)
        .with_segment_size(256)
}

#[tokio::test]
async fn a_deleted_newest_segment_is_data_loss() {
    for verify in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path()).with_verify_on_open(verify);
        let cursors = several_segments(&config).await;
        let last = Position::from_cursor(cursors.last().unwrap()).unwrap();
        assert!(last.segment >= 2);
        std::fs::remove_file(segment_file(dir.path(), last.segment)).unwrap();

        let loss = assert_refused(config.clone()).await;
        assert_eq!(
            loss.path.file_name().unwrap().to_string_lossy(),
            format!("{:08}.seg", last.segment)
        );
        assert_eq!(loss.watermark_end.segment, last.segment);
        assert_eq!(loss.found_end.segment, last.segment - 1);
        assert!(
            loss.missing
                .contains(&format!("segment {} is missing", last.segment)),
            "{}",
            loss.missing
        );

        let s = FileStream::open_with(config.with_accept_data_loss(true))
            .await
            .unwrap();
        assert!(s.open_report().accepted_data_loss.is_some());
        let survivors = cursors
            .iter()
            .filter(|c| Position::from_cursor(c).unwrap().segment < last.segment)
            .count();
        assert_eq!(
            s.head().await.unwrap(),
            Some(cursors[survivors - 1].clone())
        );
    }
}

#[tokio::test]
async fn several_deleted_segments_are_named_as_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let cursors = several_segments(&config).await;
    let last = Position::from_cursor(cursors.last().unwrap())
        .unwrap()
        .segment;
    assert!(last >= 2);
    std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
    std::fs::remove_file(segment_file(dir.path(), last - 1)).unwrap();
    let loss = assert_refused(config).await;
    assert!(
        loss.missing
            .contains(&format!("segments {} to {last} are missing", last - 1)),
        "{}",
        loss.missing
    );
}

#[tokio::test]
async fn an_appender_whose_journal_was_cut_underneath_refuses_and_keeps_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s.append(vec![b("one"), b("two")]).await.unwrap();
    let watermark = watermark_bytes(dir.path());
    cut(&segment_file(dir.path(), 0), offset(&cursors[1]));

    let err = s.append(vec![b("three")]).await.unwrap_err();
    match &err {
        StreamError::Corrupt { location, reason } => {
            assert!(location.ends_with("00000000.seg"), "{location}");
            assert!(reason.contains("data loss"), "{reason}");
        }
        other => panic!("expected data loss, got {other:?}"),
    }
    assert_eq!(watermark_bytes(dir.path()), watermark);
    assert_eq!(
        std::fs::metadata(segment_file(dir.path(), 0))
            .unwrap()
            .len(),
        offset(&cursors[1])
    );
}

#[tokio::test]
async fn a_sealed_segment_whose_empty_successor_is_missing_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let cursors = several_segments(&config).await;
    let last = Position::from_cursor(cursors.last().unwrap())
        .unwrap()
        .segment;
    // The newest segment holds only the records after the last roll; drop
    // them and its file, and rewind the watermark to the seal of the one before,
    // as if that segment had been sealed and nothing written after.
    drop(cursors);
    std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
    std::fs::remove_file(dir.path().join("journal.watermark")).unwrap();
    let s = FileStream::open_with(config.clone()).await.unwrap();
    assert_eq!(s.open_report().created_segment, Some(last));
    drop(s);
    // The watermark now says `last:32`; the empty successor goes missing.
    std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
    let s = FileStream::open_with(config).await.unwrap();
    assert!(s.open_report().accepted_data_loss.is_none());
    assert_eq!(s.open_report().created_segment, Some(last));
    let report = inspect::read_all(dir.path()).unwrap();
    assert!(report.data_loss.is_none());
}

/// Found by cargo-mutants (the search backwards for the last record): a
/// journal whose newest segment is empty and whose watermark is gone still
/// knows its last record, in a segment before; nothing before it is taken
/// for it.
#[tokio::test]
async fn the_last_record_is_found_behind_an_empty_newest_segment() {
    for verify in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path()).with_verify_on_open(verify);
        let s = FileStream::open_with(config.clone()).await.unwrap();
        let segment = |c: &Cursor| Position::from_cursor(c).unwrap().segment;
        let mut cursors = Vec::new();
        // Three full segments before the newest, so that the search can
        // overshoot.
        while cursors.last().map_or(0, segment) < 4 {
            cursors.extend(
                s.append(vec![b(&format!("{:040}", cursors.len()))])
                    .await
                    .unwrap(),
            );
        }
        drop(s);
        let last = segment(cursors.last().unwrap());
        // Drop the newest segment and the watermark: the journal now ends
        // with a sealed segment, and opening creates an empty successor.
        std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
        let expected = cursors.iter().rfind(|c| segment(c) < last).cloned();
        for _ in 0..2 {
            std::fs::remove_file(dir.path().join("journal.watermark")).unwrap();
            let s = FileStream::open_with(config.clone()).await.unwrap();
            assert_eq!(s.head().await.unwrap(), expected, "verify_on_open {verify}");
        }
    }
}

/// Found by cargo-mutants (the length the last acknowledged record needs):
/// the newest segment missing and the one before it cut inside its last
/// record's frame header is data loss, not a sealed journal whose empty
/// successor went missing.
#[tokio::test]
async fn a_cut_inside_the_last_records_header_before_a_missing_successor_is_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(dir.path());
    let cursors = several_segments(&config).await;
    let position = |c: &Cursor| Position::from_cursor(c).unwrap();
    let last = position(cursors.last().unwrap()).segment;
    // As above: the journal ends with a sealed segment whose successor
    // opening created empty, and the watermark says so.
    std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
    std::fs::remove_file(dir.path().join("journal.watermark")).unwrap();
    drop(FileStream::open_with(config.clone()).await.unwrap());
    std::fs::remove_file(segment_file(dir.path(), last)).unwrap();
    let record = position(
        cursors
            .iter()
            .rfind(|c| position(c).segment < last)
            .unwrap(),
    );
    cut(&segment_file(dir.path(), record.segment), record.offset + 4);
    let loss = assert_refused(config).await;
    assert!(
        loss.to_string().contains("last acknowledged record"),
        "{loss}"
    );
}
