//! Reading a whole segment front to back, checking every frame, and deciding
//! whether a bad frame is a torn tail or corruption.
//!
//! Zeros from a frame boundary to the end of the file are free space, not a
//! frame: the writer zero-fills segments ahead of their last record
//! (preallocation), and a crash can leave a file extended by zeros. An
//! all-zero frame header never passes its checksum (the CRC covers the
//! length), so free space cannot be mistaken for a record. Free space inside
//! what the watermark says is durable is lost data, judged as corruption.
//!
//! Used by recovery (under the writer lock) and by the read-only inspector,
//! so both judge a journal the same way. Also compares the durable watermark
//! with the segments: a journal shorter than its watermark lost acknowledged
//! data ([`DataLoss`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::FileStreamError;
use crate::format::{
    FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN, Watermark, check_segment_header, frame_crc,
    seal_crc_ok, segment_path,
};
use crate::position::Position;

/// Read buffer for sequential scans: large enough that a scan is a few big
/// reads rather than two small ones per record.
const SCAN_BUFFER: usize = 1024 * 1024;

/// Receives each valid record's offset and payload during a scan.
pub(crate) type RecordVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<(), FileStreamError> + 'a;

/// How a frame (or the segment header) failed its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// It claims to extend past the end of the file (an interrupted write).
    Incomplete,
    /// It fails its checksum or has an impossible length.
    Bad,
    /// The segment header is complete but wrong (magic, version, number).
    BadHeader,
    /// Bytes follow the seal of the segment.
    AfterSeal,
}

/// The first bad frame of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Where the bad frame (or header, at 0) starts.
    pub(crate) offset: u64,
    pub(crate) kind: FaultKind,
    /// Whether the frame's declared end is exactly the end of the file, or
    /// only zeros (free space) follow it: it is the last frame in the file.
    pub(crate) ends_at_eof: bool,
    /// Whether every byte from `offset` to the end of the file is zero (a file
    /// extended by a crash before its data reached the disk).
    pub(crate) zero_tail: bool,
    pub(crate) reason: String,
}

/// What a scan of one segment found.
#[derive(Clone, Debug)]
pub(crate) struct SegmentScan {
    pub(crate) number: u64,
    pub(crate) path: PathBuf,
    /// The file's size when the scan started.
    pub(crate) file_len: u64,
    /// How many valid records were read (from the scan's start offset).
    pub(crate) records: u64,
    /// The offset of the last valid record read.
    pub(crate) last_record: Option<u64>,
    /// The offset just past the last valid frame (a record or the seal).
    pub(crate) end: u64,
    /// A valid seal was read.
    pub(crate) sealed: bool,
    /// Where free space (zeros to the end of the file) starts after the last
    /// valid frame, if the file has any.
    pub(crate) free_from: Option<u64>,
    /// The first bad frame, if any; nothing after it was read.
    pub(crate) fault: Option<Fault>,
}

/// Reads segment `number` of `dir` from `from` (an offset at a frame boundary,
/// at least the header length), checking the header and every frame, and
/// hands each valid record to `visit` with its offset.
///
/// # Errors
///
/// I/O failures only; bad bytes are reported in [`SegmentScan::fault`].
pub(crate) fn scan_segment(
    dir: &Path,
    number: u64,
    from: u64,
    visit: &mut RecordVisitor<'_>,
) -> Result<SegmentScan, FileStreamError> {
    let path = segment_path(dir, number);
    let file = File::open(&path).map_err(|e| FileStreamError::io("opening segment", &path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| FileStreamError::io("reading the size of", &path, e))?
        .len();
    let io_err = |e: io::Error| FileStreamError::io("reading segment", &path, e);
    let mut scan = SegmentScan {
        number,
        path: path.clone(),
        file_len,
        records: 0,
        last_record: None,
        end: SEGMENT_HEADER_LEN,
        sealed: false,
        free_from: None,
        fault: None,
    };
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);

    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let got = read_full(&mut reader, &mut header).map_err(io_err)?;
    if let Err(reason) = check_segment_header(&header[..got], number) {
        let kind = if got < header.len() {
            FaultKind::Incomplete
        } else if header.iter().all(|b| *b == 0) {
            FaultKind::Bad
        } else {
            FaultKind::BadHeader
        };
        scan.end = 0;
        scan.fault = Some(fault_at(&mut reader, 0, file_len, kind, None, reason).map_err(io_err)?);
        return Ok(scan);
    }

    let mut pos = from.max(SEGMENT_HEADER_LEN);
    scan.end = pos;
    if pos > file_len {
        scan.fault = Some(Fault {
            offset: pos,
            kind: FaultKind::Incomplete,
            ends_at_eof: false,
            zero_tail: true,
            reason: format!("the segment ends at {file_len}, before offset {pos}"),
        });
        return Ok(scan);
    }
    reader.seek(SeekFrom::Start(pos)).map_err(io_err)?;
    let mut payload = Vec::new();
    while pos < file_len {
        if free_space_at(&mut reader, pos, file_len).map_err(io_err)? {
            scan.free_from = Some(pos);
            return Ok(scan);
        }
        if scan.sealed {
            scan.fault = Some(
                fault_at(
                    &mut reader,
                    pos,
                    file_len,
                    FaultKind::AfterSeal,
                    None,
                    format!("{} bytes follow the segment's seal", file_len - pos),
                )
                .map_err(io_err)?,
            );
            return Ok(scan);
        }
        let remaining = file_len - pos;
        if remaining < FRAME_HEADER_LEN {
            scan.fault = Some(
                fault_at(
                    &mut reader,
                    pos,
                    file_len,
                    FaultKind::Incomplete,
                    Some(file_len),
                    format!("frame header is incomplete ({remaining} of {FRAME_HEADER_LEN} bytes)"),
                )
                .map_err(io_err)?,
            );
            return Ok(scan);
        }
        let mut raw = [0u8; FRAME_HEADER_LEN as usize];
        read_full(&mut reader, &mut raw).map_err(io_err)?;
        match FrameHeader::decode(&raw) {
            FrameHeader::Seal { crc } => {
                if !seal_crc_ok(crc) {
                    scan.fault = Some(
                        fault_at(
                            &mut reader,
                            pos,
                            file_len,
                            FaultKind::Bad,
                            Some(pos + FRAME_HEADER_LEN),
                            "seal checksum mismatch".to_owned(),
                        )
                        .map_err(io_err)?,
                    );
                    return Ok(scan);
                }
                scan.sealed = true;
                pos += FRAME_HEADER_LEN;
                scan.end = pos;
            }
            FrameHeader::Record { len, crc } => {
                let frame_end = pos + FRAME_HEADER_LEN + u64::from(len);
                if frame_end > file_len {
                    scan.fault = Some(
                        fault_at(&mut reader, pos, file_len, FaultKind::Incomplete, None, format!(
                            "record of {len} bytes extends past the end of the file ({file_len})"
                        ))
                        .map_err(io_err)?,
                    );
                    return Ok(scan);
                }
                // Bounded by the file's size, checked just above.
                payload.resize(len as usize, 0);
                read_full(&mut reader, &mut payload).map_err(io_err)?;
                if frame_crc(len, &payload) != crc {
                    scan.fault = Some(
                        fault_at(
                            &mut reader,
                            pos,
                            file_len,
                            FaultKind::Bad,
                            Some(frame_end),
                            format!("record checksum mismatch (length field {len})"),
                        )
                        .map_err(io_err)?,
                    );
                    return Ok(scan);
                }
                visit(pos, &payload)?;
                scan.records += 1;
                scan.last_record = Some(pos);
                pos = frame_end;
                scan.end = pos;
            }
        }
    }
    Ok(scan)
}

/// Builds a fault at `offset` for a frame declared to end at `frame_end`,
/// checking whether the rest of the file is zeros, and whether only zeros
/// follow the frame's declared end.
fn fault_at(
    reader: &mut BufReader<File>,
    offset: u64,
    file_len: u64,
    kind: FaultKind,
    frame_end: Option<u64>,
    reason: String,
) -> io::Result<Fault> {
    let ends_at_eof = match frame_end {
        Some(end) if end == file_len => true,
        Some(end) if end < file_len => zeros_between(reader, end, file_len)?,
        _ => false,
    };
    let zero_tail = zeros_between(reader, offset, file_len)?;
    Ok(Fault {
        offset,
        kind,
        ends_at_eof,
        zero_tail,
        reason,
    })
}

/// Whether the reader, at frame boundary `pos`, faces free space: zeros up
/// to `file_len`. Leaves the reader at `pos`.
fn free_space_at(reader: &mut BufReader<File>, pos: u64, file_len: u64) -> io::Result<bool> {
    // A frame header is never all zeros: answer from the buffer when it
    // shows a non-zero byte, without a seek that would discard the buffer.
    let peek = reader.fill_buf()?;
    let n = peek.len().min(FRAME_HEADER_LEN as usize);
    if peek[..n].iter().any(|b| *b != 0) {
        return Ok(false);
    }
    let free = zeros_between(reader, pos, file_len)?;
    reader.seek(SeekFrom::Start(pos))?;
    Ok(free)
}

/// Whether every byte from `from` to `to` is zero (true for an empty range).
/// Leaves the reader at an unspecified position.
fn zeros_between(reader: &mut BufReader<File>, from: u64, to: u64) -> io::Result<bool> {
    reader.seek(SeekFrom::Start(from))?;
    let mut left = to.saturating_sub(from);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = read_full(reader, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What to do about a scanned segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing wrong.
    Clean,
    /// The bytes from `offset` on are an interrupted write: cut them off.
    Torn { offset: u64, reason: String },
    /// Damaged data that must not be skipped.
    Corrupt { offset: u64, reason: String },
}

/// What the watermark says about a segment when judging its tail.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WatermarkHint {
    /// The watermark's end offset, when it lies in this segment.
    pub(crate) end_in_segment: Option<u64>,
    /// The watermark is known to be current (a live appender read it under the
    /// lock) and lies in or before this segment, so everything at or past its
    /// end was never acknowledged.
    pub(crate) unacknowledged_from: Option<u64>,
}

/// Judges a scanned segment.
///
/// A bad frame is a torn tail only in the last segment, and only when it is
/// plainly an interrupted write: it runs past the end of the file, or is the
/// last frame of the file (only free space follows it), or everything from it
/// on is zeros, or it lies past
/// a current watermark. It is corruption when it lies inside what the
/// watermark says was made durable and that data is still all there, or when
/// valid-looking data follows it. Non-last segments must be whole and sealed.
pub(crate) fn judge(scan: &SegmentScan, is_last: bool, hint: WatermarkHint) -> Verdict {
    if let (Some(free), Some(end)) = (scan.free_from, hint.end_in_segment)
        && free < end
    {
        return Verdict::Corrupt {
            offset: free,
            reason: format!(
                "zeros from offset {free} to the end of the file, inside data acknowledged as \
                 durable up to offset {end}"
            ),
        };
    }
    let Some(fault) = &scan.fault else {
        if !is_last && !scan.sealed {
            return Verdict::Corrupt {
                offset: scan.end,
                reason: "segment is not sealed although a later segment exists".to_owned(),
            };
        }
        return Verdict::Clean;
    };
    let corrupt = |why: &str| Verdict::Corrupt {
        offset: fault.offset,
        reason: format!("{}{why}", fault.reason),
    };
    if !is_last {
        return corrupt(" (in a sealed, older segment)");
    }
    if matches!(fault.kind, FaultKind::BadHeader | FaultKind::AfterSeal) {
        return corrupt("");
    }
    if let Some(end) = hint.end_in_segment
        && fault.offset < end
        && end <= scan.file_len
    {
        return corrupt(&format!(
            " (inside data acknowledged as durable up to offset {end})"
        ));
    }
    let torn = |why: &str| Verdict::Torn {
        offset: fault.offset,
        reason: format!("{} ({why})", fault.reason),
    };
    if hint.unacknowledged_from.is_some_and(|w| fault.offset >= w) {
        return torn("past the durable watermark: never acknowledged");
    }
    if fault.kind == FaultKind::Incomplete {
        return torn("an interrupted write at the end of the journal");
    }
    if fault.ends_at_eof {
        return torn("the last frame of the journal");
    }
    if fault.zero_tail {
        return torn("zero-filled to the end of the file");
    }
    corrupt(" (more data follows it)")
}

/// Acknowledged data that is gone: the durable watermark, written only after
/// its data was fsynced, lies past what the segment files still hold.
///
/// A journal can end short of its watermark only when something outside the
/// journal removed bytes (a restored backup, a cut file, a deleted segment, a
/// disk that lost writes it had confirmed). Those records were acknowledged to
/// their callers, so this is data loss, never a torn tail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataLoss {
    /// The segment file where data is missing: the first missing segment, or
    /// the segment that is shorter than the watermark says.
    pub path: PathBuf,
    /// Where the watermark says the durable data ends.
    pub watermark_end: Position,
    /// Where the segment files end now (the end of the last segment file,
    /// whatever its content).
    pub found_end: Position,
    /// What is missing, in words: the missing segments or the missing byte
    /// range, and the last acknowledged record when it is among them.
    pub missing: String,
}

impl std::fmt::Display for DataLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (the durable watermark ends at {}, the segments end at {})",
            self.path.display(),
            self.missing,
            self.watermark_end,
            self.found_end
        )
    }
}

/// Compares the watermark with the segment files' lengths and says what
/// acknowledged data is missing, if any. Reads only file sizes, so it runs
/// before anything is judged or cut.
///
/// `segments` are the segment numbers present, ascending and contiguous.
///
/// # Errors
///
/// I/O failures reading file sizes.
pub(crate) fn missing_acknowledged_data(
    dir: &Path,
    watermark: Option<Watermark>,
    segments: &[u64],
) -> Result<Option<DataLoss>, FileStreamError> {
    let (Some(w), Some(&first), Some(&last)) = (watermark, segments.first(), segments.last())
    else {
        return Ok(None);
    };
    if w.end.segment < first {
        // The watermark's segment was removed together with everything
        // before the remaining segments: the history check reports that.
        return Ok(None);
    }
    let last_len = file_size(dir, last)?;
    let found_end = Position::new(last, last_len);
    let lost_record = |from: Position| match w.last {
        Some(record) if record >= from => {
            format!("; the last acknowledged record, at {record}, is among them")
        }
        _ => String::new(),
    };
    if w.end.segment > last {
        // A watermark at the very start of the next segment only says that
        // the last one was sealed: opening found the seal and made its
        // (empty) successor, which nothing ever wrote to.
        let empty_successor =
            w.end.segment == last + 1 && w.end.offset <= crate::format::SEGMENT_HEADER_LEN;
        if empty_successor {
            let Some(record) = w.last else {
                return Ok(None);
            };
            let len = file_size(dir, record.segment)?;
            if len >= record.offset + FRAME_HEADER_LEN {
                return Ok(None);
            }
            return Ok(Some(DataLoss {
                path: segment_path(dir, record.segment),
                watermark_end: w.end,
                found_end,
                missing: format!(
                    "segment {} is {len} bytes long but the last acknowledged record starts at \
                     offset {} of it",
                    record.segment, record.offset
                ),
            }));
        }
        let missing = if w.end.segment == last + 1 {
            format!("segment {} is missing", last + 1)
        } else {
            format!("segments {} to {} are missing", last + 1, w.end.segment)
        };
        return Ok(Some(DataLoss {
            path: segment_path(dir, last + 1),
            watermark_end: w.end,
            found_end,
            missing: format!(
                "{missing}: the watermark counts {} byte(s) of segment {} as durable{}",
                w.end.offset,
                w.end.segment,
                lost_record(Position::new(last + 1, 0))
            ),
        }));
    }
    let len = if w.end.segment == last {
        last_len
    } else {
        file_size(dir, w.end.segment)?
    };
    if len >= w.end.offset {
        return Ok(None);
    }
    Ok(Some(DataLoss {
        path: segment_path(dir, w.end.segment),
        watermark_end: w.end,
        found_end,
        missing: format!(
            "segment {} is {len} bytes long but the watermark counts {} bytes of it as durable: \
             bytes {len} to {} are missing{}",
            w.end.segment,
            w.end.offset,
            w.end.offset,
            lost_record(Position::new(w.end.segment, len))
        ),
    }))
}

fn file_size(dir: &Path, number: u64) -> Result<u64, FileStreamError> {
    let path = segment_path(dir, number);
    std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| FileStreamError::io("reading the size of", &path, e))
}
