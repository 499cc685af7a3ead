//! [`KinesisStream`]: a memstate [`Stream`] over one single-shard Kinesis
//! stream.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{Shard, StreamMode, StreamModeDetails, StreamStatus};
use bytes::Bytes;
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};
use tokio::time::Instant;

use crate::config::KinesisConfig;
use crate::cursor;
use crate::error::{KinesisStreamError, misconfigured, not_found};
use crate::pacing::Pacer;
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
        let retention_hours = ensure_active(&client, &config).await?;
        check_retention(&config, retention_hours)?;
        let shard = single_open_shard(&client, &config).await?;
        tracing::debug!(stream = %config.stream_name, shard = %shard.shard_id(), retention_hours, "connected to Kinesis stream");
        Ok(Self {
            inner: Arc::new(Inner {
                shard_id: shard.shard_id().to_owned(),
                client,
                config,
                retention: Duration::from_secs(u64::try_from(retention_hours).unwrap_or(0) * 3600),
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
        let Some(payload) = records.into_iter().next() else {
            return Ok(Vec::new());
        };
        let sequence = self.put_record(payload).await?;
        Ok(vec![Cursor::new(sequence)])
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
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
        );
        // Now rather than on the first `next`, so that a cursor Kinesis
        // refuses is reported by `subscribe`.
        subscription.acquire_iterator().await?;
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

/// Refuses (or, when accepted, warns about) a retention below the minimum.
fn check_retention(config: &KinesisConfig, retention_hours: i32) -> Result<(), StreamError> {
    let minimum = config.min_retention_hours();
    if retention_hours >= minimum {
        return Ok(());
    }
    let name = config.stream_name.as_str();
    if config.accept_short_retention {
        tracing::warn!(
            stream = name,
            retention_hours,
            minimum_hours = minimum,
            "the Kinesis stream keeps records for {retention_hours} h only (accepted by \
             accept_short_retention): every node must write a snapshot within that window, or it \
             cannot start again once older records expire"
        );
        return Ok(());
    }
    Err(misconfigured(
        name,
        format!(
            "its retention period is {retention_hours} h, below the minimum of {minimum} h: Kinesis \
             deletes records older than that, and a node can then start only from a snapshot newer \
             than the oldest record kept. Raise it (aws kinesis increase-stream-retention-period \
             --stream-name {name} --retention-period-hours 8760), or lower \
             KinesisConfig::min_retention to a window within which every node writes a snapshot, or \
             set KinesisConfig::accept_short_retention"
        ),
    ))
}

/// Makes sure the stream exists and is usable: creates it when missing and
/// allowed (raising the new stream's retention as configured), then waits
/// while it is `CREATING`. Returns the retention period in hours.
async fn ensure_active(client: &Client, config: &KinesisConfig) -> Result<i32, StreamError> {
    let name = config.stream_name.as_str();
    let deadline = Instant::now() + config.create_timeout;
    let mut created = false;
    let mut raised = false;
    let mut pause = Duration::from_millis(50);
    loop {
        match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(output) => {
                let Some(summary) = output.stream_description_summary() else {
                    return Err(StreamError::backend(
                        crate::error::BACKEND,
                        format!("describing stream {name:?}"),
                        "DescribeStreamSummary returned no summary",
                    ));
                };
                if summary
                    .stream_mode_details()
                    .is_some_and(|mode| *mode.stream_mode() == StreamMode::OnDemand)
                {
                    return Err(misconfigured(
                        name,
                        "it is in on-demand capacity mode, where Kinesis adds shards by itself; memstate needs \
                         exactly one shard (provisioned mode, shard count 1) because Kinesis orders records \
                         only within a shard",
                    ));
                }
                let retention_hours = summary.retention_period_hours();
                match summary.stream_status() {
                    StreamStatus::Active
                        if created
                            && !raised
                            && retention_hours < config.retention_on_create_hours() =>
                    {
                        raise_retention(client, config).await?;
                        raised = true;
                        continue; // Read the retention back.
                    }
                    // The raise is under way: wait to read the new retention.
                    StreamStatus::Updating if raised => {}
                    StreamStatus::Active | StreamStatus::Updating => {
                        if created {
                            tracing::info!(
                                stream = name,
                                retention_hours,
                                "created Kinesis stream with one shard"
                            );
                        }
                        return Ok(retention_hours);
                    }
                    StreamStatus::Deleting => {
                        return Err(not_found(name, "the stream is being deleted"));
                    }
                    _ => {} // CREATING: wait below.
                }
            }
            Err(err) => {
                let err = KinesisStreamError::from_sdk(
                    "DescribeStreamSummary",
                    config.request_timeout,
                    err,
                );
                if !matches!(err, KinesisStreamError::StreamNotFound { .. }) {
                    return Err(err.into_read_error(name));
                }
                if !config.create_if_missing {
                    return Err(err.into_read_error(name));
                }
                if !created {
                    create_stream(client, config).await?;
                    created = true;
                }
            }
        }
        if Instant::now() + pause > deadline {
            return Err(StreamError::Timeout {
                action: format!("waiting for Kinesis stream {name:?} to become ACTIVE"),
                after: config.create_timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Raises a new stream's retention to [`KinesisConfig::retention_on_create`].
async fn raise_retention(client: &Client, config: &KinesisConfig) -> Result<(), StreamError> {
    let name = config.stream_name.as_str();
    let hours = config.retention_on_create_hours();
    match client
        .increase_stream_retention_period()
        .stream_name(name)
        .retention_period_hours(hours)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(
                stream = name,
                hours,
                "raised the new Kinesis stream's retention period"
            );
            Ok(())
        }
        Err(err) => {
            let err = KinesisStreamError::from_sdk(
                "IncreaseStreamRetentionPeriod",
                config.request_timeout,
                err,
            );
            // Another node raising it at the same moment: read it back.
            if err.code() == Some("ResourceInUseException") {
                Ok(())
            } else {
                Err(err.into_read_error(name))
            }
        }
    }
}

async fn create_stream(client: &Client, config: &KinesisConfig) -> Result<(), StreamError> {
    let name = config.stream_name.as_str();
    let provisioned = StreamModeDetails::builder()
        .stream_mode(StreamMode::Provisioned)
        .build()
        .map_err(|e| StreamError::backend(crate::error::BACKEND, "building CreateStream", e))?;
    match client
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .stream_mode_details(provisioned)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => {
            let err = KinesisStreamError::from_sdk("CreateStream", config.request_timeout, err);
            // Another node created it first: that is just as good.
            if err.code() == Some("ResourceInUseException") {
                Ok(())
            } else {
                Err(err.into_read_error(name))
            }
        }
    }
}

/// Lists every shard of the stream and returns the only one, refusing a
/// stream that has ever been resharded.
async fn single_open_shard(client: &Client, config: &KinesisConfig) -> Result<Shard, StreamError> {
    let name = config.stream_name.as_str();
    let mut shards: Vec<Shard> = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // With a continuation token, Kinesis refuses the stream name.
        let request = match &next_token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(name),
        };
        let output = request.send().await.map_err(|e| {
            KinesisStreamError::from_sdk("ListShards", config.request_timeout, e)
                .into_read_error(name)
        })?;
        shards.extend(output.shards().iter().cloned());
        match output.next_token() {
            Some(token) if shards.len() <= 1000 => next_token = Some(token.to_owned()),
            _ => break,
        }
    }
    let resharded = |detail: String| {
        misconfigured(
            name,
            format!(
                "{detail}. Kinesis orders records only within one shard, so a memstate log needs a \
                 stream with exactly one shard that was never split or merged; create a new stream with \
                 one shard (provisioned mode) and do not reshard it"
            ),
        )
    };
    let mut iter = shards.into_iter();
    let (Some(shard), None) = (iter.next(), iter.next()) else {
        return Err(resharded(
            "it does not have exactly one shard (ListShards listed none or several: the stream was created \
             with several shards or was resharded)"
                .to_owned(),
        ));
    };
    if let Some(parent) = shard.parent_shard_id() {
        return Err(resharded(format!(
            "its shard {} is the child of shard {parent}: the stream was resharded",
            shard.shard_id()
        )));
    }
    if let Some(end) = shard
        .sequence_number_range()
        .and_then(|range| range.ending_sequence_number())
    {
        return Err(resharded(format!(
            "its shard {} is closed (ending sequence number {end}): the stream was resharded",
            shard.shard_id()
        )));
    }
    Ok(shard)
}
