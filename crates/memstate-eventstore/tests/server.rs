//! Tests against a real KurrentDB / EventStoreDB server.
//!
//! They read the server's connection string from `MEMSTATE_EVENTSTORE_URL`
//! (e.g. `kurrentdb://127.0.0.1:2113?tls=false`) and are ignored by default;
//! run them with `cargo test -p memstate-eventstore -- --ignored`. Every test
//! uses a fresh stream name, so they can share one server and run in parallel.

// Helpers outside #[test] functions fail loudly too: these are tests.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use kurrentdb::{Client, ReadStreamOptions, StreamState, TombstoneStreamOptions};
use memstate_core::{Cursor, Record, Stream, StreamError, Subscription};
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

async fn take(subscription: &mut Box<dyn Subscription>, n: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(n);
    while records.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("a record within 10 s")
            .expect("no error")
            .expect("the stream is not closed");
        records.push(next);
    }
    records
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn appended_records_are_subscribed_in_order_with_their_cursors() {
    let stream = open(&fresh_name()).await;
    let first = payloads(3, "a");
    let second = payloads(2, "b");
    let mut cursors = stream.append(first.clone()).await.expect("append");
    cursors.extend(stream.append(second.clone()).await.expect("append"));
    assert_eq!(
        cursors,
        (0..5)
            .map(|r| Cursor::new(r.to_string()))
            .collect::<Vec<_>>()
    );

    let mut subscription = stream.subscribe(None).await.expect("subscribe");
    let records = take(&mut subscription, 5).await;
    let expected: Vec<Bytes> = first.into_iter().chain(second).collect();
    assert_eq!(
        records
            .iter()
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        records.iter().map(|r| r.cursor.clone()).collect::<Vec<_>>(),
        cursors
    );

    // Then it follows the tail.
    let later = stream.append(payloads(1, "c")).await.expect("append");
    let tail = take(&mut subscription, 1).await;
    assert_eq!(tail[0].cursor, later[0]);
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn subscribe_after_a_cursor_yields_only_the_suffix() {
    let stream = open(&fresh_name()).await;
    let cursors = stream.append(payloads(6, "s")).await.expect("append");
    let mut subscription = stream
        .subscribe(Some(cursors[2].clone()))
        .await
        .expect("subscribe");
    let records = take(&mut subscription, 3).await;
    assert_eq!(
        records.iter().map(|r| r.cursor.clone()).collect::<Vec<_>>(),
        cursors[3..].to_vec()
    );
    // Nothing more until something is appended.
    let quiet = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
    assert!(quiet.is_err(), "unexpected record: {quiet:?}");
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn head_is_none_for_a_new_stream_and_the_last_cursor_after_appends() {
    let stream = open(&fresh_name()).await;
    assert_eq!(stream.head().await.expect("head"), None);
    let cursors = stream.append(payloads(4, "h")).await.expect("append");
    assert_eq!(stream.head().await.expect("head"), cursors.last().cloned());
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn two_writers_are_seen_identically_by_two_subscribers() {
    let name = fresh_name();
    let writer_a = open(&name).await;
    let writer_b = open(&name).await;
    let reader = open(&name).await;
    let mut sub_1 = reader.subscribe(None).await.expect("subscribe");
    let mut sub_2 = reader.subscribe(None).await.expect("subscribe");

    let a = tokio::spawn(async move {
        for i in 0..20 {
            writer_a
                .append(payloads(2, &format!("a{i}")))
                .await
                .expect("append a");
        }
    });
    let b = tokio::spawn(async move {
        for i in 0..20 {
            writer_b
                .append(payloads(3, &format!("b{i}")))
                .await
                .expect("append b");
        }
    });
    a.await.expect("writer a");
    b.await.expect("writer b");

    let seen_1 = take(&mut sub_1, 100).await;
    let seen_2 = take(&mut sub_2, 100).await;
    assert_eq!(seen_1, seen_2);
    let revisions: Vec<String> = seen_1.iter().map(|r| r.cursor.to_string()).collect();
    assert_eq!(
        revisions,
        (0..100).map(|r| r.to_string()).collect::<Vec<_>>()
    );
    let fresh = open(&name).await;
    let mut late = fresh.subscribe(None).await.expect("subscribe");
    assert_eq!(take(&mut late, 100).await, seen_1);
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn the_records_of_one_append_are_contiguous_despite_concurrent_writers() {
    let name = fresh_name();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let name = name.clone();
            tokio::spawn(async move {
                let stream = open(&name).await;
                for i in 0..10 {
                    let batch = payloads(5, &format!("w{w}-{i}"));
                    let cursors = stream.append(batch).await.expect("append");
                    let revisions: Vec<u64> = cursors
                        .iter()
                        .map(|c| c.as_str().parse().expect("rev"))
                        .collect();
                    assert!(
                        revisions.windows(2).all(|w| w[1] == w[0] + 1),
                        "{revisions:?}"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let stream = open(&name).await;
    let mut subscription = stream.subscribe(None).await.expect("subscribe");
    let records = take(&mut subscription, 200).await;
    for batch in records.chunks(5) {
        let tag = |r: &Record| {
            let text = String::from_utf8(r.payload.to_vec()).expect("utf8");
            text.split('"').nth(3).map(str::to_owned).expect("tag")
        };
        assert!(batch.iter().all(|r| tag(r) == tag(&batch[0])), "{batch:?}");
    }
}

#[tokio::test]
#[ignore = "needs MEMSTATE_EVENTSTORE_URL (a KurrentDB server); not available on this machine"]
async fn optimistic_append_conflict_reports_the_actual_position() {
    let stream = open(&fresh_name()).await;
    let first = stream
        .append_expecting(payloads(2, "o"), None)
        .await
        .expect("the stream is new");
    assert_eq!(first, vec![Cursor::new("0"), Cursor::new("1")]);

    let next = stream
        .append_expecting(payloads(1, "p"), Some(first[1].clone()))
        .await
        .expect("expected position matches");
    assert_eq!(next, vec![Cursor::new("2")]);

    match stream
        .append_expecting(payloads(1, "q"), Some(first[1].clone()))
        .await
    {
        Err(StreamError::WrongExpectedPosition { expected, actual }) => {
            assert_eq!(expected, Some(first[1].clone()));
            assert_eq!(actual, Some(Cursor::new("2")));
        }
        other => panic!("{other:?}"),
    }
    match stream.append_expecting(payloads(1, "r"), None).await {
        Err(StreamError::WrongExpectedPosition { actual, .. }) => {
            assert_eq!(actual, Some(Cursor::new("2")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stream.head().await.expect("head"), Some(Cursor::new("2")));
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
async fn a_reopened_stream_returns_everything_appended_before() {
    let name = fresh_name();
    let cursors = {
        let stream = open(&name).await;
        stream.append(payloads(7, "r")).await.expect("append")
    };
    let reopened = open(&name).await;
    assert_eq!(
        reopened.head().await.expect("head"),
        cursors.last().cloned()
    );
    let mut subscription = reopened.subscribe(None).await.expect("subscribe");
    let records = take(&mut subscription, 7).await;
    assert_eq!(
        records.into_iter().map(|r| r.cursor).collect::<Vec<_>>(),
        cursors
    );
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
