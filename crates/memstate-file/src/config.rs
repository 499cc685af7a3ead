//! [`FileStreamConfig`]: where the journal lives and its limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::FileStreamError;
use crate::format::{FRAME_HEADER_LEN, MAX_PAYLOAD_LEN, SEAL_LEN, SEGMENT_HEADER_LEN};

/// How a [`FileStream`](crate::FileStream) opens its journal.
///
/// Build it with [`FileStreamConfig::new`] and the `with_*` methods; the
/// fields are public to read and to adjust.
///
/// ```
/// use std::time::Duration;
/// use memstate_file::FileStreamConfig;
///
/// let config = FileStreamConfig::new("/var/lib/app/journal")
///     .with_segment_size(16 * 1024 * 1024)
///     .with_max_record_size(1024 * 1024)
///     .with_poll_interval(Duration::from_millis(10));
/// assert_eq!(config.segment_size, 16 * 1024 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStreamConfig {
    /// The journal directory; created if missing.
    pub dir: PathBuf,
    /// The largest payload one record may carry, in bytes. Larger records are
    /// refused before any I/O. Must fit in one segment together with the
    /// segment header, its frame header and a seal.
    pub max_record_size: usize,
    /// Roll to a new segment before a segment file would grow past this many bytes.
    pub segment_size: u64,
    /// How often an idle subscriber looks for records appended by other
    /// processes when no file event told it. Appends made through handles in
    /// this process wake subscribers at once; with
    /// [`file_events`](Self::file_events) on, so do appends of other
    /// processes, and polling is only the fallback.
    pub poll_interval: Duration,
    /// Wake subscribers on file-system events on the watermark file
    /// (inotify on Linux, kqueue or FSEvents elsewhere) when another process
    /// appends. On by default. Turn it off where the file system does not
    /// report other machines' writes (NFS, SMB and other network file
    /// systems): subscribers then learn of other processes' appends every
    /// [`poll_interval`](Self::poll_interval).
    pub file_events: bool,
    /// How long an append (or opening) waits for the writer lock held by
    /// another appender before failing with a timeout.
    pub lock_timeout: Duration,
    /// Check every record of every segment when opening (`true`, the default),
    /// or only the last segment (`false`: faster to open a long journal;
    /// older segments are still checked when a subscriber reads them).
    pub verify_on_open: bool,
    /// Open even when acknowledged data is missing (`false`, the default,
    /// refuses with [`FileStreamError::DataLoss`] and modifies nothing).
    ///
    /// A journal that ends before its durable watermark lost records that
    /// callers were told are durable. With this set, opening accepts the
    /// loss: it cuts what is left of a partial record, rewrites the watermark
    /// to where the data now ends, reports the loss in
    /// [`OpenReport::accepted_data_loss`](crate::OpenReport::accepted_data_loss)
    /// and logs it. Set it for one opening after deciding the loss is
    /// acceptable, then unset it: left on, it would hide the next loss too.
    pub accept_data_loss: bool,
    /// Zero-fill the segment being written this many bytes ahead of its last
    /// record (`0`, the default, turns it off; 1 MiB is a reasonable value,
    /// [`FileStreamConfig::SUGGESTED_PREALLOCATE`]). An append that lands in
    /// zero-filled blocks does not grow the file, so its `fdatasync` writes
    /// the data only, without committing a new file size through the file
    /// system's journal: a lone writer's fsync gets cheaper. The price is
    /// writing every byte of the journal twice (zeros first). Free space is
    /// never read as records (an all-zero frame header fails its checksum);
    /// a sealed segment is cut back to its seal.
    pub preallocate: u64,
}

impl FileStreamConfig {
    /// The default record-size limit: 4 MiB.
    pub const DEFAULT_MAX_RECORD_SIZE: usize = 4 * 1024 * 1024;
    /// The default segment size: 64 MiB.
    pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
    /// The default poll interval for records written by other processes: 20 ms.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(20);
    /// The default writer-lock timeout: 30 s.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
    /// A reasonable zero-filled room ahead of the last record: 1 MiB.
    pub const SUGGESTED_PREALLOCATE: u64 = 1024 * 1024;

    /// Defaults for a journal in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            max_record_size: Self::DEFAULT_MAX_RECORD_SIZE,
            segment_size: Self::DEFAULT_SEGMENT_SIZE,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            verify_on_open: true,
            file_events: true,
            accept_data_loss: false,
            preallocate: 0,
        }
    }

    /// Sets [`FileStreamConfig::max_record_size`].
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Sets [`FileStreamConfig::segment_size`].
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets [`FileStreamConfig::poll_interval`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`FileStreamConfig::lock_timeout`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets [`FileStreamConfig::file_events`].
    pub fn with_file_events(mut self, on: bool) -> Self {
        self.file_events = on;
        self
    }

    /// Sets [`FileStreamConfig::verify_on_open`].
    pub fn with_verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    /// Sets [`FileStreamConfig::preallocate`] (`0`: off).
    pub fn with_preallocate(mut self, bytes: u64) -> Self {
        self.preallocate = bytes;
        self
    }

    /// Sets [`FileStreamConfig::accept_data_loss`].
    pub fn with_accept_data_loss(mut self, accept: bool) -> Self {
        self.accept_data_loss = accept;
        self
    }

    /// The smallest segment that holds one record of `max_record_size` bytes.
    pub fn min_segment_size_for(max_record_size: usize) -> u64 {
        SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + max_record_size as u64 + SEAL_LEN
    }

    /// Checks that the limits can work together.
    ///
    /// # Errors
    ///
    /// [`FileStreamError::InvalidConfig`] saying which limit is wrong.
    pub fn validate(&self) -> Result<(), FileStreamError> {
        if self.max_record_size as u64 > MAX_PAYLOAD_LEN {
            return Err(FileStreamError::InvalidConfig(format!(
                "max_record_size {} exceeds the format's limit of {MAX_PAYLOAD_LEN} bytes",
                self.max_record_size
            )));
        }
        let needed = Self::min_segment_size_for(self.max_record_size);
        if self.segment_size < needed {
            return Err(FileStreamError::InvalidConfig(format!(
                "segment_size {} cannot hold a record of max_record_size {} bytes \
                 (needs at least {needed} bytes with headers and seal)",
                self.segment_size, self.max_record_size
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(FileStreamError::InvalidConfig(
                "poll_interval must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        FileStreamConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn a_record_limit_that_does_not_fit_in_a_segment_is_refused() {
        let err = FileStreamConfig::new("/tmp/x")
            .with_segment_size(1024)
            .with_max_record_size(1024)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("segment_size 1024"), "{err}");
        FileStreamConfig::new("/tmp/x")
            .with_segment_size(FileStreamConfig::min_segment_size_for(1024))
            .with_max_record_size(1024)
            .validate()
            .unwrap();
    }
}
