//! Zero-filled room in segments: written ahead of the last record by a
//! preallocating writer, or left by a crash that extended a file before its
//! data reached the disk. Free space is neither a record nor a torn write;
//! journals with and without it open, replay and take appends alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{b, payloads, segment_file, take};
use memstate_core::{Stream, StreamError};
use memstate_file::{FileStream, FileStreamConfig, Position, inspect};

/// Small segments, so that a few records roll over several of them.
const SEGMENT: u64 = 4096;
/// Room zero-filled ahead of the last record.
const ROOM: u64 = 1024;

fn config(dir: &Path, preallocate: u64) -> FileStreamConfig {
    FileStreamConfig::new(dir)
        .with_poll_interval(Duration::from_millis(5))
        .with_max_record_size(512)
        .with_segment_size(SEGMENT)
        .with_preallocate(preallocate)
}

fn record(i: usize) -> Bytes {
    Bytes::from(format!("record {i:04} {}", "x".repeat(i % 200)))
}

/// Writes `bytes` at `offset` of the file at `path`, as a crash or a bad
/// disk would leave them.
fn write_at(path: &Path, bytes: &[u8], offset: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Every record of the journal in `dir`, through a fresh handle's subscription.
async fn replay(dir: &Path, preallocate: u64, count: usize) -> Vec<Bytes> {
    let s = FileStream::open_with(config(dir, preallocate))
        .await
        .unwrap();
    assert!(s.open_report().torn_tail.is_none(), "{:?}", s.open_report());
    let mut sub = s.subscribe(None).await.unwrap();
    let got = payloads(&take(&mut sub, count).await);
    s.close();
    got
}

#[tokio::test]
async fn a_preallocating_writer_keeps_room_ahead_and_seals_segments_to_their_seal() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap();
    let first = s.append(vec![record(0)]).await.unwrap();
    let end = Position::from_cursor(&first[0]).unwrap().offset + 8 + record(0).len() as u64;
    assert_eq!(
        file_len(&segment_file(dir.path(), 0)),
        end + ROOM,
        "the first write zero-fills ROOM bytes past its end"
    );
    let records: Vec<Bytes> = (1..150).map(record).collect();
    for chunk in records.chunks(3) {
        s.append(chunk.to_vec()).await.unwrap();
    }
    s.close();

    let report = inspect::read_all(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.segments.len() > 2, "{:?}", report.segments);
    let (last, sealed) = report.segments.split_last().unwrap();
    for segment in sealed {
        assert!(segment.sealed, "{segment:?}");
        assert_eq!(segment.free_bytes, 0, "cut back to its seal: {segment:?}");
        assert!(segment.len <= SEGMENT);
    }
    assert!(last.free_bytes > 0, "the open segment keeps room: {last:?}");
    assert!(last.len <= SEGMENT, "room never passes the segment size");
    assert_eq!(report.records.len(), 150);
}

#[tokio::test]
async fn preallocated_and_plain_journals_reopen_replay_and_take_appends_either_way() {
    for (written_with, reopened_with) in [(ROOM, ROOM), (ROOM, 0), (0, ROOM)] {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStream::open_with(config(dir.path(), written_with))
            .await
            .unwrap();
        let mut expected: Vec<Bytes> = (0..40).map(record).collect();
        for chunk in expected.chunks(4) {
            s.append(chunk.to_vec()).await.unwrap();
        }
        s.close();
        assert_eq!(replay(dir.path(), reopened_with, 40).await, expected);

        let s = FileStream::open_with(config(dir.path(), reopened_with))
            .await
            .unwrap();
        let more: Vec<Bytes> = (40..50).map(record).collect();
        s.append(more.clone()).await.unwrap();
        s.close();
        expected.extend(more);
        assert_eq!(
            replay(dir.path(), written_with, 50).await,
            expected,
            "written with {written_with}, appended with {reopened_with}"
        );
        assert!(inspect::read_all(dir.path()).unwrap().is_clean());
    }
}

#[tokio::test]
async fn a_zero_filled_tail_is_free_space_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s.append(vec![b("one")]).await.unwrap();
    drop(s);
    let seg = segment_file(dir.path(), 0);
    let end = file_len(&seg);
    // A crash after the file grew but before its data reached the disk.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(end + 4096)
        .unwrap();
    let report = inspect::read_all(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments[0].free_bytes, 4096);

    let s = FileStream::open(dir.path()).await.unwrap();
    assert_eq!(s.open_report().truncated_bytes(), 0);
    assert_eq!(s.head().await.unwrap(), Some(cursors[0].clone()));
    let next = s.append(vec![b("two")]).await.unwrap();
    assert_eq!(
        Position::from_cursor(&next[0]).unwrap().offset,
        end,
        "the next record takes the free space"
    );
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 2).await), vec![b("one"), b("two")]);
}

#[tokio::test]
async fn a_torn_record_in_preallocated_room_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap();
    let cursors = s.append(vec![b("kept")]).await.unwrap();
    let end = Position::from_cursor(&cursors[0]).unwrap().offset + 8 + 4;
    s.close();
    // A frame header promising 20 bytes, and only part of them: a crash
    // mid-append into zero-filled room, with zeros after it.
    let seg = segment_file(dir.path(), 0);
    let len = file_len(&seg);
    let mut torn = 20u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[9, 9, 9, 9, 1, 2, 3]);
    write_at(&seg, &torn, end);
    assert_eq!(file_len(&seg), len, "written inside the room");

    let s = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap();
    let torn_tail = s.open_report().torn_tail.clone().expect("a torn tail");
    assert_eq!(torn_tail.offset, end);
    assert_eq!(s.head().await.unwrap(), Some(cursors[0].clone()));
    s.append(vec![b("after")]).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(
        payloads(&take(&mut sub, 2).await),
        vec![b("kept"), b("after")]
    );
}

#[tokio::test]
async fn an_appender_that_died_inside_the_room_is_recovered_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap();
    let cursors = s.append(vec![b("a")]).await.unwrap();
    let end = Position::from_cursor(&cursors[0]).unwrap().offset + 8 + 1;
    // Half a frame header and junk inside the room, the watermark untouched.
    write_at(&segment_file(dir.path(), 0), &[7, 0, 0, 0, 1, 2, 3], end);
    let next = s.append(vec![b("b")]).await.unwrap();
    assert_eq!(
        Position::from_cursor(&next[0]).unwrap().offset,
        end,
        "the junk is cut and the append takes its place"
    );
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 2).await), vec![b("a"), b("b")]);
    s.close();
    assert!(inspect::read_all(dir.path()).unwrap().is_clean());
}

#[tokio::test]
async fn zeros_inside_acknowledged_data_are_corruption_not_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap();
    let cursors = s.append(vec![b("first"), b("second")]).await.unwrap();
    s.close();
    // The disk lost the second record but kept the file's size.
    let second = Position::from_cursor(&cursors[1]).unwrap().offset;
    write_at(&segment_file(dir.path(), 0), &[0u8; 14], second);
    let err = FileStream::open_with(config(dir.path(), ROOM))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StreamError::Corrupt { location, .. } if location.ends_with(&format!(" at offset {second}"))),
        "{err}"
    );
    assert!(inspect::read_all(dir.path()).unwrap().corruption.is_some());
}
