//! Behaviour against librdkafka's in-process mock cluster: fast, no broker
//! needed. The mock is not Kafka (no CreateTopics, no configs), so these tests
//! never count as conformance; `real_broker.rs` covers the same ground against
//! a real broker.

use std::time::{Duration, Instant};

use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};
use memstate_kafka::{KafkaConfig, KafkaStream};
use rdkafka::mocking::MockCluster;

fn config(mock: &MockCluster<'_, impl rdkafka::ClientContext>, topic: &str) -> KafkaConfig {
    KafkaConfig::new(mock.bootstrap_servers(), topic)
        .with_operation_timeout(Duration::from_secs(3))
        .with_delivery_timeout(Duration::from_secs(3))
}

fn payloads(items: &[&'static str]) -> Vec<Bytes> {
    items
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_not_found_and_not_created() {
    let mock = MockCluster::new(1).unwrap();
    let err = KafkaStream::connect(config(&mock, "absent"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::NotFound { ref name, .. } if name == "absent"),
        "{err}"
    );
    // A second look still finds nothing: the metadata lookup did not create it.
    let again = KafkaStream::connect(config(&mock, "absent"))
        .await
        .unwrap_err();
    assert!(matches!(again, StreamError::NotFound { .. }), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_several_partitions_is_refused() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("wide", 3, 1).unwrap();
    let err = KafkaStream::connect(config(&mock, "wide"))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
    assert!(err.to_string().contains("3 partitions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_come_back_in_order_with_offsets_as_cursors() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("log", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "log")).await.unwrap();
    assert_eq!(stream.head().await.unwrap(), None);

    let first = stream.append(payloads(&["a"])).await.unwrap();
    let second = stream.append(payloads(&["b"])).await.unwrap();
    let third = stream.append(payloads(&["c"])).await.unwrap();
    assert_eq!(first, vec![Cursor::new("0")]);
    assert_eq!(second, vec![Cursor::new("1")]);
    assert_eq!(third, vec![Cursor::new("2")]);
    assert_eq!(stream.head().await.unwrap(), Some(Cursor::new("2")));

    let mut all = stream.subscribe(None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let record = all.next().await.unwrap().unwrap();
        seen.push((record.cursor.to_string(), record.payload));
    }
    assert_eq!(
        seen,
        vec![
            ("0".to_owned(), Bytes::from_static(b"a")),
            ("1".to_owned(), Bytes::from_static(b"b")),
            ("2".to_owned(), Bytes::from_static(b"c")),
        ]
    );

    let mut suffix = stream.subscribe(Some(Cursor::new("1"))).await.unwrap();
    let record = suffix.next().await.unwrap().unwrap();
    assert_eq!(
        (record.cursor, record.payload),
        (Cursor::new("2"), Bytes::from_static(b"c"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_beyond_the_end_is_invalid() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("short", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "short")).await.unwrap();
    stream.append(payloads(&["only"])).await.unwrap();
    // After "0" is fine (the next record does not exist yet); after "5" means
    // the cursor belongs to another log.
    assert!(stream.subscribe(Some(Cursor::new("0"))).await.is_ok());
    let err = stream.subscribe(Some(Cursor::new("5"))).await.unwrap_err();
    assert!(matches!(err, StreamError::InvalidCursor { .. }), "{err}");
    let err = stream.subscribe(Some(Cursor::new("x"))).await.unwrap_err();
    assert!(matches!(err, StreamError::InvalidCursor { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_refused_before_any_io() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("small", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "small").with_max_record_size(8))
        .await
        .unwrap();
    assert_eq!(stream.capabilities().max_record_size, 8);
    let err = stream
        .append(vec![Bytes::from(vec![0u8; 9])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::RecordTooLarge { size: 9, limit: 8 }),
        "{err}"
    );
    assert_eq!(
        stream.head().await.unwrap(),
        None,
        "nothing of the refused call was written"
    );
    let err = stream
        .append(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Unsupported(_)), "{err}");
    assert_eq!(
        stream.head().await.unwrap(),
        None,
        "a refused multi-record append wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_down_fails_appends_and_head_in_bounded_time() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("fragile", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "fragile"))
        .await
        .unwrap();
    stream.append(payloads(&["before"])).await.unwrap();
    mock.broker_down(-1).unwrap();

    let started = Instant::now();
    let err = stream.append(payloads(&["during"])).await.unwrap_err();
    assert!(matches!(err, StreamError::Ambiguous { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "append took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = stream.head().await.unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Timeout { .. } | StreamError::Backend { .. }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "head took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_reports_a_broker_that_went_away() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("quiet", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "quiet")).await.unwrap();
    let mut subscription = stream.subscribe(None).await.unwrap();
    mock.broker_down(-1).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await;
    let err = result
        .expect("next() must not wait forever on a dead broker")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Timeout { .. } | StreamError::Backend { .. }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_one_handle_all_land_once() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("busy", 1, 1).unwrap();
    let stream = KafkaStream::connect(config(&mock, "busy")).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut cursors = Vec::new();
            for i in 0..10 {
                let got = stream
                    .append(vec![Bytes::from(format!("{task}-{i}"))])
                    .await
                    .unwrap();
                assert_eq!(got.len(), 1);
                cursors.extend(got);
            }
            cursors
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let mut offsets: Vec<i64> = all.iter().map(|c| c.as_str().parse().unwrap()).collect();
    offsets.sort_unstable();
    let expected: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(offsets, expected, "every record exactly once, no gaps");
    assert_eq!(
        stream.head().await.unwrap(),
        Some(Cursor::new((offsets.len() - 1).to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_soon_after_an_outage() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("outage", 1, 1).unwrap();
    // Quick reconnects, so that the time measured below is the adapter's.
    let config = config(&mock, "outage")
        .with_operation_timeout(Duration::from_secs(10))
        .with_property("reconnect.backoff.max.ms", "200");
    let stream = KafkaStream::connect(config).await.unwrap();
    stream.append(payloads(&["before"])).await.unwrap();
    let mut subscription = stream.subscribe(None).await.unwrap();
    assert_eq!(
        &subscription.next().await.unwrap().unwrap().payload[..],
        b"before"
    );

    // Down for a while nobody polls: librdkafka queues an error per retry.
    mock.broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    mock.broker_up(-1).unwrap();
    stream.append(payloads(&["after"])).await.unwrap();

    let started = Instant::now();
    let record = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("the subscription must resume")
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.cursor, &record.payload[..]),
        (Cursor::new("1"), &b"after"[..])
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "resumed after {:?}",
        started.elapsed()
    );
}
