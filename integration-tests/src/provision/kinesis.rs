use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_kinesis::{KinesisConfig, KinesisStream};
use testcontainers_modules::localstack::LocalStack;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

use super::{Provision, containers, env_var, unique_name};
use crate::fixture::{Backend, BoxError, Cleanup, Connect, Fixture};

/// The variable naming an existing Kinesis endpoint (an emulator).
pub const ENDPOINT_ENV: &str = "MEMSTATE_KINESIS_ENDPOINT";

/// A Kinesis endpoint; every case gets its own one-shard stream. Static test
/// credentials only: the AWS default chain (which probes the instance-metadata
/// address) is never used here.
pub struct KinesisBackend {
    endpoint: String,
    origin: String,
    _container: Option<ContainerAsync<LocalStack>>,
}

impl std::fmt::Debug for KinesisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBackend")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl KinesisBackend {
    /// A backend on the emulator at `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            origin: "given".into(),
            _container: None,
        }
    }
}

/// `MEMSTATE_KINESIS_ENDPOINT`, else a LocalStack container running only
/// Kinesis (the testcontainers module's pinned tag), else skipped.
pub async fn kinesis() -> Provision {
    // SAFETY of the environment: tests must never reach the metadata address.
    if std::env::var_os("AWS_EC2_METADATA_DISABLED").is_none() {
        return Provision::Skipped(
            "AWS_EC2_METADATA_DISABLED=true must be set for Kinesis tests".into(),
        );
    }
    if let Some(endpoint) = env_var(ENDPOINT_ENV) {
        return Provision::Ready(Arc::new(KinesisBackend {
            endpoint,
            origin: ENDPOINT_ENV.into(),
            _container: None,
        }));
    }
    match LocalStack::default()
        .with_env_var("SERVICES", "kinesis")
        .start()
        .await
    {
        Ok(container) => {
            let host = container.get_host().await;
            let port = container.get_host_port_ipv4(4566).await;
            match (host, port) {
                (Ok(host), Ok(port)) => Provision::Ready(Arc::new(KinesisBackend {
                    endpoint: format!("http://{host}:{port}"),
                    origin: "testcontainers localstack".into(),
                    _container: Some(container),
                })),
                (Err(e), _) | (_, Err(e)) => {
                    Provision::Skipped(containers::explain("LocalStack", ENDPOINT_ENV, &e))
                }
            }
        }
        Err(e) => Provision::Skipped(containers::explain("LocalStack", ENDPOINT_ENV, &e)),
    }
}

#[async_trait]
impl Backend for KinesisBackend {
    fn name(&self) -> String {
        "kinesis".into()
    }

    fn location(&self) -> String {
        format!("{} (from {})", self.endpoint, self.origin)
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let config =
            KinesisConfig::emulator(self.endpoint.clone(), unique_name("memstate-conformance"));
        let stream = KinesisStream::connect(config.clone()).await?;
        let cleanup = {
            let stream = stream.clone();
            Cleanup::new(
                format!("Kinesis stream {:?}", stream.stream_name()),
                move || {
                    let stream = stream.clone();
                    Box::pin(async move { Ok(stream.delete().await?) })
                },
            )
        };
        let connect: Connect = Arc::new(move || {
            let config = config.clone().with_create_if_missing(false);
            Box::pin(async move {
                Ok(Arc::new(KinesisStream::connect(config).await?) as Arc<dyn Stream>)
            })
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()).with_cleanup(cleanup))
    }
}
