//! Enhanced fan-out against a real Kinesis emulator (kinesis-mock):
//! registration, pushed records, deregistration on close.
//!
//! Ignored by default; run them with an emulator:
//!
//! ```sh
//! integration-tests/scripts/kinesis.sh start
//! eval "$(integration-tests/scripts/kinesis.sh env)"
//! cargo test -p memstate-kinesis --test fanout_emulator -- --ignored
//! ```
//!
//! Run with `--ignored` but without `MEMSTATE_KINESIS_ENDPOINT`, they fail.
//! The five-minute renewal cannot be tested here (kinesis-mock keeps a
//! subscription after its client is gone): `tests/fanout.rs` covers it with
//! a stubbed client.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Stream, StreamError};
use memstate_kinesis::{ENDPOINT_ENV, KinesisConfig, KinesisStream};

fn fresh_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn fan_out_config(stream: &str, consumer: &str) -> KinesisConfig {
    KinesisConfig::emulator_from_env(stream)
        .unwrap_or_else(|| panic!("{ENDPOINT_ENV} is not set"))
        .with_enhanced_fan_out(consumer)
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn records_are_pushed_to_a_registered_consumer_that_close_deregisters() {
    let stream_name = fresh_name("memstate-test");
    let consumer = fresh_name("node");
    let stream = KinesisStream::connect(fan_out_config(&stream_name, &consumer))
        .await
        .expect("connect in fan-out mode");
    let arn = stream
        .consumer_arn()
        .expect("a registered consumer")
        .to_owned();
    let described = stream
        .client()
        .describe_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap();
    let description = described.consumer_description().unwrap();
    assert_eq!(description.consumer_name(), consumer);
    assert_eq!(description.consumer_status().as_str(), "ACTIVE");

    let mut sub = stream.subscribe(None).await.unwrap();
    let payloads = ["one", "two", "three"];
    for p in payloads {
        stream
            .append(vec![Bytes::from_static(p.as_bytes())])
            .await
            .unwrap();
    }
    for p in payloads {
        let record = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("a pushed record within 30 s")
            .unwrap()
            .expect("the subscription is open");
        assert_eq!(record.payload, Bytes::from_static(p.as_bytes()));
    }
    let stats = stream.read_stats();
    assert_eq!(stats.records_pushed, 3, "{stats:?}");
    assert_eq!(stats.records_polled, 0, "{stats:?}");
    assert_eq!(stats.push_sessions, 1, "{stats:?}");

    // A second handle with the same consumer name finds the consumer again.
    let again = KinesisStream::connect(
        fan_out_config(&stream_name, &consumer).with_create_if_missing(false),
    )
    .await
    .unwrap();
    assert_eq!(again.consumer_arn(), Some(arn.as_str()));
    drop(again);

    stream.close().await.expect("deregister on close");
    let ended = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("the subscription ends after close");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    assert!(matches!(
        stream.subscribe(None).await,
        Err(StreamError::Closed)
    ));
    assert!(matches!(
        stream.append(vec![Bytes::from_static(b"late")]).await,
        Err(StreamError::Closed)
    ));
    // Kinesis no longer lists it (deletion may take a moment).
    let mut gone = false;
    for _ in 0..50 {
        let listed = stream
            .client()
            .list_stream_consumers()
            .stream_arn(stream_arn(&stream).await)
            .send()
            .await
            .unwrap();
        let active = listed
            .consumers()
            .iter()
            .any(|c| c.consumer_name() == consumer && c.consumer_status().as_str() == "ACTIVE");
        if !active {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "consumer {consumer} still registered after close");
    stream.delete().await.unwrap();
}

async fn stream_arn(stream: &KinesisStream) -> String {
    stream
        .client()
        .describe_stream_summary()
        .stream_name(stream.stream_name())
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_owned()
}
