//! `GET /events`: the model's events as Server-Sent Events, resumable with
//! `Last-Event-ID`.
//!
//! An event's SSE id is the applied index of the command that emitted it, the
//! one token that means the same on every node; it is sent on the last event
//! of each command, so a client that reconnects with `Last-Event-ID` gets
//! every event of every later command, on this node or another, and never
//! half a command.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, StreamExt};
use memstate_core::{Engine, EventsFrom, Model};
use serde::Deserialize;

use crate::{ApiError, AppState, Hosted};

/// One event as the feed hands it to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// The applied index of the command that emitted it.
    pub index: u64,
    /// Whether it is the last event of its command.
    pub last_in_command: bool,
    /// The event as JSON text.
    pub json: String,
}

/// A stream of events, or an error that ends it (a gap, a halted engine).
pub type FeedStream = BoxStream<'static, Result<FeedEvent, String>>;

/// Where `/events` gets its events: given the index a client last handled
/// (`None`: from now on), a stream of every event of every later command.
#[derive(Clone)]
pub struct EventFeed(Arc<dyn Fn(Option<u64>) -> FeedStream + Send + Sync>);

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventFeed")
    }
}

impl EventFeed {
    /// A feed from a function that opens a subscription after an index.
    pub fn new(open: impl Fn(Option<u64>) -> FeedStream + Send + Sync + 'static) -> Self {
        Self(Arc::new(open))
    }

    /// The events a hosted engine's model emits (`CommandContext::emit`),
    /// read from the engine's retained window: `None` follows from now on,
    /// `Some(i)` resumes after applied index `i`, and a resume point the
    /// window no longer holds ends the stream with the gap's message.
    pub fn from_engine<M: Model>(engine: &Engine<M>) -> Self {
        let engine = engine.clone();
        Self::new(move |after| {
            let from = after.map_or(EventsFrom::Now, EventsFrom::After);
            engine
                .raw_events(from)
                .into_stream()
                .map(|item| {
                    item.map(|e| FeedEvent {
                        index: e.index,
                        last_in_command: e.last_in_command,
                        json: e.event.to_string(),
                    })
                    .map_err(|e| e.to_string())
                })
                .boxed()
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsParams {
    /// Resume after this applied index (as `Last-Event-ID` does).
    after: Option<u64>,
}

pub(crate) async fn stream<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let feed = state
        .events
        .as_ref()
        .ok_or_else(|| ApiError::not_found("events_disabled", "this node serves no events"))?;
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_last_event_id",
                        "Last-Event-ID must be an applied index (a whole number)",
                    )
                })?,
        ),
        None => None,
    };
    let after = last_event_id.or(params.after);
    let events = (feed.0)(after).scan(false, |ended, item| {
        if *ended {
            return futures::future::ready(None);
        }
        let event = match item {
            Ok(e) => {
                let event = Event::default().event("event").data(e.json);
                if e.last_in_command {
                    event.id(e.index.to_string())
                } else {
                    event
                }
            }
            Err(message) => {
                *ended = true;
                Event::default().event("error").data(message)
            }
        };
        futures::future::ready(Some(Ok::<_, Infallible>(event)))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
