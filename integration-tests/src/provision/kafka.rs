use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_kafka::{KafkaConfig, KafkaStream};
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

use super::{Provision, containers, env_var, unique_name};
use crate::fixture::{Backend, BoxError, Connect, Fixture};

/// The variable naming an existing broker.
pub const BOOTSTRAP_ENV: &str = "MEMSTATE_KAFKA_BOOTSTRAP";

/// A Kafka cluster; every case gets its own single-partition topic.
pub struct KafkaBackend {
    bootstrap: String,
    origin: String,
    _container: Option<ContainerAsync<Kafka>>,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl KafkaBackend {
    /// A backend on the brokers at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            origin: "given".into(),
            _container: None,
        }
    }
}

/// `MEMSTATE_KAFKA_BOOTSTRAP`, else an `apache/kafka` container (the
/// testcontainers module's pinned tag), else skipped.
pub async fn kafka() -> Provision {
    if let Some(bootstrap) = env_var(BOOTSTRAP_ENV) {
        return Provision::Ready(Arc::new(KafkaBackend {
            bootstrap,
            origin: BOOTSTRAP_ENV.into(),
            _container: None,
        }));
    }
    match Kafka::default().with_jvm_image().start().await {
        Ok(container) => {
            let host = container.get_host().await;
            let port = container.get_host_port_ipv4(KAFKA_PORT).await;
            match (host, port) {
                (Ok(host), Ok(port)) => Provision::Ready(Arc::new(KafkaBackend {
                    bootstrap: format!("{host}:{port}"),
                    origin: "testcontainers apache/kafka".into(),
                    _container: Some(container),
                })),
                (Err(e), _) | (_, Err(e)) => {
                    Provision::Skipped(containers::explain("Kafka", BOOTSTRAP_ENV, &e))
                }
            }
        }
        Err(e) => Provision::Skipped(containers::explain("Kafka", BOOTSTRAP_ENV, &e)),
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn name(&self) -> String {
        "kafka".into()
    }

    fn location(&self) -> String {
        format!("{} (from {})", self.bootstrap, self.origin)
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let topic = unique_name("memstate-conformance");
        let config = KafkaConfig::new(self.bootstrap.clone(), topic);
        let stream = KafkaStream::connect(config.clone().with_topic_creation(1)).await?;
        let connect: Connect = Arc::new(move || {
            let config = config.clone();
            Box::pin(
                async move { Ok(Arc::new(KafkaStream::connect(config).await?) as Arc<dyn Stream>) },
            )
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()))
    }
}
