//! [`KafkaSubscription`]: a consumer assigned to partition 0 at a given
//! offset, yielding records in offset order and following the tail.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{Record, StreamError, Subscription};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::cursor;
use crate::error::{self, BACKEND, KafkaStreamError};
use crate::topic;

/// A live read of a Kafka stream from one offset on.
///
/// While the topic has nothing new, [`Subscription::next`] waits; every
/// [`KafkaConfig::operation_timeout`] of silence it asks the broker for the
/// topic's watermarks, so a broker that went away surfaces as an error within
/// about two timeouts instead of an endless wait.
pub(crate) struct KafkaSubscription {
    consumer: Arc<StreamConsumer>,
    topic: String,
    /// The offset of the next record to yield; anything below it was yielded.
    next_offset: i64,
    operation_timeout: Duration,
    /// When the current run of connection errors began (reset by a record or
    /// a successful check). Errors are checked at most once per
    /// `operation_timeout`: librdkafka queues one per reconnect attempt while
    /// nobody polls, and a broker check per queued error would delay the
    /// records behind them by minutes after an outage.
    trouble_since: Option<Instant>,
}

impl fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.topic)
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscription {
    /// A consumer positioned at `start` (no group: the adapter seeks itself).
    pub(crate) async fn open(config: &KafkaConfig, start: i64) -> Result<Self, StreamError> {
        let action = format!("creating a Kafka consumer for topic {:?}", config.topic);
        let consumer: StreamConsumer = config.consumer_config().create().map_err(|e| {
            StreamError::backend(BACKEND, action.clone(), KafkaStreamError::from(e))
        })?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&config.topic, 0, Offset::Offset(start))
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|e| {
                StreamError::backend(
                    BACKEND,
                    format!(
                        "assigning partition 0 of topic {:?} at offset {start}",
                        config.topic
                    ),
                    KafkaStreamError::from(e),
                )
            })?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: config.topic.clone(),
            next_offset: start,
            operation_timeout: config.operation_timeout,
            trouble_since: None,
        })
    }

    /// Asks the broker for the watermarks (bounded by the operation timeout):
    /// an unreachable broker or a deleted topic becomes an error here, and so
    /// does a log whose start moved past this subscription's position.
    async fn check_alive(&self) -> Result<(), StreamError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let timeout = self.operation_timeout;
        let (low, _high) = topic::blocking(
            &self.topic,
            "checking the subscribed topic",
            timeout,
            move || consumer.client().fetch_watermarks(&topic, 0, timeout),
        )
        .await?;
        if low > self.next_offset {
            return Err(self.truncated(low));
        }
        Ok(())
    }

    fn truncated(&self, low: i64) -> StreamError {
        StreamError::HistoryTruncated {
            name: self.topic.clone(),
            reason: if low >= 0 {
                format!(
                    "the subscription needs offset {} but the Kafka topic now starts at offset {low}: \
                     records were deleted by retention while they were unread",
                    self.next_offset
                )
            } else {
                format!(
                    "offset {} is no longer stored in the Kafka topic: records were deleted by retention \
                     while they were unread",
                    self.next_offset
                )
            },
        }
    }

    /// Decides what a consumer error means: a lost history or a lost topic
    /// ends the subscription; a connection problem is waited out, as
    /// librdkafka reconnects on its own, unless it lasts an operation timeout
    /// and the broker then fails a (bounded) check.
    async fn handle_error(&mut self, error: KafkaError) -> Result<(), StreamError> {
        let code = error::code(&error);
        match code {
            Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset) => {
                Err(self.truncated(-1))
            }
            Some(c) if error::is_unknown_topic(c) => Err(StreamError::NotFound {
                name: self.topic.clone(),
                reason: "the Kafka topic was deleted while subscribed".to_owned(),
            }),
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::Fatal,
            ) => Err(self.failed(error)),
            _ if matches!(error, KafkaError::MessageConsumptionFatal(_)) => Err(self.failed(error)),
            _ => {
                let since = *self.trouble_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.operation_timeout {
                    tracing::debug!(topic = %self.topic, %error, "Kafka consumer error; librdkafka retries");
                    return Ok(());
                }
                tracing::debug!(topic = %self.topic, %error, "Kafka consumer errors persist; checking the broker");
                self.check_alive().await?;
                self.trouble_since = None;
                Ok(())
            }
        }
    }

    fn failed(&self, error: KafkaError) -> StreamError {
        StreamError::backend(
            BACKEND,
            format!(
                "reading topic {:?} at offset {}",
                self.topic, self.next_offset
            ),
            KafkaStreamError::from(error),
        )
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        loop {
            let received =
                match tokio::time::timeout(self.operation_timeout, self.consumer.recv()).await {
                    Err(_quiet) => {
                        self.check_alive().await?;
                        self.trouble_since = None;
                        continue;
                    }
                    Ok(received) => received,
                };
            match received {
                Ok(message) => {
                    let offset = message.offset();
                    // A record below the position was already yielded (a
                    // fetch repeated after a reconnect): never yield it twice.
                    // Offsets above it are fine: transaction markers and
                    // aborted records take offsets but are never delivered.
                    if offset < self.next_offset {
                        continue;
                    }
                    self.next_offset = offset + 1;
                    self.trouble_since = None;
                    // A null value (a tombstone written by some other tool) is
                    // an empty payload: judging it is the engine's business.
                    let payload = message
                        .payload()
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default();
                    return Ok(Some(Record {
                        cursor: cursor::to_cursor(offset),
                        payload,
                    }));
                }
                Err(error) => self.handle_error(error).await?,
            }
        }
    }
}
