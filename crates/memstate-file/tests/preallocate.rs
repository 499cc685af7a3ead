//! Zero-filled room in segments: written ahead of the last record by a
//! preallocating writer, or left by a crash that extended a file before its
//! data reached the disk. Free space is neither a record nor a torn write;
//! journals with and without it open, replay and take appends alike.
//!
//! Also what follows a bad frame past the watermark decides its fate: only
//! zeros (or nothing) make it a torn tail, data makes it corruption, except
//! for an appender recovering after a dead one, which trusts the watermark.
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

/// The bytes of the frame holding the record at `cursor` (`len` payload
/// bytes): a valid frame, which can be copied anywhere (its checksum covers
/// only its length and payload).
fn frame_bytes(dir: &Path, cursor: &memstate_core::Cursor, len: usize) -> Vec<u8> {
    let at = Position::from_cursor(cursor).unwrap();
    let bytes = std::fs::read(segment_file(dir, at.segment)).unwrap();
    let start = usize::try_from(at.offset).unwrap();
    bytes[start..start + 8 + len].to_vec()
}

/// A copy of `frame` with its last payload byte changed: it fails its checksum.
fn spoiled(frame: &[u8]) -> Vec<u8> {
    let mut bad = frame.to_vec();
    *bad.last_mut().unwrap() ^= 0xff;
    bad
}

/// Where the frame of `cursor` (`len` payload bytes) ends.
fn frame_end(cursor: &memstate_core::Cursor, len: usize) -> u64 {
    Position::from_cursor(cursor).unwrap().offset + 8 + len as u64
}

/// A bad copy of the frame of `cursor` followed by a good one: a bad frame
/// with data after it.
fn bad_frame_then_data(dir: &Path, cursor: &memstate_core::Cursor, len: usize) -> Vec<u8> {
    let good = frame_bytes(dir, cursor, len);
    let mut junk = spoiled(&good);
    junk.extend_from_slice(&good);
    junk
}

/// A journal holding the one record `kept`, closed; its cursor.
async fn one_record(dir: &Path, preallocate: u64) -> memstate_core::Cursor {
    let s = FileStream::open_with(config(dir, preallocate))
        .await
        .unwrap();
    let cursors = s.append(vec![b("kept")]).await.unwrap();
    s.close();
    cursors[0].clone()
}

fn assert_corrupt_at(err: &StreamError, offset: u64) {
    assert!(
        matches!(err, StreamError::Corrupt { location, .. } if location.ends_with(&format!(" at offset {offset}"))),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_frame_followed_by_data_past_the_watermark_is_corruption_and_is_not_cut() {
    for preallocate in [ROOM, 0] {
        let dir = tempfile::tempdir().unwrap();
        let kept = one_record(dir.path(), preallocate).await;
        // Past the watermark: a frame failing its checksum, then a valid frame
        // (then the room's zeros, when preallocated). Data follows the bad
        // frame, so it is not a torn write.
        let end = frame_end(&kept, 4);
        let seg = segment_file(dir.path(), 0);
        write_at(&seg, &bad_frame_then_data(dir.path(), &kept, 4), end);
        let before = std::fs::read(&seg).unwrap();

        let err = FileStream::open_with(config(dir.path(), preallocate))
            .await
            .unwrap_err();
        assert_corrupt_at(&err, end);
        assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing was cut");
        let report = inspect::read_all(dir.path()).unwrap();
        assert_eq!(report.corruption.map(|c| c.offset), Some(end));
    }
}

#[tokio::test]
async fn a_bad_last_frame_past_the_watermark_is_a_torn_tail_whether_zeros_follow_or_not() {
    for preallocate in [0, ROOM] {
        let dir = tempfile::tempdir().unwrap();
        let kept = one_record(dir.path(), preallocate).await;
        // Without preallocation the bad frame ends exactly at the end of the
        // file; with it, only the room's zeros follow it.
        let end = frame_end(&kept, 4);
        let seg = segment_file(dir.path(), 0);
        write_at(&seg, &spoiled(&frame_bytes(dir.path(), &kept, 4)), end);
        let len = file_len(&seg);
        if preallocate == 0 {
            assert_eq!(len, end + 12);
        } else {
            assert!(len > end + 12, "zeros follow the bad frame");
        }

        let s = FileStream::open_with(config(dir.path(), preallocate))
            .await
            .unwrap();
        let torn = s.open_report().torn_tail.clone().expect("a torn tail");
        assert_eq!((torn.offset, torn.dropped_bytes), (end, len - end));
        assert_eq!(file_len(&seg), end);
        assert_eq!(s.head().await.unwrap(), Some(kept));
        s.close();
    }
}

#[tokio::test]
async fn an_appender_cuts_a_dead_appenders_bad_frame_and_the_data_after_it() {
    for preallocate in [0, ROOM] {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStream::open_with(config(dir.path(), preallocate))
            .await
            .unwrap();
        let cursors = s.append(vec![b("a")]).await.unwrap();
        // Another appender took the lock, wrote a bad frame and a good one
        // past the watermark, and died before its fsync and watermark: none
        // of it was acknowledged, so the next appender cuts it all, although
        // on open (where the watermark may be stale) it would be corruption.
        let end = frame_end(&cursors[0], 1);
        let junk = bad_frame_then_data(dir.path(), &cursors[0], 1);
        write_at(&segment_file(dir.path(), 0), &junk, end);

        let next = s.append(vec![b("b")]).await.unwrap();
        assert_eq!(Position::from_cursor(&next[0]).unwrap().offset, end);
        let mut sub = s.subscribe(None).await.unwrap();
        assert_eq!(payloads(&take(&mut sub, 2).await), vec![b("a"), b("b")]);
        s.close();
        let report = inspect::read_all(dir.path()).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.records.len(), 2);
    }
}

#[tokio::test]
async fn an_appenders_recovery_reads_from_the_watermark_and_opening_still_finds_older_damage() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(config(dir.path(), 0)).await.unwrap();
    let cursors = s.append(vec![b("first"), b("second")]).await.unwrap();
    let first = Position::from_cursor(&cursors[0]).unwrap().offset;
    let end = frame_end(&cursors[1], 6);
    let seg = segment_file(dir.path(), 0);
    // Acknowledged data damaged on disk, and a dead appender's bad frame
    // followed by data past the watermark.
    write_at(&seg, b"F", first + 8);
    write_at(&seg, &bad_frame_then_data(dir.path(), &cursors[1], 6), end);

    // The appender examines only what lies past the watermark.
    let next = s.append(vec![b("third")]).await.unwrap();
    assert_eq!(Position::from_cursor(&next[0]).unwrap().offset, end);
    s.close();
    // Opening verifies every record and refuses the damaged one.
    let err = FileStream::open_with(config(dir.path(), 0))
        .await
        .unwrap_err();
    assert_corrupt_at(&err, first);
}

/// A journal of several segments written without preallocation, closed.
async fn several_segments(dir: &Path) {
    let s = FileStream::open_with(config(dir, 0)).await.unwrap();
    for i in 0..100 {
        s.append(vec![record(i)]).await.unwrap();
    }
    s.close();
    assert!(segment_file(dir, 1).exists());
}

#[tokio::test]
async fn bytes_after_a_seal_are_corruption_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    several_segments(dir.path()).await;
    let seg = segment_file(dir.path(), 0);
    let sealed_at = file_len(&seg);
    write_at(&seg, b"extra", sealed_at);

    let report = inspect::read_all(dir.path()).unwrap();
    let corruption = report.corruption.expect("bytes after the seal");
    assert_eq!(corruption.offset, sealed_at);
    assert!(
        corruption
            .reason
            .starts_with("5 bytes follow the segment's seal"),
        "{}",
        corruption.reason
    );
    let err = FileStream::open_with(config(dir.path(), 0))
        .await
        .unwrap_err();
    assert_corrupt_at(&err, sealed_at);
}

#[tokio::test]
async fn a_seal_failing_its_checksum_at_the_end_of_the_journal_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let kept = one_record(dir.path(), 0).await;
    // A seal marker whose checksum field was not written yet.
    let end = frame_end(&kept, 4);
    let seg = segment_file(dir.path(), 0);
    write_at(&seg, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], end);

    let s = FileStream::open_with(config(dir.path(), 0)).await.unwrap();
    let torn = s.open_report().torn_tail.clone().expect("a torn tail");
    assert_eq!((torn.offset, torn.dropped_bytes), (end, 8));
    assert_eq!(s.head().await.unwrap(), Some(kept));
    s.append(vec![b("next")]).await.unwrap();
    s.close();
    assert!(inspect::read_all(dir.path()).unwrap().is_clean());
}

/// A seal whose write was cut short, at any byte of its header, is a torn
/// tail (an incomplete frame header), not a bad seal followed by data.
#[tokio::test]
async fn a_seal_cut_short_at_the_end_of_the_journal_is_a_torn_tail() {
    let seal = [0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78];
    for cut in 1..seal.len() {
        let dir = tempfile::tempdir().unwrap();
        let kept = one_record(dir.path(), 0).await;
        let end = frame_end(&kept, 4);
        let seg = segment_file(dir.path(), 0);
        write_at(&seg, &seal[..cut], end);

        let s = FileStream::open_with(config(dir.path(), 0))
            .await
            .unwrap_or_else(|e| panic!("{cut} bytes of a seal: {e}"));
        let torn = s.open_report().torn_tail.clone().expect("a torn tail");
        assert_eq!((torn.offset, torn.dropped_bytes), (end, cut as u64));
        assert!(
            torn.reason.contains("frame header is incomplete"),
            "{}",
            torn.reason
        );
        assert_eq!(s.head().await.unwrap(), Some(kept));
        s.close();
    }
}
