//! Enhanced fan-out: the read mode, and the registered stream consumer a
//! node reads through (`RegisterStreamConsumer`, wait until `ACTIVE`,
//! `DeregisterStreamConsumer` on close).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ConsumerStatus;
use memstate_core::StreamError;
use tokio::time::Instant;

use crate::config::KinesisConfig;
use crate::error::{KinesisStreamError, misconfigured};
use crate::pacing::Pacer;

/// Kinesis's limit on registered consumers per stream.
pub const MAX_CONSUMERS_PER_STREAM: usize = 20;

/// How a [`KinesisStream`](crate::KinesisStream)'s subscriptions read the
/// shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadMode {
    /// `GetShardIterator` and a `GetRecords` loop (the default). Nothing to
    /// set up and nothing billed beyond the stream; every consumer of the
    /// shard shares its 5 `GetRecords` calls per second, so with `n` nodes
    /// each sees a record up to `n × 200 ms` after it was written.
    #[default]
    Polling,
    /// Enhanced fan-out: the stream registers a consumer of this name when
    /// it connects (or finds the one it left registered before), waits until
    /// it is `ACTIVE`, and subscriptions receive records pushed by
    /// `SubscribeToShard`, renewed when Kinesis ends each subscription after
    /// five minutes. [`KinesisStream::close`](crate::KinesisStream::close)
    /// deregisters it.
    ///
    /// The name must be stable for a node (a node that crashed finds its
    /// consumer again instead of leaking one towards the stream's limit of
    /// [`MAX_CONSUMERS_PER_STREAM`]) and unique among the stream's nodes:
    /// Kinesis serves one subscription per consumer and shard, and a second
    /// node with the same name would take the first one's subscription over.
    EnhancedFanOut {
        /// The consumer name: 1 to 128 characters from `a-z A-Z 0-9 _ . -`.
        consumer_name: String,
    },
}

impl ReadMode {
    /// The consumer name, in fan-out mode.
    pub fn consumer_name(&self) -> Option<&str> {
        match self {
            Self::Polling => None,
            Self::EnhancedFanOut { consumer_name } => Some(consumer_name),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let Some(name) = self.consumer_name() else {
            return Ok(());
        };
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
            return Err(format!(
                "the enhanced fan-out consumer name {name:?} must have 1 to 128 characters from a-z, \
                 A-Z, 0-9, '_', '.', '-'"
            ));
        }
        Ok(())
    }
}

/// A consumer registered with the stream, shared by the stream's handles and
/// its subscriptions.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) name: String,
    pub(crate) arn: String,
    /// Held by the one subscription of this process that reads through the
    /// consumer: Kinesis serves one subscription per consumer and shard.
    leased: AtomicBool,
}

/// The right to subscribe through a consumer, released on drop.
#[derive(Debug)]
pub(crate) struct Lease(Arc<Consumer>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.leased.store(false, Ordering::Release);
    }
}

impl Consumer {
    /// Takes the consumer for one subscription, unless another subscription
    /// of this process holds it.
    pub(crate) fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        self.leased
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Lease(Arc::clone(self)))
    }

    /// Registers consumer `name` with the stream `stream_arn`, or finds the
    /// one of that name already registered, and waits until it is `ACTIVE`
    /// (within [`KinesisConfig::create_timeout`]).
    pub(crate) async fn register(
        client: &Client,
        config: &KinesisConfig,
        stream_arn: &str,
        name: &str,
    ) -> Result<Self, StreamError> {
        let stream = config.stream_name.as_str();
        let deadline = Instant::now() + config.create_timeout;
        let mut pacer = Pacer::new(Duration::from_millis(200), Duration::from_secs(1));
        let throttle_until = Instant::now() + config.throttle_budget;
        loop {
            let sent = client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(name)
                .send()
                .await;
            let err = match sent {
                Ok(output) => {
                    let arn = output
                        .consumer()
                        .map(|c| c.consumer_arn().to_owned())
                        .ok_or_else(|| no_consumer_in_answer(stream, "RegisterStreamConsumer"))?;
                    tracing::info!(
                        stream,
                        consumer = name,
                        "registered enhanced fan-out consumer"
                    );
                    return wait_active(client, config, name, arn, deadline).await;
                }
                Err(e) => KinesisStreamError::from_sdk(
                    "RegisterStreamConsumer",
                    config.request_timeout,
                    e,
                ),
            };
            match err.code() {
                // A consumer of this name exists: left by this node's last run, or being deleted.
                Some("ResourceInUseException") => {
                    match describe(client, config, stream_arn, name).await? {
                        Some((arn, ConsumerStatus::Deleting)) => {
                            tracing::debug!(stream, consumer = name, %arn, "consumer of that name is being deleted; registering again after");
                        }
                        Some((arn, _)) => {
                            tracing::info!(
                                stream,
                                consumer = name,
                                "found the enhanced fan-out consumer registered before"
                            );
                            return wait_active(client, config, name, arn, deadline).await;
                        }
                        None => {} // Deleted meanwhile: register again.
                    }
                    if Instant::now() >= deadline {
                        return Err(timeout(config, name));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // LimitExceededException: the consumer limit, or registrations too frequent.
                _ if matches!(err, KinesisStreamError::Throttled { .. }) => {
                    let registered = list_names(client, config, stream_arn).await?;
                    if registered.len() >= MAX_CONSUMERS_PER_STREAM {
                        return Err(limit_reached(stream, name, &registered));
                    }
                    // Below the limit: registrations were too frequent (or too many consumers
                    // are being created at once); try again.
                    let pause = pacer.after_throttle();
                    if Instant::now() + pause > throttle_until {
                        return Err(err.into_read_error(stream));
                    }
                    tracing::debug!(stream, consumer = name, ?pause, error = %err, "RegisterStreamConsumer throttled");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(err.into_read_error(stream)),
            }
        }
    }

    /// Deregisters the consumer. One already gone is not an error.
    pub(crate) async fn deregister(
        &self,
        client: &Client,
        config: &KinesisConfig,
    ) -> Result<(), StreamError> {
        let sent = client
            .deregister_stream_consumer()
            .consumer_arn(&self.arn)
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::info!(stream = %config.stream_name, consumer = %self.name, "deregistered enhanced fan-out consumer");
                Ok(())
            }
            Err(e) => {
                let err = KinesisStreamError::from_sdk(
                    "DeregisterStreamConsumer",
                    config.request_timeout,
                    e,
                );
                if err.code() == Some("ResourceNotFoundException") {
                    Ok(())
                } else {
                    Err(err.into_read_error(&config.stream_name))
                }
            }
        }
    }
}

/// Polls `DescribeStreamConsumer` until the consumer is `ACTIVE`.
async fn wait_active(
    client: &Client,
    config: &KinesisConfig,
    name: &str,
    arn: String,
    deadline: Instant,
) -> Result<Consumer, StreamError> {
    let stream = config.stream_name.as_str();
    let mut pause = Duration::from_millis(50);
    loop {
        let output = client
            .describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await
            .map_err(|e| {
                KinesisStreamError::from_sdk("DescribeStreamConsumer", config.request_timeout, e)
                    .into_read_error(stream)
            })?;
        let status = output
            .consumer_description()
            .map(|d| d.consumer_status().clone())
            .ok_or_else(|| no_consumer_in_answer(stream, "DescribeStreamConsumer"))?;
        match status {
            ConsumerStatus::Active => {
                return Ok(Consumer {
                    name: name.to_owned(),
                    arn,
                    leased: AtomicBool::new(false),
                });
            }
            ConsumerStatus::Deleting => {
                return Err(misconfigured(
                    stream,
                    format!(
                        "its enhanced fan-out consumer {name:?} is being deleted (deregistered by \
                         another process using the same consumer name?)"
                    ),
                ));
            }
            _ => {} // CREATING
        }
        if Instant::now() + pause > deadline {
            return Err(timeout(config, name));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The ARN and status of consumer `name`, `None` when there is none.
async fn describe(
    client: &Client,
    config: &KinesisConfig,
    stream_arn: &str,
    name: &str,
) -> Result<Option<(String, ConsumerStatus)>, StreamError> {
    let sent = client
        .describe_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await;
    match sent {
        Ok(output) => Ok(output
            .consumer_description()
            .map(|d| (d.consumer_arn().to_owned(), d.consumer_status().clone()))),
        Err(e) => {
            let err =
                KinesisStreamError::from_sdk("DescribeStreamConsumer", config.request_timeout, e);
            if err.code() == Some("ResourceNotFoundException") {
                Ok(None)
            } else {
                Err(err.into_read_error(&config.stream_name))
            }
        }
    }
}

/// The names of every consumer registered with the stream.
async fn list_names(
    client: &Client,
    config: &KinesisConfig,
    stream_arn: &str,
) -> Result<Vec<String>, StreamError> {
    let mut names = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = client.list_stream_consumers().stream_arn(stream_arn);
        let request = match &next_token {
            Some(token) => request.next_token(token),
            None => request,
        };
        let output = request.send().await.map_err(|e| {
            KinesisStreamError::from_sdk("ListStreamConsumers", config.request_timeout, e)
                .into_read_error(&config.stream_name)
        })?;
        names.extend(
            output
                .consumers()
                .iter()
                .map(|c| c.consumer_name().to_owned()),
        );
        match output.next_token() {
            Some(token) if names.len() <= 1000 => next_token = Some(token.to_owned()),
            _ => return Ok(names),
        }
    }
}

fn limit_reached(stream: &str, name: &str, registered: &[String]) -> StreamError {
    misconfigured(
        stream,
        format!(
            "cannot register the enhanced fan-out consumer {name:?}: the stream already has {} \
             registered consumers ({}), and Kinesis allows at most {MAX_CONSUMERS_PER_STREAM} per \
             stream. Deregister the ones no node uses any more (aws kinesis \
             deregister-stream-consumer --stream-arn ... --consumer-name NAME), or read this node \
             by polling (ReadMode::Polling)",
            registered.len(),
            registered.join(", ")
        ),
    )
}

fn timeout(config: &KinesisConfig, name: &str) -> StreamError {
    StreamError::Timeout {
        action: format!(
            "waiting for the enhanced fan-out consumer {name:?} of Kinesis stream {:?} to become ACTIVE",
            config.stream_name
        ),
        after: config.create_timeout,
    }
}

fn no_consumer_in_answer(stream: &str, operation: &str) -> StreamError {
    StreamError::backend(
        crate::error::BACKEND,
        format!("registering a consumer of stream {stream:?}"),
        format!("{operation} returned no consumer"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_checked_like_stream_names() {
        for bad in ["", "has space", "a/b", &"x".repeat(129)] {
            let mode = ReadMode::EnhancedFanOut {
                consumer_name: bad.to_owned(),
            };
            assert!(mode.validate().is_err(), "{bad:?}");
        }
        let good = ReadMode::EnhancedFanOut {
            consumer_name: "node-1.orders_v2".to_owned(),
        };
        assert!(good.validate().is_ok());
        assert_eq!(ReadMode::default(), ReadMode::Polling);
        // The stream's configuration refuses a bad name before any call.
        let err = KinesisConfig::new("s")
            .with_enhanced_fan_out("bad name")
            .validate()
            .unwrap_err();
        assert!(
            matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("consumer name")),
            "{err:?}"
        );
        assert_eq!(KinesisConfig::new("s").read_mode, ReadMode::Polling);
    }

    #[test]
    fn one_lease_at_a_time_and_dropping_it_frees_the_consumer() {
        let consumer = Arc::new(Consumer {
            name: "n".into(),
            arn: "arn".into(),
            leased: AtomicBool::new(false),
        });
        let first = consumer.try_lease();
        assert!(first.is_some());
        assert!(consumer.try_lease().is_none(), "a second lease while held");
        drop(first);
        assert!(consumer.try_lease().is_some(), "free again after drop");
    }
}
