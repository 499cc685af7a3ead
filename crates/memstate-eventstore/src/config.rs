//! [`EventStoreConfig`]: where the stream lives and the limits it keeps.

use std::fmt;
use std::time::Duration;

use crate::connection;
use crate::error::EventStoreStreamError;
use crate::event::size_on_disk;

/// The server's cap on one event: `TFConsts.EffectiveMaxLogRecordSize`
/// (16 MiB less 10 000 bytes of record overhead), counted as data + metadata
/// + twice the event type's length.
pub const SERVER_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024 - 10_000;

/// The largest value the server accepts for its `MaxAppendSize` option.
pub const SERVER_MAX_APPEND_SIZE_CEILING: usize = 16 * 1024 * 1024;

/// Configuration of an [`EventStoreStream`](crate::EventStoreStream).
///
/// Build it with [`EventStoreConfig::new`] and adjust the public fields or use
/// the `with_*` methods.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memstate_eventstore::EventStoreConfig;
///
/// let config = EventStoreConfig::new("kurrentdb://localhost:2113?tls=false", "orders")
///     .with_operation_timeout(Duration::from_secs(5));
/// assert_eq!(config.max_append_size, 1024 * 1024);
/// assert_eq!(config.event_type, "memstate.frame");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStoreConfig {
    /// A KurrentDB connection string: `kurrentdb://host:2113?tls=false`,
    /// `esdb://user:password@host:2113`, `esdb+discover://cluster:2113`, ...
    /// TLS is on unless `tls=false` is given.
    pub connection_string: String,
    /// The EventStoreDB stream that holds this memstate log (one per log).
    /// Must not be empty or start with `$` (system streams).
    pub stream_name: String,
    /// The event type written for every record (default `memstate.frame`).
    pub event_type: String,
    /// The largest payload of one record, in bytes. Default: 1 MiB − 1 KiB, so
    /// that one record of this size fits the server's default `MaxAppendSize`
    /// of 1 MiB together with the event type the server counts with it.
    pub max_record_size: usize,
    /// The server's `MaxAppendSize` (1 MiB unless its `--max-append-size` says
    /// otherwise): the total of one append call, which the server measures as
    /// the sum over events of data + metadata + twice the event type's length.
    /// An append over it is refused before any I/O.
    pub max_append_size: usize,
    /// The longest wait of any one operation: connecting, appending, reading
    /// the head, opening a subscription. Sent as the gRPC deadline and enforced
    /// again by a timer around the whole call. Default: 10 s.
    pub operation_timeout: Duration,
    /// How many consecutive failed attempts to re-open a dropped subscription
    /// are made before `next` returns the error. Default: 10.
    pub resubscribe_attempts: u32,
    /// The wait before the first re-open; doubled after each failure up to
    /// [`EventStoreConfig::resubscribe_backoff_max`]. Default: 100 ms.
    pub resubscribe_backoff: Duration,
    /// The longest wait between two re-open attempts. Default: 5 s.
    pub resubscribe_backoff_max: Duration,
    /// Accept a stream whose metadata lets the server delete events
    /// (`$maxAge`, `$maxCount`, `$tb`). Default `false`: such a stream is
    /// refused when it is first opened, because a node could then no longer
    /// rebuild its state from the stream. Set it only when every node keeps
    /// snapshots newer than what the server deletes.
    pub accept_trimming_metadata: bool,
    /// How event ids are chosen. Default: [`EventIds::FromContent`].
    pub event_ids: EventIds,
}

/// How the adapter chooses the id of each event it appends.
///
/// KurrentDB treats an append whose event ids it has just written to the
/// same stream as a resend: it answers with the positions already written
/// and writes nothing (see the adapter docs for how far back it looks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventIds {
    /// Derived from the stream name, the event type and the bytes of the
    /// whole append call (UUID v5), so a resend of the same call carries the
    /// same ids and the server writes it once. Two calls with byte-identical
    /// records in quick succession are therefore written once; the engine's
    /// frames never repeat (each envelope has its own command id).
    #[default]
    FromContent,
    /// A fresh random id per event and per attempt (the client's default):
    /// the server never merges two appends.
    Random,
}

impl EventStoreConfig {
    /// The default event type.
    pub const DEFAULT_EVENT_TYPE: &'static str = "memstate.frame";
    /// The server's default `MaxAppendSize`: 1 MiB.
    pub const DEFAULT_MAX_APPEND_SIZE: usize = 1024 * 1024;
    /// The default record-size limit: 1 MiB − 1 KiB.
    pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024 - 1024;
    /// The default operation timeout: 10 s.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default number of re-open attempts: 10.
    pub const DEFAULT_RESUBSCRIBE_ATTEMPTS: u32 = 10;

    /// A configuration with the defaults for everything but where the stream is.
    pub fn new(connection_string: impl Into<String>, stream_name: impl Into<String>) -> Self {
        Self {
            connection_string: connection_string.into(),
            stream_name: stream_name.into(),
            event_type: Self::DEFAULT_EVENT_TYPE.to_owned(),
            max_record_size: Self::DEFAULT_MAX_RECORD_SIZE,
            max_append_size: Self::DEFAULT_MAX_APPEND_SIZE,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            resubscribe_attempts: Self::DEFAULT_RESUBSCRIBE_ATTEMPTS,
            resubscribe_backoff: Duration::from_millis(100),
            resubscribe_backoff_max: Duration::from_secs(5),
            accept_trimming_metadata: false,
            event_ids: EventIds::FromContent,
        }
    }

    /// Sets [`EventStoreConfig::max_record_size`].
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Sets [`EventStoreConfig::max_append_size`] (match the server's
    /// `--max-append-size`).
    pub fn with_max_append_size(mut self, bytes: usize) -> Self {
        self.max_append_size = bytes;
        self
    }

    /// Sets [`EventStoreConfig::operation_timeout`].
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets [`EventStoreConfig::event_type`].
    pub fn with_event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets how a dropped subscription is re-opened: at most `attempts`
    /// consecutive failures, waiting `backoff`, doubled each time up to `max`.
    pub fn with_resubscribe(mut self, attempts: u32, backoff: Duration, max: Duration) -> Self {
        self.resubscribe_attempts = attempts;
        self.resubscribe_backoff = backoff;
        self.resubscribe_backoff_max = max;
        self
    }

    /// Sets [`EventStoreConfig::accept_trimming_metadata`].
    pub fn with_accept_trimming_metadata(mut self, accept: bool) -> Self {
        self.accept_trimming_metadata = accept;
        self
    }

    /// Sets [`EventStoreConfig::event_ids`].
    pub fn with_event_ids(mut self, event_ids: EventIds) -> Self {
        self.event_ids = event_ids;
        self
    }

    /// Checks the values that do not need the server.
    pub(crate) fn validate(&self) -> Result<(), EventStoreStreamError> {
        let invalid = |reason: String| Err(EventStoreStreamError::InvalidConfig(reason));
        if self.stream_name.is_empty() {
            return invalid("stream_name is empty".to_owned());
        }
        if self.stream_name.starts_with('$') {
            return invalid(format!(
                "stream_name {:?} starts with '$', which EventStoreDB reserves for system streams",
                self.stream_name
            ));
        }
        if self.event_type.is_empty() || self.event_type.starts_with('$') {
            return invalid(format!(
                "event_type {:?} must be non-empty and must not start with '$' (system event types)",
                self.event_type
            ));
        }
        if self.max_record_size == 0 {
            return invalid("max_record_size is 0".to_owned());
        }
        if self.max_append_size > SERVER_MAX_APPEND_SIZE_CEILING {
            return invalid(format!(
                "max_append_size {} exceeds {SERVER_MAX_APPEND_SIZE_CEILING} bytes, the most the \
                 server's MaxAppendSize can be",
                self.max_append_size
            ));
        }
        let one_record = size_on_disk(self.max_record_size, &self.event_type);
        if one_record > self.max_append_size {
            return invalid(format!(
                "a record of max_record_size {} bytes with event type {:?} counts {one_record} \
                 bytes against max_append_size {}; lower max_record_size",
                self.max_record_size, self.event_type, self.max_append_size
            ));
        }
        if one_record > SERVER_MAX_EVENT_SIZE {
            return invalid(format!(
                "a record of max_record_size {} bytes counts {one_record} bytes, over the \
                 server's per-event limit of {SERVER_MAX_EVENT_SIZE}",
                self.max_record_size
            ));
        }
        if self.operation_timeout.is_zero() {
            return invalid("operation_timeout is zero".to_owned());
        }
        Ok(())
    }

    /// The wait before re-open attempt `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.resubscribe_backoff
            .saturating_mul(factor)
            .min(self.resubscribe_backoff_max)
    }
}

impl fmt::Debug for EventStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreConfig")
            .field(
                "connection_string",
                &connection::redact(&self.connection_string),
            )
            .field("stream_name", &self.stream_name)
            .field("event_type", &self.event_type)
            .field("max_record_size", &self.max_record_size)
            .field("max_append_size", &self.max_append_size)
            .field("operation_timeout", &self.operation_timeout)
            .field("resubscribe_attempts", &self.resubscribe_attempts)
            .field("resubscribe_backoff", &self.resubscribe_backoff)
            .field("resubscribe_backoff_max", &self.resubscribe_backoff_max)
            .field("accept_trimming_metadata", &self.accept_trimming_metadata)
            .field("event_ids", &self.event_ids)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EventStoreConfig {
        EventStoreConfig::new("kurrentdb://localhost:2113?tls=false", "orders")
    }

    fn refusal(config: &EventStoreConfig) -> String {
        match config.validate() {
            Err(EventStoreStreamError::InvalidConfig(reason)) => reason,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn defaults_fit_the_servers_default_append_size() {
        let config = config();
        assert!(config.validate().is_ok());
        let one_record = size_on_disk(config.max_record_size, &config.event_type);
        assert!(one_record <= 1024 * 1024, "{one_record}");
    }

    #[test]
    fn a_record_limit_that_cannot_fit_an_append_is_refused() {
        let reason = refusal(&config().with_max_record_size(1024 * 1024));
        assert!(reason.contains("max_append_size"), "{reason}");
        // Raising the append size to match the server makes it valid.
        let raised = config()
            .with_max_record_size(8 * 1024 * 1024)
            .with_max_append_size(9 * 1024 * 1024);
        assert!(raised.validate().is_ok());
    }

    #[test]
    fn limits_beyond_the_server_are_refused() {
        let reason = refusal(&config().with_max_append_size(32 * 1024 * 1024));
        assert!(reason.contains("MaxAppendSize"), "{reason}");
        let reason = refusal(
            &config()
                .with_max_append_size(SERVER_MAX_APPEND_SIZE_CEILING)
                .with_max_record_size(SERVER_MAX_APPEND_SIZE_CEILING - 100),
        );
        assert!(reason.contains("per-event"), "{reason}");
        assert!(refusal(&config().with_max_record_size(0)).contains("0"));
    }

    #[test]
    fn stream_and_event_type_names_are_checked() {
        assert!(refusal(&EventStoreConfig::new("esdb://h", "")).contains("empty"));
        assert!(refusal(&EventStoreConfig::new("esdb://h", "$all")).contains("system"));
        assert!(refusal(&config().with_event_type("")).contains("event_type"));
        assert!(refusal(&config().with_event_type("$metadata")).contains("event_type"));
        assert!(refusal(&config().with_operation_timeout(Duration::ZERO)).contains("zero"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = config();
        assert_eq!(config.backoff(1), Duration::from_millis(100));
        assert_eq!(config.backoff(2), Duration::from_millis(200));
        assert_eq!(config.backoff(4), Duration::from_millis(800));
        assert_eq!(config.backoff(7), Duration::from_secs(5));
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = EventStoreConfig::new("esdb://admin:hunter2@h:2113", "orders");
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("admin:***@h"), "{text}");
    }
}
