//! [`FileStream`]: the [`Stream`] implementation over a journal directory.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::config::FileStreamConfig;
use crate::error::FileStreamError;
use crate::format::Watermark;
use crate::fsio::WatermarkFile;
use crate::lock::WriterLock;
use crate::notify::{Notifier, notifier_for};
use crate::position::{self, Position};
use crate::reader::{FileSubscription, JournalReader};
use crate::recovery::{Scope, TornTail, list_segments, recover_with};
use crate::scan::DataLoss;
use crate::writer::{self, Request, WriterSetup};

/// What opening the journal found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The journal directory (canonical).
    pub dir: PathBuf,
    /// The segment numbers present after opening, ascending.
    pub segments: Vec<u64>,
    /// How many records had their checksum verified while opening.
    pub records_verified: u64,
    /// The torn tail that was cut off, if the last append before opening was
    /// interrupted.
    pub torn_tail: Option<TornTail>,
    /// Acknowledged data that was missing and that this opening accepted to
    /// lose ([`FileStreamConfig::accept_data_loss`]); without that setting,
    /// opening fails with [`FileStreamError::DataLoss`] instead.
    pub accepted_data_loss: Option<DataLoss>,
    /// A segment that opening created (segment 0 of a new journal, or the
    /// successor of a sealed last segment).
    pub created_segment: Option<u64>,
    /// The cursor of the last record after opening.
    pub head: Option<Cursor>,
}

impl OpenReport {
    /// How many bytes of a torn tail opening dropped (0 when none).
    pub fn truncated_bytes(&self) -> u64 {
        self.torn_tail.as_ref().map_or(0, |t| t.dropped_bytes)
    }
}

/// The embedded [`Stream`]: an append-only, segmented journal in a local
/// directory, shared safely by several handles and processes.
///
/// Cloning is cheap and shares one writer queue. See the crate documentation
/// for the on-disk layout and guarantees.
#[derive(Clone)]
pub struct FileStream {
    inner: Arc<Inner>,
}

struct Inner {
    config: FileStreamConfig,
    writer: Mutex<Option<mpsc::Sender<Request>>>,
    closed: watch::Sender<bool>,
    notifier: Arc<Notifier>,
    report: OpenReport,
}

impl fmt::Debug for FileStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStream")
            .field("dir", &self.inner.config.dir)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.send_replace(true);
    }
}

impl FileStream {
    /// Opens (creating if needed) the journal in `dir` with the default
    /// configuration.
    ///
    /// # Errors
    ///
    /// See [`FileStream::open_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use memstate_core::Stream;
    /// use memstate_file::FileStream;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let stream = FileStream::open(dir.path()).await?;
    /// let cursors = stream.append(vec![Bytes::from_static(b"hello")]).await?;
    /// let mut sub = stream.subscribe(None).await?;
    /// let record = sub.next().await?.expect("one record");
    /// assert_eq!(record.cursor, cursors[0]);
    /// assert_eq!(record.payload, Bytes::from_static(b"hello"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, StreamError> {
        Self::open_with(FileStreamConfig::new(dir)).await
    }

    /// Opens (creating if needed) the journal described by `config`: takes the
    /// writer lock, checks the segments (every record when
    /// `verify_on_open`), truncates a torn tail, publishes the watermark and
    /// starts this handle's writer thread.
    ///
    /// # Errors
    ///
    /// Like every adapter's constructor, a [`StreamError`] (the journal's own
    /// [`FileStreamError`] converted at the crate edge; I/O failures keep it
    /// as their source): [`StreamError::Misconfigured`] for limits that cannot
    /// work; [`StreamError::Corrupt`] naming the file and offset of damage
    /// that is not a torn tail, or (reason starting with "data loss") the
    /// segment where acknowledged data is missing: the journal ends before
    /// its durable watermark, and nothing was modified (see
    /// [`FileStreamConfig::accept_data_loss`]); [`StreamError::Timeout`] when another appender
    /// holds the writer lock too long; [`StreamError::Backend`] for I/O
    /// failures.
    pub async fn open_with(config: FileStreamConfig) -> Result<Self, StreamError> {
        Ok(Self::open_journal(config).await?)
    }

    async fn open_journal(config: FileStreamConfig) -> Result<Self, FileStreamError> {
        config.validate()?;
        let requested = config.dir.clone();
        let scope = if config.verify_on_open {
            Scope::All
        } else {
            Scope::LastSegment
        };
        let timeout = config.lock_timeout;
        let accept_data_loss = config.accept_data_loss;
        let (dir, lock, watermark_file, watermark, recovered) =
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&requested).map_err(|e| {
                    FileStreamError::io("creating the journal directory", &requested, e)
                })?;
                let dir = requested
                    .canonicalize()
                    .map_err(|e| FileStreamError::io("resolving", &requested, e))?;
                let lock = WriterLock::open(&dir)?;
                let watermark_file = WatermarkFile::open_write(&dir)?;
                let (watermark, recovered) = {
                    let _guard = lock.acquire(timeout)?;
                    recover_with(&dir, &watermark_file, scope, accept_data_loss)?
                };
                Ok::<_, FileStreamError>((dir, lock, watermark_file, watermark, recovered))
            })
            .await
            .map_err(|e| FileStreamError::Task(format!("opening the journal failed: {e}")))??;

        let notifier = notifier_for(&dir);
        let config = FileStreamConfig {
            dir: dir.clone(),
            ..config
        };
        let sender = writer::spawn(WriterSetup {
            dir: dir.clone(),
            segment_size: config.segment_size,
            preallocate: config.preallocate,
            lock_timeout: config.lock_timeout,
            lock: Arc::new(lock),
            watermark_file,
            notifier: Arc::clone(&notifier),
        })?;
        let report = OpenReport {
            dir,
            segments: recovered.segments,
            records_verified: recovered.records_verified,
            torn_tail: recovered.torn_tail,
            accepted_data_loss: recovered.data_loss,
            created_segment: recovered.created_segment,
            head: watermark.last.map(Position::to_cursor),
        };
        // Subscribers of other handles may wait on a watermark this opening just published.
        notifier.saw(watermark);
        if config.file_events {
            notifier.watch_file_events();
        }
        let (closed, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                writer: Mutex::new(Some(sender)),
                closed,
                notifier,
                report,
            }),
        })
    }

    /// What opening found: torn bytes dropped, records verified, segments.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The configuration in force (with the directory made canonical).
    pub fn config(&self) -> &FileStreamConfig {
        &self.inner.config
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    /// Closes this handle and its clones: appends fail with
    /// [`StreamError::Closed`], subscriptions end with `Ok(None)`.
    /// Appends already queued still complete. Other handles on the same
    /// directory are not affected.
    pub fn close(&self) {
        self.inner.writer.lock().take();
        self.inner.closed.send_replace(true);
    }

    /// Whether [`FileStream::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Whether subscribers of this journal in this process are woken by file
    /// events (`false` when [`FileStreamConfig::file_events`] is off or the
    /// watcher could not start: they poll).
    pub fn watches_file_events(&self) -> bool {
        self.inner.notifier.watches_file_events()
    }

    /// The durable watermark as published now.
    ///
    /// # Errors
    ///
    /// [`StreamError::Backend`] for I/O failures reading the watermark file;
    /// [`StreamError::Corrupt`] when it cannot be parsed.
    pub async fn watermark(&self) -> Result<Option<Watermark>, StreamError> {
        let dir = self.inner.config.dir.clone();
        Ok(blocking(move || read_watermark(&dir)).await?)
    }

    async fn submit(
        &self,
        records: Vec<Bytes>,
        expected: Option<Option<Position>>,
    ) -> Result<Vec<Cursor>, FileStreamError> {
        let limit = self.inner.config.max_record_size;
        if let Some(big) = records.iter().find(|r| r.len() > limit) {
            return Err(FileStreamError::RecordTooLarge {
                size: big.len(),
                limit,
            });
        }
        if expected.is_none() && records.is_empty() {
            return if self.is_closed() {
                Err(FileStreamError::Closed)
            } else {
                Ok(Vec::new())
            };
        }
        let (reply, answer) = oneshot::channel();
        {
            let writer = self.inner.writer.lock();
            let sender = writer.as_ref().ok_or(FileStreamError::Closed)?;
            sender
                .send(Request {
                    records,
                    expected,
                    reply,
                })
                .map_err(|_| {
                    FileStreamError::Task("the journal writer thread has stopped".to_owned())
                })?;
        }
        answer.await.map_err(|_| FileStreamError::Ambiguous {
            source: Box::new(FileStreamError::Task(
                "the journal writer thread stopped before answering".to_owned(),
            )),
        })?
    }

    /// Opens a subscription positioned after `after`.
    async fn open_subscription(
        &self,
        after: Option<Cursor>,
    ) -> Result<FileSubscription, FileStreamError> {
        let dir = self.inner.config.dir.clone();
        let reader = blocking(move || position_reader(dir, after)).await?;
        Ok(FileSubscription::new(
            reader,
            self.inner.config.poll_interval,
            self.inner.closed.subscribe(),
            Arc::clone(&self.inner.notifier),
        ))
    }
}

/// Runs blocking journal I/O off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileStreamError> + Send + 'static,
) -> Result<T, FileStreamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FileStreamError::Task(format!("blocking journal task failed: {e}")))?
}

fn read_watermark(dir: &Path) -> Result<Option<Watermark>, FileStreamError> {
    let Some(file) = WatermarkFile::open_read(dir)? else {
        return Ok(None);
    };
    // A reader can catch the file mid-rewrite (the checksum fails); the
    // writer rewrites 64 bytes at once, so a retry soon sees a whole one.
    for _ in 0..100 {
        if let Some(w) = file.read()? {
            return Ok(Some(w));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(FileStreamError::Corrupt {
        path: dir.join(crate::format::WATERMARK_FILE),
        offset: 0,
        reason: "the watermark file does not decode".to_owned(),
    })
}

/// A reader positioned after `after` (at the very start when `None`),
/// checking that the cursor names a durable record of this journal.
fn position_reader(dir: PathBuf, after: Option<Cursor>) -> Result<JournalReader, FileStreamError> {
    let segments = list_segments(&dir)?;
    let first = segments.first().copied();
    let Some(cursor) = after else {
        return match first {
            None | Some(0) => Ok(JournalReader::new(dir, Position::segment_start(0))),
            Some(n) => Err(FileStreamError::HistoryTruncated {
                dir,
                reason: format!(
                    "the journal starts at segment {n}; segments before it were removed"
                ),
            }),
        };
    };
    let position = Position::from_cursor(&cursor)?;
    let invalid = |reason: String| FileStreamError::InvalidCursor {
        cursor: cursor.as_str().to_owned(),
        reason,
    };
    match first {
        Some(n) if position.segment < n => {
            return Err(FileStreamError::HistoryTruncated {
                dir,
                reason: format!(
                    "cursor {cursor} is in segment {}, but the journal now starts at segment {n}",
                    position.segment
                ),
            });
        }
        _ => {}
    }
    let watermark =
        read_watermark(&dir)?.ok_or_else(|| invalid("the journal holds no records".to_owned()))?;
    if position >= watermark.end {
        return Err(invalid(format!(
            "it lies at or past the end of the durable journal ({})",
            watermark.end
        )));
    }
    let mut reader = JournalReader::new(dir, position);
    match reader.read_frame(&watermark) {
        Ok(crate::reader::Step::Record(..)) => Ok(reader),
        Ok(_) => Err(invalid("no record starts at this offset".to_owned())),
        Err(FileStreamError::Corrupt { reason, .. }) => Err(invalid(format!(
            "no record starts at this offset ({reason})"
        ))),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Stream for FileStream {
    fn describe(&self) -> String {
        format!("file journal {}", self.inner.config.dir.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.inner.config.max_record_size)
            .with_exact_head(true)
            .with_optimistic_append(true)
            .with_multi_record_append(true)
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        Ok(self.submit(records, None).await?)
    }

    async fn append_expecting(
        &self,
        records: Vec<Bytes>,
        expected: Option<Cursor>,
    ) -> Result<Vec<Cursor>, StreamError> {
        let expected_position = expected.as_ref().map(Position::from_cursor).transpose()?;
        Ok(self.submit(records, Some(expected_position)).await?)
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        if self.is_closed() {
            return Err(StreamError::Closed);
        }
        Ok(Box::new(self.open_subscription(after).await?))
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        let watermark = self.watermark().await?;
        if let Some(w) = watermark {
            // Whoever asks for the head usually waits next for a subscription
            // of this process to reach it: wake them now rather than at
            // their next poll (another process's append may not have been
            // announced here yet).
            self.inner.notifier.saw(w);
        }
        Ok(watermark.and_then(|w| w.last).map(Position::to_cursor))
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        Ok(position::compare(a, b)?)
    }
}
