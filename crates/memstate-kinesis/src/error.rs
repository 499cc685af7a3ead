//! [`KinesisStreamError`]: what one Kinesis call can fail with, and its conversion
//! into [`StreamError`] at the crate edge.

use std::time::Duration;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use memstate_core::StreamError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The backend name used in [`StreamError::Backend`].
pub(crate) const BACKEND: &str = "kinesis";

/// A failed Kinesis call, classified by what the caller can conclude from it.
///
/// Every variant names the Kinesis operation (`PutRecord`, `GetRecords`, ...)
/// and keeps the SDK's error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KinesisStreamError {
    /// The stream does not exist (`ResourceNotFoundException`).
    #[error("{operation}: stream not found: {message}")]
    StreamNotFound {
        /// The Kinesis operation.
        operation: &'static str,
        /// What Kinesis said.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The shard's (or the account's, or the KMS key's) rate limit was
    /// exceeded (`ProvisionedThroughputExceededException`,
    /// `LimitExceededException`, `KMSThrottlingException`), even after the
    /// SDK's own retries and the adapter's within
    /// [`KinesisConfig::throttle_budget`](crate::KinesisConfig::throttle_budget).
    /// Nothing was written.
    #[error("{operation}: throughput exceeded: {message}")]
    Throttled {
        /// The Kinesis operation.
        operation: &'static str,
        /// What Kinesis said.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// A shard iterator was used more than five minutes after it was issued
    /// (`ExpiredIteratorException`).
    #[error("{operation}: shard iterator expired")]
    IteratorExpired {
        /// The Kinesis operation.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// No answer came within the configured time; the request may have been
    /// carried out.
    #[error("{operation}: no answer within {after:?}")]
    TimedOut {
        /// The Kinesis operation.
        operation: &'static str,
        /// The configured request timeout.
        after: Duration,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The request may have reached Kinesis but its outcome is unknown: the
    /// connection failed, the answer was unreadable, or Kinesis reported an
    /// internal failure.
    #[error("{operation}: outcome unknown: {message}")]
    Unanswered {
        /// The Kinesis operation.
        operation: &'static str,
        /// What went wrong.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// Kinesis refused the request (a client error other than the above).
    /// Nothing was written.
    #[error("{operation}: refused with {code}: {message}")]
    Refused {
        /// The Kinesis operation.
        operation: &'static str,
        /// The Kinesis error code, e.g. `InvalidArgumentException`.
        code: String,
        /// What Kinesis said.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
    /// The request could not be built and was never sent.
    #[error("{operation}: request not sent: {message}")]
    NotSent {
        /// The Kinesis operation.
        operation: &'static str,
        /// What went wrong.
        message: String,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
}

impl KinesisStreamError {
    /// Classifies an SDK error from `operation`; `timeout` is the configured
    /// request timeout, reported when the SDK gave up waiting.
    pub(crate) fn from_sdk<E, R>(
        operation: &'static str,
        timeout: Duration,
        err: SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        SdkError<E, R>: ProvideErrorMetadata,
    {
        let code = err.code().map(str::to_owned);
        let message = err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
        let service_failed = matches!(err, SdkError::ServiceError(_));
        match err {
            SdkError::ConstructionFailure(_) => Self::NotSent {
                operation,
                message,
                source: Box::new(err),
            },
            SdkError::TimeoutError(_) => Self::TimedOut {
                operation,
                after: timeout,
                source: Box::new(err),
            },
            _ if !service_failed => Self::Unanswered {
                operation,
                message,
                source: Box::new(err),
            },
            _ => match code.as_deref() {
                Some("ResourceNotFoundException") => Self::StreamNotFound {
                    operation,
                    message,
                    source: Box::new(err),
                },
                // The SDK retries the first two itself; KMS throttling of a
                // stream encrypted with SSE-KMS only the adapter does.
                Some(
                    "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "KMSThrottlingException",
                ) => Self::Throttled {
                    operation,
                    message,
                    source: Box::new(err),
                },
                Some("ExpiredIteratorException") => Self::IteratorExpired {
                    operation,
                    source: Box::new(err),
                },
                // A server-side failure may have happened after the write.
                Some(
                    "InternalFailureException"
                    | "ServiceUnavailable"
                    | "ServiceUnavailableException",
                )
                | None => Self::Unanswered {
                    operation,
                    message,
                    source: Box::new(err),
                },
                Some(code) => Self::Refused {
                    operation,
                    code: code.to_owned(),
                    message,
                    source: Box::new(err),
                },
            },
        }
    }

    /// The Kinesis error code, where Kinesis answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::StreamNotFound { .. } => Some("ResourceNotFoundException"),
            Self::IteratorExpired { .. } => Some("ExpiredIteratorException"),
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Converts a failure of a call that does not write (everything but
    /// `PutRecord`) into the engine's error for stream `name`.
    pub(crate) fn into_read_error(self, name: &str) -> StreamError {
        match self {
            Self::StreamNotFound { message, .. } => not_found(name, &message),
            Self::TimedOut {
                operation, after, ..
            } => StreamError::Timeout {
                action: format!("waiting for Kinesis {operation} on stream {name:?}"),
                after,
            },
            other => {
                let action = format!("calling {} on stream {name:?}", other.operation());
                StreamError::backend(BACKEND, action, other)
            }
        }
    }

    /// Converts a failure of `PutRecord` into the engine's error: a failure
    /// whose outcome is unknown becomes [`StreamError::Ambiguous`].
    pub(crate) fn into_write_error(self, name: &str) -> StreamError {
        match self {
            Self::TimedOut { .. } | Self::Unanswered { .. } => StreamError::Ambiguous {
                reason: format!("PutRecord on stream {name:?}: {self}"),
                source: Some(Box::new(self)),
            },
            other => other.into_read_error(name),
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Self::StreamNotFound { operation, .. }
            | Self::Throttled { operation, .. }
            | Self::IteratorExpired { operation, .. }
            | Self::TimedOut { operation, .. }
            | Self::Unanswered { operation, .. }
            | Self::Refused { operation, .. }
            | Self::NotSent { operation, .. } => operation,
        }
    }
}

/// The engine's error for a stream that does not exist.
pub(crate) fn not_found(name: &str, message: &str) -> StreamError {
    StreamError::NotFound {
        name: name.to_owned(),
        reason: format!(
            "Kinesis says: {message}. Create it with one shard \
             (aws kinesis create-stream --stream-name {name} --shard-count 1) \
             or set KinesisConfig::create_if_missing"
        ),
    }
}

/// The engine's error for a stream that cannot hold a memstate log.
pub(crate) fn misconfigured(name: &str, reason: impl Into<String>) -> StreamError {
    StreamError::Misconfigured {
        name: name.to_owned(),
        reason: reason.into(),
    }
}
