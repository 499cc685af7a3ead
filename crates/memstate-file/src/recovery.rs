//! Bringing the journal's tail to a consistent state. Runs only while the
//! writer lock is held: when a handle opens the journal, and when an appender
//! takes the lock and finds that the last holder left bytes past the
//! watermark (it crashed mid-append).

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::FileStreamError;
use crate::format::{
    SEGMENT_HEADER_LEN, Watermark, encode_segment_header, parse_segment_name, segment_path,
};
use crate::fsio::{WatermarkFile, sync_dir, write_all_at};
use crate::position::Position;
use crate::scan::{
    DataLoss, SegmentScan, Verdict, WatermarkHint, judge, missing_acknowledged_data, scan_segment,
};

/// The segment numbers present in `dir`, ascending, checked to be contiguous.
///
/// # Errors
///
/// I/O failures; [`FileStreamError::Corrupt`] when a segment is missing
/// between two others.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, FileStreamError> {
    let entries = fs::read_dir(dir).map_err(|e| FileStreamError::io("listing", dir, e))?;
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FileStreamError::io("listing", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(FileStreamError::Corrupt {
                path: segment_path(dir, pair[0] + 1),
                offset: 0,
                reason: format!(
                    "segment {} is missing between segments {} and {}",
                    pair[0] + 1,
                    pair[0],
                    pair[1]
                ),
            });
        }
    }
    Ok(numbers)
}

/// Creates segment `number` holding only its header, durably (file and
/// directory entry).
pub(crate) fn create_segment(dir: &Path, number: u64) -> Result<(), FileStreamError> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| FileStreamError::io("creating segment", &path, e))?;
    write_all_at(&file, &encode_segment_header(number), 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| FileStreamError::io("writing the header of", &path, e))?;
    sync_dir(dir)
}

/// How much of the journal recovery examines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every record of every segment (opening with `verify_on_open`).
    All,
    /// The last segment (opening without `verify_on_open`).
    LastSegment,
    /// From the stored watermark on (an appender that found the tail moved
    /// without the watermark: the previous holder died mid-append).
    FromWatermark,
}

/// A torn tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment file that was truncated.
    pub path: PathBuf,
    /// Where the interrupted write started; the file now ends here.
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// Why the bytes were judged to be a torn write.
    pub reason: String,
}

/// What recovery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) torn_tail: Option<TornTail>,
    /// Acknowledged data found missing and accepted.
    pub(crate) data_loss: Option<DataLoss>,
    pub(crate) created_segment: Option<u64>,
    /// Records whose checksum was verified.
    pub(crate) records_verified: u64,
    pub(crate) segments: Vec<u64>,
}

/// Makes the tail consistent and publishes the watermark, refusing to go on
/// when acknowledged data is missing. The caller holds the writer lock.
///
/// # Errors
///
/// As [`recover_with`] with data loss refused.
pub(crate) fn recover(
    dir: &Path,
    watermark_file: &WatermarkFile,
    scope: Scope,
) -> Result<(Watermark, Recovered), FileStreamError> {
    recover_with(dir, watermark_file, scope, false)
}

/// Makes the tail consistent and publishes the watermark. The caller holds
/// the writer lock.
///
/// Before anything is judged or cut, the segments are compared with the
/// stored watermark: a journal shorter than its watermark lost acknowledged
/// data. Unless `accept_data_loss`, that is an error and nothing is modified,
/// so the watermark is never written backwards.
///
/// # Errors
///
/// I/O failures; [`FileStreamError::DataLoss`] when acknowledged data is
/// missing and not accepted; [`FileStreamError::Corrupt`] for damage that is
/// not a torn tail (nothing is modified then).
pub(crate) fn recover_with(
    dir: &Path,
    watermark_file: &WatermarkFile,
    scope: Scope,
    accept_data_loss: bool,
) -> Result<(Watermark, Recovered), FileStreamError> {
    let stored = watermark_file.read()?;
    let mut segments = list_segments(dir)?;
    let mut recovered = Recovered::default();
    if let Some(loss) = missing_acknowledged_data(dir, stored, &segments)? {
        if !accept_data_loss {
            return Err(FileStreamError::DataLoss(Box::new(loss)));
        }
        tracing::error!(
            segment = %loss.path.display(),
            watermark_end = %loss.watermark_end,
            found_end = %loss.found_end,
            missing = %loss.missing,
            "acknowledged data is missing from the journal; continuing without it (accept_data_loss)"
        );
        recovered.data_loss = Some(loss);
    }

    let (Some(&first), Some(&last)) = (segments.first(), segments.last()) else {
        if let Some(w) = stored.filter(|w| w.last.is_some()) {
            return Err(FileStreamError::Corrupt {
                path: dir.join(crate::format::WATERMARK_FILE),
                offset: 0,
                reason: format!(
                    "the watermark records data up to {} but no segment file exists",
                    w.end
                ),
            });
        }
        create_segment(dir, 0)?;
        let watermark = Watermark::empty(0);
        watermark_file.write(&watermark)?;
        recovered.created_segment = Some(0);
        recovered.segments = vec![0];
        return Ok((watermark, recovered));
    };

    // Where to start, and whether the stored watermark can be trusted as the
    // line between acknowledged and never-acknowledged bytes. It can when a
    // live appender reads it: it is rewritten after every fsync and only
    // crashes in between leave bytes past it. After a power failure it may be
    // stale, so opening never trusts it that far.
    let live = match (scope, stored) {
        (Scope::FromWatermark, Some(w))
            if (first..=last).contains(&w.end.segment)
                && w.end.offset <= segment_len(dir, w.end.segment)? =>
        {
            Some(w)
        }
        _ => None,
    };
    let (start, mut last_record) = match (scope, live) {
        (_, Some(w)) => (w.end, w.last),
        (Scope::All, None) => (Position::segment_start(first), None),
        (_, None) => (Position::segment_start(last), None),
    };

    let mut tail_scan: Option<SegmentScan> = None;
    for number in start.segment..=last {
        let from = if number == start.segment {
            start.offset
        } else {
            SEGMENT_HEADER_LEN
        };
        let scan = scan_segment(dir, number, from, &mut |_, _| Ok(()))?;
        recovered.records_verified += scan.records;
        let hint = WatermarkHint {
            end_in_segment: stored
                .filter(|w| w.end.segment == number)
                .map(|w| w.end.offset),
            unacknowledged_from: live.and_then(|w| match w.end.segment.cmp(&number) {
                std::cmp::Ordering::Equal => Some(w.end.offset),
                std::cmp::Ordering::Less => Some(0),
                std::cmp::Ordering::Greater => None,
            }),
        };
        match judge(&scan, number == last, hint) {
            Verdict::Clean => {}
            Verdict::Corrupt { offset, reason } => {
                return Err(FileStreamError::Corrupt {
                    path: scan.path,
                    offset,
                    reason,
                });
            }
            Verdict::Torn { offset, reason } => {
                recovered.torn_tail = Some(truncate_torn(&scan, offset, reason)?);
            }
        }
        if let Some(offset) = scan.last_record {
            last_record = Some(Position::new(number, offset));
        }
        tail_scan = Some(scan);
    }

    // The last record may sit in an earlier segment when the last one is new.
    if last_record.is_none() && live.is_none() {
        let mut number = start.segment;
        while last_record.is_none() && number > first {
            number -= 1;
            let scan = scan_segment(dir, number, SEGMENT_HEADER_LEN, &mut |_, _| Ok(()))?;
            recovered.records_verified += scan.records;
            if let Verdict::Corrupt { offset, reason } =
                judge(&scan, false, WatermarkHint::default())
            {
                return Err(FileStreamError::Corrupt {
                    path: scan.path,
                    offset,
                    reason,
                });
            }
            last_record = scan.last_record.map(|o| Position::new(number, o));
        }
    }

    let end = match tail_scan {
        Some(scan) if scan.sealed => {
            // The previous appender sealed this segment and died before the
            // next one existed: create it so appends and readers can move on.
            create_segment(dir, last + 1)?;
            recovered.created_segment = Some(last + 1);
            segments.push(last + 1);
            Position::segment_start(last + 1)
        }
        Some(scan) => Position::new(last, scan.end.max(SEGMENT_HEADER_LEN)),
        None => start,
    };
    // Frames kept past an old watermark may still sit only in the page cache
    // of a process that died before its fsync: make them durable before
    // publishing them.
    let tail_path = segment_path(dir, end.segment);
    OpenOptions::new()
        .write(true)
        .open(&tail_path)
        .and_then(|f| f.sync_data())
        .map_err(|e| FileStreamError::io("syncing", &tail_path, e))?;
    let watermark = Watermark {
        end,
        last: last_record,
    };
    if stored != Some(watermark) {
        watermark_file.write(&watermark)?;
    }
    recovered.segments = segments;
    Ok((watermark, recovered))
}

fn segment_len(dir: &Path, number: u64) -> Result<u64, FileStreamError> {
    let path = segment_path(dir, number);
    fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| FileStreamError::io("reading the size of", &path, e))
}

/// Cuts a torn tail off (rewriting the header when the header itself was
/// torn) and makes the cut durable.
fn truncate_torn(
    scan: &SegmentScan,
    offset: u64,
    reason: String,
) -> Result<TornTail, FileStreamError> {
    let file = OpenOptions::new()
        .write(true)
        .open(&scan.path)
        .map_err(|e| FileStreamError::io("opening segment for truncation", &scan.path, e))?;
    let result: io::Result<()> = (|| {
        file.set_len(offset)?;
        if offset < SEGMENT_HEADER_LEN {
            write_all_at(&file, &encode_segment_header(scan.number), 0)?;
        }
        file.sync_all()
    })();
    result.map_err(|e| FileStreamError::io("truncating a torn tail of", &scan.path, e))?;
    let dropped_bytes = scan.file_len.saturating_sub(offset);
    tracing::warn!(
        segment = %scan.path.display(),
        offset,
        dropped_bytes,
        %reason,
        "truncated a torn tail of the journal"
    );
    Ok(TornTail {
        path: scan.path.clone(),
        offset,
        dropped_bytes,
        reason,
    })
}
