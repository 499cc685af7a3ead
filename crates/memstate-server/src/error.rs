//! How failures become HTTP responses: a status, a machine-readable code, and
//! a message that names the problem.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use memstate_core::{Error, StreamError};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`malformed_json`, `unknown_command`,
    /// `halted`, `stream_unavailable`, ...).
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Why the node stopped applying, when it is halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
    /// The applied index of a rejected command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The leader as this node knows it (single-leader mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// A failed request: status, body, and an optional `Retry-After` in seconds.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: Box<ErrorBody>,
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: code.to_owned(),
                message: message.into(),
                halt_reason: None,
                index: None,
                leader: None,
            }),
            retry_after: None,
        }
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Maps an engine error. Anything that may succeed when retried (the
    /// stream is unreachable, a wait ran out, another node leads) is 503 with
    /// `Retry-After`; a halted node is 503 with its reason and no
    /// `Retry-After` (retrying does not help until an operator acts).
    pub(crate) fn from_engine(error: &Error) -> Self {
        let unavailable = |code: &str, message: String| {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(1)
        };
        match error {
            Error::Halted(reason) => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "halted",
                    format!("this node stopped applying: {reason}"),
                );
                e.body.halt_reason = Some(reason.to_string());
                e
            }
            Error::ShutDown => unavailable("shutting_down", error.to_string()),
            Error::Stream(StreamError::RecordTooLarge { .. }) | Error::CommandTooLarge { .. } => {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "command_too_large",
                    error.to_string(),
                )
            }
            Error::Stream(_) => unavailable(
                "stream_unavailable",
                format!(
                    "{error}; the command may still be applied: retry with the same Idempotency-Key, it is applied at most once"
                ),
            ),
            Error::Timeout { .. } => unavailable(
                "timeout",
                format!(
                    "{error}; a command may still be applied: retry with the same Idempotency-Key, it is applied at most once"
                ),
            ),
            Error::TooStale { .. } => unavailable("too_stale", error.to_string()),
            Error::NotLeader { leader, .. } => {
                let mut e = unavailable("not_leader", error.to_string());
                e.body.leader = leader.as_ref().map(|l| l.to_string());
                e
            }
            Error::DuplicateInFlight(_) => {
                Self::new(StatusCode::CONFLICT, "in_flight", error.to_string()).retry_after(1)
            }
            Error::Skipped(_) => Self::new(StatusCode::CONFLICT, "skipped", error.to_string()),
            // A retry of a command every node rejected: it was not applied and
            // will not be; answering "already applied" would be a lie.
            Error::AlreadyRejected { index, .. } => {
                let mut e = Self::new(StatusCode::CONFLICT, "already_rejected", error.to_string());
                e.body.index = Some(*index);
                e
            }
            Error::Encode(_) => Self::bad_request("unencodable_command", error.to_string()),
            Error::UndecodableCommand { .. } => {
                Self::bad_request("undecodable_command", error.to_string())
            }
            Error::CommandPanicked { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "command_panicked",
                error.to_string(),
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine_error",
                error.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(*self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Describes a `serde_json` error with where it happened, for a 400.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("the body is not valid JSON: {e}"),
        Category::Data => format!("the JSON does not fit: {e}"),
        Category::Io => format!("the body could not be read: {e}"),
    }
}

#[cfg(test)]
mod engine_error_tests {
    use memstate_core::envelope::CommandId;
    use memstate_core::{Error, Rejection};

    use super::*;

    #[test]
    fn a_retry_of_a_rejected_command_is_a_conflict_naming_its_index() {
        let e = ApiError::from_engine(&Error::AlreadyRejected {
            command_id: CommandId::random(),
            index: 7,
            reason: Rejection::Skipped,
        });
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.body.error, "already_rejected");
        assert_eq!(e.body.index, Some(7));
    }
}
