//! The writer thread of one handle: group commit under the writer lock.
//!
//! Appends from every task using a handle queue here. The thread takes all
//! queued appends at once, takes the cross-process writer lock, checks that
//! the tail is where the watermark says (recovering it when the previous
//! holder died mid-append), writes the frames with one write per segment,
//! fdatasyncs, publishes the new watermark, releases the lock, and only then
//! answers the callers.
//!
//! Preallocation: when a write would grow the segment file, the writer also
//! zero-fills [`WriterSetup::preallocate`] bytes past it (capped at the
//! segment size), in the same commit, before the one `fdatasync`. The appends
//! that follow land inside the file and leave its size alone. A segment that
//! is sealed is cut back to its seal before its `fdatasync`, so sealed
//! segments look as they always did. The tail check accepts a file longer
//! than the watermark when the bytes at the watermark's end are zeros: an
//! appender that died mid-append left a frame header there.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::Cursor;
use tokio::sync::oneshot;

use crate::error::FileStreamError;
use crate::format::{
    FRAME_HEADER_LEN, SEAL_LEN, SEGMENT_HEADER_LEN, Watermark, encode_frame, encode_seal,
    encode_segment_header, segment_path,
};
use crate::fsio::{WatermarkFile, file_len, read_at, sync_dir, write_all_at};
use crate::lock::WriterLock;
use crate::notify::Notifier;
use crate::position::Position;
use crate::recovery::{Scope, recover};

/// Stop draining the queue into one batch beyond this many payload bytes.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Stop draining the queue into one batch beyond this many requests.
const MAX_BATCH_REQUESTS: usize = 4096;

/// The answer to one append.
pub(crate) type Reply = Result<Vec<Cursor>, FileStreamError>;

/// One `append` or `append_expecting` call.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) records: Vec<Bytes>,
    /// `Some(expected last record)` for an optimistic append.
    pub(crate) expected: Option<Option<Position>>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// What the writer thread needs.
#[derive(Debug)]
pub(crate) struct WriterSetup {
    pub(crate) dir: PathBuf,
    pub(crate) segment_size: u64,
    /// Zero-filled room kept ahead of the last record (0: none).
    pub(crate) preallocate: u64,
    pub(crate) lock_timeout: Duration,
    pub(crate) lock: Arc<WriterLock>,
    pub(crate) watermark_file: WatermarkFile,
    pub(crate) notifier: Arc<Notifier>,
}

/// Starts the writer thread; it ends when every sender is dropped.
///
/// # Errors
///
/// [`FileStreamError::Task`] when the thread cannot be started.
pub(crate) fn spawn(setup: WriterSetup) -> Result<mpsc::Sender<Request>, FileStreamError> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("memstate-file-writer".to_owned())
        .spawn(move || Writer::new(setup).run(rx))
        .map_err(|e| {
            FileStreamError::Task(format!("cannot start the journal writer thread: {e}"))
        })?;
    Ok(tx)
}

/// The segment file this writer appends to.
#[derive(Debug)]
struct OpenSegment {
    number: u64,
    path: PathBuf,
    file: File,
    /// The file's length as this writer last saw or made it.
    len: u64,
}

#[derive(Debug)]
struct Writer {
    setup: WriterSetup,
    segment: Option<OpenSegment>,
    poisoned: Option<String>,
    /// The watermark this writer published last.
    published: Option<Watermark>,
}

/// Bytes to write into one segment, starting at `offset`.
#[derive(Debug)]
struct Chunk {
    segment: u64,
    offset: u64,
    bytes: Vec<u8>,
    /// The segment is created by this batch (its header is in `bytes`).
    new: bool,
}

impl Writer {
    fn new(setup: WriterSetup) -> Self {
        Self {
            setup,
            segment: None,
            poisoned: None,
            published: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = payload_bytes(&first);
            let mut batch = vec![first];
            while bytes < MAX_BATCH_BYTES && batch.len() < MAX_BATCH_REQUESTS {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += payload_bytes(&next);
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Writes one batch and answers every request in it.
    fn commit(&mut self, batch: Vec<Request>) {
        if let Some(reason) = &self.poisoned {
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(FileStreamError::Poisoned(reason.clone())));
            }
            return;
        }
        let lock = Arc::clone(&self.setup.lock);
        let guard = match lock.acquire(self.setup.lock_timeout) {
            Ok(guard) => guard,
            Err(e) => {
                // Nothing was written: every caller gets the same, definite error.
                let message = e.to_string();
                let mut first = Some(e);
                for request in batch {
                    let err = first
                        .take()
                        .unwrap_or_else(|| FileStreamError::Task(message.clone()));
                    let _ = request.reply.send(Err(err));
                }
                return;
            }
        };
        let replies = self.commit_locked(batch);
        drop(guard);
        if replies
            .iter()
            .any(|(_, r)| r.as_ref().is_ok_and(|c| !c.is_empty()))
        {
            match self.published {
                Some(w) => self.setup.notifier.saw(w),
                None => self.setup.notifier.bump(),
            }
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    fn commit_locked(&mut self, batch: Vec<Request>) -> Vec<(oneshot::Sender<Reply>, Reply)> {
        let start = match self.current_watermark() {
            Ok(w) => w,
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                return batch
                    .into_iter()
                    .map(|r| {
                        let err = first
                            .take()
                            .unwrap_or_else(|| FileStreamError::Task(message.clone()));
                        (r.reply, Err(err))
                    })
                    .collect();
            }
        };

        // Place every record, rolling to new segments where one is full.
        let segment_size = self.setup.segment_size;
        let mut end = start.end;
        let mut last = start.last;
        let mut chunks = vec![Chunk {
            segment: end.segment,
            offset: end.offset,
            bytes: Vec::new(),
            new: false,
        }];
        let mut placed: Vec<(oneshot::Sender<Reply>, Reply)> = Vec::with_capacity(batch.len());
        for request in batch {
            if let Some(expected) = request.expected
                && expected != last
            {
                let err = FileStreamError::WrongExpectedPosition {
                    expected: expected.map(Position::to_cursor),
                    actual: last.map(Position::to_cursor),
                };
                placed.push((request.reply, Err(err)));
                continue;
            }
            let mut cursors = Vec::with_capacity(request.records.len());
            for record in &request.records {
                let frame = FRAME_HEADER_LEN + record.len() as u64;
                if end.offset > SEGMENT_HEADER_LEN && end.offset + frame + SEAL_LEN > segment_size {
                    if let Some(chunk) = chunks.last_mut() {
                        encode_seal(&mut chunk.bytes);
                    }
                    end = Position::segment_start(end.segment + 1);
                    chunks.push(Chunk {
                        segment: end.segment,
                        offset: 0,
                        bytes: encode_segment_header(end.segment).to_vec(),
                        new: true,
                    });
                }
                if let Some(chunk) = chunks.last_mut() {
                    encode_frame(&mut chunk.bytes, record);
                }
                cursors.push(end.to_cursor());
                last = Some(end);
                end.offset += frame;
            }
            placed.push((request.reply, Ok(cursors)));
        }

        let new = Watermark { end, last };
        if new == start {
            return placed;
        }
        if let Err(e) = self
            .write_chunks(&chunks)
            .and_then(|()| self.setup.watermark_file.write(&new))
        {
            self.undo(&start, &chunks);
            let reason = e.to_string();
            tracing::error!(dir = %self.setup.dir.display(), error = %e, "journal append failed; this handle refuses further appends");
            self.poisoned = Some(reason.clone());
            let mut first = Some(e);
            return placed
                .into_iter()
                .map(|(reply, result)| match result {
                    Ok(_) => {
                        let source = first
                            .take()
                            .unwrap_or_else(|| FileStreamError::Task(reason.clone()));
                        (
                            reply,
                            Err(FileStreamError::Ambiguous {
                                source: Box::new(source),
                            }),
                        )
                    }
                    Err(e) => (reply, Err(e)),
                })
                .collect();
        }
        self.published = Some(new);
        placed
    }

    /// The watermark, after making sure the files end where it says; a
    /// mismatch means the previous lock holder died mid-append, so the tail
    /// is recovered first.
    fn current_watermark(&mut self) -> Result<Watermark, FileStreamError> {
        let stored = self.setup.watermark_file.read()?;
        let consistent = match stored {
            Some(w) => self.tail_matches(&w)?,
            None => false,
        };
        let watermark = match (stored, consistent) {
            (Some(w), true) => w,
            _ => {
                tracing::warn!(dir = %self.setup.dir.display(), "journal tail moved without the watermark (an appender died mid-append); recovering it");
                let (w, _) = recover(
                    &self.setup.dir,
                    &self.setup.watermark_file,
                    Scope::FromWatermark,
                )?;
                w
            }
        };
        self.open_segment(watermark.end.segment)?;
        Ok(watermark)
    }

    /// Whether segment `w.end.segment` is exactly `w.end.offset` long and is the last one.
    fn tail_matches(&mut self, w: &Watermark) -> Result<bool, FileStreamError> {
        self.open_segment(w.end.segment)?;
        let Some(segment) = &self.segment else {
            return Ok(false);
        };
        let len = file_len(&segment.file, &segment.path)?;
        let free_at_end =
            len > w.end.offset && zeros_at(&segment.file, &segment.path, w.end.offset)?;
        if len != w.end.offset && !free_at_end {
            return Ok(false);
        }
        if let Some(segment) = &mut self.segment {
            segment.len = len;
        }
        let next = segment_path(&self.setup.dir, w.end.segment + 1);
        match fs::symlink_metadata(&next) {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(FileStreamError::io("checking for", next, e)),
        }
    }

    fn open_segment(&mut self, number: u64) -> Result<(), FileStreamError> {
        if self.segment.as_ref().is_some_and(|s| s.number == number) {
            return Ok(());
        }
        let path = segment_path(&self.setup.dir, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| FileStreamError::io("opening segment", &path, e))?;
        let len = file_len(&file, &path)?;
        self.segment = Some(OpenSegment {
            number,
            path,
            file,
            len,
        });
        Ok(())
    }

    /// One write and one fdatasync per segment, in order: a segment's seal is
    /// durable before the next segment exists. A chunk followed by another
    /// ends with its segment's seal: the file is cut back to it. The last
    /// chunk is followed by zero-filled room when it grows its file.
    fn write_chunks(&mut self, chunks: &[Chunk]) -> Result<(), FileStreamError> {
        let count = chunks.len();
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.bytes.is_empty() {
                continue;
            }
            if chunk.new {
                let path = segment_path(&self.setup.dir, chunk.segment);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| FileStreamError::io("creating segment", &path, e))?;
                self.segment = Some(OpenSegment {
                    number: chunk.segment,
                    path,
                    file,
                    len: 0,
                });
            } else {
                self.open_segment(chunk.segment)?;
            }
            let Some(segment) = &mut self.segment else {
                return Err(FileStreamError::Task("no open segment".to_owned()));
            };
            write_all_at(&segment.file, &chunk.bytes, chunk.offset)
                .map_err(|e| FileStreamError::io("writing to", &segment.path, e))?;
            let end = chunk.offset + chunk.bytes.len() as u64;
            let sealed = i + 1 < count;
            if sealed && segment.len > end {
                segment
                    .file
                    .set_len(end)
                    .map_err(|e| FileStreamError::io("cutting to its seal", &segment.path, e))?;
                segment.len = end;
            } else if !sealed && end > segment.len {
                let room = self
                    .setup
                    .preallocate
                    .min(self.setup.segment_size.saturating_sub(end));
                if room > 0 {
                    let zeros = vec![0u8; usize::try_from(room).unwrap_or(0)];
                    write_all_at(&segment.file, &zeros, end)
                        .map_err(|e| FileStreamError::io("zero-filling", &segment.path, e))?;
                }
                segment.len = end + room;
            }
            segment.len = segment.len.max(end);
            segment
                .file
                .sync_data()
                .map_err(|e| FileStreamError::io("syncing", &segment.path, e))?;
            if chunk.new {
                sync_dir(&self.setup.dir)?;
            }
        }
        Ok(())
    }

    /// After a failed batch, removes what it may have written so that the
    /// tail is back at the old watermark (best effort: the handle is poisoned
    /// anyway, and the next lock holder recovers whatever is left).
    fn undo(&mut self, start: &Watermark, chunks: &[Chunk]) {
        for chunk in chunks.iter().rev() {
            let path = segment_path(&self.setup.dir, chunk.segment);
            if chunk.new {
                let _ = fs::remove_file(&path);
            } else if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                let _ = file
                    .set_len(start.end.offset)
                    .and_then(|()| file.sync_all());
            }
        }
        let _ = self.setup.watermark_file.write(start);
        self.segment = None;
    }
}

/// Whether the frame header at `offset` of `file` is all zeros (free space).
fn zeros_at(file: &File, path: &Path, offset: u64) -> Result<bool, FileStreamError> {
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    let n = read_at(file, &mut header, offset)
        .map_err(|e| FileStreamError::io("reading the tail of", path, e))?;
    Ok(header[..n].iter().all(|b| *b == 0))
}

fn payload_bytes(request: &Request) -> usize {
    request.records.iter().map(Bytes::len).sum()
}
