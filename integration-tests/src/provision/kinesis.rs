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
///
/// In enhanced fan-out mode every stream handle a case opens (the fixture's
/// and each `new_client`, i.e. each node) registers its own consumer, as
/// nodes do; the fixture's is deregistered by `close` when the case ends,
/// the others go with the stream.
pub struct KinesisBackend {
    endpoint: String,
    origin: String,
    fan_out: bool,
    _container: Option<ContainerAsync<LocalStack>>,
}

impl std::fmt::Debug for KinesisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBackend")
            .field("endpoint", &self.endpoint)
            .field("fan_out", &self.fan_out)
            .finish()
    }
}

impl KinesisBackend {
    /// A backend on the emulator at `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            origin: "given".into(),
            fan_out: false,
            _container: None,
        }
    }

    /// Reads by enhanced fan-out (`SubscribeToShard`) instead of polling.
    pub fn with_fan_out(mut self, fan_out: bool) -> Self {
        self.fan_out = fan_out;
        self
    }

    fn config(&self, stream: &str) -> KinesisConfig {
        let config = KinesisConfig::emulator(self.endpoint.clone(), stream);
        if self.fan_out {
            config.with_enhanced_fan_out(unique_name("node"))
        } else {
            config
        }
    }
}

/// [`kinesis`], with every stream reading by enhanced fan-out.
pub async fn kinesis_fan_out() -> Provision {
    provision(true).await
}

/// `MEMSTATE_KINESIS_ENDPOINT`, else a LocalStack container running only
/// Kinesis (the testcontainers module's pinned tag), else skipped.
pub async fn kinesis() -> Provision {
    provision(false).await
}

async fn provision(fan_out: bool) -> Provision {
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
            fan_out,
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
                    fan_out,
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
        if self.fan_out {
            "kinesis-fanout".into()
        } else {
            "kinesis".into()
        }
    }

    fn location(&self) -> String {
        let mode = if self.fan_out {
            "enhanced fan-out"
        } else {
            "polling"
        };
        format!(
            "{} (from {}), reading by {mode}",
            self.endpoint, self.origin
        )
    }

    fn volume_limit(&self) -> Option<String> {
        self.fan_out.then(|| {
            "the emulator pushes SubscribeToShard events once per second (append to pushed \
             record: p50 1.0 s measured), so 10,000 commands from 64 callers take about 160 s of \
             pushes alone, at the edge of the 180 s case timeout (it timed out in two of three \
             runs on a busy 2-core machine); the polling run (--test kinesis) carries this case"
                .to_owned()
        })
    }

    async fn fresh(&self) -> Result<Fixture, BoxError> {
        let config = self.config(&unique_name("memstate-conformance"));
        let stream = KinesisStream::connect(config.clone()).await?;
        let cleanup = {
            let stream = stream.clone();
            Cleanup::new(
                format!("Kinesis stream {:?}", stream.stream_name()),
                move || {
                    let stream = stream.clone();
                    Box::pin(async move {
                        stream.close().await?;
                        Ok(stream.delete().await?)
                    })
                },
            )
        };
        let fan_out = self.fan_out;
        let connect: Connect = Arc::new(move || {
            let mut config = config.clone().with_create_if_missing(false);
            if fan_out {
                // Another node: its own consumer.
                config = config.with_enhanced_fan_out(unique_name("node"));
            }
            Box::pin(async move {
                Ok(Arc::new(KinesisStream::connect(config).await?) as Arc<dyn Stream>)
            })
        });
        Ok(Fixture::new(Arc::new(stream), connect, ()).with_cleanup(cleanup))
    }
}
