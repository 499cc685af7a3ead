//! The topic behind a stream: checking it from metadata, creating and
//! deleting it, and reading its watermarks.
//!
//! Brokers create topics on first use by default (with the broker's partition
//! count and retention), so the adapter never relies on the broker to refuse a
//! missing topic: every client runs with `allow.auto.create.topics=false`, and
//! the topic's existence and partition count are checked here explicitly.

use std::time::{Duration, Instant};

use memstate_core::StreamError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

use crate::config::{KafkaConfig, message_max_bytes};
use crate::durability::Durability;
use crate::error::{self, BACKEND, KafkaStreamError, request_error};

/// Slack added to librdkafka's own timeout before the adapter gives up on a
/// call that should already have returned.
const GRACE: Duration = Duration::from_secs(5);

/// The longest connect waits for the topic's configuration.
const CONFIG_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between metadata polls while a new topic propagates.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Runs a blocking librdkafka call (which carries its own `timeout`) on
/// tokio's blocking pool, and bounds the wait for it too.
pub(crate) async fn blocking<T, F>(
    topic: &str,
    action: &str,
    timeout: Duration,
    call: F,
) -> Result<T, StreamError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KafkaError> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(call);
    match tokio::time::timeout(timeout + GRACE, task).await {
        Err(_) => Err(StreamError::Timeout {
            action: format!("{action} (Kafka topic {topic:?})"),
            after: timeout + GRACE,
        }),
        Ok(Err(join)) => Err(StreamError::backend(
            BACKEND,
            format!("{action} (topic {topic:?})"),
            KafkaStreamError::Task(join),
        )),
        Ok(Ok(result)) => result.map_err(|e| request_error(topic, action, timeout, e)),
    }
}

/// What metadata says about one topic (plain data: librdkafka's metadata
/// handle does not leave the blocking thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopicState {
    /// The broker does not know the topic.
    Missing,
    /// The topic exists with this many partitions; `leader_ready` when
    /// partition 0 exists and has a leader.
    Present {
        partitions: usize,
        leader_ready: bool,
        /// Replicas of partition 0.
        replicas: usize,
    },
    /// The broker answered with an error other than "unknown topic".
    Unavailable(RDKafkaErrorCode),
}

/// Reads the topic's entry out of a metadata response.
pub(crate) fn topic_state(metadata: &Metadata, topic: &str) -> TopicState {
    let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return TopicState::Missing;
    };
    if let Some(err) = entry.error() {
        let code = RDKafkaErrorCode::from(err);
        return if error::is_unknown_topic(code) {
            TopicState::Missing
        } else {
            TopicState::Unavailable(code)
        };
    }
    let partitions = entry.partitions();
    let first = partitions.iter().find(|p| p.id() == 0);
    let leader_ready = first.is_some_and(|p| p.leader() >= 0 && p.error().is_none());
    TopicState::Present {
        partitions: partitions.len(),
        leader_ready,
        replicas: first.map_or(0, |p| p.replicas().len()),
    }
}

/// Checks that the topic exists with exactly one partition that has a
/// leader, and returns that partition's number of replicas. With `wait`, a
/// missing or leaderless topic is polled for until `operation_timeout` (a
/// topic just created takes a moment to appear); without it, a missing topic
/// fails at once.
pub(crate) async fn verify<F>(
    config: &KafkaConfig,
    wait: bool,
    fetch: F,
) -> Result<usize, StreamError>
where
    F: Fn(Duration) -> Result<TopicState, KafkaError> + Clone + Send + 'static,
{
    let topic = config.topic.as_str();
    let deadline = Instant::now() + config.operation_timeout;
    loop {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let fetch = fetch.clone();
        let state = blocking(topic, "fetching metadata", remaining, move || {
            fetch(remaining)
        })
        .await?;
        let pending = match state {
            TopicState::Present {
                partitions: 1,
                leader_ready: true,
                replicas,
            } => return Ok(replicas),
            TopicState::Present { partitions, .. } if partitions != 1 => {
                return Err(StreamError::Misconfigured {
                    name: topic.to_owned(),
                    reason: format!(
                        "the Kafka topic has {partitions} partitions; a memstate stream needs exactly one, \
                         because Kafka orders records only within a partition"
                    ),
                });
            }
            TopicState::Missing if !wait => return Err(error::not_found(topic)),
            TopicState::Missing => "the topic does not appear in metadata yet".to_owned(),
            TopicState::Present { .. } => "partition 0 has no leader yet".to_owned(),
            TopicState::Unavailable(code) => format!("the broker reports {code}"),
        };
        if Instant::now() >= deadline {
            return Err(StreamError::Timeout {
                action: format!(
                    "waiting for Kafka topic {topic:?} to become available ({pending})"
                ),
                after: config.operation_timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn admin_client(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, StreamError> {
    config.admin_config().create().map_err(|e| {
        StreamError::backend(
            BACKEND,
            format!("creating a Kafka admin client for topic {:?}", config.topic),
            KafkaStreamError::from(e),
        )
    })
}

fn admin_options(config: &KafkaConfig) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(config.operation_timeout))
        .operation_timeout(Some(config.operation_timeout))
}

/// Creates the topic: one partition, the given replication factor, infinite
/// retention by time and size. Returns `false` when it already existed.
pub(crate) async fn create(
    config: &KafkaConfig,
    replication_factor: i32,
) -> Result<bool, StreamError> {
    let topic = config.topic.as_str();
    let admin = admin_client(config)?;
    let max_message_bytes = message_max_bytes(config.max_record_size).to_string();
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(replication_factor))
        // A log that forgets its beginning cannot rebuild the state.
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1")
        .set("cleanup.policy", "delete");
    if config.max_record_size > KafkaConfig::DEFAULT_MAX_RECORD_SIZE {
        new_topic = new_topic.set("max.message.bytes", &max_message_bytes);
    }
    let request = admin.create_topics([&new_topic], &admin_options(config));
    let results = match tokio::time::timeout(config.operation_timeout + GRACE, request).await {
        Err(_) => {
            return Err(StreamError::Timeout {
                action: format!("creating Kafka topic {topic:?}"),
                after: config.operation_timeout + GRACE,
            });
        }
        Ok(result) => result
            .map_err(|e| request_error(topic, "creating the topic", config.operation_timeout, e))?,
    };
    match results.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic, replication_factor, "created Kafka topic");
            Ok(true)
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) if error::is_timeout(code) => Err(StreamError::Timeout {
            action: format!("creating Kafka topic {topic:?}: {code}"),
            after: config.operation_timeout,
        }),
        Some(Err((_, code))) => Err(StreamError::backend(
            BACKEND,
            format!("creating topic {topic:?} with replication factor {replication_factor}"),
            KafkaStreamError::from(KafkaError::AdminOp(code)),
        )),
        None => Err(StreamError::backend(
            BACKEND,
            format!("creating topic {topic:?}"),
            KafkaStreamError::from(KafkaError::AdminOpCreation(
                "the broker returned no result".to_owned(),
            )),
        )),
    }
}

/// Deletes the topic. Returns `false` when it did not exist.
pub(crate) async fn delete(config: &KafkaConfig) -> Result<bool, StreamError> {
    let topic = config.topic.as_str();
    let admin = admin_client(config)?;
    let request = admin.delete_topics(&[topic], &admin_options(config));
    let results = match tokio::time::timeout(config.operation_timeout + GRACE, request).await {
        Err(_) => {
            return Err(StreamError::Timeout {
                action: format!("deleting Kafka topic {topic:?}"),
                after: config.operation_timeout + GRACE,
            });
        }
        Ok(result) => result
            .map_err(|e| request_error(topic, "deleting the topic", config.operation_timeout, e))?,
    };
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, code))) if error::is_unknown_topic(code) => Ok(false),
        Some(Err((_, code))) => Err(StreamError::backend(
            BACKEND,
            format!("deleting topic {topic:?}"),
            KafkaStreamError::from(KafkaError::AdminOp(code)),
        )),
        None => Ok(false),
    }
}

/// Looks at the topic's configuration: compaction deletes records (gaps
/// that nodes replaying later would not see), so it is refused; a finite
/// retention only draws a warning, since snapshots may cover what it drops.
/// Returns what an acknowledged record survives, given the partition's
/// `replicas` (see [`Durability`]).
///
/// A broker that refuses or does not answer within 5 seconds (no
/// `DescribeConfigs` permission, say) is not an error, only a warning: the
/// watermark checks still catch a truncated history.
pub(crate) async fn check_config(
    config: &KafkaConfig,
    replicas: usize,
) -> Result<Durability, StreamError> {
    let unknown = Durability {
        replication_factor: replicas,
        min_insync_replicas: None,
        unclean_leader_election: None,
    };
    let topic = config.topic.as_str();
    let admin = admin_client(config)?;
    let resource = ResourceSpecifier::Topic(topic);
    // A broker answers this in milliseconds; one that never does (librdkafka's
    // mock cluster, a proxy that drops the request) must not stall connect
    // for a whole operation timeout on a check that is best-effort anyway.
    let wait = config.operation_timeout.min(CONFIG_CHECK_TIMEOUT);
    let options = AdminOptions::new().request_timeout(Some(wait));
    let request = admin.describe_configs([&resource], &options);
    let described = match tokio::time::timeout(wait, request).await {
        Ok(Ok(mut results)) if !results.is_empty() => results.swap_remove(0),
        Ok(Ok(_)) => return Ok(unknown),
        Ok(Err(e)) => {
            tracing::warn!(topic, error = %e, "could not read the Kafka topic's configuration; retention not checked");
            return Ok(unknown);
        }
        Err(_) => {
            tracing::warn!(
                topic,
                "timed out reading the Kafka topic's configuration; retention not checked"
            );
            return Ok(unknown);
        }
    };
    let resource = match described {
        Ok(resource) => resource,
        Err(code) => {
            tracing::warn!(topic, %code, "could not read the Kafka topic's configuration; retention not checked");
            return Ok(unknown);
        }
    };
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
    if let Some(policy) = value("cleanup.policy")
        && policy.contains("compact")
    {
        return Err(StreamError::Misconfigured {
            name: topic.to_owned(),
            reason: format!(
                "the Kafka topic has cleanup.policy={policy}; compaction deletes records, so nodes \
                 replaying the log later would apply a different history. Use cleanup.policy=delete \
                 with retention.ms=-1"
            ),
        });
    }
    for key in ["retention.ms", "retention.bytes"] {
        if let Some(v) = value(key)
            && v != "-1"
        {
            tracing::warn!(
                topic,
                setting = key,
                value = %v,
                "the Kafka topic's retention is finite: once its beginning is deleted, a node can start \
                 only from a snapshot that covers the gap (set {key}=-1 to keep the whole log)"
            );
        }
    }
    Ok(Durability {
        replication_factor: replicas,
        min_insync_replicas: value("min.insync.replicas").and_then(|v| v.trim().parse().ok()),
        unclean_leader_election: value("unclean.leader.election.enable")
            .and_then(|v| v.trim().parse().ok()),
    })
}
