//! This crate's errors and their conversion to [`StreamError`].
//!
//! Every public function returns [`StreamError`]; the variants below travel as
//! the `source` of [`StreamError::Backend`] (or [`StreamError::Ambiguous`]) so
//! a caller can downcast to them, and convert to the precise `StreamError`
//! variants where one exists (`NotFound`, `WrongExpectedPosition`, `Timeout`,
//! `Misconfigured`, ...).

use std::time::Duration;

use kurrentdb::{CurrentRevision, Error as ClientError};
use memstate_core::{Cursor, StreamError};
use tonic::Code;

use crate::config::EventIds;
use crate::cursor;

/// The backend name used in [`StreamError::Backend`].
pub(crate) const BACKEND: &str = "eventstore";

/// Errors specific to the EventStoreDB adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventStoreStreamError {
    /// The connection string cannot be parsed (the password, if any, is
    /// replaced by `***`).
    #[error("invalid connection string {connection_string:?}: {reason}")]
    InvalidConnectionString {
        /// The connection string, password redacted.
        connection_string: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid EventStoreStream configuration: {0}")]
    InvalidConfig(String),
    /// The client could not be created (e.g. an unreadable `tlsCAFile`).
    #[error("cannot create the KurrentDB client: {0}")]
    ClientInit(String),
    /// Called outside a tokio runtime; the client spawns its connection task
    /// on the current runtime.
    #[error("the KurrentDB client must be created inside a tokio runtime")]
    NoRuntime,
    /// No connection to the server could be made.
    #[error("cannot reach KurrentDB at {endpoint}: {source}")]
    Unreachable {
        /// Hosts, discovery and TLS as configured.
        endpoint: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The server refused the credentials or the stream's ACL denies access.
    #[error(
        "access denied to stream {stream:?}: check the user and password in the connection \
         string (user:password@host) and the stream's ACL"
    )]
    AccessDenied {
        /// The stream.
        stream: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The client panicked (it unwraps some server responses); the panic was
    /// caught and turned into this error.
    #[error("the KurrentDB client panicked while {action}: {message}")]
    ClientPanicked {
        /// What was being done.
        action: String,
        /// The panic message.
        message: String,
    },
}

impl From<EventStoreStreamError> for StreamError {
    fn from(error: EventStoreStreamError) -> Self {
        match error {
            EventStoreStreamError::InvalidConnectionString { .. }
            | EventStoreStreamError::InvalidConfig(_) => {
                StreamError::backend(BACKEND, "validating the configuration", error)
            }
            other => StreamError::backend(BACKEND, "using the KurrentDB client", other),
        }
    }
}

/// What was being done when an error happened; chooses the `StreamError`.
#[derive(Clone, Debug)]
pub(crate) enum Operation {
    Connect,
    Append,
    AppendExpecting(Option<Cursor>),
    Head,
    Subscribe,
    ReadMetadata,
}

impl Operation {
    fn is_append(&self) -> bool {
        matches!(self, Operation::Append | Operation::AppendExpecting(_))
    }
}

/// The facts an error message needs.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext<'a> {
    pub(crate) stream: &'a str,
    pub(crate) endpoint: &'a str,
    pub(crate) timeout: Duration,
}

impl ErrorContext<'_> {
    pub(crate) fn action(&self, op: &Operation) -> String {
        match op {
            Operation::Connect => format!("connecting to KurrentDB at {}", self.endpoint),
            Operation::Append | Operation::AppendExpecting(_) => {
                format!("appending to stream {:?}", self.stream)
            }
            Operation::Head => format!("reading the head of stream {:?}", self.stream),
            Operation::Subscribe => format!("subscribing to stream {:?}", self.stream),
            Operation::ReadMetadata => format!("reading the metadata of stream {:?}", self.stream),
        }
    }
}

/// The client cannot be used again: its connection task stopped (it ends
/// after a failed connection attempt), so a new client must be created.
pub(crate) fn client_is_dead(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::ConnectionClosed | ClientError::GrpcConnectionError(_)
    )
}

/// The request certainly did not change anything and may be sent once more
/// at once: the client was dead before sending, or the node was not the
/// leader (the client switches to the leader it names).
pub(crate) fn retry_is_safe(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::ConnectionClosed | ClientError::NotLeaderException(_)
    )
}

/// Whether a request that failed with `error` is sent once more at once:
/// when it certainly changed nothing, or when it is an append whose event
/// ids are derived from its content and the failure left its outcome
/// unknown. KurrentDB recognises the resent ids and answers with the
/// positions already written instead of writing them again (within its
/// de-duplication window; see docs/adapters.md), and the engine drops any
/// copy written anyway by command id.
pub(crate) fn may_send_again(op: &Operation, error: &ClientError, ids: EventIds) -> bool {
    retry_is_safe(error)
        || (op.is_append()
            && ids == EventIds::FromContent
            && is_transient(error)
            && !matches!(error, ClientError::DeadlineExceeded))
}

/// A subscription that failed with this error may be opened again after the
/// last revision it yielded.
pub(crate) fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::ServerError(_)
        | ClientError::ConnectionClosed
        | ClientError::GrpcConnectionError(_)
        | ClientError::DeadlineExceeded
        | ClientError::NotLeaderException(_) => true,
        ClientError::Grpc { code, .. } => matches!(
            code,
            Code::Cancelled
                | Code::Unavailable
                | Code::Unknown
                | Code::Aborted
                | Code::Internal
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
        ),
        _ => false,
    }
}

/// Errors after which an append certainly wrote nothing.
fn append_certainly_failed(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::WrongExpectedVersion { .. }
            | ClientError::AccessDenied
            | ClientError::ResourceDeleted
            | ClientError::ConnectionClosed
            | ClientError::GrpcConnectionError(_)
            | ClientError::NotLeaderException(_)
            | ClientError::UnsupportedFeature
            | ClientError::InitializationError(_)
    ) || is_max_append_size(error)
}

/// The server's "maximum append size exceeded" (InvalidArgument); the
/// message differs between server versions.
fn is_max_append_size(error: &ClientError) -> bool {
    match error {
        ClientError::Grpc { code, message } if *code == Code::InvalidArgument => {
            let message = message.to_ascii_lowercase().replace(' ', "");
            message.contains("maximumappendsize") || message.contains("maxappendsize")
        }
        _ => false,
    }
}

/// Converts a client error into the `StreamError` a caller can act on.
pub(crate) fn map_client_error(
    error: ClientError,
    op: &Operation,
    ctx: &ErrorContext<'_>,
) -> StreamError {
    let action = ctx.action(op);
    match error {
        ClientError::WrongExpectedVersion { current, .. } => match op {
            Operation::AppendExpecting(expected) => StreamError::WrongExpectedPosition {
                expected: expected.clone(),
                actual: match current {
                    CurrentRevision::Current(revision) => Some(cursor::to_cursor(revision)),
                    CurrentRevision::NoStream => None,
                },
            },
            _ => StreamError::backend(BACKEND, action, error),
        },
        ClientError::ResourceDeleted => StreamError::NotFound {
            name: ctx.stream.to_owned(),
            reason: "the stream was deleted (tombstoned) in EventStoreDB; a tombstoned stream \
                     can never be written or read again, use a new stream name"
                .to_owned(),
        },
        ClientError::ResourceNotFound => StreamError::NotFound {
            name: ctx.stream.to_owned(),
            reason: "EventStoreDB reports no such stream (never written, or soft-deleted); \
                     it is created by the first append"
                .to_owned(),
        },
        ClientError::AccessDenied => StreamError::backend(
            BACKEND,
            action,
            EventStoreStreamError::AccessDenied {
                stream: ctx.stream.to_owned(),
                source: error,
            },
        ),
        ClientError::ConnectionClosed | ClientError::GrpcConnectionError(_) => {
            StreamError::backend(
                BACKEND,
                action,
                EventStoreStreamError::Unreachable {
                    endpoint: ctx.endpoint.to_owned(),
                    source: error,
                },
            )
        }
        ref e if is_max_append_size(e) => StreamError::Misconfigured {
            name: ctx.stream.to_owned(),
            reason: format!(
                "the server refused the append as larger than its maximum append size \
                 (MaxAppendSize, 1 MiB by default; nothing was written): lower max_append_size \
                 and max_record_size in EventStoreConfig to the server's value, or raise the \
                 server's --max-append-size ({e})"
            ),
        },
        ClientError::DeadlineExceeded if !op.is_append() => StreamError::Timeout {
            action,
            after: ctx.timeout,
        },
        other if op.is_append() && !append_certainly_failed(&other) => StreamError::Ambiguous {
            reason: format!(
                "{action} failed after the request may have reached the server, so the records \
                 may or may not have been written: {other}"
            ),
            source: Some(Box::new(other)),
        },
        other => StreamError::backend(BACKEND, action, other),
    }
}

/// The backstop timeout fired.
pub(crate) fn timed_out(op: &Operation, ctx: &ErrorContext<'_>) -> StreamError {
    let action = ctx.action(op);
    if op.is_append() {
        StreamError::Ambiguous {
            reason: format!(
                "no answer within {:?} while {action}; the records may or may not have been \
                 written",
                ctx.timeout
            ),
            source: None,
        }
    } else {
        StreamError::Timeout {
            action,
            after: ctx.timeout,
        }
    }
}

/// The client panicked; the payload is turned into a message.
pub(crate) fn panicked(
    payload: &(dyn std::any::Any + Send),
    op: &Operation,
    ctx: &ErrorContext<'_>,
) -> StreamError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    let action = ctx.action(op);
    let error = EventStoreStreamError::ClientPanicked {
        action: action.clone(),
        message,
    };
    if op.is_append() {
        StreamError::Ambiguous {
            reason: error.to_string(),
            source: Some(Box::new(error)),
        }
    } else {
        StreamError::backend(BACKEND, action, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurrentdb::{Endpoint, GrpcConnectionError, StreamState};

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            stream: "orders",
            endpoint: "127.0.0.1:2113 (TLS off)",
            timeout: Duration::from_secs(3),
        }
    }

    fn source_text(error: &StreamError) -> String {
        std::error::Error::source(error)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn wrong_expected_version_names_the_actual_revision() {
        let error = ClientError::WrongExpectedVersion {
            expected: StreamState::StreamRevision(4),
            current: CurrentRevision::Current(7),
        };
        let expected = Some(cursor::to_cursor(4));
        match map_client_error(error, &Operation::AppendExpecting(expected.clone()), &ctx()) {
            StreamError::WrongExpectedPosition {
                expected: e,
                actual,
            } => {
                assert_eq!(e, expected);
                assert_eq!(actual, Some(cursor::to_cursor(7)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_expected_version_on_a_missing_stream_has_no_actual_position() {
        let error = ClientError::WrongExpectedVersion {
            expected: StreamState::StreamRevision(0),
            current: CurrentRevision::NoStream,
        };
        let mapped = map_client_error(
            error,
            &Operation::AppendExpecting(Some(cursor::to_cursor(0))),
            &ctx(),
        );
        assert!(matches!(
            mapped,
            StreamError::WrongExpectedPosition { actual: None, .. }
        ));
    }

    #[test]
    fn tombstoned_stream_is_not_found_with_the_reason() {
        for op in [Operation::Append, Operation::Head, Operation::Subscribe] {
            match map_client_error(ClientError::ResourceDeleted, &op, &ctx()) {
                StreamError::NotFound { name, reason } => {
                    assert_eq!(name, "orders");
                    assert!(reason.contains("tombstoned"), "{reason}");
                }
                other => panic!("{op:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_stream_at_subscribe_is_not_found() {
        let mapped = map_client_error(ClientError::ResourceNotFound, &Operation::Subscribe, &ctx());
        assert!(matches!(mapped, StreamError::NotFound { ref name, .. } if name == "orders"));
    }

    #[test]
    fn access_denied_names_the_stream_and_the_credentials() {
        let mapped = map_client_error(ClientError::AccessDenied, &Operation::Head, &ctx());
        let text = mapped.to_string();
        assert!(matches!(
            mapped,
            StreamError::Backend {
                backend: BACKEND,
                ..
            }
        ));
        assert!(text.contains("access denied"), "{text}");
        assert!(text.contains("\"orders\""), "{text}");
        assert!(text.contains("user:password"), "{text}");
        // An append refused for access wrote nothing: not ambiguous.
        let append = map_client_error(ClientError::AccessDenied, &Operation::Append, &ctx());
        assert!(matches!(append, StreamError::Backend { .. }));
    }

    #[test]
    fn connection_failures_are_unreachable_and_not_ambiguous() {
        let refused = ClientError::GrpcConnectionError(GrpcConnectionError::Grpc(
            "tcp connect error: Connection refused".to_owned(),
        ));
        let mapped = map_client_error(refused, &Operation::Append, &ctx());
        let text = mapped.to_string();
        assert!(matches!(mapped, StreamError::Backend { .. }), "{mapped:?}");
        assert!(
            text.contains("cannot reach KurrentDB at 127.0.0.1:2113"),
            "{text}"
        );
        assert!(text.contains("Connection refused"), "{text}");
    }

    #[test]
    fn errors_after_sending_an_append_are_ambiguous() {
        for error in [
            ClientError::ServerError("status: Unavailable".to_owned()),
            ClientError::DeadlineExceeded,
            ClientError::Grpc {
                code: Code::Cancelled,
                message: "h2 reset".to_owned(),
            },
            ClientError::InternalClientError,
        ] {
            let text = error.to_string();
            match map_client_error(error, &Operation::Append, &ctx()) {
                StreamError::Ambiguous { reason, source } => {
                    assert!(reason.contains("may or may not"), "{reason}");
                    assert_eq!(source.map(|s| s.to_string()), Some(text));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn deadline_on_reads_is_a_timeout() {
        match map_client_error(ClientError::DeadlineExceeded, &Operation::Head, &ctx()) {
            StreamError::Timeout { action, after } => {
                assert!(action.contains("head"), "{action}");
                assert_eq!(after, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_max_append_size_is_a_misconfiguration() {
        for message in [
            "Maximum Append Size of 1048576 Exceeded.",
            "MaximumAppendSizeExceeded",
        ] {
            let error = ClientError::Grpc {
                code: Code::InvalidArgument,
                message: message.to_owned(),
            };
            match map_client_error(error, &Operation::Append, &ctx()) {
                StreamError::Misconfigured { name, reason } => {
                    assert_eq!(name, "orders");
                    assert!(reason.contains("max_append_size"), "{reason}");
                }
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_read_errors_keep_the_client_error_as_source() {
        let error = ClientError::Grpc {
            code: Code::FailedPrecondition,
            message: "odd".to_owned(),
        };
        let mapped = map_client_error(error, &Operation::Head, &ctx());
        assert!(matches!(mapped, StreamError::Backend { .. }));
        assert!(source_text(&mapped).contains("odd"));
    }

    #[test]
    fn backstop_timeout_is_ambiguous_for_appends_and_a_timeout_otherwise() {
        assert!(matches!(
            timed_out(&Operation::Append, &ctx()),
            StreamError::Ambiguous { .. }
        ));
        assert!(matches!(
            timed_out(&Operation::Connect, &ctx()),
            StreamError::Timeout { .. }
        ));
    }

    #[test]
    fn client_panics_become_errors_with_the_message() {
        let payload: Box<dyn std::any::Any + Send> = Box::new("called `Option::unwrap()`");
        let mapped = panicked(payload.as_ref(), &Operation::Subscribe, &ctx());
        assert!(mapped.to_string().contains("panicked"), "{mapped}");
        assert!(mapped.to_string().contains("Option::unwrap"), "{mapped}");
    }

    #[test]
    fn classification_of_retries() {
        let refused = ClientError::GrpcConnectionError(GrpcConnectionError::Grpc("x".into()));
        assert!(client_is_dead(&refused));
        assert!(client_is_dead(&ClientError::ConnectionClosed));
        assert!(!client_is_dead(&ClientError::ServerError("x".into())));

        let not_leader = ClientError::NotLeaderException(Endpoint {
            host: "n2".into(),
            port: 2113,
        });
        assert!(retry_is_safe(&not_leader));
        assert!(retry_is_safe(&ClientError::ConnectionClosed));
        assert!(!retry_is_safe(&ClientError::ServerError("x".into())));

        assert!(is_transient(&ClientError::ServerError("x".into())));
        assert!(is_transient(&ClientError::DeadlineExceeded));
        assert!(is_transient(&refused));
        assert!(!is_transient(&ClientError::AccessDenied));
        assert!(!is_transient(&ClientError::ResourceDeleted));
    }

    #[test]
    fn an_append_with_content_ids_is_sent_again_after_an_unknown_outcome() {
        let lost = ClientError::ServerError("status: Unavailable".into());
        let append = Operation::Append;
        let expecting = Operation::AppendExpecting(None);
        assert!(may_send_again(&append, &lost, EventIds::FromContent));
        assert!(may_send_again(&expecting, &lost, EventIds::FromContent));
        // Random ids: the server could not tell the resend from a new write.
        assert!(!may_send_again(&append, &lost, EventIds::Random));
        // Reads are not resent on an unknown outcome (they are resubscribed).
        assert!(!may_send_again(
            &Operation::Head,
            &lost,
            EventIds::FromContent
        ));
        // A deadline leaves no time for a second attempt.
        let late = ClientError::DeadlineExceeded;
        assert!(!may_send_again(&append, &late, EventIds::FromContent));
        // Refusals are final.
        assert!(!may_send_again(
            &append,
            &ClientError::AccessDenied,
            EventIds::FromContent
        ));
        // Requests that certainly changed nothing are resent whatever the ids.
        assert!(may_send_again(
            &append,
            &ClientError::ConnectionClosed,
            EventIds::Random
        ));
    }
}
