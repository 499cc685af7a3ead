//! [`FileStreamError`], and its conversion into [`StreamError`] at the crate edge.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use memstate_core::{Cursor, StreamError};

/// Everything that can go wrong in the file journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStreamError {
    /// The configuration cannot work (e.g. a record limit that does not fit in
    /// a segment).
    #[error("invalid file stream configuration: {0}")]
    InvalidConfig(String),
    /// A file system call failed.
    #[error("I/O error while {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes fail their checks somewhere other than a torn tail.
    #[error("corrupt journal: {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment (or other journal file) holding the bad bytes.
        path: PathBuf,
        /// The byte offset of the bad frame or header in that file.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// Data the durable watermark counts as acknowledged is missing from the
    /// segment files (a segment cut short, the newest segment deleted).
    /// Nothing was modified; opening with
    /// [`FileStreamConfig::accept_data_loss`](crate::FileStreamConfig::accept_data_loss)
    /// continues without the missing records.
    #[error(
        "data loss in the journal: {0}; nothing was modified (to continue without the missing \
         records, open once with accept_data_loss, e.g. `memstate inspect --accept-data-loss`)"
    )]
    DataLoss(Box<crate::scan::DataLoss>),
    /// A cursor that this journal did not make, or that points at no record.
    #[error("invalid cursor {cursor:?}: {reason}")]
    InvalidCursor {
        /// The cursor as given.
        cursor: String,
        /// Why it was refused.
        reason: String,
    },
    /// The beginning of the journal is missing (its first segments were removed).
    #[error("history of the journal in {} is incomplete: {reason}", dir.display())]
    HistoryTruncated {
        /// The journal directory.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A record exceeds the configured limit; nothing was written.
    #[error(
        "record of {size} bytes exceeds this journal's limit of {limit} bytes; nothing was written"
    )]
    RecordTooLarge {
        /// The refused record's size.
        size: usize,
        /// The configured `max_record_size`.
        limit: usize,
    },
    /// Another appender held the writer lock for longer than `lock_timeout`.
    #[error("timed out after {after:?} waiting for the journal writer lock {}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long was waited.
        after: Duration,
    },
    /// An optimistic append found the journal ending elsewhere.
    #[error("append expected the journal to end at {expected:?} but it ends at {actual:?}")]
    WrongExpectedPosition {
        /// The last cursor the caller expected.
        expected: Option<Cursor>,
        /// The actual last cursor.
        actual: Option<Cursor>,
    },
    /// A write or fsync failed after bytes may have reached the file; the
    /// records may or may not be in the journal.
    #[error("append outcome unknown: {source}")]
    Ambiguous {
        /// The failure.
        #[source]
        source: Box<FileStreamError>,
    },
    /// This handle's writer failed earlier (a failed fsync leaves the page
    /// cache in an unknown state), so it refuses further appends.
    #[error(
        "the journal writer of this handle stopped after an earlier failure ({0}); reopen the stream"
    )]
    Poisoned(String),
    /// The handle was closed.
    #[error("file stream is closed")]
    Closed,
    /// A background task or thread failed (panicked or could not start).
    #[error("file stream background task failed: {0}")]
    Task(String),
}

impl FileStreamError {
    /// An I/O error with what was being done and to which path.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<FileStreamError> for StreamError {
    fn from(e: FileStreamError) -> Self {
        match e {
            FileStreamError::Corrupt {
                path,
                offset,
                reason,
            } => StreamError::Corrupt {
                location: format!("{} at offset {offset}", path.display()),
                reason,
            },
            FileStreamError::DataLoss(loss) => StreamError::Corrupt {
                location: loss.path.display().to_string(),
                reason: format!(
                    "data loss: {} (the durable watermark ends at {}, the segments end at {}); \
                     nothing was modified (to continue without the missing records, open once \
                     with accept_data_loss, e.g. `memstate inspect --accept-data-loss`)",
                    loss.missing, loss.watermark_end, loss.found_end
                ),
            },
            FileStreamError::InvalidCursor { cursor, reason } => {
                StreamError::InvalidCursor { cursor, reason }
            }
            FileStreamError::HistoryTruncated { dir, reason } => StreamError::HistoryTruncated {
                name: dir.display().to_string(),
                reason,
            },
            FileStreamError::RecordTooLarge { size, limit } => {
                StreamError::RecordTooLarge { size, limit }
            }
            FileStreamError::LockTimeout { path, after } => StreamError::Timeout {
                action: format!("waiting for the journal writer lock {}", path.display()),
                after,
            },
            FileStreamError::WrongExpectedPosition { expected, actual } => {
                StreamError::WrongExpectedPosition { expected, actual }
            }
            FileStreamError::Closed => StreamError::Closed,
            FileStreamError::InvalidConfig(reason) => StreamError::Misconfigured {
                name: "file journal".to_owned(),
                reason,
            },
            FileStreamError::Ambiguous { source } => StreamError::Ambiguous {
                reason: source.to_string(),
                source: Some(source),
            },
            other @ (FileStreamError::Io { .. }
            | FileStreamError::Poisoned(_)
            | FileStreamError::Task(_)) => {
                let action = match &other {
                    FileStreamError::Io { action, .. } => (*action).to_owned(),
                    FileStreamError::Poisoned(_) => "appending".to_owned(),
                    _ => "running a background task".to_owned(),
                };
                StreamError::backend("file", action, other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_names_file_and_offset_in_the_stream_error() {
        let e: StreamError = FileStreamError::Corrupt {
            path: PathBuf::from("/j/00000000.seg"),
            offset: 72,
            reason: "checksum mismatch".to_owned(),
        }
        .into();
        match e {
            StreamError::Corrupt { location, reason } => {
                assert_eq!(location, "/j/00000000.seg at offset 72");
                assert_eq!(reason, "checksum mismatch");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn io_errors_keep_their_source() {
        let e: StreamError = FileStreamError::io(
            "opening",
            "/j",
            io::Error::new(io::ErrorKind::PermissionDenied, "nope"),
        )
        .into();
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.to_string().contains("nope"));
    }
}
