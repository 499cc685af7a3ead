//! Tests against a real KurrentDB / EventStoreDB server.
//!
//! They read the server's connection string from `MEMSTATE_EVENTSTORE_URL`
//! (e.g. `kurrentdb://127.0.0.1:2113?tls=false`) and are ignored by default;
//! run them with `cargo test -p memstate-eventstore -- --ignored`. Every test
//! uses a fresh stream name, so they can share one server and run in parallel.
//!
//! Only what is specific to KurrentDB lives here (event types, tombstones,
//! truncation, stream states); the rules every adapter follows are the
//! conformance suite's (`cargo test -p memstate-conformance --test eventstore`).

// Helpers outside #[test] functions fail loudly too: these are tests.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use kurrentdb::{Client, ReadStreamOptions, StreamState, TombstoneStreamOptions};
use memstate_core::{Stream, StreamError};
use memstate_eventstore::{EventStoreConfig, EventStoreStream};

const IGNORE: &str =
    "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine";

fn url() -> String {
    std::env::var("MEMSTATE_EVENTSTORE_URL").unwrap_or_else(|_| {
        panic!("set MEMSTATE_EVENTSTORE_URL, e.g. kurrentdb://127.0.0.1:2113?tls=false ({IGNORE})")
    })
}

fn fresh_name() -> String {
    format!("memstate-test-{}", uuid::Uuid::new_v4().simple())
}

async fn open(name: &str) -> EventStoreStream {
    let config = EventStoreConfig::new(url(), name).with_operation_timeout(Duration::from_secs(10));
    EventStoreStream::connect(config).await.expect("connect")
}

/// The raw client, to look at what the adapter stored.
fn raw_client() -> Client {
    Client::new(url().parse().expect("connection string")).expect("client")
}

fn payloads(n: usize, tag: &str) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!(r#"{{"tag":"{tag}","i":{i}}}"#)))
        .collect()
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn json_payloads_are_json_events_and_others_binary() {
    let name = fresh_name();
    let stream = open(&name).await;
    let json = Bytes::from_static(br#"{"kind":"frame","n":[1,2,3]}"#);
    let binary = Bytes::from_static(b"\x00\x01\xffnot json");
    stream
        .append(vec![json.clone(), binary.clone()])
        .await
        .expect("append");

    let mut read = raw_client()
        .read_stream(name.as_str(), &ReadStreamOptions::default())
        .await
        .expect("read");
    let first = read.next().await.expect("read").expect("event 0");
    let first = first.get_original_event();
    assert_eq!(first.event_type, "memstate.frame");
    assert!(first.is_json);
    assert_eq!(first.data, json);
    let second = read.next().await.expect("read").expect("event 1");
    let second = second.get_original_event();
    assert_eq!(second.event_type, "memstate.frame");
    assert!(!second.is_json);
    assert_eq!(second.data, binary);
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn a_tombstoned_stream_is_not_found_everywhere() {
    let name = fresh_name();
    let stream = open(&name).await;
    stream.append(payloads(1, "t")).await.expect("append");
    raw_client()
        .tombstone_stream(name.as_str(), &TombstoneStreamOptions::default())
        .await
        .expect("tombstone");

    let append = stream.append(payloads(1, "u")).await;
    assert!(
        matches!(append, Err(StreamError::NotFound { .. })),
        "{append:?}"
    );
    let head = stream.head().await;
    assert!(
        matches!(head, Err(StreamError::NotFound { .. })),
        "{head:?}"
    );
    let subscribe = stream.subscribe(None).await;
    assert!(
        matches!(subscribe, Err(StreamError::NotFound { .. })),
        "{:?}",
        subscribe.err()
    );
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn a_truncated_beginning_is_reported_not_skipped() {
    let name = fresh_name();
    let stream = open(&name).await;
    stream.append(payloads(5, "x")).await.expect("append");
    // Soft delete: the stream's beginning is gone, appends continue at 5.
    raw_client()
        .delete_stream(name.as_str(), &Default::default())
        .await
        .expect("delete");
    stream
        .append(payloads(1, "y"))
        .await
        .expect("append after delete");

    let mut subscription = stream.subscribe(None).await.expect("subscribe");
    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("an answer within 10 s");
    assert!(
        matches!(next, Err(StreamError::HistoryTruncated { .. })),
        "{next:?}"
    );
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn optimistic_append_uses_stream_states_the_server_understands() {
    // Guards the mapping None -> NoStream on a stream written by someone else.
    let name = fresh_name();
    raw_client()
        .append_to_stream(
            name.as_str(),
            &kurrentdb::AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            kurrentdb::EventData::binary("other", Bytes::from_static(b"x")),
        )
        .await
        .expect("raw append");
    let stream = open(&name).await;
    let conflict = stream.append_expecting(payloads(1, "z"), None).await;
    assert!(matches!(
        conflict,
        Err(StreamError::WrongExpectedPosition {
            actual: Some(_),
            ..
        })
    ));
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn trimming_metadata_is_refused_at_connect_unless_accepted() {
    let name = fresh_name();
    raw_client()
        .set_stream_metadata(
            name.as_str(),
            &Default::default(),
            &kurrentdb::StreamMetadata::builder().max_count(10).build(),
        )
        .await
        .expect("set metadata");
    let config = EventStoreConfig::new(url(), name.as_str());
    let refused = EventStoreStream::connect(config.clone()).await;
    assert!(
        matches!(&refused, Err(StreamError::Misconfigured { reason, .. }) if reason.contains("$maxCount = 10")),
        "{refused:?}"
    );
    let accepted = EventStoreStream::connect(config.with_accept_trimming_metadata(true))
        .await
        .expect("accepted");
    assert_eq!(
        accepted.history_limits().and_then(|l| l.max_count),
        Some(10)
    );
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn the_same_append_sent_again_is_written_once() {
    let name = fresh_name();
    let stream = open(&name).await;
    let records = payloads(3, "resend");
    let first = stream.append(records.clone()).await.expect("append");
    // The same call again: same derived event ids, so the server answers
    // with the positions already written.
    let again = stream.append(records).await.expect("append again");
    assert_eq!(first, again);
    assert_eq!(stream.head().await.expect("head"), first.last().cloned());
}
