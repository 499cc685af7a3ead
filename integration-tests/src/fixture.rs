//! What the suite needs from a backend: fresh streams, and new clients of them.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::Stream;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A future that opens a new client of the same stream.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Stream>, BoxError>> + Send>>;

/// Opens a new client (new connection, new handle, as another process would)
/// of the fixture's stream.
pub type Connect = Arc<dyn Fn() -> ConnectFuture + Send + Sync>;

/// A future that deletes what a fixture created on a shared backend.
pub type CleanupFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Deletes what a fixture created on a shared backend (a Kafka topic, a
/// Kinesis stream), with a description for reports.
#[derive(Clone)]
pub struct Cleanup {
    /// What is deleted, e.g. `Kafka topic "memstate-conformance-…"`.
    pub what: String,
    delete: Arc<dyn Fn() -> CleanupFuture + Send + Sync>,
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleanup").field("what", &self.what).finish()
    }
}

impl Cleanup {
    /// `delete` removes `what` from the backend.
    pub fn new(
        what: impl Into<String>,
        delete: impl Fn() -> CleanupFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            what: what.into(),
            delete: Arc::new(delete),
        }
    }

    /// Deletes it.
    ///
    /// # Errors
    ///
    /// Whatever the backend answers.
    pub async fn run(&self) -> Result<(), BoxError> {
        (self.delete)().await
    }
}

/// A fresh stream for one case, and whatever keeps it alive (a temporary
/// directory, a container). Dropped when the case ends; what it created on a
/// shared backend is deleted by its [`Cleanup`] once the case has ended (see
/// [`crate::runner::keep_streams`]).
pub struct Fixture {
    /// The stream under test (a fresh, empty one, with a unique name).
    pub stream: Arc<dyn Stream>,
    connect: Connect,
    cleanup: Option<Cleanup>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("stream", &self.stream.describe())
            .finish()
    }
}

impl Fixture {
    /// A fixture over `stream`; `connect` opens further clients of it;
    /// `guard` lives as long as the fixture.
    pub fn new(stream: Arc<dyn Stream>, connect: Connect, guard: impl Any + Send + Sync) -> Self {
        Self {
            stream,
            connect,
            cleanup: None,
            _guard: Box::new(guard),
        }
    }

    /// Deletes the fixture's stream from the backend when the case ends.
    #[must_use]
    pub fn with_cleanup(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// What deletes this fixture's stream from the backend, if anything must.
    pub fn cleanup(&self) -> Option<&Cleanup> {
        self.cleanup.as_ref()
    }

    /// A new client of the same stream, as a restarted process would open.
    ///
    /// # Errors
    ///
    /// Whatever opening the stream fails with.
    pub async fn new_client(&self) -> Result<Arc<dyn Stream>, BoxError> {
        (self.connect)().await
    }
}

/// A backend the suite runs against.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Its name in reports ("file", "kafka", ...).
    fn name(&self) -> String;

    /// Where it runs (an address, a directory), for reports.
    fn location(&self) -> String;

    /// A fresh, empty stream with a unique name.
    ///
    /// # Errors
    ///
    /// When the backend cannot create one.
    async fn fresh(&self) -> Result<Fixture, BoxError>;

    /// Why this backend cannot carry the volume case (ten thousand commands)
    /// within the case timeout, when it cannot; the case is then reported as
    /// ignored with this reason.
    fn volume_limit(&self) -> Option<String> {
        None
    }
}
