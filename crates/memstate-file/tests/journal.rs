//! Behaviour of one journal used from one process that is specific to the
//! file journal (segments, watermark, torn tails, corruption, locks, what
//! reopening verifies). The rules every adapter follows are the conformance
//! suite's (`cargo test -p memstate-conformance --test file`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use bytes::Bytes;
use common::{assert_quiet, b, payloads, segment_file, take};
use memstate_core::{Cursor, Stream, StreamError};
use memstate_file::{FileStream, FileStreamConfig, Position, inspect};

fn fast(dir: &std::path::Path) -> FileStreamConfig {
    FileStreamConfig::new(dir).with_poll_interval(Duration::from_millis(5))
}

#[tokio::test]
async fn cursors_are_segment_and_offset_and_increase() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s.append(vec![b("xy"), b("z")]).await.unwrap();
    // Header 32 bytes, then frames of 8 + payload bytes.
    assert_eq!(cursors[0].as_str(), "00000000:000000000032");
    assert_eq!(cursors[1].as_str(), "00000000:000000000042");
    assert_eq!(
        s.compare_cursors(&cursors[0], &cursors[1]).unwrap(),
        Ordering::Less
    );
    assert_eq!(
        s.compare_cursors(&cursors[1], &cursors[1]).unwrap(),
        Ordering::Equal
    );
}

#[tokio::test]
async fn reopening_a_clean_journal_verifies_every_record_and_truncates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStream::open(dir.path()).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let batch: Vec<Bytes> = (0..5).map(|j| b(&format!("r{i}-{j}"))).collect();
        expected.extend(batch.clone());
        first.append(batch).await.unwrap();
    }
    let head = first.head().await.unwrap();
    drop(first);

    let again = FileStream::open(dir.path()).await.unwrap();
    assert_eq!(again.open_report().truncated_bytes(), 0);
    assert_eq!(again.open_report().records_verified, 100);
    assert_eq!(again.head().await.unwrap(), head);
    let mut sub = again.subscribe(None).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 100).await), expected);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_on_reopen_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let mut cursors = s.append(vec![b("first"), b("second")]).await.unwrap();
    let published = std::fs::read(dir.path().join("journal.watermark")).unwrap();
    cursors.extend(s.append(vec![b("third-record")]).await.unwrap());
    drop(s);
    let seg = segment_file(dir.path(), 0);
    let full = std::fs::metadata(&seg).unwrap().len();
    let third = Position::from_cursor(&cursors[2]).unwrap().offset;
    // Cut the last record in the middle of its payload, as a crash during
    // its append would (before the watermark counted it).
    let cut = third + 8 + 5;
    std::fs::write(dir.path().join("journal.watermark"), published).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();

    // The inspector sees the torn tail without touching the file.
    let report = inspect::read_all(dir.path()).unwrap();
    let torn = report
        .torn_tail
        .clone()
        .expect("inspect reports the torn tail");
    assert_eq!((torn.offset, torn.dropped_bytes), (third, cut - third));
    assert!(report.corruption.is_none());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), cut);

    let s = FileStream::open(dir.path()).await.unwrap();
    let report = s.open_report();
    assert_eq!(report.truncated_bytes(), cut - third);
    let torn = report.torn_tail.as_ref().unwrap();
    assert_eq!(torn.path, seg.canonicalize().unwrap());
    assert_eq!(torn.offset, third);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), third);
    assert!(full > third);
    assert_eq!(s.head().await.unwrap(), Some(cursors[1].clone()));

    // Appends continue where the valid data ends.
    let next = s.append(vec![b("after")]).await.unwrap();
    assert_eq!(next[0], cursors[2]);
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(
        payloads(&take(&mut sub, 3).await),
        vec![b("first"), b("second"), b("after")]
    );
}

/// Flips one byte of the file at `offset`.
fn flip(path: &std::path::Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x40;
    f.write_all_at(&byte, offset).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_a_middle_record_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s
        .append(vec![b("one"), b("two"), b("three")])
        .await
        .unwrap();
    let seg = segment_file(dir.path(), 0).canonicalize().unwrap();
    let middle = Position::from_cursor(&cursors[1]).unwrap().offset;
    flip(&seg, middle + 8 + 1);

    // A subscriber of the open stream reads the first record, then fails.
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 1).await), vec![b("one")]);
    match sub.next().await {
        Err(StreamError::Corrupt { location, reason }) => {
            assert_eq!(location, format!("{} at offset {middle}", seg.display()));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    drop(sub);
    drop(s);

    // Reopening refuses the journal and changes nothing.
    let len = std::fs::metadata(&seg).unwrap().len();
    match FileStream::open(dir.path()).await {
        Err(StreamError::Corrupt { location, .. }) => {
            assert_eq!(location, format!("{} at offset {middle}", seg.display()));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);

    let report = inspect::read_all(dir.path()).unwrap();
    let corruption = report.corruption.expect("inspect reports it");
    assert_eq!((corruption.path, corruption.offset), (seg, middle));
    assert_eq!(report.records.len(), 1);
}

#[tokio::test]
async fn a_bad_last_record_inside_the_durable_watermark_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s.append(vec![b("one"), b("two")]).await.unwrap();
    drop(s);
    let seg = segment_file(dir.path(), 0);
    let last = Position::from_cursor(&cursors[1]).unwrap().offset;
    flip(&seg, last + 8);

    // The watermark proves the record was acknowledged: never drop it silently.
    let err = FileStream::open(dir.path()).await.unwrap_err();
    assert!(
        matches!(&err, StreamError::Corrupt { location, .. } if location.ends_with(&format!(" at offset {last}"))),
        "{err}"
    );

    // Without the watermark the same bytes are indistinguishable from a torn write.
    std::fs::remove_file(dir.path().join("journal.watermark")).unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    assert_eq!(s.open_report().torn_tail.as_ref().unwrap().offset, last);
    assert_eq!(s.head().await.unwrap(), Some(cursors[0].clone()));
}

#[tokio::test]
async fn a_subscriber_never_sees_bytes_past_the_durable_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(fast(dir.path())).await.unwrap();
    s.append(vec![b("durable")]).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 1).await), vec![b("durable")]);

    // A complete, valid frame written by hand past the watermark, as an
    // appender that crashed before publishing it would leave it.
    let seg = segment_file(dir.path(), 0);
    let end = std::fs::metadata(&seg).unwrap().len();
    let payload = b"unpublished";
    let mut frame = Vec::new();
    let len = payload.len() as u32;
    frame.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&frame, end)
        .unwrap();

    assert_quiet(&mut sub, Duration::from_millis(200)).await;
    let head = s.head().await.unwrap().unwrap();
    assert_eq!(Position::from_cursor(&head).unwrap().offset, 32);

    // The next appender finds the tail past the watermark, keeps the whole
    // frame (it may have been fsynced), and publishes both.
    s.append(vec![b("next")]).await.unwrap();
    assert_eq!(
        payloads(&take(&mut sub, 2).await),
        vec![b("unpublished"), b("next")]
    );
}

#[tokio::test]
async fn garbage_past_the_watermark_is_cut_by_the_next_appender_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(fast(dir.path())).await.unwrap();
    s.append(vec![b("a")]).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    take(&mut sub, 1).await;
    let seg = segment_file(dir.path(), 0);
    let end = std::fs::metadata(&seg).unwrap().len();
    // Half a frame header and junk: a crash mid-write.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&[7, 0, 0, 0, 1, 2, 3], end)
        .unwrap();
    assert_quiet(&mut sub, Duration::from_millis(100)).await;
    let cursors = s.append(vec![b("b")]).await.unwrap();
    assert_eq!(Position::from_cursor(&cursors[0]).unwrap().offset, end);
    let got = take(&mut sub, 1).await;
    assert_eq!(payloads(&got), vec![b("b")]);
    assert!(inspect::read_all(dir.path()).unwrap().is_clean());
}

#[tokio::test]
async fn an_oversized_record_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(FileStreamConfig::new(dir.path()).with_max_record_size(16))
        .await
        .unwrap();
    assert_eq!(s.capabilities().max_record_size, 16);
    let seg = segment_file(dir.path(), 0);
    let before = std::fs::metadata(&seg).unwrap().len();
    let err = s
        .append(vec![b("small"), Bytes::from(vec![0u8; 17])])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::RecordTooLarge {
                size: 17,
                limit: 16
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("16"));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
    assert_eq!(s.head().await.unwrap(), None);
    // Exactly at the limit is fine.
    s.append(vec![Bytes::from(vec![1u8; 16])]).await.unwrap();
}

#[tokio::test]
async fn segments_roll_at_the_configured_size_and_are_read_across_seals() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast(dir.path())
        .with_max_record_size(64)
        .with_segment_size(256);
    let s = FileStream::open_with(config.clone()).await.unwrap();
    let mut expected = Vec::new();
    let mut cursors = Vec::new();
    for i in 0..10 {
        let p = b(&format!("{i:040}"));
        expected.push(p.clone());
        cursors.extend(s.append(vec![p]).await.unwrap());
    }
    // One call spanning several segments still lands contiguously.
    let batch: Vec<Bytes> = (10..30).map(|i| b(&format!("{i:040}"))).collect();
    expected.extend(batch.clone());
    cursors.extend(s.append(batch).await.unwrap());

    let positions: Vec<Position> = cursors
        .iter()
        .map(|c| Position::from_cursor(c).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let last_segment = positions.last().unwrap().segment;
    assert!(
        last_segment >= 5,
        "30 records of 48 bytes in 256-byte segments: {last_segment}"
    );
    for n in 0..=last_segment {
        let len = std::fs::metadata(segment_file(dir.path(), n))
            .unwrap()
            .len();
        assert!(len <= 256, "segment {n} is {len} bytes");
    }
    let report = inspect::read_all(dir.path()).unwrap();
    assert!(report.is_clean());
    assert!(
        report.segments[..report.segments.len() - 1]
            .iter()
            .all(|seg| seg.sealed)
    );
    assert!(!report.segments.last().unwrap().sealed);

    let mut sub = s.subscribe(None).await.unwrap();
    let got = take(&mut sub, 30).await;
    assert_eq!(payloads(&got), expected);
    assert_eq!(
        got.iter().map(|r| r.cursor.clone()).collect::<Vec<_>>(),
        cursors
    );

    // From a cursor in a middle segment, and after a reopen.
    drop(s);
    let s = FileStream::open_with(config).await.unwrap();
    assert_eq!(s.open_report().records_verified, 30);
    let mut sub = s.subscribe(Some(cursors[14].clone())).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 15).await), expected[15..].to_vec());
    assert_eq!(
        s.compare_cursors(&cursors[3], &cursors[29]).unwrap(),
        Ordering::Less
    );
}

#[tokio::test]
async fn invalid_cursors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let cursors = s.append(vec![b("abc"), b("def")]).await.unwrap();
    let valid = cursors[0].clone();
    for bad in [
        Cursor::new("nonsense"),
        Cursor::new("0:4"),      // inside the segment header
        Cursor::new("0:33"),     // not where a record starts
        Cursor::new("0:999999"), // past the end
        Cursor::new("7:32"),     // a segment that does not exist
    ] {
        let err = s.subscribe(Some(bad.clone())).await.unwrap_err();
        assert!(
            matches!(err, StreamError::InvalidCursor { .. }),
            "{bad}: {err}"
        );
    }
    let err = s.compare_cursors(&valid, &Cursor::new("x:1")).unwrap_err();
    assert!(matches!(err, StreamError::InvalidCursor { .. }));
    let err = s
        .append_expecting(vec![b("x")], Some(Cursor::new("garbage")))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::InvalidCursor { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_in_one_process_share_the_journal_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let h1 = FileStream::open_with(fast(dir.path())).await.unwrap();
    let h2 = FileStream::open_with(fast(dir.path())).await.unwrap();
    let mut live = h1.subscribe(None).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let handle = if t % 2 == 0 { h1.clone() } else { h2.clone() };
        tasks.push(tokio::spawn(async move {
            let mut cursors = Vec::new();
            for i in 0..25 {
                let batch = vec![b(&format!("t{t}-{i}-x")), b(&format!("t{t}-{i}-y"))];
                let got = handle.append(batch).await.unwrap();
                cursors.push(got);
            }
            cursors
        }));
    }
    let mut batches = Vec::new();
    for task in tasks {
        let done = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("no deadlock")
            .unwrap();
        batches.extend(done);
    }
    let total = 8 * 25 * 2;
    let from_h1 = take(&mut live, total).await;
    let mut from_h2 = h2.subscribe(None).await.unwrap();
    let from_h2 = take(&mut from_h2, total).await;
    assert_eq!(from_h1, from_h2);
    let unique: HashSet<Bytes> = from_h1.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(unique.len(), total);
    // The two records of each call are adjacent.
    for cursors in batches {
        let i = from_h1.iter().position(|r| r.cursor == cursors[0]).unwrap();
        assert_eq!(from_h1[i + 1].cursor, cursors[1]);
    }
    assert!(inspect::read_all(dir.path()).unwrap().is_clean());
}

#[tokio::test]
async fn closing_ends_subscriptions_and_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    s.append(vec![b("a")]).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    take(&mut sub, 1).await;
    let waiting = tokio::spawn(async move { sub.next().await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.close();
    let end = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(matches!(
        s.append(vec![b("b")]).await,
        Err(StreamError::Closed)
    ));
}

#[tokio::test]
async fn dropping_the_last_handle_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open(dir.path()).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    let waiting = tokio::spawn(async move { sub.next().await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn a_cancelled_next_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(fast(dir.path())).await.unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    let mut expected = Vec::new();
    let mut got = Vec::new();
    for i in 0..60 {
        // Cancel next() again and again, at whatever point it has reached,
        // while appends land.
        let wait = Duration::from_micros(50 * (i % 7));
        if let Ok(result) = tokio::time::timeout(wait, sub.next()).await {
            got.push(result.unwrap().unwrap().payload);
        }
        let p = b(&format!("r{i}"));
        expected.push(p.clone());
        s.append(vec![p]).await.unwrap();
    }
    let rest = take(&mut sub, expected.len() - got.len()).await;
    got.extend(payloads(&rest));
    assert_eq!(got, expected);
    assert_quiet(&mut sub, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_config_whose_record_limit_does_not_fit_a_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileStream::open_with(
        FileStreamConfig::new(dir.path())
            .with_segment_size(100)
            .with_max_record_size(100),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
}

#[tokio::test]
async fn a_journal_missing_its_first_segment_is_truncated_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileStreamConfig::new(dir.path())
        .with_max_record_size(64)
        .with_segment_size(256);
    let s = FileStream::open_with(config.clone()).await.unwrap();
    let batch: Vec<Bytes> = (0..20).map(|i| b(&format!("{i:040}"))).collect();
    s.append(batch).await.unwrap();
    drop(s);
    std::fs::remove_file(segment_file(dir.path(), 0)).unwrap();
    let s = FileStream::open_with(config).await.unwrap();
    let err = s.subscribe(None).await.unwrap_err();
    assert!(matches!(err, StreamError::HistoryTruncated { .. }), "{err}");
}

#[tokio::test]
async fn an_appender_waits_for_the_lock_held_elsewhere_and_times_out_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStream::open_with(
        FileStreamConfig::new(dir.path()).with_lock_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    // Another open file description holds the flock, as another process would.
    let holder = std::fs::File::open(dir.path().join("journal.lock")).unwrap();
    holder.lock().unwrap();
    let err = s.append(vec![b("blocked")]).await.unwrap_err();
    assert!(matches!(err, StreamError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("journal.lock"), "{err}");
    assert_eq!(s.head().await.unwrap(), None, "nothing was written");
    holder.unlock().unwrap();
    let c = s.append(vec![b("free")]).await.unwrap();
    assert_eq!(s.head().await.unwrap(), Some(c[0].clone()));
}

#[tokio::test]
async fn a_sealed_last_segment_gets_a_successor_and_the_head_is_found_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileStreamConfig::new(dir.path())
        .with_max_record_size(64)
        .with_segment_size(256)
        .with_verify_on_open(false);
    let s = FileStream::open_with(config.clone()).await.unwrap();
    let mut cursors = s.append(vec![b(&format!("{:040}", 0))]).await.unwrap();
    let published = std::fs::read(dir.path().join("journal.watermark")).unwrap();
    let batch: Vec<Bytes> = (1..8).map(|i| b(&format!("{i:040}"))).collect();
    cursors.extend(s.append(batch).await.unwrap());
    let last = Position::from_cursor(cursors.last().unwrap()).unwrap();
    assert!(last.segment >= 1);
    drop(s);
    // As if the appender died after sealing segment `last.segment - 1` and
    // before its successor existed: the watermark still says what the append
    // before published.
    std::fs::remove_file(segment_file(dir.path(), last.segment)).unwrap();
    std::fs::write(dir.path().join("journal.watermark"), published).unwrap();
    let s = FileStream::open_with(config).await.unwrap();
    assert_eq!(s.open_report().created_segment, Some(last.segment));
    let survivors = cursors
        .iter()
        .filter(|c| Position::from_cursor(c).unwrap().segment < last.segment)
        .count();
    assert_eq!(
        s.head().await.unwrap(),
        Some(cursors[survivors - 1].clone())
    );
    let mut sub = s.subscribe(None).await.unwrap();
    assert_eq!(take(&mut sub, survivors).await.len(), survivors);
    let next = s.append(vec![b("again")]).await.unwrap();
    assert_eq!(
        Position::from_cursor(&next[0]).unwrap(),
        Position::new(last.segment, 32)
    );
    assert_eq!(payloads(&take(&mut sub, 1).await), vec![b("again")]);
}

#[tokio::test]
async fn a_damaged_length_in_a_sealed_segment_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast(dir.path())
        .with_max_record_size(64)
        .with_segment_size(256);
    let s = FileStream::open_with(config).await.unwrap();
    let batch: Vec<Bytes> = (0..12).map(|i| b(&format!("{i:040}"))).collect();
    let cursors = s.append(batch).await.unwrap();
    let second = Position::from_cursor(&cursors[1]).unwrap();
    assert_eq!(second.segment, 0);
    assert!(Position::from_cursor(&cursors[11]).unwrap().segment > 0);
    // A huge length in a segment that is already sealed.
    let seg = segment_file(dir.path(), 0).canonicalize().unwrap();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&0x7fff_fff0u32.to_le_bytes(), second.offset)
        .unwrap();
    let mut sub = s.subscribe(None).await.unwrap();
    take(&mut sub, 1).await;
    match sub.next().await {
        Err(StreamError::Corrupt { location, .. }) => {
            assert_eq!(
                location,
                format!("{} at offset {}", seg.display(), second.offset)
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Asking again reports the same, it does not skip ahead.
    assert!(matches!(sub.next().await, Err(StreamError::Corrupt { .. })));
}
