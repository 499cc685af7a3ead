//! The adapter's own errors, and their conversion into [`StreamError`] at the
//! crate edge.
//!
//! Callers see [`StreamError`]; the [`KafkaStreamError`] below rides along as its source,
//! so the librdkafka error code stays reachable through
//! [`std::error::Error::source`].

use std::time::Duration;

use memstate_core::StreamError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The backend name used in [`StreamError::Backend`].
pub(crate) const BACKEND: &str = "kafka";

/// What went wrong inside the Kafka adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaStreamError {
    /// librdkafka reported an error.
    #[error("{source}")]
    Client {
        /// The librdkafka error.
        #[from]
        source: KafkaError,
    },
    /// A record was delivered to a partition other than 0.
    #[error("record was delivered to partition {partition}, not 0")]
    WrongPartition {
        /// The partition the broker reported.
        partition: i32,
    },
    /// The producer went away before it reported the delivery.
    #[error("the producer shut down before it reported the delivery")]
    DeliveryCanceled,
    /// A blocking librdkafka call running on tokio's blocking pool failed.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The librdkafka code of an error, when it has one.
pub(crate) fn code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

/// True for codes that mean "no answer in time".
pub(crate) fn is_timeout(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::TimedOutQueue
    )
}

/// True for codes that say the topic or its partition does not exist.
pub(crate) fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// Converts an error of a request that is not an append (metadata,
/// watermarks, admin) into a [`StreamError`].
pub(crate) fn request_error(
    topic: &str,
    action: &str,
    timeout: Duration,
    error: KafkaError,
) -> StreamError {
    match code(&error) {
        Some(c) if is_timeout(c) => StreamError::Timeout {
            action: format!("{action} (Kafka topic {topic:?}): {error}"),
            after: timeout,
        },
        Some(c) if is_unknown_topic(c) => not_found(topic),
        _ => StreamError::backend(
            BACKEND,
            format!("{action} (topic {topic:?})"),
            KafkaStreamError::from(error),
        ),
    }
}

/// The error for a topic that does not exist.
pub(crate) fn not_found(topic: &str) -> StreamError {
    StreamError::NotFound {
        name: topic.to_owned(),
        reason: "the Kafka topic does not exist; create it with one partition and retention.ms=-1 \
                 (KafkaStream::create_topic, or KafkaConfig::with_topic_creation)"
            .to_owned(),
    }
}

/// Converts a failed delivery into a [`StreamError`].
///
/// Every failure after a record was handed to librdkafka may have reached the
/// broker (a timeout or a lost connection says nothing about whether the
/// write happened), so the default is [`StreamError::Ambiguous`]. Only errors
/// that the broker returns before writing anything are reported as such.
pub(crate) fn delivery_error(topic: &str, error: KafkaStreamError) -> StreamError {
    let definite = match &error {
        KafkaStreamError::Client { source } => code(source).filter(|c| {
            matches!(
                c,
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::InvalidMessage
            )
        }),
        _ => None,
    };
    match definite {
        Some(c) if is_unknown_topic(c) => not_found(topic),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => StreamError::Misconfigured {
            name: topic.to_owned(),
            reason: format!(
                "the broker refused a record as too large ({error}); nothing was written. Lower \
                 KafkaConfig::max_record_size or raise the topic's max.message.bytes"
            ),
        },
        Some(_) => StreamError::backend(BACKEND, format!("appending to topic {topic:?}"), error),
        None => StreamError::Ambiguous {
            reason: format!("appending to Kafka topic {topic:?}: {error}"),
            source: Some(Box::new(error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_delivery_is_ambiguous() {
        let err = delivery_error(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut).into(),
        );
        assert!(
            matches!(
                err,
                StreamError::Ambiguous {
                    source: Some(_),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_lost_connection_during_delivery_is_ambiguous() {
        let err = delivery_error(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure).into(),
        );
        assert!(matches!(err, StreamError::Ambiguous { .. }), "{err}");
        assert!(matches!(
            delivery_error("t", KafkaStreamError::DeliveryCanceled),
            StreamError::Ambiguous { .. }
        ));
    }

    #[test]
    fn a_refusal_before_writing_is_not_ambiguous() {
        let unknown = delivery_error(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition).into(),
        );
        assert!(matches!(unknown, StreamError::NotFound { .. }), "{unknown}");
        let large = delivery_error(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge).into(),
        );
        assert!(
            matches!(large, StreamError::Misconfigured { .. }),
            "{large}"
        );
        let denied = delivery_error(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed).into(),
        );
        assert!(
            matches!(
                denied,
                StreamError::Backend {
                    backend: "kafka",
                    ..
                }
            ),
            "{denied}"
        );
    }

    #[test]
    fn request_errors_keep_their_meaning() {
        let timeout = request_error(
            "t",
            "fetching metadata",
            Duration::from_secs(2),
            KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
        );
        assert!(
            matches!(timeout, StreamError::Timeout { after, .. } if after == Duration::from_secs(2)),
            "{timeout}"
        );
        let missing = request_error(
            "t",
            "fetching watermarks",
            Duration::from_secs(2),
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        );
        assert!(matches!(missing, StreamError::NotFound { .. }), "{missing}");
        let other = request_error(
            "t",
            "fetching metadata",
            Duration::from_secs(2),
            KafkaError::MetadataFetch(RDKafkaErrorCode::Fatal),
        );
        let source = std::error::Error::source(&other).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("Fatal")), "{other}");
    }
}
