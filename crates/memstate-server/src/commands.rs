//! `POST /commands` and `POST /commands/{name}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use memstate_core::{CommandId, Error, ExecuteError, Model};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::activity::{RecentCommand, ms, now_ms};
use crate::error::describe_json_error;
use crate::{ApiError, AppState, Hosted, INDEX_HEADER};

/// The answer to a command that reached the log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WriteResponse {
    /// The command's applied index, the same on every node: pass it as
    /// `consistency=at_least:<index>` (or in `Memstate-Last-Write` with
    /// `read_your_writes`) to read this write on any node.
    pub index: u64,
    /// The command id (from `Idempotency-Key`, or fresh).
    pub command_id: String,
    /// The model's output; `null` when the command had already been applied
    /// by an earlier request with the same `Idempotency-Key`.
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    /// `true` when this request was a retry of one already applied: it was
    /// not applied again.
    pub already_applied: bool,
}

/// Namespace of the command ids derived from idempotency keys that are not UUIDs.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_6d73_7461_7465_2d69_646b_6579_0001);

/// The command id of a request: its `Idempotency-Key` (a UUID as it is, any
/// other key hashed into one, the same on every node), else a fresh id.
pub(crate) fn command_id(headers: &HeaderMap) -> Result<CommandId, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(CommandId::random());
    };
    let key = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "bad_idempotency_key",
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "bad_idempotency_key",
            "Idempotency-Key must hold 1 to 255 characters",
        ));
    }
    Ok(CommandId(Uuid::parse_str(key).unwrap_or_else(|_| {
        Uuid::new_v5(&KEY_NAMESPACE, key.as_bytes())
    })))
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than this node's limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", describe_json_error(&e)))
}

/// `POST /commands/{name}`: the body is the named variant's content.
pub(crate) async fn post_named<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let known = state.command_names.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "unknown_command",
            "this model's commands have no names; POST the whole command to /commands",
        )
    })?;
    if !known.contains(&name) {
        return Err(ApiError::not_found(
            "unknown_command",
            format!(
                "no command {name:?}; this model has: {}",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let id = command_id(&headers)?;
    let args = parse_json(&body_bytes(body, state.body_limit)?)?;
    let whole = serde_json::Value::Object([(name.clone(), args)].into_iter().collect());
    let command: M::Command = serde_json::from_value(whole).map_err(|e| {
        ApiError::bad_request(
            "invalid_command",
            format!("the body does not fit command {name:?}: {e}"),
        )
    })?;
    Ok(execute(&state, id, name, command, received).await)
}

/// `POST /commands`: the body is the whole command as the model serializes it.
pub(crate) async fn post_whole<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let id = command_id(&headers)?;
    let value = parse_json(&body_bytes(body, state.body_limit)?)?;
    let name = match &value {
        serde_json::Value::Object(map) if map.len() == 1 => {
            map.keys().next().cloned().unwrap_or_default()
        }
        serde_json::Value::String(s) => s.clone(),
        _ => "command".to_owned(),
    };
    let command: M::Command = serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown variant") {
            ApiError::not_found("unknown_command", message)
        } else {
            ApiError::bad_request(
                "invalid_command",
                format!("the body is not a command of this model: {message}"),
            )
        }
    })?;
    Ok(execute(&state, id, name, command, received).await)
}

async fn execute<M: Hosted>(
    state: &AppState<M>,
    id: CommandId,
    name: String,
    command: <M as Model>::Command,
    received: Instant,
) -> Response {
    let result = state.engine.execute_with_id(id, command).await;
    let (response, index, outcome) = match result {
        Ok(done) => match serde_json::to_value(&done.output) {
            Ok(output) => (
                written(done.index, id, output, false),
                Some(done.index),
                "applied",
            ),
            Err(e) => (
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unencodable_output",
                    format!(
                        "the command was applied at index {} but its output could not be encoded: {e}",
                        done.index
                    ),
                )
                .into_response(),
                Some(done.index),
                "applied",
            ),
        },
        Err(ExecuteError::Engine(Error::AlreadyApplied { index, .. })) => (
            written(index, id, serde_json::Value::Null, true),
            Some(index),
            "already_applied",
        ),
        Err(ExecuteError::Rejected { error, index }) => {
            let mut e = ApiError::new(StatusCode::CONFLICT, "rejected", error.to_string());
            e.body.index = Some(index);
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(INDEX_HEADER, HeaderValue::from(index));
            (response, Some(index), "rejected")
        }
        Err(ExecuteError::Engine(e)) => (
            ApiError::from_engine(&e).into_response(),
            None,
            "failed",
        ),
        Err(e) => (
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "engine_error", e.to_string())
                .into_response(),
            None,
            "failed",
        ),
    };
    state.activity.command(
        RecentCommand {
            at_ms: now_ms(),
            name,
            command_id: id.to_string(),
            index,
            outcome: outcome.to_owned(),
            latency_ms: ms(received.elapsed()),
        },
        outcome == "failed" || outcome == "rejected",
    );
    response
}

fn written(index: u64, id: CommandId, output: serde_json::Value, already: bool) -> Response {
    let mut response = Json(WriteResponse {
        index,
        command_id: id.to_string(),
        output,
        already_applied: already,
    })
    .into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_maps_to_the_same_id_everywhere() {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static("order-17"));
        let a = command_id(&h).ok();
        let b = command_id(&h).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
        h.insert("idempotency-key", HeaderValue::from_static("order-18"));
        assert_ne!(a, command_id(&h).ok());
        let uuid = "0b8f9a55-6a48-4a4f-8f57-3f0d2a7f9a01";
        h.insert("idempotency-key", HeaderValue::from_static(uuid));
        assert_eq!(
            command_id(&h).ok().map(|c| c.to_string()),
            Some(uuid.to_owned())
        );
    }

    #[test]
    fn an_empty_key_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_static(""));
        assert_eq!(
            command_id(&h).err().map(|e| e.status()),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
