//! Reading records in order up to the durable watermark, and the
//! [`Subscription`] that follows the tail.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{Record, StreamError, Subscription};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::FileStreamError;
use crate::format::{
    FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN, Watermark, check_segment_header, frame_crc,
    seal_crc_ok, segment_path,
};
use crate::fsio::{WatermarkFile, read_at};
use crate::notify::Notifier;
use crate::position::Position;

/// Bytes read from a segment at once.
const READ_CHUNK: u64 = 1024 * 1024;
/// Records handed from one blocking read to the async side at most.
const MAX_RECORDS_PER_FILL: usize = 4096;
/// Payload bytes handed from one blocking read at most.
const MAX_BYTES_PER_FILL: usize = 8 * 1024 * 1024;

/// A reader positioned at a frame boundary of the journal. Blocking; it
/// reads only below the durable watermark, so it never sees bytes that are
/// not yet fsynced, and it checks every frame it reads.
#[derive(Debug)]
pub(crate) struct JournalReader {
    dir: PathBuf,
    /// The segment and offset of the next frame to read.
    next: Position,
    file: Option<File>,
    /// Bytes of the current segment starting at `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    watermark_file: Option<WatermarkFile>,
    /// The last watermark that decoded.
    watermark: Option<Watermark>,
}

impl JournalReader {
    pub(crate) fn new(dir: PathBuf, next: Position) -> Self {
        Self {
            dir,
            next,
            file: None,
            buf: Vec::new(),
            buf_start: 0,
            watermark_file: None,
            watermark: None,
        }
    }

    /// Re-reads the watermark file; keeps the previous value when the file
    /// is missing or caught mid-rewrite.
    pub(crate) fn refresh_watermark(&mut self) -> Result<Option<Watermark>, FileStreamError> {
        if self.watermark_file.is_none() {
            self.watermark_file = WatermarkFile::open_read(&self.dir)?;
        }
        if let Some(file) = &self.watermark_file
            && let Some(w) = file.read()?
        {
            self.watermark = Some(w);
        }
        Ok(self.watermark)
    }

    /// Reads durable records from the current position on, up to the limits.
    pub(crate) fn fill(
        &mut self,
        out: &mut Vec<Record>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(), FileStreamError> {
        let Some(w) = self.refresh_watermark()? else {
            return Ok(());
        };
        let mut bytes = 0;
        while out.len() < max_records && bytes < max_bytes {
            match self.read_frame(&w)? {
                Step::Record(position, payload) => {
                    bytes += payload.len();
                    out.push(Record {
                        cursor: position.to_cursor(),
                        payload,
                    });
                }
                Step::NextSegment => {}
                Step::Wait => break,
            }
        }
        Ok(())
    }

    /// Reads the frame at the current position, if it is durable.
    pub(crate) fn read_frame(&mut self, w: &Watermark) -> Result<Step, FileStreamError> {
        let here = self.next;
        // Older segments are durable up to their seal; the segment being
        // written only up to the watermark; later ones not at all yet.
        let limit = match here.segment.cmp(&w.end.segment) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(w.end.offset),
            std::cmp::Ordering::Greater => return Ok(Step::Wait),
        };
        if limit.is_some_and(|l| here.offset >= l) {
            return Ok(Step::Wait);
        }
        let path = segment_path(&self.dir, here.segment);
        if self.file.is_none() {
            self.open_segment(&path, here.segment)?;
        }
        let corrupt = |reason: String| FileStreamError::Corrupt {
            path: path.clone(),
            offset: here.offset,
            reason,
        };
        let header = self.bytes_at(&path, here.offset, FRAME_HEADER_LEN, limit)?;
        let Some(header) = header else {
            return Err(corrupt(match limit {
                Some(l) => format!("frame header crosses the durable watermark at {l}"),
                None => {
                    "the segment ends without a seal although a later segment exists".to_owned()
                }
            }));
        };
        let mut raw = [0u8; FRAME_HEADER_LEN as usize];
        raw.copy_from_slice(&header);
        match FrameHeader::decode(&raw) {
            FrameHeader::Seal { crc } => {
                if !seal_crc_ok(crc) {
                    return Err(corrupt("seal checksum mismatch".to_owned()));
                }
                self.next = Position::segment_start(here.segment + 1);
                self.file = None;
                self.buf.clear();
                Ok(Step::NextSegment)
            }
            FrameHeader::Record { len, crc } => {
                let at = here.offset + FRAME_HEADER_LEN;
                let Some(payload) = self.bytes_at(&path, at, u64::from(len), limit)? else {
                    return Err(corrupt(match limit {
                        Some(l) => {
                            format!("record of {len} bytes crosses the durable watermark at {l}")
                        }
                        None => format!("record of {len} bytes runs past the end of the segment"),
                    }));
                };
                if frame_crc(len, &payload) != crc {
                    return Err(corrupt(format!(
                        "record checksum mismatch (length field {len})"
                    )));
                }
                self.next.offset = at + u64::from(len);
                Ok(Step::Record(here, Bytes::from(payload)))
            }
        }
    }

    fn open_segment(&mut self, path: &Path, number: u64) -> Result<(), FileStreamError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileStreamError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: "segment file is missing although the watermark covers it".to_owned(),
                });
            }
            Err(e) => return Err(FileStreamError::io("opening segment", path, e)),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let n = read_at(&file, &mut header, 0)
            .map_err(|e| FileStreamError::io("reading segment", path, e))?;
        check_segment_header(&header[..n], number).map_err(|reason| FileStreamError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason,
        })?;
        self.file = Some(file);
        self.buf.clear();
        self.buf_start = 0;
        Ok(())
    }

    /// `len` bytes at `offset` of the open segment, or `None` when they are
    /// not all there below `limit` (or below the end of the file). Reads
    /// ahead, but never past `limit`: bytes past the watermark may still be
    /// rewritten by the recovery of a torn tail.
    fn bytes_at(
        &mut self,
        path: &Path,
        offset: u64,
        len: u64,
        limit: Option<u64>,
    ) -> Result<Option<Vec<u8>>, FileStreamError> {
        let end = offset + len;
        if limit.is_some_and(|l| end > l) {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || end > buf_end {
            let Some(file) = &self.file else {
                return Ok(None);
            };
            // Sealed segments are durable to their end; bound the read by the
            // file's size so a damaged length field cannot make us allocate
            // gigabytes.
            let bound = match limit {
                Some(l) => l,
                None => file
                    .metadata()
                    .map_err(|e| FileStreamError::io("reading the size of", path, e))?
                    .len(),
            };
            if end > bound {
                return Ok(None);
            }
            let want = len.max(READ_CHUNK).min(bound - offset);
            // At most max(len, READ_CHUNK) and within the file: it fits.
            let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
            let n = read_at(file, &mut buf, offset)
                .map_err(|e| FileStreamError::io("reading segment", path, e))?;
            buf.truncate(n);
            self.buf = buf;
            self.buf_start = offset;
        }
        let from = usize::try_from(offset - self.buf_start).unwrap_or(usize::MAX);
        let to = usize::try_from(end - self.buf_start).unwrap_or(usize::MAX);
        Ok(self.buf.get(from..to).map(<[u8]>::to_vec))
    }

    /// The position of the next frame to read.
    pub(crate) fn next_position(&self) -> Position {
        self.next
    }
}

/// One step of reading.
#[derive(Debug)]
pub(crate) enum Step {
    Record(Position, Bytes),
    NextSegment,
    Wait,
}

/// What a subscription's blocking reads share with its async side.
#[derive(Debug)]
struct ReadState {
    reader: JournalReader,
    buffered: VecDeque<Record>,
}

/// A subscription of a [`FileStream`](crate::FileStream).
///
/// Blocking reads run on tokio's blocking pool and leave what they read in
/// a shared buffer, so a `next()` future dropped mid-read loses nothing: the
/// next call first waits for that read to finish.
pub(crate) struct FileSubscription {
    state: Arc<Mutex<ReadState>>,
    in_flight: Option<JoinHandle<Result<(), FileStreamError>>>,
    poll_interval: Duration,
    closed: watch::Receiver<bool>,
    wake: watch::Receiver<u64>,
    /// Keeps the shared notifier alive so `wake` never reports a dropped sender.
    _notifier: Arc<Notifier>,
}

impl fmt::Debug for FileSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FileSubscription");
        // Only look inside when no blocking read holds the state.
        if self.in_flight.is_none()
            && let Some(state) = self.state.try_lock()
        {
            d.field("next", &state.reader.next_position())
                .field("buffered", &state.buffered.len());
        }
        d.finish_non_exhaustive()
    }
}

impl FileSubscription {
    pub(crate) fn new(
        reader: JournalReader,
        poll_interval: Duration,
        closed: watch::Receiver<bool>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(ReadState {
                reader,
                buffered: VecDeque::new(),
            })),
            in_flight: None,
            poll_interval,
            closed,
            wake: notifier.subscribe(),
            _notifier: notifier,
        }
    }

    fn is_closed(&self) -> bool {
        // A dropped sender means every handle is gone: closed too.
        self.closed.has_changed().is_err() || *self.closed.borrow()
    }

    /// Starts a blocking read of what is durable into the shared buffer.
    fn start_fill(&mut self) {
        let state = Arc::clone(&self.state);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut guard = state.lock();
            let ReadState { reader, buffered } = &mut *guard;
            let mut out = Vec::new();
            let result = reader.fill(&mut out, MAX_RECORDS_PER_FILL, MAX_BYTES_PER_FILL);
            // Records read before a failure are delivered before it.
            buffered.extend(out);
            result
        }));
    }
}

#[async_trait]
impl Subscription for FileSubscription {
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        loop {
            if self.is_closed() {
                return Ok(None);
            }
            if let Some(task) = self.in_flight.as_mut() {
                let joined = task.await;
                self.in_flight = None;
                let filled = joined
                    .map_err(|e| FileStreamError::Task(format!("journal read task failed: {e}")))?;
                let empty = self.state.lock().buffered.is_empty();
                match filled {
                    Err(e) if empty => return Err(e.into()),
                    // The failure comes back on the next read, after these records.
                    _ if !empty => continue,
                    _ => {}
                }
                tokio::select! {
                    _ = self.closed.changed() => {}
                    _ = self.wake.changed() => {}
                    () = tokio::time::sleep(self.poll_interval) => {}
                }
                continue;
            }
            if let Some(record) = self.state.lock().buffered.pop_front() {
                return Ok(Some(record));
            }
            // Mark the wake-up seen before reading, so an append that lands
            // during the read ends the wait after it at once.
            self.wake.borrow_and_update();
            self.start_fill();
        }
    }
}
