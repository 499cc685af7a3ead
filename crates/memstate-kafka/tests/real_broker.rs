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

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashSet;
use std::sync::Arc;
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
async fn appended_records_come_back_in_order_with_offsets_as_cursors() {
    let (config, stream) = fresh("order").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let cursors = stream.append(vec![bytes(format!("r{i}"))]).await.unwrap();
        assert_eq!(cursors, vec![Cursor::new(i.to_string())]);
        expected.push(format!("r{i}"));
    }
    let batch = stream
        .append(vec![bytes("r5"), bytes("r6"), bytes("r7")])
        .await
        .unwrap();
    assert_eq!(
        batch,
        vec![Cursor::new("5"), Cursor::new("6"), Cursor::new("7")]
    );
    expected.extend(["r5", "r6", "r7"].map(String::from));

    let got = take(&mut stream.subscribe(None).await.unwrap(), 8).await;
    assert_eq!(texts(&got), expected);
    let cursors: Vec<String> = got.iter().map(|r| r.cursor.to_string()).collect();
    assert_eq!(cursors, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(KafkaStream::delete_topic(&config).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn subscribing_after_a_cursor_yields_the_suffix_then_follows_the_tail() {
    let (_config, stream) = fresh("suffix").await;
    let cursors = stream
        .append(vec![bytes("a"), bytes("b"), bytes("c")])
        .await
        .unwrap();
    let mut sub = stream.subscribe(Some(cursors[0].clone())).await.unwrap();
    assert_eq!(texts(&take(&mut sub, 2).await), ["b", "c"]);

    let writer = stream.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.append(vec![bytes("d")]).await
    });
    let tail = take(&mut sub, 1).await;
    assert_eq!(
        (tail[0].cursor.as_str(), &tail[0].payload[..]),
        ("3", &b"d"[..])
    );
    late.await.unwrap().unwrap();

    // After the last record: nothing until something new arrives.
    let mut at_end = stream.subscribe(Some(Cursor::new("3"))).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), at_end.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn head_is_none_when_empty_then_the_last_durable_offset() {
    let (config, stream) = fresh("head").await;
    assert!(stream.capabilities().exact_head);
    assert_eq!(stream.head().await.unwrap(), None);
    stream.append(vec![bytes("x")]).await.unwrap();
    let last = stream.append(vec![bytes("y"), bytes("z")]).await.unwrap();
    assert_eq!(stream.head().await.unwrap(), Some(last[1].clone()));
    let other = KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
        .await
        .unwrap();
    assert_eq!(other.head().await.unwrap(), Some(Cursor::new("2")));
    assert_eq!(
        stream
            .compare_cursors(&Cursor::new("9"), &Cursor::new("10"))
            .unwrap(),
        std::cmp::Ordering::Less,
        "cursors compare as numbers, not strings"
    );
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
async fn two_producers_are_seen_identically_by_two_consumers() {
    let (config, _creator) = fresh("two-writers").await;
    let per_writer = 40;
    let mut writers = Vec::new();
    for w in 0..2 {
        // Each writer is its own client (its own producer), as two nodes are.
        let stream = KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
            .await
            .unwrap();
        writers.push(tokio::spawn(async move {
            let mut appends = Vec::new();
            for i in 0..per_writer {
                let stream = stream.clone();
                // Several appends in flight per writer, as the engine does.
                appends.push(tokio::spawn(async move {
                    stream.append(vec![bytes(format!("w{w}-{i}"))]).await
                }));
                if i % 4 == 3 {
                    for a in appends.drain(..) {
                        a.await.unwrap().unwrap();
                    }
                }
            }
            for a in appends {
                a.await.unwrap().unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let reader_a = KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
        .await
        .unwrap();
    let reader_b = KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
        .await
        .unwrap();
    let a = take(&mut reader_a.subscribe(None).await.unwrap(), 2 * per_writer).await;
    let b = take(&mut reader_b.subscribe(None).await.unwrap(), 2 * per_writer).await;
    assert_eq!(a, b, "two readers saw different sequences");
    let distinct: HashSet<&Bytes> = a.iter().map(|r| &r.payload).collect();
    assert_eq!(
        distinct.len(),
        2 * per_writer,
        "a record was lost or doubled"
    );
    let cursors: Vec<i64> = a
        .iter()
        .map(|r| r.cursor.as_str().parse().unwrap())
        .collect();
    assert!(
        cursors.windows(2).all(|p| p[1] == p[0] + 1),
        "gap or reorder: {cursors:?}"
    );
    assert_eq!(
        reader_a.head().await.unwrap(),
        Some(a[a.len() - 1].cursor.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn the_records_of_one_append_stay_together_among_concurrent_writers() {
    let (config, stream) = fresh("contiguous").await;
    let mut tasks = Vec::new();
    for w in 0..3 {
        let client = if w == 0 {
            stream.clone()
        } else {
            KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
                .await
                .unwrap()
        };
        tasks.push(tokio::spawn(async move {
            for r in 0..10 {
                let group = (0..3).map(|k| bytes(format!("g{w}-{r}-{k}"))).collect();
                let cursors = client.append(group).await.unwrap();
                let offsets: Vec<i64> = cursors
                    .iter()
                    .map(|c| c.as_str().parse().unwrap())
                    .collect();
                assert_eq!(offsets, vec![offsets[0], offsets[0] + 1, offsets[0] + 2]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = texts(&take(&mut stream.subscribe(None).await.unwrap(), 90).await);
    for chunk in got.chunks(3) {
        let group = chunk[0].strip_suffix("-0").unwrap();
        assert_eq!(
            chunk,
            (0..3).map(|k| format!("{group}-{k}")).collect::<Vec<_>>(),
            "split: {chunk:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn an_oversized_record_is_refused_and_one_at_the_limit_is_stored() {
    let (_config, stream) = fresh("size").await;
    let limit = stream.capabilities().max_record_size;
    assert_eq!(limit, KafkaConfig::DEFAULT_MAX_RECORD_SIZE);
    let err = stream
        .append(vec![Bytes::from(vec![b'x'; limit + 1])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::RecordTooLarge { size, limit: l } if size == limit + 1 && l == limit),
        "{err}"
    );
    assert_eq!(
        stream.head().await.unwrap(),
        None,
        "the refused record was written"
    );
    // The advertised limit is real: the broker (default message.max.bytes)
    // takes a record of exactly that size.
    let at_limit = Bytes::from(vec![b'y'; limit]);
    stream.append(vec![at_limit.clone()]).await.unwrap();
    let got = take(&mut stream.subscribe(None).await.unwrap(), 1).await;
    assert_eq!(got[0].payload, at_limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_log_whose_beginning_was_deleted_is_history_truncated() {
    let (config, stream) = fresh("truncated").await;
    stream
        .append(vec![bytes("0"), bytes("1"), bytes("2"), bytes("3")])
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn a_reopened_stream_returns_everything_appended_before() {
    let (config, stream) = fresh("reopen").await;
    stream
        .append(vec![bytes("kept-0"), bytes("kept-1")])
        .await
        .unwrap();
    drop(stream);
    let reopened = KafkaStream::connect(KafkaConfig::new(bootstrap(), &config.topic))
        .await
        .unwrap();
    let got = take(&mut reopened.subscribe(None).await.unwrap(), 2).await;
    assert_eq!(texts(&got), ["kept-0", "kept-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MEMSTATE_KAFKA_BOOTSTRAP; run: integration-tests/scripts/kafka.sh start"]
async fn many_concurrent_appends_from_one_handle_land_once_each() {
    let (_config, stream) = fresh("inflight").await;
    let stream = Arc::new(stream);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let stream = Arc::clone(&stream);
        tasks.push(tokio::spawn(async move {
            stream.append(vec![bytes(format!("c{i}"))]).await
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.push(
            t.await.unwrap().unwrap()[0]
                .as_str()
                .parse::<i64>()
                .unwrap(),
        );
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..100).collect::<Vec<i64>>());
    let got = take(&mut stream.subscribe(None).await.unwrap(), 100).await;
    let distinct: HashSet<String> = texts(&got).into_iter().collect();
    assert_eq!(distinct.len(), 100);
}
