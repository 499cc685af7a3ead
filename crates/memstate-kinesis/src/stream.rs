//! [`KinesisStream`]: a memstate [`Stream`] over one single-shard Kinesis
//! stream.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};
use tokio::time::Instant;

use crate::config::KinesisConfig;
use crate::consumer::Consumer;
use crate::cursor;
use crate::error::{KinesisStreamError, misconfigured};
use crate::pacing::Pacer;
use crate::setup::{check_retention, ensure_active, single_open_shard};
use crate::stats::{ReadStats, Shared};
use crate::subscription::{KinesisSubscription, Start};

/// The partition key of every record. All records go to the stream's only
/// shard, so its value does not matter; one byte keeps the record limit high.
pub(crate) const PARTITION_KEY: &str = "m";

/// Kinesis's limit on one record: data blob plus partition key.
pub const KINESIS_RECORD_LIMIT: usize = 1024 * 1024;

/// The largest payload one [`KinesisStream`] record may carry:
/// [`KINESIS_RECORD_LIMIT`] less the partition key.
pub const MAX_RECORD_SIZE: usize = KINESIS_RECORD_LIMIT - PARTITION_KEY.len();

/// A memstate stream stored in one Kinesis data stream with exactly one shard.
///
/// See the [crate documentation](crate) for how records, cursors, polling and
/// failures map onto Kinesis. Clones share the client and the shard.
#[derive(Clone)]
pub struct KinesisStream {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: KinesisConfig,
    shard_id: String,
    /// The stream's retention period as read at connect.
    retention: Duration,
    /// Closing and read counters, shared with the subscriptions.
    shared: Arc<Shared>,
    /// The registered consumer, in enhanced fan-out mode.
    consumer: Option<Arc<Consumer>>,
}

impl fmt::Debug for KinesisStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisStream")
            .field("stream_name", &self.inner.config.stream_name)
            .field("shard_id", &self.inner.shard_id)
            .field("endpoint_url", &self.inner.config.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl KinesisStream {
    /// Connects to the stream `config` names: builds the SDK client, creates
    /// the stream when it is missing and [`KinesisConfig::create_if_missing`]
    /// is set (raising its retention to
    /// [`KinesisConfig::retention_on_create`]), reads its retention period
    /// and checks it against [`KinesisConfig::min_retention`], and checks
    /// that it has exactly one shard.
    ///
    /// # Errors
    ///
    /// [`StreamError::NotFound`] for a stream that does not exist (and is not
    /// to be created); [`StreamError::Misconfigured`] for an invalid
    /// configuration, a retention below the minimum (unless
    /// [`KinesisConfig::accept_short_retention`]), or a stream with more than
    /// one shard, a closed shard or on-demand capacity; [`StreamError::Timeout`] when the endpoint does not
    /// answer within [`KinesisConfig::request_timeout`] or a new stream does
    /// not become active within [`KinesisConfig::create_timeout`];
    /// [`StreamError::Backend`] for other Kinesis failures.
    ///
    /// # Examples
    ///
    /// A fresh stream on a local emulator, one line:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), memstate_core::StreamError> {
    /// use memstate_kinesis::{KinesisConfig, KinesisStream};
    ///
    /// let stream =
    ///     KinesisStream::connect(KinesisConfig::emulator("http://127.0.0.1:14567", "case-42")).await?;
    /// # let _ = stream; Ok(()) }
    /// ```
    pub async fn connect(config: KinesisConfig) -> Result<Self, StreamError> {
        config.validate()?;
        let client = config.client().await?;
        Self::with_client(client, config).await
    }

    /// Like [`KinesisStream::connect`], with a client built elsewhere (shared
    /// between streams, or stubbed in tests). The client's own settings are
    /// used as they are: the region, endpoint, credentials and timeouts of
    /// `config` are ignored, its stream name, creation and polling settings
    /// apply.
    ///
    /// # Errors
    ///
    /// As [`KinesisStream::connect`].
    pub async fn with_client(client: Client, config: KinesisConfig) -> Result<Self, StreamError> {
        config.validate()?;
        let (retention_hours, stream_arn) = ensure_active(&client, &config).await?;
        check_retention(&config, retention_hours)?;
        let shard = single_open_shard(&client, &config).await?;
        let consumer = match config.read_mode.consumer_name() {
            Some(name) => Some(Arc::new(
                Consumer::register(&client, &config, &stream_arn, name).await?,
            )),
            None => None,
        };
        tracing::debug!(stream = %config.stream_name, shard = %shard.shard_id(), retention_hours, "connected to Kinesis stream");
        Ok(Self {
            inner: Arc::new(Inner {
                shard_id: shard.shard_id().to_owned(),
                client,
                config,
                retention: Duration::from_secs(u64::try_from(retention_hours).unwrap_or(0) * 3600),
                shared: Arc::new(Shared::default()),
                consumer,
            }),
        })
    }

    /// The stream's retention period, as read at connect: Kinesis deletes
    /// records older than this, so every node must write a snapshot within
    /// it (see [`Stream::retention`]).
    pub fn retention(&self) -> Duration {
        self.inner.retention
    }

    /// The Kinesis stream name.
    pub fn stream_name(&self) -> &str {
        &self.inner.config.stream_name
    }

    /// The id of the stream's only shard.
    pub fn shard_id(&self) -> &str {
        &self.inner.shard_id
    }

    /// The SDK client, e.g. to compare raw appends with the adapter's.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The configuration this stream was opened with.
    pub fn config(&self) -> &KinesisConfig {
        &self.inner.config
    }

    /// The ARN of the enhanced fan-out consumer this stream registered (or
    /// found registered), `None` when it reads by polling.
    pub fn consumer_arn(&self) -> Option<&str> {
        self.inner.consumer.as_deref().map(|c| c.arn.as_str())
    }

    /// What this stream's subscriptions have read so far, and how.
    pub fn read_stats(&self) -> ReadStats {
        self.inner.shared.stats()
    }

    /// Closes the stream for every clone: subscriptions end (`next` returns
    /// `None`), appends and new subscriptions are refused with
    /// [`StreamError::Closed`], and in enhanced fan-out mode the consumer is
    /// deregistered. Closing again does nothing.
    ///
    /// A node that stops without closing (a crash) leaves its consumer
    /// registered; it counts towards the stream's limit of
    /// [`MAX_CONSUMERS_PER_STREAM`](crate::MAX_CONSUMERS_PER_STREAM) until the
    /// node starts again with the same consumer name (it is found and used
    /// again) or someone deregisters it.
    ///
    /// # Errors
    ///
    /// A failed `DeregisterStreamConsumer` (the stream is closed anyway).
    pub async fn close(&self) -> Result<(), StreamError> {
        if self
            .inner
            .shared
            .closed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        match &self.inner.consumer {
            Some(consumer) => {
                consumer
                    .deregister(&self.inner.client, &self.inner.config)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Deletes the Kinesis stream and every record in it (tests clean up with
    /// this). Kinesis finishes the deletion in the background.
    ///
    /// # Errors
    ///
    /// [`StreamError::NotFound`] when it is already gone; backend failures.
    pub async fn delete(&self) -> Result<(), StreamError> {
        let name = self.stream_name();
        self.inner
            .client
            .delete_stream()
            .stream_name(name)
            .enforce_consumer_deletion(true)
            .send()
            .await
            .map_err(|e| self.read_error("DeleteStream", e))?;
        Ok(())
    }

    fn read_error<E, R>(
        &self,
        operation: &'static str,
        err: aws_sdk_kinesis::error::SdkError<E, R>,
    ) -> StreamError
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        KinesisStreamError::from_sdk(operation, self.inner.config.request_timeout, err)
            .into_read_error(self.stream_name())
    }

    /// Writes one record with `PutRecord`. A throttled call wrote nothing
    /// and is sent again after a jittered, growing pause, for at most
    /// [`KinesisConfig::throttle_budget`].
    async fn put_record(&self, payload: Bytes) -> Result<String, StreamError> {
        let name = self.stream_name();
        let config = &self.inner.config;
        let request = self
            .inner
            .client
            .put_record()
            .stream_name(name)
            .partition_key(PARTITION_KEY)
            .data(Blob::new(payload));
        let give_up_at = Instant::now() + config.throttle_budget;
        let mut pacer = Pacer::new(config.min_poll_interval, config.max_poll_interval);
        let output = loop {
            let err = match request.clone().send().await {
                Ok(output) => break output,
                Err(e) => KinesisStreamError::from_sdk("PutRecord", config.request_timeout, e),
            };
            if let KinesisStreamError::Throttled { .. } = err {
                let pause = pacer.after_throttle();
                if Instant::now() + pause <= give_up_at {
                    tracing::debug!(stream = name, ?pause, error = %err, "PutRecord throttled; sending again");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return Err(err.into_write_error(name));
        };
        if output.shard_id() != self.inner.shard_id {
            return Err(misconfigured(
                name,
                format!(
                    "a record was written to shard {} instead of {} (sequence number {}): the stream was \
                     resharded, and Kinesis orders records only within one shard, so it can no longer \
                     hold a memstate log",
                    output.shard_id(),
                    self.inner.shard_id,
                    output.sequence_number()
                ),
            ));
        }
        Ok(output.sequence_number().to_owned())
    }
}

#[async_trait]
impl Stream for KinesisStream {
    fn describe(&self) -> String {
        format!("Kinesis stream {:?}", self.stream_name())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_RECORD_SIZE)
            .with_exact_head(false)
            .with_multi_record_append(false)
    }

    /// Writes one record with one `PutRecord` call and returns its sequence
    /// number.
    ///
    /// Several records in one call are refused: Kinesis cannot keep them
    /// contiguous when writers in other processes append to the same shard
    /// (neither `PutRecords` nor chained `PutRecord` calls are atomic). The
    /// engine appends one frame per call, which packs any number of commands.
    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        // Declared: one record per append (`multi_record_append: false`).
        self.capabilities().check_append(&records)?;
        if self.inner.shared.is_closed() {
            return Err(StreamError::Closed);
        }
        let Some(payload) = records.into_iter().next() else {
            return Ok(Vec::new());
        };
        let sequence = self.put_record(payload).await?;
        Ok(vec![Cursor::new(sequence)])
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        if self.inner.shared.is_closed() {
            return Err(StreamError::Closed);
        }
        let start = match &after {
            None => Start::TrimHorizon,
            Some(c) => Start::VerifyAt(cursor::from_cursor(c)?.to_owned()),
        };
        // Resharding after connect() would silently spread records over shards.
        let shard = single_open_shard(&self.inner.client, &self.inner.config).await?;
        if shard.shard_id() != self.inner.shard_id {
            return Err(misconfigured(
                self.stream_name(),
                format!(
                    "its shard changed from {} to {}: the stream was resharded",
                    self.inner.shard_id,
                    shard.shard_id()
                ),
            ));
        }
        let mut subscription = KinesisSubscription::new(
            self.inner.client.clone(),
            self.inner.config.clone(),
            &shard,
            start,
            self.inner.retention,
            Arc::clone(&self.inner.shared),
            self.inner.consumer.clone(),
        );
        subscription.start().await?;
        Ok(Box::new(subscription))
    }

    /// Kinesis cannot tell the last sequence number of a shard without reading
    /// it whole, so this adapter declares `exact_head: false` and the engine
    /// appends a sync marker instead; `head` is unsupported.
    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        Err(StreamError::Unsupported(format!(
            "{}: Kinesis cannot report the last sequence number of a shard (exact_head is false; \
             use a sync marker)",
            self.describe()
        )))
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        cursor::compare(a, b)
    }

    /// The retention period read at connect (Kinesis always has one).
    fn retention(&self) -> Option<Duration> {
        Some(self.inner.retention)
    }
}
