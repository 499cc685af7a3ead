//! KinesisStream against a real Kinesis emulator (kinesis-mock).
//!
//! Ignored by default; run them with an emulator:
//!
//! ```sh
//! integration-tests/scripts/kinesis.sh start
//! eval "$(integration-tests/scripts/kinesis.sh env)"
//! cargo test -p memstate-kinesis --test emulator -- --ignored
//! ```
//!
//! Run with `--ignored` but without `MEMSTATE_KINESIS_ENDPOINT`, they fail
//! (they never pass silently). Each test uses a fresh stream and deletes it.
//!
//! Only what is specific to Kinesis lives here (stream creation, shard
//! lookup, sequence numbers the shard never issued); the rules every adapter
//! follows are the conformance suite's
//! (`cargo test -p memstate-conformance --test kinesis`).

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};
use memstate_kinesis::{ENDPOINT_ENV, KinesisConfig, KinesisStream};

const NEEDS_EMULATOR: &str = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT \
     (integration-tests/scripts/kinesis.sh start) and run with --ignored";

fn fresh_name() -> String {
    format!("memstate-test-{}", uuid::Uuid::new_v4().simple())
}

fn emulator_config(name: &str) -> KinesisConfig {
    KinesisConfig::emulator_from_env(name)
        .unwrap_or_else(|| panic!("{ENDPOINT_ENV} is not set: {NEEDS_EMULATOR}"))
}

async fn fresh_stream() -> KinesisStream {
    KinesisStream::connect(emulator_config(&fresh_name()))
        .await
        .expect("create a fresh stream on the emulator")
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn a_created_stream_keeps_records_for_the_maximum_and_a_default_one_is_refused() {
    const HOUR: Duration = Duration::from_secs(3600);
    let created = fresh_stream().await;
    // What Kinesis itself reports, not only what the adapter remembers.
    let summary = created
        .client()
        .describe_stream_summary()
        .stream_name(created.stream_name())
        .send()
        .await
        .unwrap();
    let hours = summary
        .stream_description_summary()
        .map(|s| s.retention_period_hours());
    assert_eq!(hours, Some(8760));
    assert_eq!(created.retention(), 8760 * HOUR);

    // A stream created elsewhere with Kinesis's default of 24 hours.
    let name = fresh_name();
    created
        .client()
        .create_stream()
        .stream_name(&name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let config = emulator_config(&name).with_create_if_missing(false);
    // connect waits while the new stream is CREATING, then reads its retention.
    let refused = KinesisStream::connect(config.clone()).await;
    assert!(
        matches!(&refused, Err(StreamError::Misconfigured { reason, .. }) if reason.contains("24 h")),
        "{refused:?}"
    );
    let accepted = KinesisStream::connect(config.with_min_retention(24 * HOUR))
        .await
        .unwrap();
    assert_eq!(accepted.retention(), 24 * HOUR);
    accepted.delete().await.unwrap();
    created.delete().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn missing_stream_is_created_with_one_shard() {
    let name = fresh_name();

    let stream = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();

    assert_eq!(stream.stream_name(), name);
    let shards = stream
        .client()
        .list_shards()
        .stream_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(shards.shards().len(), 1);
    // Connecting again finds the same stream and shard.
    let again = KinesisStream::connect(emulator_config(&name).with_create_if_missing(false))
        .await
        .unwrap();
    assert_eq!(again.shard_id(), stream.shard_id());
    stream.delete().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn wrong_stream_name_is_not_found() {
    let name = fresh_name();

    let err = KinesisStream::connect(emulator_config(&name).with_create_if_missing(false))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::NotFound { name: n, .. } if *n == name),
        "{err:?}"
    );
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn cursor_that_never_belonged_to_the_stream_is_refused() {
    let stream = fresh_stream().await;
    stream.append(vec![Bytes::from_static(b"x")]).await.unwrap();

    let err = stream.subscribe(Some(Cursor::new("1"))).await.unwrap_err();

    assert!(matches!(err, StreamError::InvalidCursor { .. }), "{err:?}");
    stream.delete().await.unwrap();
}
