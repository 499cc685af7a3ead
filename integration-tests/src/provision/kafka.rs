use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_kafka::{KafkaConfig, KafkaStream};
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

use super::{Provision, containers, env_var, unique_name};
use crate::fixture::{Backend, BoxError, Cleanup, Connect, Fixture};

/// The variable naming an existing broker.
pub const BOOTSTRAP_ENV: &str = "MEMSTATE_KAFKA_BOOTSTRAP";

/// The variable naming a file of librdkafka client properties (`key=value`
/// lines: `security.protocol`, `ssl.ca.location`, `sasl.mechanism`,
/// `sasl.username`, ...) that every client of the suite uses. `kafka.sh env`
/// prints it for a broker started with `MEMSTATE_KAFKA_SECURITY=sasl_ssl`.
pub const PROPERTIES_FILE_ENV: &str = "MEMSTATE_KAFKA_PROPERTIES_FILE";

/// A Kafka cluster; every case gets its own single-partition topic.
pub struct KafkaBackend {
    bootstrap: String,
    /// Client properties for every stream (TLS, SASL).
    properties: BTreeMap<String, String>,
    origin: String,
    _container: Option<ContainerAsync<Kafka>>,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Property values may be passwords: show the keys only.
        f.debug_struct("KafkaBackend")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaBackend {
    /// A backend on the brokers at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            properties: BTreeMap::new(),
            origin: "given".into(),
            _container: None,
        }
    }

    /// The same backend with these client properties on every stream.
    pub fn with_properties(mut self, properties: BTreeMap<String, String>) -> Self {
        self.properties = properties;
        self
    }
}

/// The properties of `MEMSTATE_KAFKA_PROPERTIES_FILE`, none when it is unset.
fn properties_from_env() -> Result<BTreeMap<String, String>, String> {
    let Some(path) = env_var(PROPERTIES_FILE_ENV) else {
        return Ok(BTreeMap::new());
    };
    KafkaConfig::new("unused:0", "unused")
        .with_properties_file(path.trim())
        .map(|config| config.properties)
        .map_err(|e| format!("{PROPERTIES_FILE_ENV}: {e}"))
}

/// `MEMSTATE_KAFKA_BOOTSTRAP` (with the client properties of
/// `MEMSTATE_KAFKA_PROPERTIES_FILE` when set), else an `apache/kafka`
/// container (the testcontainers module's pinned tag), else skipped.
pub async fn kafka() -> Provision {
    if let Some(bootstrap) = env_var(BOOTSTRAP_ENV) {
        let properties = match properties_from_env() {
            Ok(properties) => properties,
            // Not a silent plaintext run: the reason names the file, and
            // MEMSTATE_REQUIRE=kafka turns it into a failure.
            Err(why) => return Provision::Skipped(why),
        };
        let origin = if properties.is_empty() {
            BOOTSTRAP_ENV.to_owned()
        } else {
            format!("{BOOTSTRAP_ENV}, {PROPERTIES_FILE_ENV}")
        };
        return Provision::Ready(Arc::new(KafkaBackend {
            bootstrap,
            properties,
            origin,
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
                    properties: BTreeMap::new(),
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
        let security = self
            .properties
            .get("security.protocol")
            .map_or(String::new(), |p| format!(", {p}"));
        format!("{} (from {}{security})", self.bootstrap, self.origin)
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let topic = unique_name("memstate-conformance");
        let mut config = KafkaConfig::new(self.bootstrap.clone(), topic);
        config.properties.extend(self.properties.clone());
        let stream = KafkaStream::connect(config.clone().with_topic_creation(1)).await?;
        let cleanup = {
            let config = config.clone();
            Cleanup::new(format!("Kafka topic {:?}", config.topic), move || {
                let config = config.clone();
                Box::pin(async move {
                    KafkaStream::delete_topic(&config).await?;
                    Ok(())
                })
            })
        };
        let connect: Connect = Arc::new(move || {
            let config = config.clone();
            Box::pin(
                async move { Ok(Arc::new(KafkaStream::connect(config).await?) as Arc<dyn Stream>) },
            )
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()).with_cleanup(cleanup))
    }
}
