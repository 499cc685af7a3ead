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

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError, Subscription};
use memstate_kinesis::{ENDPOINT_ENV, KinesisConfig, KinesisStream, MAX_RECORD_SIZE};

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

async fn next(sub: &mut Box<dyn Subscription>) -> (Cursor, Bytes) {
    let record = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("no record within 20 s")
        .expect("subscription failed")
        .expect("subscription ended");
    (record.cursor, record.payload)
}

fn payloads(n: usize, tag: &str) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{tag}-{i}"))).collect()
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
async fn appended_records_are_read_back_in_order() {
    let stream = fresh_stream().await;
    let mut cursors = Vec::new();
    for payload in payloads(20, "rec") {
        cursors.extend(stream.append(vec![payload]).await.unwrap());
    }
    // A multi-record append is refused: it could not stay contiguous.
    assert!(stream.append(payloads(3, "batch")).await.is_err());

    let mut sub = stream.subscribe(None).await.unwrap();
    let mut read = Vec::new();
    for _ in 0..cursors.len() {
        read.push(next(&mut sub).await);
    }

    let expected: Vec<Bytes> = payloads(20, "rec");
    assert_eq!(
        read.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        read.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
        cursors
    );
    for pair in cursors.windows(2) {
        assert_eq!(
            stream.compare_cursors(&pair[0], &pair[1]).unwrap(),
            std::cmp::Ordering::Less
        );
    }
    stream.delete().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn subscribe_after_cursor_yields_only_the_suffix_then_follows_the_tail() {
    let stream = fresh_stream().await;
    let mut cursors = Vec::new();
    for payload in payloads(5, "early") {
        cursors.extend(stream.append(vec![payload]).await.unwrap());
    }

    let mut sub = stream.subscribe(Some(cursors[1].clone())).await.unwrap();
    let mut read = Vec::new();
    for _ in 0..3 {
        read.push(next(&mut sub).await.1);
    }
    let late = stream
        .append(vec![Bytes::from_static(b"late")])
        .await
        .unwrap();
    let (tail_cursor, tail) = next(&mut sub).await;

    assert_eq!(read, payloads(5, "early")[2..].to_vec());
    assert_eq!(tail, Bytes::from_static(b"late"));
    assert_eq!(tail_cursor, late[0]);
    // Subscribing after the last record waits for new ones only.
    let mut at_tip = stream.subscribe(Some(late[0].clone())).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(700), at_tip.next()).await;
    assert!(
        quiet.is_err(),
        "nothing follows the last record yet: {quiet:?}"
    );
    stream.delete().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn two_writers_are_seen_identically_by_two_readers() {
    let name = fresh_name();
    // Separate connections, as on separate nodes.
    let writer_a = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();
    let writer_b = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();
    let reader_1 = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();
    let reader_2 = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();
    let mut sub_1 = reader_1.subscribe(None).await.unwrap();
    let mut sub_2 = reader_2.subscribe(None).await.unwrap();

    let write = |stream: KinesisStream, tag: &'static str| {
        tokio::spawn(async move {
            for payload in payloads(15, tag) {
                stream.append(vec![payload]).await.unwrap();
            }
        })
    };
    let (a, b) = (write(writer_a.clone(), "a"), write(writer_b, "b"));
    a.await.unwrap();
    b.await.unwrap();

    let mut seen_1 = Vec::new();
    let mut seen_2 = Vec::new();
    for _ in 0..30 {
        seen_1.push(next(&mut sub_1).await);
        seen_2.push(next(&mut sub_2).await);
    }

    assert_eq!(seen_1, seen_2, "both readers see one interleaving");
    for tag in ["a", "b"] {
        let own: Vec<Bytes> = seen_1
            .iter()
            .map(|(_, p)| p.clone())
            .filter(|p| p.starts_with(tag.as_bytes()))
            .collect();
        assert_eq!(
            own,
            payloads(15, tag),
            "each writer's records keep their order"
        );
    }
    writer_a.delete().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kinesis emulator: set MEMSTATE_KINESIS_ENDPOINT (integration-tests/scripts/kinesis.sh start) and run with --ignored"]
async fn oversized_record_is_refused_and_the_largest_allowed_one_is_stored() {
    let stream = fresh_stream().await;

    let err = stream
        .append(vec![Bytes::from(vec![b'x'; MAX_RECORD_SIZE + 1])])
        .await
        .unwrap_err();
    let largest = Bytes::from(vec![b'y'; MAX_RECORD_SIZE]);
    let cursor = stream.append(vec![largest.clone()]).await.unwrap();
    let mut sub = stream.subscribe(None).await.unwrap();
    let (first_cursor, first) = next(&mut sub).await;

    assert!(
        matches!(err, StreamError::RecordTooLarge { size, limit } if size == MAX_RECORD_SIZE + 1 && limit == MAX_RECORD_SIZE),
        "{err:?}"
    );
    assert_eq!(
        first_cursor, cursor[0],
        "the refused record was never written"
    );
    assert_eq!(first, largest);
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
async fn reopened_stream_returns_everything_appended_before() {
    let stream = fresh_stream().await;
    let cursors = stream
        .append(vec![Bytes::from_static(b"kept")])
        .await
        .unwrap();
    let name = stream.stream_name().to_owned();
    drop(stream);

    let reopened = KinesisStream::connect(emulator_config(&name))
        .await
        .unwrap();
    let mut sub = reopened.subscribe(None).await.unwrap();

    assert_eq!(
        next(&mut sub).await,
        (cursors[0].clone(), Bytes::from_static(b"kept"))
    );
    reopened.delete().await.unwrap();
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
