//! [`Shared`]: the client and configuration an
//! [`EventStoreStream`](crate::EventStoreStream) and its subscriptions share,
//! and the one place a client call is run (timeout, panics, a dead client).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use kurrentdb::{Client, ClientSettings};
use memstate_core::StreamError;
use parking_lot::Mutex;

use crate::config::EventStoreConfig;
use crate::connection;
use crate::error::{self, ErrorContext, EventStoreStreamError, Operation};

/// What the stream and its subscriptions share.
pub(crate) struct Shared {
    pub(crate) config: EventStoreConfig,
    settings: ClientSettings,
    pub(crate) endpoint: String,
    slot: Mutex<ClientSlot>,
}

/// The current client. The client's connection task ends for good after a
/// failed connection attempt (every later call then fails with
/// `ConnectionClosed`), and may hang in cluster discovery, so a client that
/// failed that way is replaced; `generation` makes concurrent callers replace
/// it once.
struct ClientSlot {
    generation: u64,
    client: Client,
}

impl Shared {
    /// Validates `config` and creates the client, without contacting the server.
    pub(crate) fn new(config: EventStoreConfig) -> Result<Self, StreamError> {
        config.validate()?;
        let settings = connection::parse(&config.connection_string)?;
        let endpoint = connection::describe(&settings);
        let client = build_client(&settings)?;
        Ok(Self {
            config,
            settings,
            endpoint,
            slot: Mutex::new(ClientSlot {
                generation: 0,
                client,
            }),
        })
    }

    pub(crate) fn context(&self) -> ErrorContext<'_> {
        ErrorContext {
            stream: &self.config.stream_name,
            endpoint: &self.endpoint,
            timeout: self.config.operation_timeout,
        }
    }

    pub(crate) fn current_client(&self) -> (u64, Client) {
        let slot = self.slot.lock();
        (slot.generation, slot.client.clone())
    }

    /// Replaces the client of `generation` with a new one, unless another
    /// caller already did.
    pub(crate) fn replace_client(&self, generation: u64) {
        if self.slot.lock().generation != generation {
            return;
        }
        // Built outside the lock: creating a client reads certificates.
        match build_client(&self.settings) {
            Ok(client) => {
                let mut slot = self.slot.lock();
                if slot.generation == generation {
                    slot.client = client;
                    slot.generation += 1;
                    tracing::debug!(endpoint = %self.endpoint, "replaced the KurrentDB client");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not replace the KurrentDB client; keeping the old one");
            }
        }
    }

    /// Runs one client call under the operation timeout, catching client
    /// panics, replacing a dead client, and sending again once when the
    /// request certainly changed nothing.
    pub(crate) async fn run<T, F, Fut>(&self, op: Operation, call: F) -> Result<T, StreamError>
    where
        F: Fn(Client) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, kurrentdb::Error>> + Send,
        T: Send,
    {
        let deadline = tokio::time::Instant::now() + self.config.operation_timeout;
        let mut sent_again = false;
        loop {
            let (generation, client) = self.current_client();
            let attempt = AssertUnwindSafe(call(client)).catch_unwind();
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_elapsed) => {
                    // The client may be stuck in discovery; start afresh next time.
                    self.replace_client(generation);
                    return Err(error::timed_out(&op, &self.context()));
                }
                Ok(Err(panic)) => {
                    self.replace_client(generation);
                    return Err(error::panicked(panic.as_ref(), &op, &self.context()));
                }
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(failure))) => {
                    if error::client_is_dead(&failure) {
                        self.replace_client(generation);
                    }
                    if !sent_again && error::retry_is_safe(&failure) {
                        sent_again = true;
                        tracing::debug!(error = %failure, "sending the request once more");
                        continue;
                    }
                    return Err(error::map_client_error(failure, &op, &self.context()));
                }
            }
        }
    }
}

/// Creates a client without panicking: outside a runtime `Client::new`
/// panics, and the client unwraps a few things (e.g. a bad `tlsCAFile`).
fn build_client(settings: &ClientSettings) -> Result<Client, EventStoreStreamError> {
    let handle =
        tokio::runtime::Handle::try_current().map_err(|_| EventStoreStreamError::NoRuntime)?;
    let settings = settings.clone();
    match std::panic::catch_unwind(AssertUnwindSafe(move || {
        Client::with_runtime_handle(handle, settings)
    })) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(report)) => Err(EventStoreStreamError::ClientInit(report.to_string())),
        Err(_) => Err(EventStoreStreamError::ClientInit(
            "the client panicked while starting (check tlsCAFile, userCertFile, userKeyFile)"
                .to_owned(),
        )),
    }
}
