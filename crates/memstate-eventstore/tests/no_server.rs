//! Behaviour that needs no KurrentDB server: construction, validation, limits
//! checked before I/O, and failures against addresses where no server answers.

// Helpers outside #[test] functions fail loudly too: these are tests.
#![allow(clippy::expect_used, clippy::panic)]

use std::cmp::Ordering;
use std::error::Error as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};
use memstate_eventstore::{EventStoreConfig, EventStoreStream, EventStoreStreamError};

/// Nothing listens on port 1 of the loopback address.
const REFUSED_INSECURE: &str = "kurrentdb://127.0.0.1:1?tls=false";
const REFUSED_TLS: &str = "kurrentdb://127.0.0.1:1";

fn config(url: &str) -> EventStoreConfig {
    EventStoreConfig::new(url, "memstate-no-server").with_operation_timeout(Duration::from_secs(5))
}

fn lazy(url: &str) -> EventStoreStream {
    EventStoreStream::connect_lazy(config(url)).expect("valid configuration")
}

/// The adapter error carried as the source of a `StreamError`.
fn adapter_source(error: &StreamError) -> Option<&EventStoreStreamError> {
    error
        .source()
        .and_then(|s| s.downcast_ref::<EventStoreStreamError>())
}

fn assert_unreachable(error: &StreamError, expect_in_message: &str) {
    assert!(
        matches!(
            error,
            StreamError::Backend {
                backend: "eventstore",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        matches!(
            adapter_source(error),
            Some(EventStoreStreamError::Unreachable { .. })
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains(expect_in_message), "{text}");
}

#[tokio::test]
async fn refused_connection_fails_connect_clearly_within_a_bound() {
    let started = Instant::now();
    let result = EventStoreStream::connect(config(REFUSED_INSECURE)).await;
    let elapsed = started.elapsed();
    let error = result.expect_err("nothing listens on 127.0.0.1:1");
    assert_unreachable(&error, "TLS off");
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

#[tokio::test]
async fn refused_tls_connection_suggests_tls_false() {
    let started = Instant::now();
    let error = EventStoreStream::connect(config(REFUSED_TLS))
        .await
        .expect_err("nothing listens on 127.0.0.1:1");
    assert_unreachable(&error, "?tls=false");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn operations_on_a_lazy_stream_fail_clearly_when_nothing_listens() {
    let stream = lazy(REFUSED_INSECURE);
    let started = Instant::now();

    let append = stream
        .append(vec![Bytes::from_static(b"{}")])
        .await
        .expect_err("append");
    // Refused before the request left: certainly not written, not ambiguous.
    assert_unreachable(&append, "appending");

    let head = stream.head().await.expect_err("head");
    assert_unreachable(&head, "head");

    // The first subscription of a lazy stream checks the stream's metadata first.
    let subscribe = stream.subscribe(None).await.expect_err("subscribe");
    assert_unreachable(&subscribe, "reading the metadata");

    // A replaced client fails the same way: the adapter recovers from the
    // client's stopped connection task instead of reporting ConnectionClosed.
    let again = stream.head().await.expect_err("head again");
    assert_unreachable(&again, "head");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_operation_timeout() {
    // Accepts TCP connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });

    let url = format!("kurrentdb://127.0.0.1:{port}?tls=false");
    let config = config(&url).with_operation_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let error = EventStoreStream::connect(config)
        .await
        .expect_err("a silent server cannot be connected to");
    let elapsed = started.elapsed();
    silent.abort();

    match error {
        StreamError::Timeout { action, after } => {
            assert!(action.contains("connecting"), "{action}");
            assert_eq!(after, Duration::from_millis(1500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn oversized_record_is_refused_before_any_io() {
    let stream = lazy(REFUSED_INSECURE);
    let limit = stream.capabilities().max_record_size;
    let too_big = Bytes::from(vec![b'x'; limit + 1]);
    // Had anything been sent, the refused connection would be the error.
    match stream
        .append(vec![Bytes::from_static(b"{}"), too_big])
        .await
    {
        Err(StreamError::RecordTooLarge { size, limit: named }) => {
            assert_eq!(size, limit + 1);
            assert_eq!(named, EventStoreConfig::DEFAULT_MAX_RECORD_SIZE);
        }
        other => panic!("{other:?}"),
    }
    let optimistic = stream
        .append_expecting(vec![Bytes::from(vec![0u8; limit + 1])], None)
        .await;
    assert!(matches!(
        optimistic,
        Err(StreamError::RecordTooLarge { .. })
    ));
}

#[tokio::test]
async fn an_append_call_over_the_servers_append_size_is_refused_before_any_io() {
    let stream = lazy(REFUSED_INSECURE);
    let limit = stream.capabilities().max_record_size;
    // Each record fits; together they exceed the 1 MiB MaxAppendSize.
    let records = vec![
        Bytes::from(vec![b'a'; limit]),
        Bytes::from(vec![b'b'; limit]),
    ];
    match stream.append(records).await {
        Err(StreamError::RecordTooLarge { size, limit }) => {
            assert_eq!(limit, EventStoreConfig::DEFAULT_MAX_APPEND_SIZE);
            assert!(size > limit);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn empty_append_returns_no_cursors_without_io() {
    let stream = lazy(REFUSED_INSECURE);
    let cursors = stream.append(Vec::new()).await.expect("nothing to send");
    assert!(cursors.is_empty());
}

#[tokio::test]
async fn invalid_cursors_are_refused_before_any_io() {
    let stream = lazy(REFUSED_INSECURE);
    let bad = Cursor::new("seven");
    let subscribe = stream.subscribe(Some(bad.clone())).await;
    assert!(matches!(subscribe, Err(StreamError::InvalidCursor { .. })));
    let append = stream
        .append_expecting(vec![Bytes::from_static(b"{}")], Some(bad.clone()))
        .await;
    assert!(matches!(append, Err(StreamError::InvalidCursor { .. })));
    assert!(matches!(
        stream.compare_cursors(&bad, &Cursor::new("1")),
        Err(StreamError::InvalidCursor { .. })
    ));
}

#[tokio::test]
async fn cursors_compare_as_revisions() {
    let stream = lazy(REFUSED_INSECURE);
    let order = stream.compare_cursors(&Cursor::new("9"), &Cursor::new("10"));
    assert_eq!(order.ok(), Some(Ordering::Less));
}

#[tokio::test]
async fn capabilities_and_description_are_declared() {
    let stream = lazy(REFUSED_INSECURE);
    let capabilities = stream.capabilities();
    assert!(capabilities.exact_head);
    assert!(capabilities.optimistic_append);
    assert_eq!(
        capabilities.max_record_size,
        EventStoreConfig::DEFAULT_MAX_RECORD_SIZE
    );
    let description = stream.describe();
    assert!(description.contains("memstate-no-server"), "{description}");
    assert!(description.contains("127.0.0.1:1"), "{description}");
}

#[tokio::test]
async fn invalid_connection_strings_fail_at_construction_without_leaking_the_password() {
    for url in [
        "",
        "http://127.0.0.1:2113",
        "kurrentdb://admin:topsecret@127.0.0.1:2113?tls=perhaps",
        "kurrentdb://",
    ] {
        let error = EventStoreStream::connect(config(url))
            .await
            .expect_err("invalid connection string");
        assert!(
            matches!(
                adapter_source(&error),
                Some(EventStoreStreamError::InvalidConnectionString { .. })
            ),
            "{url}: {error:?}"
        );
        assert!(!error.to_string().contains("topsecret"), "{error}");
        assert!(!format!("{error:?}").contains("topsecret"), "{error:?}");
    }
}

#[tokio::test]
async fn invalid_limits_fail_at_construction() {
    let config = config(REFUSED_INSECURE).with_max_record_size(2 * 1024 * 1024);
    let error = EventStoreStream::connect_lazy(config).expect_err("record cannot fit");
    assert!(matches!(
        adapter_source(&error),
        Some(EventStoreStreamError::InvalidConfig(_))
    ));
}

#[test]
fn creating_a_stream_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let error = EventStoreStream::connect_lazy(config(REFUSED_INSECURE))
        .expect_err("the client needs a runtime");
    assert!(
        matches!(
            adapter_source(&error),
            Some(EventStoreStreamError::NoRuntime)
        ),
        "{error:?}"
    );
}
