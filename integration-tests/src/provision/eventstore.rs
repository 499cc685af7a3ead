use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_eventstore::{EventStoreConfig, EventStoreStream, container};
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::{Provision, containers, env_var, unique_name};
use crate::fixture::{Backend, BoxError, Connect, Fixture};

/// The variable naming an existing server (a connection string).
pub const URL_ENV: &str = "MEMSTATE_EVENTSTORE_URL";

/// An EventStoreDB / KurrentDB server; every case gets its own stream.
pub struct EventStoreBackend {
    url: String,
    origin: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for EventStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStoreBackend")
            .field("url", &self.url)
            .finish()
    }
}

impl EventStoreBackend {
    /// A backend on the server at `url` (`esdb://` or `kurrentdb://`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            origin: "given".into(),
            _container: None,
        }
    }
}

/// `MEMSTATE_EVENTSTORE_URL`, else a KurrentDB container (insecure single
/// node, pinned tag, ready on its log line), else skipped.
pub async fn eventstore() -> Provision {
    if let Some(url) = env_var(URL_ENV) {
        return Provision::Ready(Arc::new(EventStoreBackend {
            url,
            origin: URL_ENV.into(),
            _container: None,
        }));
    }
    let mut image = GenericImage::new(container::IMAGE, container::TAG)
        .with_exposed_port(container::PORT.tcp())
        .with_wait_for(WaitFor::message_on_stdout(container::READY_LOG_LINE))
        .with_startup_timeout(container::STARTUP_TIMEOUT);
    for (key, value) in container::ENV {
        image = image.with_env_var(*key, *value);
    }
    match image.start().await {
        Ok(c) => {
            let host = c.get_host().await;
            let port = c.get_host_port_ipv4(container::PORT).await;
            match (host, port) {
                (Ok(host), Ok(port)) => Provision::Ready(Arc::new(EventStoreBackend {
                    url: container::connection_string(&host.to_string(), port),
                    origin: format!("testcontainers {}:{}", container::IMAGE, container::TAG),
                    _container: Some(c),
                })),
                (Err(e), _) | (_, Err(e)) => {
                    Provision::Skipped(containers::explain("KurrentDB", URL_ENV, &e))
                }
            }
        }
        Err(e) => Provision::Skipped(containers::explain("KurrentDB", URL_ENV, &e)),
    }
}

/// The server may refuse the first requests after its ready line: retry a few seconds.
async fn connect_with_retry(config: EventStoreConfig) -> Result<EventStoreStream, BoxError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match EventStoreStream::connect(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing_free_log(&e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn tracing_free_log(e: &memstate_core::StreamError) {
    eprintln!("eventstore: connect failed, retrying: {e}");
}

#[async_trait]
impl Backend for EventStoreBackend {
    fn name(&self) -> String {
        "eventstore".into()
    }

    fn location(&self) -> String {
        format!("{} (from {})", self.url, self.origin)
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let config = EventStoreConfig::new(self.url.clone(), unique_name("memstate-conformance"));
        let stream = connect_with_retry(config.clone()).await?;
        let connect: Connect = Arc::new(move || {
            let config = config.clone();
            Box::pin(
                async move { Ok(Arc::new(connect_with_retry(config).await?) as Arc<dyn Stream>) },
            )
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()))
    }
}
