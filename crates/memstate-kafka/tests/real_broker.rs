//! Behaviour against a real Kafka broker at `MEMSTATE_KAFKA_BOOTSTRAP`.
//!
//! Every test here is `#[ignore]`d so that a plain `cargo test` without a
//! broker shows them as ignored, not passed. To run them:
//!
//! ```sh
//! integration-tests/scripts/kafka.sh install && integration-tests/scripts/kafka.sh start
//! eval "$(integration-tests/scripts/kafka.sh env)"
//! cargo test -p memstate-kafka --test real_broker -- --ignored
//! ```
//!
//! Run with `--ignored` but without the variable, they fail with that hint.
//!
//! Only what is specific to Kafka lives here (topic checks, offsets as
//! cursors, retention, records written by other clients); the rules every
//! adapter follows are the conformance suite's (`memstate-conformance`,
//! `cargo test -p memstate-conformance --test kafka`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Cursor, Record, Stream, StreamError, Subscription};
use memstate_kafka::{KafkaConfig, KafkaStream};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn bootstrap() -> String {
    match std::env::var("MEMSTATE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "MEMSTATE_KAFKA_BOOTSTRAP is not set. Start a local broker and export it:\n  \
             integration-tests/scripts/kafka.sh install && integration-tests/scripts/kafka.sh start\n  \
             eval \"$(integration-tests/scripts/kafka.sh env)\""
        ),
    }
}

fn unique_topic(tag: &str) -> String {
    format!("memstate-test-{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// A configuration for a fresh, unique topic that `connect` creates.
fn fresh_config(tag: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap(), unique_topic(tag))
        .with_topic_creation(1)
        .with_operation_timeout(Duration::from_secs(20))
}

async fn fresh(tag: &str) -> (KafkaConfig, KafkaStream) {
    let config = fresh_config(tag);
    let stream = KafkaStream::connect(config.clone()).await.unwrap();
    (config, stream)
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap()
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)))
}

/// Creates a topic behind the adapter's back, as an operator would, and
/// waits until the cluster's metadata shows all its partitions.
async fn create_topic_directly(new_topic: NewTopic<'_>) {
    let results = admin()
        .create_topics([&new_topic], &admin_options())
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    for _ in 0..100 {
        let metadata = producer
            .client()
            .fetch_metadata(Some(new_topic.name), Duration::from_secs(20))
            .unwrap();
        let visible = metadata.topics().iter().any(|t| {
            t.name() == new_topic.name
                && t.error().is_none()
                && t.partitions().len() == new_topic.num_partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if visible {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {} did not appear in metadata", new_topic.name);
}

fn bytes(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Ok(Some(record))) => out.push(record),
            Ok(Ok(None)) => panic!("subscription ended after {} of {n} records", out.len()),
            Ok(Err(e)) => panic!(
                "subscription failed after {} of {n} records: {e}",
                out.len()
            ),
            Err(_) => panic!("waited {WAIT:?} for record {} of {n}", out.len()),
        }
    }
    out
}

fn texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn cursors_are_the_partition_offsets_in_decimal() {
    let (config, stream) = fresh("order").await;
    for i in 0..5 {
        let cursors = stream.append(vec![bytes(format!("r{i}"))]).await.unwrap();
        assert_eq!(cursors, vec![Cursor::new(i.to_string())]);
    }
    let got = take(&mut stream.subscribe(None).await.unwrap(), 5).await;
    let cursors: Vec<String> = got.iter().map(|r| r.cursor.to_string()).collect();
    assert_eq!(cursors, (0..5).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(KafkaStream::delete_topic(&config).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_topic_with_several_partitions_is_refused() {
    let topic = unique_topic("wide");
    create_topic_directly(NewTopic::new(&topic, 3, TopicReplication::Fixed(1))).await;
    let err = KafkaStream::connect(KafkaConfig::new(bootstrap(), &topic))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
    assert!(err.to_string().contains("3 partitions"), "{err}");
    // Asking for creation does not paper over it either.
    let err = KafkaStream::connect(KafkaConfig::new(bootstrap(), &topic).with_topic_creation(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_missing_topic_is_refused_and_not_created() {
    // The local broker runs with auto.create.topics.enable=true (Kafka's
    // default), so this also proves the adapter's lookups create nothing.
    let topic = unique_topic("missing");
    let config = KafkaConfig::new(bootstrap(), &topic);
    for _ in 0..2 {
        let err = KafkaStream::connect(config.clone()).await.unwrap_err();
        assert!(
            matches!(err, StreamError::NotFound { ref name, .. } if *name == topic),
            "{err}"
        );
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let metadata = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap();
    assert!(
        metadata.topics().iter().all(|t| t.name() != topic),
        "the topic was created by a lookup"
    );
    assert!(
        !KafkaStream::delete_topic(&config).await.unwrap(),
        "nothing to delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_log_whose_beginning_was_deleted_is_history_truncated() {
    let (config, stream) = fresh("truncated").await;
    for i in 0..4 {
        stream.append(vec![bytes(i.to_string())]).await.unwrap();
    }
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&config.topic, 0, Offset::Offset(2))
        .unwrap();
    admin()
        .delete_records(&upto, &admin_options())
        .await
        .unwrap();

    for after in [None, Some(Cursor::new("0"))] {
        let err = stream.subscribe(after.clone()).await.unwrap_err();
        assert!(
            matches!(err, StreamError::HistoryTruncated { .. }),
            "{after:?}: {err}"
        );
    }
    // From the first record still stored, the rest is whole.
    let mut sub = stream.subscribe(Some(Cursor::new("1"))).await.unwrap();
    assert_eq!(texts(&take(&mut sub, 2).await), ["2", "3"]);
    assert_eq!(stream.head().await.unwrap(), Some(Cursor::new("3")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_record_without_a_value_is_read_as_an_empty_payload() {
    let (config, stream) = fresh("null").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&config.topic)
                .partition(0)
                .key("tombstone"),
            WAIT,
        )
        .await
        .unwrap();
    stream.append(vec![bytes("after")]).await.unwrap();
    let got = take(&mut stream.subscribe(None).await.unwrap(), 2).await;
    assert_eq!(got[0].payload, Bytes::new());
    assert_eq!(got[1].payload, bytes("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_created_topic_has_one_partition_and_keeps_its_whole_history() {
    let config = KafkaConfig::new(bootstrap(), unique_topic("created"));
    assert!(KafkaStream::create_topic(&config, 1).await.unwrap());
    assert!(
        !KafkaStream::create_topic(&config, 1).await.unwrap(),
        "second creation is a no-op"
    );
    let described = admin()
        .describe_configs([&ResourceSpecifier::Topic(&config.topic)], &admin_options())
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let value = |k: &str| resource.get(k).and_then(|e| e.value.clone());
    assert_eq!(value("retention.ms").as_deref(), Some("-1"));
    assert_eq!(value("retention.bytes").as_deref(), Some("-1"));
    assert_eq!(value("cleanup.policy").as_deref(), Some("delete"));
    // Connect without creation now finds it.
    let stream = KafkaStream::connect(config.clone()).await.unwrap();
    assert_eq!(stream.head().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_compacted_topic_is_refused() {
    let topic = unique_topic("compacted");
    create_topic_directly(
        NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
    )
    .await;
    let err = KafkaStream::connect(KafkaConfig::new(bootstrap(), &topic))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
    assert!(err.to_string().contains("compact"), "{err}");
}

#[tokio::test]
#[ignore = "needs a Kafka broker: set MEMSTATE_KAFKA_BOOTSTRAP and run with --ignored"]
async fn a_single_replica_topic_is_reported_as_surviving_no_broker_loss_and_refused_when_strict() {
    let (config, stream) = fresh("durability").await;

    let durability = stream.durability();

    // One broker, replication factor 1: the broker's own answer, read at connect.
    assert_eq!(durability.replication_factor, 1);
    assert_eq!(durability.min_insync_replicas, Some(1));
    assert_eq!(durability.unclean_leader_election, Some(false));
    assert_eq!(durability.broker_losses_survived(), Some(0));
    let strict = KafkaStream::connect(config.clone().with_strict_durability(true))
        .await
        .unwrap_err();
    assert!(
        matches!(&strict, StreamError::Misconfigured { reason, .. } if reason.contains("min.insync.replicas=2")),
        "{strict:?}"
    );
    KafkaStream::delete_topic(&config).await.unwrap();
}
