//! The [`Stream`] trait: the one thing every node shares.
//!
//! A stream is a durable, totally ordered, append-only sequence of opaque
//! records. The engine writes one *frame* (one or more encoded envelopes) per
//! record and applies commands only when it reads them back, so every node that
//! reads the same stream applies the same commands in the same order.
//!
//! Each adapter crate (file journal, Kafka, Kinesis, EventStoreDB) implements
//! this trait; the shared conformance suite checks every rule below.
//!
//! ### To be correct, an implementation must:
//!
//! 1. **Durable appends.** [`Stream::append`] returns the cursors of the
//!    records only after the backend made them durable by its own definition
//!    (file: fsync; Kafka: `acks=all` with the idempotent producer; Kinesis:
//!    `PutRecord` success; EventStoreDB: append success).
//! 2. **One record per append, unless declared.** Where
//!    [`Capabilities::multi_record_append`] is declared, the records of one
//!    `append` call land next to each other, in the order given, even while
//!    other writers append. Where it is not, an `append` of more than one
//!    record is refused with [`StreamError::Unsupported`] before anything is
//!    sent. (The engine appends one frame per call, which packs any number of
//!    commands, so it never needs more.)
//! 3. **Ambiguity is allowed, lying is not.** An append that returns an error
//!    may still have been written; the engine copes through command-id
//!    de-duplication. An append that returns `Ok` must have been written.
//! 4. **Gap-free subscriptions.** [`Stream::subscribe`] yields every record
//!    after the given cursor (or from the very first record when `None`), in
//!    stream order, with no gaps and no reordering, and then follows the tail.
//!    Several subscribers see the same sequence.
//! 5. **Only durable records are read.** A subscriber never yields a record
//!    that is not yet durable.
//! 6. **Exact head where possible.** [`Stream::head`] returns the cursor of the
//!    last durable record when [`Capabilities::exact_head`] is declared; an
//!    adapter that cannot know it exactly declares `exact_head: false` and the
//!    engine appends a sync marker instead.
//! 7. **Limits before I/O.** Records larger than
//!    [`Capabilities::max_record_size`] are refused with
//!    [`StreamError::RecordTooLarge`] before anything is sent.
//! 8. **Restart.** A stream reopened (new client, new process) yields
//!    everything appended before.
//! 9. **Cursor order.** [`Stream::compare_cursors`] orders cursors of this
//!    stream exactly as the stream orders their records, and refuses cursors
//!    it did not make ([`StreamError::InvalidCursor`]).
//! 10. **Opaque payloads.** A record's bytes come back exactly as appended,
//!     whatever they contain.
//! 11. **Optimistic appends where declared.** Where
//!     [`Capabilities::optimistic_append`] is declared,
//!     [`Stream::append_expecting`] writes only when the stream ends at the
//!     expected position, and otherwise writes nothing and fails with
//!     [`StreamError::WrongExpectedPosition`] naming the actual end.

use std::cmp::Ordering;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The position of one record in a stream.
///
/// The adapter owns the encoding (a Kafka offset, a Kinesis sequence number,
/// an EventStoreDB revision, a file segment and offset); the engine treats it
/// as opaque, stores it in snapshots, and hands it back to
/// [`Stream::subscribe`] and [`Stream::compare_cursors`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps an adapter-encoded position.
    pub fn new(encoded: impl Into<String>) -> Self {
        Self(encoded.into())
    }

    /// The adapter's encoding of this position.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where the record sits in the stream.
    pub cursor: Cursor,
    /// The bytes that were appended.
    pub payload: Bytes,
}

/// What an adapter can do, declared rather than guessed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`Stream::head`] returns the exact cursor of the last durable record.
    pub exact_head: bool,
    /// The largest payload one record may carry, in bytes.
    pub max_record_size: usize,
    /// [`Stream::append_expecting`] is supported.
    pub optimistic_append: bool,
    /// One [`Stream::append`] may carry several records, and they land
    /// contiguously and in order whatever other writers do. When `false`, an
    /// append of more than one record is refused before any I/O.
    pub multi_record_append: bool,
}

impl Capabilities {
    /// Capabilities with the given record-size limit, an exact head, no
    /// optimistic append and one record per append.
    pub fn new(max_record_size: usize) -> Self {
        Self {
            exact_head: true,
            max_record_size,
            optimistic_append: false,
            multi_record_append: false,
        }
    }

    /// Sets [`Capabilities::exact_head`].
    pub fn with_exact_head(mut self, exact: bool) -> Self {
        self.exact_head = exact;
        self
    }

    /// Sets [`Capabilities::optimistic_append`].
    pub fn with_optimistic_append(mut self, supported: bool) -> Self {
        self.optimistic_append = supported;
        self
    }

    /// Sets [`Capabilities::multi_record_append`].
    pub fn with_multi_record_append(mut self, supported: bool) -> Self {
        self.multi_record_append = supported;
        self
    }

    /// What every [`Stream::append`] checks before any I/O: more than one
    /// record where [`Capabilities::multi_record_append`] is not declared,
    /// and payloads over [`Capabilities::max_record_size`].
    ///
    /// # Errors
    ///
    /// [`StreamError::Unsupported`] for several records where only one is
    /// allowed; [`StreamError::RecordTooLarge`] naming the size and the limit.
    pub fn check_append(&self, records: &[Bytes]) -> Result<(), StreamError> {
        if records.len() > 1 && !self.multi_record_append {
            return Err(StreamError::Unsupported(format!(
                "an append of {} records: this stream takes one record per append \
                 (the engine packs commands into one frame per record)",
                records.len()
            )));
        }
        self.check_sizes(records)
    }

    /// Refuses payloads over [`Capabilities::max_record_size`], before any I/O.
    ///
    /// # Errors
    ///
    /// [`StreamError::RecordTooLarge`] naming the size and the limit.
    pub fn check_sizes(&self, records: &[Bytes]) -> Result<(), StreamError> {
        for record in records {
            if record.len() > self.max_record_size {
                return Err(StreamError::RecordTooLarge {
                    size: record.len(),
                    limit: self.max_record_size,
                });
            }
        }
        Ok(())
    }
}

/// Errors a [`Stream`] reports. Adapters convert their own errors into these
/// at the crate edge and keep the original as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A record is larger than the backend accepts; nothing was written.
    #[error(
        "record of {size} bytes exceeds this stream's limit of {limit} bytes; nothing was written"
    )]
    RecordTooLarge {
        /// The size of the refused record.
        size: usize,
        /// The adapter's limit.
        limit: usize,
    },
    /// The stream (topic, journal, Kinesis stream) does not exist.
    #[error("stream {name:?} not found: {reason}")]
    NotFound {
        /// The name that was looked up.
        name: String,
        /// What the backend said, and how to create it.
        reason: String,
    },
    /// The stream exists but cannot hold a memstate log as configured.
    #[error("stream {name:?} is misconfigured: {reason}")]
    Misconfigured {
        /// The stream's name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The beginning of the log is gone (retention, trimming); the state cannot
    /// be rebuilt from it.
    #[error("history of stream {name:?} is incomplete: {reason}")]
    HistoryTruncated {
        /// The stream's name.
        name: String,
        /// What is missing.
        reason: String,
    },
    /// Stored bytes fail their integrity check somewhere other than a torn tail.
    #[error("corrupt data in {location}: {reason}")]
    Corrupt {
        /// File and offset, or the backend's position.
        location: String,
        /// What check failed.
        reason: String,
    },
    /// The cursor was not produced by this stream or cannot be parsed.
    #[error("invalid cursor {cursor:?}: {reason}")]
    InvalidCursor {
        /// The cursor as given.
        cursor: String,
        /// Why it was refused.
        reason: String,
    },
    /// An optimistic append found a different last position than expected.
    #[error("append expected the stream to end at {expected:?} but it ends at {actual:?}")]
    WrongExpectedPosition {
        /// The position the caller expected.
        expected: Option<Cursor>,
        /// The actual last position, when known.
        actual: Option<Cursor>,
    },
    /// The adapter does not support this operation (see [`Capabilities`]).
    #[error("operation not supported by this stream: {0}")]
    Unsupported(String),
    /// A wait on the backend took longer than allowed.
    #[error("timed out after {after:?} while {action}")]
    Timeout {
        /// What was being waited for.
        action: String,
        /// How long was waited.
        after: std::time::Duration,
    },
    /// An append may or may not have been written (the backend failed after
    /// the request left). Retrying with the same command ids is safe.
    #[error("append outcome unknown: {reason}")]
    Ambiguous {
        /// What happened.
        reason: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The stream was closed by this process.
    #[error("stream is closed")]
    Closed,
    /// A backend or I/O failure.
    #[error("{backend} error while {action}: {source}")]
    Backend {
        /// Which backend ("file", "kafka", ...).
        backend: &'static str,
        /// What was being done.
        action: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StreamError {
    /// Wraps a backend error with what was being done.
    pub fn backend(
        backend: &'static str,
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            action: action.into(),
            source: source.into(),
        }
    }
}

/// A live subscription: yields records in stream order, then waits for more.
#[async_trait]
pub trait Subscription: Send + fmt::Debug {
    /// The next record after the last one yielded. Waits while the stream has
    /// nothing new. Returns `Ok(None)` only when the stream was closed.
    ///
    /// Cancelling this future (dropping it before it completes) may lose the
    /// subscription's place: callers drop the whole subscription afterwards.
    ///
    /// # Errors
    ///
    /// Backend failures the adapter could not recover from, corruption, or a
    /// history that has been truncated under the subscriber.
    async fn next(&mut self) -> Result<Option<Record>, StreamError>;
}

/// A durable, totally ordered, append-only sequence of records. See the
/// [module documentation](self) for the rules every implementation follows.
#[async_trait]
pub trait Stream: Send + Sync + fmt::Debug + 'static {
    /// A short description for logs and errors: backend and stream name.
    fn describe(&self) -> String;

    /// What this adapter can do.
    fn capabilities(&self) -> Capabilities;

    /// Appends `records` contiguously and in order; returns their cursors once
    /// they are durable. More than one record only where
    /// [`Capabilities::multi_record_append`] is declared (rule 2).
    ///
    /// # Errors
    ///
    /// [`StreamError::RecordTooLarge`], or [`StreamError::Unsupported`] for
    /// several records where one is allowed, before any I/O (see
    /// [`Capabilities::check_append`]); backend failures otherwise. After a
    /// failure the records may still have been written.
    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError>;

    /// Appends only when the stream currently ends at `expected` (`None`: the
    /// stream is empty). Supported where [`Capabilities::optimistic_append`].
    ///
    /// # Errors
    ///
    /// [`StreamError::WrongExpectedPosition`] when the stream moved on;
    /// [`StreamError::Unsupported`] by default.
    async fn append_expecting(
        &self,
        records: Vec<Bytes>,
        expected: Option<Cursor>,
    ) -> Result<Vec<Cursor>, StreamError> {
        let _ = (records, expected);
        Err(StreamError::Unsupported(format!(
            "{} does not support optimistic appends",
            self.describe()
        )))
    }

    /// Subscribes to every record after `after` (from the first record when
    /// `None`), then follows the tail.
    ///
    /// # Errors
    ///
    /// An unknown stream, an invalid cursor, or an unreachable backend.
    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError>;

    /// The cursor of the last durable record, `None` when the stream is empty.
    /// Exact only where [`Capabilities::exact_head`] says so.
    ///
    /// # Errors
    ///
    /// Backend failures; [`StreamError::Unsupported`] where the adapter cannot
    /// tell at all.
    async fn head(&self) -> Result<Option<Cursor>, StreamError>;

    /// Orders two cursors of this stream as the stream orders their records.
    ///
    /// # Errors
    ///
    /// [`StreamError::InvalidCursor`] when either was not made by this adapter.
    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError>;

    /// How long the backend keeps a record before deleting it by age, as read
    /// from the backend when the stream was opened; `None` when records are
    /// kept until someone removes them (the file journal, a Kafka topic with
    /// `retention.ms=-1`).
    ///
    /// With a retention, a node can start only from a snapshot newer than the
    /// oldest record still kept: each node must snapshot within this window
    /// (see `SnapshotPolicy::with_interval`).
    fn retention(&self) -> Option<std::time::Duration> {
        None
    }
}
