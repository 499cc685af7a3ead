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

/// A fresh stream for one case, and whatever keeps it alive (a temporary
/// directory, a container, a topic to delete). Dropped when the case ends.
pub struct Fixture {
    /// The stream under test (a fresh, empty one, with a unique name).
    pub stream: Arc<dyn Stream>,
    connect: Connect,
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
            _guard: Box::new(guard),
        }
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
}
