//! Kafka: the engine and the adapter on `KafkaStream`, against rdkafka
//! itself: a `FutureProducer` with `acks=all` and idempotence (the adapter's
//! durability settings, librdkafka's defaults otherwise) and a consumer
//! reading every message back. A raw operation is done when the consumer has
//! read its message, as an engine command is done when it is read back.

use std::sync::Arc;
use std::time::Duration;

use memstate_core::Stream;
use memstate_kafka::{KafkaConfig, KafkaStream};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::load::closed_loop;
use super::tiers::{AdapterTier, EngineTier, Tier, TierPoint, interleave_three};
use super::workload::{READ_BACK_TIMEOUT, Tag, Waiters, next_point, read_back, tagged_payload};
use super::{BackendRun, Plan};

/// The adapter's delivery timeout, used for the raw producer as well.
const DELIVERY_TIMEOUT: Duration = KafkaConfig::DEFAULT_DELIVERY_TIMEOUT;

/// Runs the three tiers, each on a fresh topic, and deletes the topics.
/// `linger_ms`, when given, is the producers' `linger.ms` in every tier (the
/// adapter's and the raw client's); else librdkafka's default (5 ms).
///
/// # Errors
///
/// Broker or engine failures, as text.
pub(crate) async fn run(
    plan: &Plan,
    bootstrap: &str,
    linger_ms: Option<u64>,
) -> Result<BackendRun, String> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let topics: Vec<KafkaConfig> = ["engine", "adapter", "raw"]
        .iter()
        .map(|tier| {
            let config = KafkaConfig::new(bootstrap, format!("memstate-bench-{tier}-{run_id}"));
            match linger_ms {
                Some(ms) => config.with_property("linger.ms", ms.to_string()),
                None => config,
            }
        })
        .collect();
    for config in &topics {
        KafkaStream::create_topic(config, 1)
            .await
            .map_err(|e| format!("creating topic {}: {e}", config.topic))?;
    }
    let result = tiers(plan, &topics).await;
    for config in &topics {
        if let Err(e) = KafkaStream::delete_topic(config).await {
            tracing::warn!(topic = %config.topic, error = %e, "could not delete a benchmark topic");
        }
    }
    let (memstate, adapter, raw) = result?;
    let linger = linger_ms.map_or_else(
        || "librdkafka's default linger.ms (5)".to_owned(),
        |ms| format!("linger.ms={ms}"),
    );
    Ok(BackendRun::new(
        "kafka",
        format!("broker {bootstrap}, one partition per topic, {linger}"),
        memstate,
        Some(adapter),
        raw,
    ))
}

type Tiers = (Vec<TierPoint>, Vec<TierPoint>, Vec<TierPoint>);

async fn tiers(plan: &Plan, topics: &[KafkaConfig]) -> Result<Tiers, String> {
    let connect = |config: &KafkaConfig| {
        let config = config.clone();
        async move {
            KafkaStream::connect(config.clone())
                .await
                .map(|s| Arc::new(s) as Arc<dyn Stream>)
                .map_err(|e| format!("connecting to topic {}: {e}", config.topic))
        }
    };
    let [engine_topic, adapter_topic, raw_topic] = topics else {
        return Err("three topics expected".into());
    };
    plan.progress("kafka: memstate = Engine::execute on KafkaStream; adapter = KafkaStream::append + subscription read-back; raw = rdkafka produce (acks=all, idempotent) + consumer read-back");
    let engine = EngineTier::start(connect(engine_topic).await?, "bench-kafka", plan).await?;
    let adapter = match connect(adapter_topic).await {
        Ok(stream) => AdapterTier::start(stream).await,
        Err(e) => Err(e),
    };
    let adapter = match adapter {
        Ok(a) => a,
        Err(e) => {
            engine.close().await;
            return Err(e);
        }
    };
    let linger = raw_topic.properties.get("linger.ms").map(String::as_str);
    let raw = match RawKafka::start(&raw_topic.bootstrap_servers, &raw_topic.topic, linger) {
        Ok(r) => r,
        Err(e) => {
            engine.close().await;
            adapter.close().await;
            return Err(e);
        }
    };
    interleave_three(plan, "kafka", &engine, &adapter, &raw).await
}

/// The raw client: a producer and a consumer reading the topic back.
struct RawKafka {
    producer: Arc<FutureProducer>,
    topic: Arc<str>,
    waiters: Waiters,
    reader: JoinHandle<()>,
}

impl RawKafka {
    fn start(bootstrap: &str, topic: &str, linger_ms: Option<&str>) -> Result<Self, String> {
        let mut producer = ClientConfig::new();
        if let Some(ms) = linger_ms {
            producer.set("linger.ms", ms);
        }
        let producer: FutureProducer = producer
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| format!("creating the raw producer: {e}"))?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{topic}-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("creating the raw consumer: {e}"))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .and_then(|()| consumer.assign(&assignment))
            .map_err(|e| format!("assigning the raw consumer: {e}"))?;
        let waiters = Waiters::default();
        let reader_waiters = waiters.clone();
        let reader = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(message) => reader_waiters.seen(message.payload().unwrap_or_default()),
                    Err(e) => tracing::warn!(error = %e, "raw consumer error"),
                }
            }
        });
        Ok(Self {
            producer: Arc::new(producer),
            topic: Arc::from(topic),
            waiters,
            reader,
        })
    }
}

#[async_trait]
impl Tier for RawKafka {
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String> {
        let size = plan.payload_size;
        let point = next_point();
        let (p, w, t) = (
            Arc::clone(&self.producer),
            self.waiters.clone(),
            Arc::clone(&self.topic),
        );
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let (producer, waiters, topic) = (Arc::clone(&p), w.clone(), Arc::clone(&t));
            async move {
                let tag = Tag::new(point, client, seq);
                let payload = tagged_payload(tag, size);
                let rx = waiters.register(tag);
                let record = FutureRecord::<(), [u8]>::to(topic.as_ref())
                    .partition(0)
                    .payload(&payload);
                if let Err((e, _)) = producer
                    .send(record, Timeout::After(DELIVERY_TIMEOUT))
                    .await
                {
                    waiters.forget(tag);
                    return Err(format!("raw produce failed: {e}"));
                }
                read_back(&waiters, tag, rx, READ_BACK_TIMEOUT).await
            }
        })
        .await?;
        Ok(TierPoint::plain(measured))
    }

    async fn close(&self) {
        self.reader.abort();
    }
}
