//! An HTTP host for a memstate [`Engine`]: commands in, queries out, live
//! events, Prometheus metrics, health checks, an OpenAPI document and a web
//! console — for any [`Model`] whose commands and outputs are serde values.
//!
//! The server is a thin edge: every request becomes one `Engine` call. An
//! `Idempotency-Key` header becomes the command id, so a retried request is
//! applied once; a query's `consistency` parameter becomes a
//! [`Consistency`](memstate_core::Consistency); the applied index of every write
//! is in its response and reads accept it, so read-your-writes works across
//! nodes. See `docs/server.md` in the repository for the HTTP API.
//!
//! # Examples
//!
//! ```no_run
//! use memstate_core::{EngineBuilder, MemoryStream};
//! use memstate_server::ServerBuilder;
//! use memstate_server::kv::{KvStore, GetParams};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = EngineBuilder::new(KvStore::default(), MemoryStream::new()).start().await?;
//! let server = ServerBuilder::new(engine)
//!     .query("get", |kv: &KvStore, p: GetParams| kv.get(&p.key).cloned())
//!     .build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod activity;
mod auth;
mod commands;
mod consistency;
mod console;
mod error;
mod events;
pub mod kv;
mod names;
mod openapi;
mod prometheus;
mod queries;
mod status;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::{get, post};
use memstate_core::{Engine, Model};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};

pub use activity::{RecentCommand, Second};
pub use commands::WriteResponse;
pub use consistency::{parse_consistency, parse_duration};
pub use error::{ApiError, ErrorBody};
pub use events::{EventFeed, FeedEvent, FeedStream};
pub use names::command_names;
pub use prometheus::{PrometheusHandle, install_prometheus};
pub use status::NodeStatus;
pub use tls::{TlsConfig, TlsError};

use activity::Activity;
use queries::QueryFn;

/// A model the server can host: its outputs are serde values.
pub trait Hosted: Model<Output: Serialize> {}
impl<M: Model<Output: Serialize>> Hosted for M {}

/// The largest request body accepted by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The header a write's applied index travels in (responses), and the header
/// a read names the caller's last write in (`read_your_writes`).
pub const INDEX_HEADER: &str = "memstate-index";
/// The request header carrying the index of the caller's last write.
pub const LAST_WRITE_HEADER: &str = "memstate-last-write";

pub(crate) struct AppState<M: Hosted> {
    engine: Engine<M>,
    queries: BTreeMap<String, QueryFn<M>>,
    command_names: Option<BTreeSet<String>>,
    activity: Activity,
    prometheus: Option<PrometheusHandle>,
    token: Option<auth::Token>,
    body_limit: usize,
    events: Option<EventFeed>,
}

/// Configures a [`Server`] around a running engine.
pub struct ServerBuilder<M: Hosted> {
    engine: Engine<M>,
    queries: BTreeMap<String, QueryFn<M>>,
    command_names: Option<BTreeSet<String>>,
    prometheus: Option<PrometheusHandle>,
    token: Option<auth::Token>,
    body_limit: usize,
    events: Option<EventFeed>,
}

impl<M: Hosted> std::fmt::Debug for ServerBuilder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("engine", &self.engine)
            .field("queries", &self.queries.keys().collect::<Vec<_>>())
            .field("command_names", &self.command_names)
            .field("bearer_token", &self.token.is_some())
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

impl<M: Hosted> ServerBuilder<M> {
    /// A server for `engine`. The command names of an externally tagged
    /// command enum are found from its serde implementation (see
    /// [`command_names`]).
    pub fn new(engine: Engine<M>) -> Self {
        Self {
            engine,
            queries: BTreeMap::new(),
            command_names: command_names::<M::Command>().map(|n| n.into_iter().collect()),
            prometheus: None,
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            events: None,
        }
    }

    /// Registers a named query: `GET /queries/{name}?consistency=..&...`.
    /// The other URL parameters are deserialized into `P` (use `()` for
    /// none); the result is returned as JSON. The closure runs under the
    /// model's read lock: keep it short.
    pub fn query<P, R, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        F: Fn(&M, P) -> R + Send + Sync + 'static,
    {
        self.queries.insert(name.into(), queries::erase(f));
        self
    }

    /// The names `POST /commands/{name}` accepts, when the command type is not
    /// an externally tagged enum. The body is then posted as `{name: body}`.
    pub fn command_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.command_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Requires `Authorization: Bearer <token>` on every route except
    /// `/healthz`, `/readyz` and the console page itself (which asks for the
    /// token and sends it with its own requests). The token is never logged.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(auth::Token::new(token.into()));
        self
    }

    /// The largest request body accepted (default [`DEFAULT_BODY_LIMIT`]);
    /// larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Serves `/metrics` from this Prometheus recorder (see [`install_prometheus`]).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Serves `/events` (Server-Sent Events) from this feed.
    pub fn events(mut self, feed: EventFeed) -> Self {
        self.events = Some(feed);
        self
    }

    /// Builds the server. Must be called inside a Tokio runtime: it starts
    /// the once-a-second sampler behind the console's chart, which stops
    /// when the server is dropped.
    pub fn build(self) -> Server<M> {
        let state = Arc::new(AppState {
            engine: self.engine,
            queries: self.queries,
            command_names: self.command_names,
            activity: Activity::default(),
            prometheus: self.prometheus,
            token: self.token,
            body_limit: self.body_limit,
            events: self.events,
        });
        tokio::spawn(sample_every_second(Arc::downgrade(&state)));
        Server { state }
    }
}

async fn sample_every_second<M: Hosted>(state: Weak<AppState<M>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let applied = state.engine.stats().applied_index;
        state.activity.tick(applied);
    }
}

/// An HTTP server hosting one engine.
pub struct Server<M: Hosted> {
    state: Arc<AppState<M>>,
}

impl<M: Hosted> std::fmt::Debug for Server<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("engine", &self.state.engine)
            .finish_non_exhaustive()
    }
}

impl<M: Hosted> Server<M> {
    /// The engine it hosts.
    pub fn engine(&self) -> &Engine<M> {
        &self.state.engine
    }

    /// The routes, ready to serve or to nest in a larger application.
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        let protected = Router::new()
            .route("/commands", post(commands::post_whole::<M>))
            .route("/commands/{name}", post(commands::post_named::<M>))
            .route("/queries", get(queries::list::<M>))
            .route("/queries/{name}", get(queries::run::<M>))
            .route("/events", get(events::stream::<M>))
            .route("/status", get(status::status::<M>))
            .route("/metrics", get(prometheus::render::<M>))
            .route("/openapi.json", get(openapi::document::<M>))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_token::<M>,
            ));
        Router::new()
            .route("/", get(console::page))
            .route("/healthz", get(status::healthz))
            .route("/readyz", get(status::readyz::<M>))
            .merge(protected)
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.state.body_limit))
            // Requests are traced with their headers at TRACE level; the
            // layer below marks credentials sensitive, so they print redacted.
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().include_headers(true)),
            )
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::COOKIE,
            ]))
            .with_state(state)
    }

    /// Serves plain HTTP on `listener` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// I/O errors of the listener.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves HTTPS on `listener` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// I/O errors of the listener.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: TlsConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(tls::TlsListener::new(listener, tls), self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("no route {}; see /openapi.json for the API", uri.path()),
    )
}
