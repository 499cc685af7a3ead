//! [`EventStoreStream`]: the [`Stream`] implementation.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use kurrentdb::{AppendToStreamOptions, ReadStreamOptions, StreamPosition, StreamState};
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};

use crate::client::Shared;
use crate::config::EventStoreConfig;
use crate::cursor;
use crate::error::Operation;
use crate::event;
use crate::metadata::HistoryLimits;
use crate::subscription::EventStoreSubscription;

/// A memstate [`Stream`] stored as one EventStoreDB / KurrentDB stream.
///
/// Every record is one event (type `memstate.frame` by default, content type
/// JSON when the payload is JSON); the cursor is the event's stream revision.
/// Clones share one client.
///
/// # Examples
///
/// ```no_run
/// use bytes::Bytes;
/// use memstate_core::Stream;
/// use memstate_eventstore::{EventStoreConfig, EventStoreStream};
///
/// # async fn demo() -> Result<(), memstate_core::StreamError> {
/// let config = EventStoreConfig::new("kurrentdb://localhost:2113?tls=false", "orders");
/// let stream = EventStoreStream::connect(config).await?;
/// let cursors = stream.append(vec![Bytes::from_static(br#"{"hello":1}"#)]).await?;
/// let mut subscription = stream.subscribe(None).await?;
/// let first = subscription.next().await?;
/// assert_eq!(first.map(|r| r.cursor), cursors.first().cloned());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EventStoreStream {
    shared: Arc<Shared>,
}

impl EventStoreStream {
    /// Validates `config`, creates the client, connects to the server
    /// (within [`EventStoreConfig::operation_timeout`]), so that a wrong
    /// address or a stopped server is reported here, and reads the stream's
    /// metadata: a stream whose metadata lets the server delete events
    /// (`$maxAge`, `$maxCount`, `$tb`) is refused unless
    /// [`EventStoreConfig::accept_trimming_metadata`] is set.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StreamError::Backend`] whose source is an [`EventStoreStreamError`](crate::EventStoreStreamError): an
    /// invalid connection string or configuration, no runtime, or an
    /// unreachable server ([`EventStoreStreamError::Unreachable`](crate::EventStoreStreamError::Unreachable));
    /// [`StreamError::Timeout`] when connecting took longer than the
    /// operation timeout; [`StreamError::Misconfigured`] when the stream's
    /// metadata trims history, or cannot be read, and that is not accepted.
    pub async fn connect(config: EventStoreConfig) -> Result<Self, StreamError> {
        let stream = Self::connect_lazy(config)?;
        stream
            .shared
            .run(Operation::Connect, |client| async move {
                client.server_info().await.map(|_| ())
            })
            .await?;
        stream.shared.check_history().await?;
        Ok(stream)
    }

    /// Validates `config` and creates the client without contacting the
    /// server; the first operation connects. For processes that must start
    /// while the database is still down. The stream's metadata is checked
    /// (as by [`EventStoreStream::connect`]) when the first subscription
    /// opens, which is where an engine starts.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StreamError::Backend`] whose source is an [`EventStoreStreamError`](crate::EventStoreStreamError): an
    /// invalid connection string or configuration, or no runtime.
    pub fn connect_lazy(config: EventStoreConfig) -> Result<Self, StreamError> {
        Ok(Self {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    /// The configuration this stream was opened with.
    pub fn config(&self) -> &EventStoreConfig {
        &self.shared.config
    }

    /// What the stream's metadata lets the server delete, as read when the
    /// stream was opened; `None` before that (a lazily connected stream
    /// before its first subscription) or when the metadata could not be read
    /// and [`EventStoreConfig::accept_trimming_metadata`] let it pass.
    pub fn history_limits(&self) -> Option<&HistoryLimits> {
        self.shared.history_limits()
    }

    /// Appends `records` in one `append_to_stream` call (atomic and contiguous
    /// in EventStoreDB) with the given expected state.
    async fn append_with(
        &self,
        records: Vec<Bytes>,
        state: StreamState,
        op: Operation,
    ) -> Result<Vec<Cursor>, StreamError> {
        let config = &self.shared.config;
        self.capabilities().check_sizes(&records)?;
        let total = records.iter().fold(0usize, |sum, r| {
            sum.saturating_add(event::size_on_disk(r.len(), &config.event_type))
        });
        if total > config.max_append_size {
            return Err(StreamError::RecordTooLarge {
                size: total,
                limit: config.max_append_size,
            });
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let count = records.len();
        // Built once: every attempt of this call sends the same event ids.
        let events = event::to_events(
            records,
            &config.stream_name,
            &config.event_type,
            config.event_ids,
        );
        let options = AppendToStreamOptions::default()
            .stream_state(state)
            .deadline(config.operation_timeout);
        let name = config.stream_name.clone();
        let written = self
            .shared
            .run(op, |client| {
                let (events, options, name) = (events.clone(), options.clone(), name.clone());
                async move { client.append_to_stream(name, &options, events).await }
            })
            .await?;
        // The server answers with the revision of the last event written; the
        // call's events are the `count` revisions ending there.
        let last = written.next_expected_version;
        let first = last
            .checked_sub((count - 1) as u64)
            .ok_or_else(|| StreamError::Corrupt {
                location: format!("append response for stream {:?}", config.stream_name),
                reason: format!("revision {last} after appending {count} events"),
            })?;
        Ok((first..=last).map(cursor::to_cursor).collect())
    }
}

#[async_trait]
impl Stream for EventStoreStream {
    fn describe(&self) -> String {
        format!(
            "eventstore stream {:?} at {}",
            self.shared.config.stream_name, self.shared.endpoint
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.config.max_record_size)
            .with_exact_head(true)
            .with_optimistic_append(true)
            .with_multi_record_append(true)
    }

    /// Appends with `StreamState::Any`: several writers may append; the
    /// server orders them.
    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        self.append_with(records, StreamState::Any, Operation::Append)
            .await
    }

    /// Appends only if the stream's last revision is `expected` (`None`: the
    /// stream does not exist yet).
    async fn append_expecting(
        &self,
        records: Vec<Bytes>,
        expected: Option<Cursor>,
    ) -> Result<Vec<Cursor>, StreamError> {
        let state = match &expected {
            None => StreamState::NoStream,
            Some(cursor) => StreamState::StreamRevision(cursor::from_cursor(cursor)?),
        };
        self.append_with(records, state, Operation::AppendExpecting(expected))
            .await
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        let after = after.as_ref().map(cursor::from_cursor).transpose()?;
        self.shared.check_history().await?;
        let subscription = EventStoreSubscription::open(Arc::clone(&self.shared), after).await?;
        Ok(Box::new(subscription))
    }

    /// Reads the last event (backwards, one event) from the leader.
    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        let config = &self.shared.config;
        // From the leader: a follower may not have the last write yet, and
        // the head must be exact.
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .backwards()
            .max_count(1)
            .requires_leader(true)
            .deadline(config.operation_timeout);
        let name = config.stream_name.clone();
        let revision = self
            .shared
            .run(Operation::Head, |client| {
                let (options, name) = (options.clone(), name.clone());
                async move {
                    let mut read = match client.read_stream(name, &options).await {
                        Err(kurrentdb::Error::ResourceNotFound) => return Ok(None),
                        other => other?,
                    };
                    match read.next().await {
                        Ok(Some(last)) => match last.link.as_ref().or(last.event.as_ref()) {
                            Some(recorded) => Ok(Some(recorded.revision)),
                            None => Err(kurrentdb::Error::InternalParsingError(
                                "the server sent a read response without an event".to_owned(),
                            )),
                        },
                        Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => Ok(None),
                        Err(other) => Err(other),
                    }
                }
            })
            .await?;
        Ok(revision.map(cursor::to_cursor))
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        cursor::compare(a, b)
    }

    /// The stream's `$maxAge`, when its metadata sets one and that was
    /// accepted ([`EventStoreConfig::accept_trimming_metadata`]); a
    /// `$maxCount` or `$tb` deletes by count or position, which no time
    /// window describes.
    fn retention(&self) -> Option<std::time::Duration> {
        self.shared
            .history_limits()
            .and_then(|limits| limits.max_age)
    }
}

impl fmt::Debug for EventStoreStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStoreStream")
            .field("stream_name", &self.shared.config.stream_name)
            .field("endpoint", &self.shared.endpoint)
            .field("config", &self.shared.config)
            .finish()
    }
}
