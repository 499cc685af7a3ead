//! [`KafkaStream`]: the [`Stream`] implementation over one single-partition
//! Kafka topic.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::cursor;
use crate::durability::{self, Durability};
use crate::error::{BACKEND, KafkaStreamError, delivery_error};
use crate::subscription::KafkaSubscription;
use crate::topic;

/// Slack on top of librdkafka's `message.timeout.ms` before an append stops
/// waiting for a delivery report on its own.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// Pause before retrying a send that found librdkafka's local queue full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// A memstate stream stored in one Kafka topic with exactly one partition.
///
/// * **Cursors** are partition-0 offsets in decimal (`"0"`, `"1"`, ...),
///   compared as numbers.
/// * **Append** goes through an idempotent producer with `acks=all` and
///   returns once every in-sync replica has the record. One record per call
///   (what the engine sends: one frame per record); appends overlap in
///   flight. Several records in one call are refused before anything is
///   sent (`multi_record_append` is not declared): Kafka cannot keep
///   *another* producer from writing between two records without
///   transactions.
/// * **Subscribe** assigns partition 0 to a fresh consumer and seeks: no
///   consumer group, no commits. A position before the log's start (records
///   deleted by retention) fails as [`StreamError::HistoryTruncated`].
/// * **Head** is exact: the high watermark minus one.
///
/// Clones share one producer.
#[derive(Clone)]
pub struct KafkaStream {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    producer: FutureProducer,
    /// What an acknowledged append survives, as judged at connect.
    durability: Durability,
}

impl fmt::Debug for KafkaStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaStream")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl KafkaStream {
    /// Connects to the topic named in `config` and checks it: it must exist
    /// (or is created first when [`KafkaConfig::create_topic`] is set), have
    /// exactly one partition with a leader, and not be compacted; and judges
    /// what an acknowledged append survives ([`KafkaStream::durability`]).
    ///
    /// # Errors
    ///
    /// * [`StreamError::Misconfigured`]: an invalid configuration (see
    ///   [`KafkaConfig::validate`]), a topic with more than one partition, or a
    ///   compacted topic; with [`KafkaConfig::strict_durability`], a topic on
    ///   which an acknowledged record does not survive one broker loss.
    /// * [`StreamError::NotFound`]: the topic does not exist and creation was
    ///   not asked for.
    /// * [`StreamError::Timeout`]: no broker answered within
    ///   [`KafkaConfig::operation_timeout`] (unreachable or down).
    /// * [`StreamError::Backend`]: any other client or broker failure.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use memstate_kafka::{KafkaConfig, KafkaStream};
    ///
    /// # async fn example() -> Result<(), memstate_core::StreamError> {
    /// // A fresh single-partition topic with infinite retention, then connect.
    /// let stream = KafkaStream::connect(
    ///     KafkaConfig::new("127.0.0.1:19092", "orders").with_topic_creation(1),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: KafkaConfig) -> Result<Self, StreamError> {
        config.validate()?;
        if config.create_topic {
            topic::create(&config, config.replication_factor).await?;
        }
        let producer: FutureProducer = config.producer_config().create().map_err(|e| {
            StreamError::backend(
                BACKEND,
                format!("creating a Kafka producer for topic {:?}", config.topic),
                KafkaStreamError::from(e),
            )
        })?;
        let name = config.topic.clone();
        let metadata_client = producer.clone();
        // A topic that was just created may take a moment to show in metadata.
        let replicas = topic::verify(&config, config.create_topic, move |timeout| {
            let metadata = metadata_client
                .client()
                .fetch_metadata(Some(&name), timeout)?;
            Ok(topic::topic_state(&metadata, &name))
        })
        .await?;
        let durability = topic::check_config(&config, replicas).await?;
        durability::check(&config, durability)?;
        tracing::debug!(topic = %config.topic, bootstrap = %config.bootstrap_servers, "connected Kafka stream");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                producer,
                durability,
            }),
        })
    }

    /// Creates the topic `config` names — one partition, `replication_factor`
    /// replicas (`-1`: the broker's default), `retention.ms=-1`,
    /// `retention.bytes=-1`, `cleanup.policy=delete` — and waits until the
    /// cluster's metadata shows it. Returns `false` when the topic already
    /// existed (it is checked, not changed).
    ///
    /// # Errors
    ///
    /// [`StreamError::Misconfigured`] for an invalid configuration or an
    /// existing topic with several partitions; [`StreamError::Timeout`] when
    /// no broker answers in time; [`StreamError::Backend`] when the broker
    /// refuses (for example a replication factor larger than the cluster).
    pub async fn create_topic(
        config: &KafkaConfig,
        replication_factor: i32,
    ) -> Result<bool, StreamError> {
        let config = config.clone().with_topic_creation(replication_factor);
        config.validate()?;
        let created = topic::create(&config, replication_factor).await?;
        let producer: FutureProducer = config.admin_config().create().map_err(|e| {
            StreamError::backend(
                BACKEND,
                "creating a Kafka metadata client",
                KafkaStreamError::from(e),
            )
        })?;
        let name = config.topic.clone();
        topic::verify(&config, true, move |timeout| {
            let metadata = producer.client().fetch_metadata(Some(&name), timeout)?;
            Ok(topic::topic_state(&metadata, &name))
        })
        .await?;
        Ok(created)
    }

    /// Deletes the topic `config` names, with everything in it. Returns
    /// `false` when it did not exist. Meant for tests and tooling.
    ///
    /// # Errors
    ///
    /// [`StreamError::Timeout`] when no broker answers in time;
    /// [`StreamError::Backend`] when the broker refuses.
    pub async fn delete_topic(config: &KafkaConfig) -> Result<bool, StreamError> {
        config.validate()?;
        topic::delete(config).await
    }

    /// The configuration this stream was connected with.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// What an acknowledged append survives on this topic (replication
    /// factor, `min.insync.replicas`, unclean leader election), as read at
    /// connect. `connect` warns when it is less than one broker loss, and
    /// refuses with [`KafkaConfig::strict_durability`].
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The topic's low and high watermarks: the offset of the first record
    /// still stored, and the offset the next record will get.
    ///
    /// # Errors
    ///
    /// [`StreamError::Timeout`] when no broker answers within
    /// [`KafkaConfig::operation_timeout`]; [`StreamError::NotFound`] when the
    /// topic was deleted.
    pub async fn watermarks(&self) -> Result<(i64, i64), StreamError> {
        let config = &self.inner.config;
        let producer = self.inner.producer.clone();
        let name = config.topic.clone();
        let timeout = config.operation_timeout;
        topic::blocking(&config.topic, "fetching watermarks", timeout, move || {
            producer.client().fetch_watermarks(&name, 0, timeout)
        })
        .await
    }

    /// Hands one record to librdkafka, retrying while its local queue is full.
    async fn enqueue(
        &self,
        payload: &Bytes,
        deadline: Instant,
    ) -> Result<DeliveryFuture, KafkaError> {
        let topic = self.inner.config.topic.as_str();
        loop {
            let record = FutureRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(payload.as_ref());
            match self.inner.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for one delivery report; the offset on success.
    async fn delivered(
        &self,
        delivery: DeliveryFuture,
        deadline: Instant,
    ) -> Result<i64, KafkaStreamError> {
        match tokio::time::timeout_at(deadline.into(), delivery).await {
            Err(_) => Err(KafkaStreamError::Client {
                source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            }),
            Ok(Err(_canceled)) => Err(KafkaStreamError::DeliveryCanceled),
            Ok(Ok(Err((e, _message)))) => Err(KafkaStreamError::from(e)),
            Ok(Ok(Ok(delivery))) if delivery.partition != 0 => {
                Err(KafkaStreamError::WrongPartition {
                    partition: delivery.partition,
                })
            }
            Ok(Ok(Ok(delivery))) => Ok(delivery.offset),
        }
    }
}

#[async_trait]
impl Stream for KafkaStream {
    fn describe(&self) -> String {
        format!(
            "Kafka topic {:?} on {}",
            self.inner.config.topic, self.inner.config.bootstrap_servers
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.inner.config.max_record_size)
            .with_exact_head(true)
            .with_optimistic_append(false)
            .with_multi_record_append(false)
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        // Declared: one record per append (`multi_record_append: false`).
        self.capabilities().check_append(&records)?;
        let Some(payload) = records.into_iter().next() else {
            return Ok(Vec::new());
        };
        let topic = self.inner.config.topic.as_str();
        let deadline = Instant::now() + self.inner.config.delivery_timeout + DELIVERY_GRACE;
        let delivery = self.enqueue(&payload, deadline).await.map_err(|e| {
            // Nothing of this call left the process.
            StreamError::backend(
                BACKEND,
                format!("queueing a record for topic {topic:?}"),
                KafkaStreamError::from(e),
            )
        })?;
        let offset = self
            .delivered(delivery, deadline)
            .await
            .map_err(|e| delivery_error(topic, e))?;
        Ok(vec![cursor::to_cursor(offset)])
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        let start = match &after {
            None => 0,
            Some(c) => cursor::from_cursor(c)? + 1,
        };
        let (low, high) = self.watermarks().await?;
        let config = &self.inner.config;
        if start < low {
            return Err(StreamError::HistoryTruncated {
                name: config.topic.clone(),
                reason: format!(
                    "the subscription starts at offset {start} but the Kafka topic's first stored record is at \
                     offset {low}: records were deleted (retention.ms / retention.bytes, or DeleteRecords). \
                     Restore a snapshot taken at or after offset {} or rebuild the topic",
                    low - 1
                ),
            });
        }
        if start > high {
            return Err(StreamError::InvalidCursor {
                cursor: after.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                reason: format!(
                    "it lies beyond the end of Kafka topic {:?} (next offset {high}): the cursor comes from \
                     another topic, or this topic was deleted and created again",
                    config.topic
                ),
            });
        }
        let subscription = KafkaSubscription::open(config, start).await?;
        Ok(Box::new(subscription))
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        // The high watermark is the offset after the last record every
        // in-sync replica has: exactly what an acks=all append waited for.
        let (_, high) = self.watermarks().await?;
        Ok((high > 0).then(|| cursor::to_cursor(high - 1)))
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        Ok(cursor::from_cursor(a)?.cmp(&cursor::from_cursor(b)?))
    }
}
