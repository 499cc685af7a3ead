//! Read-only inspection of a journal directory, for tools such as
//! `memstate inspect PATH`.
//!
//! It judges the journal exactly as opening a [`FileStream`](crate::FileStream)
//! would (torn tail, corruption, or acknowledged data missing) but never
//! modifies a file and never takes the writer lock. On a journal that is being written, an append in flight
//! can show as a torn tail.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use memstate_core::Cursor;

use crate::error::FileStreamError;
use crate::format::{SEGMENT_HEADER_LEN, Watermark, segment_path};
use crate::fsio::WatermarkFile;
use crate::position::Position;
use crate::recovery::{TornTail, list_segments};
use crate::scan::{
    DataLoss, Verdict, WatermarkHint, judge, missing_acknowledged_data, scan_segment,
};

/// One record read by the inspector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InspectedRecord {
    /// The record's cursor, as a subscriber would see it.
    pub cursor: Cursor,
    /// The same position, decoded.
    pub position: Position,
    /// The payload.
    pub payload: Bytes,
}

/// One segment file as the inspector found it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentSummary {
    /// The segment number.
    pub number: u64,
    /// The segment file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// How many valid records it holds (up to a fault, if any).
    pub records: u64,
    /// Whether it ends with a seal.
    pub sealed: bool,
    /// Bytes of free space (zeros) after its last frame: room the writer
    /// zero-filled ahead of time, or a crash left.
    pub free_bytes: u64,
}

/// Damage that opening the journal would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Corruption {
    /// The damaged file.
    pub path: PathBuf,
    /// The offset of the bad frame or header in it.
    pub offset: u64,
    /// Which check failed.
    pub reason: String,
}

/// What [`read_all`] and [`scan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InspectReport {
    /// The journal directory.
    pub dir: PathBuf,
    /// Every segment examined, in order (examination stops at corruption).
    pub segments: Vec<SegmentSummary>,
    /// The records in stream order ([`read_all`] only; empty from [`scan`]).
    pub records: Vec<InspectedRecord>,
    /// How many valid records were read.
    pub record_count: u64,
    /// A torn tail that opening the journal would cut off (nothing was cut).
    pub torn_tail: Option<TornTail>,
    /// Damage that makes opening fail; records after it were not read.
    pub corruption: Option<Corruption>,
    /// Acknowledged data missing: the journal ends before its durable
    /// watermark. Opening fails unless it accepts the loss
    /// ([`FileStreamConfig::accept_data_loss`](crate::FileStreamConfig::accept_data_loss)).
    /// A partial record at the end is then part of the loss, not a torn tail.
    pub data_loss: Option<DataLoss>,
    /// The durable watermark file's content, when it decodes.
    pub watermark: Option<Watermark>,
}

impl InspectReport {
    /// No torn tail, no corruption, no data loss.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.corruption.is_none() && self.data_loss.is_none()
    }
}

/// Reads every record of the journal in `dir` into memory, without
/// modifying anything.
///
/// # Errors
///
/// I/O failures (a missing directory included). Torn tails and corruption
/// are reported in the [`InspectReport`], not as errors.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use memstate_core::Stream;
/// use memstate_file::{FileStream, inspect};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let stream = FileStream::open(dir.path()).await?;
/// stream.append(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]).await?;
/// let report = inspect::read_all(dir.path())?;
/// assert!(report.is_clean());
/// assert_eq!(report.records.len(), 2);
/// assert_eq!(report.records[1].payload, Bytes::from_static(b"b"));
/// # Ok(())
/// # }
/// ```
pub fn read_all(dir: impl AsRef<Path>) -> Result<InspectReport, FileStreamError> {
    let mut records = Vec::new();
    let mut report = scan(dir, |record| records.push(record))?;
    report.records = records;
    Ok(report)
}

/// Hands every record of the journal in `dir` to `visit`, in stream order,
/// without keeping them or modifying anything.
///
/// # Errors
///
/// As [`read_all`].
pub fn scan(
    dir: impl AsRef<Path>,
    mut visit: impl FnMut(InspectedRecord),
) -> Result<InspectReport, FileStreamError> {
    let dir = dir.as_ref().to_path_buf();
    let metadata =
        std::fs::metadata(&dir).map_err(|e| FileStreamError::io("inspecting", &dir, e))?;
    if !metadata.is_dir() {
        return Err(FileStreamError::io(
            "inspecting",
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "a journal is a directory",
            ),
        ));
    }
    let watermark = match WatermarkFile::open_read(&dir)? {
        Some(file) => file.read()?,
        None => None,
    };
    let mut report = InspectReport {
        dir: dir.clone(),
        segments: Vec::new(),
        records: Vec::new(),
        record_count: 0,
        torn_tail: None,
        corruption: None,
        data_loss: None,
        watermark,
    };
    let segments = match list_segments(&dir) {
        Ok(s) => s,
        Err(FileStreamError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            report.corruption = Some(Corruption {
                path,
                offset,
                reason,
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    // The watermark was read before the segments were listed, so an append
    // running meanwhile can only make the segments longer than it says.
    report.data_loss = missing_acknowledged_data(&dir, watermark, &segments)?;
    let last = segments.last().copied();
    for number in segments {
        let result = scan_segment(&dir, number, SEGMENT_HEADER_LEN, &mut |offset, payload| {
            let position = Position::new(number, offset);
            visit(InspectedRecord {
                cursor: position.to_cursor(),
                position,
                payload: Bytes::copy_from_slice(payload),
            });
            Ok(())
        })?;
        report.record_count += result.records;
        report.segments.push(SegmentSummary {
            number,
            path: result.path.clone(),
            len: result.file_len,
            records: result.records,
            sealed: result.sealed,
            free_bytes: result
                .free_from
                .map_or(0, |free| result.file_len.saturating_sub(free)),
        });
        let hint = WatermarkHint {
            end_in_segment: watermark
                .filter(|w| w.end.segment == number)
                .map(|w| w.end.offset),
            unacknowledged_from: None,
        };
        match judge(&result, Some(number) == last, hint) {
            Verdict::Clean => {}
            Verdict::Torn { .. } if report.data_loss.is_some() => {}
            Verdict::Torn { offset, reason } => {
                report.torn_tail = Some(TornTail {
                    path: segment_path(&dir, number),
                    offset,
                    dropped_bytes: result.file_len.saturating_sub(offset),
                    reason,
                });
            }
            Verdict::Corrupt { offset, reason } => {
                report.corruption = Some(Corruption {
                    path: result.path,
                    offset,
                    reason,
                });
                return Ok(report);
            }
        }
    }
    Ok(report)
}
