//! [`Shared`]: the client and configuration an
//! [`EventStoreStream`](crate::EventStoreStream) and its subscriptions share,
//! and the one place a client call is run (timeout, panics, a dead client).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use kurrentdb::{Client, ClientSettings, ReadStreamOptions, StreamPosition};
use memstate_core::StreamError;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::config::EventStoreConfig;
use crate::connection;
use crate::error::{self, ErrorContext, EventStoreStreamError, Operation};
use crate::metadata::{self, HistoryLimits, MetadataRead};

/// What the stream and its subscriptions share.
pub(crate) struct Shared {
    pub(crate) config: EventStoreConfig,
    settings: ClientSettings,
    pub(crate) endpoint: String,
    slot: Mutex<ClientSlot>,
    /// The stream's metadata check, done once: at connect, or at the first
    /// subscription of a lazily connected stream. `None` inside: accepted
    /// without being readable.
    history: OnceCell<Option<HistoryLimits>>,
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
            history: OnceCell::new(),
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
                    if !sent_again && error::may_send_again(&op, &failure, self.config.event_ids) {
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

impl Shared {
    /// Reads the stream's metadata and decides, once, whether the stream may
    /// be used (see [`metadata::decide`]).
    pub(crate) async fn check_history(&self) -> Result<(), StreamError> {
        self.history
            .get_or_try_init(|| async {
                let read = self.read_metadata().await?;
                metadata::decide(
                    &self.config.stream_name,
                    read,
                    self.config.accept_trimming_metadata,
                )
            })
            .await
            .map(|_| ())
    }

    /// What the stream's metadata lets the server delete, once checked and
    /// readable.
    pub(crate) fn history_limits(&self) -> Option<&HistoryLimits> {
        self.history.get().and_then(Option::as_ref)
    }

    /// The newest event of the metadata stream `$$<stream>`, from the leader.
    async fn read_metadata(&self) -> Result<MetadataRead, StreamError> {
        let options = ReadStreamOptions::default()
            .position(StreamPosition::End)
            .backwards()
            .max_count(1)
            .requires_leader(true)
            .deadline(self.config.operation_timeout);
        let name = format!("$${}", self.config.stream_name);
        self.run(Operation::ReadMetadata, |client| {
            let (options, name) = (options.clone(), name.clone());
            async move {
                let denied = || {
                    MetadataRead::Unreadable(format!(
                        "reading stream {name:?} was denied (access denied)"
                    ))
                };
                let mut read = match client.read_stream(name.as_str(), &options).await {
                    Err(kurrentdb::Error::ResourceNotFound) => return Ok(MetadataRead::Absent),
                    Err(kurrentdb::Error::AccessDenied) => return Ok(denied()),
                    other => other?,
                };
                match read.next().await {
                    Ok(Some(event)) => match event.link.as_ref().or(event.event.as_ref()) {
                        Some(recorded) => Ok(MetadataRead::Found(recorded.data.clone())),
                        None => Ok(MetadataRead::Unreadable(format!(
                            "the server answered a read of {name:?} without an event"
                        ))),
                    },
                    Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => Ok(MetadataRead::Absent),
                    Err(kurrentdb::Error::AccessDenied) => Ok(denied()),
                    Err(other) => Err(other),
                }
            }
        })
        .await
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
