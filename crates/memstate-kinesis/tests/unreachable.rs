//! An endpoint that does not answer is an error in bounded time, never a hang.
//! Only loopback addresses are used; credentials are static and the region is
//! given, so no provider chain (and no instance-metadata address) is consulted.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use memstate_core::StreamError;
use memstate_kinesis::{KinesisConfig, KinesisStream};

fn config(endpoint: String) -> KinesisConfig {
    KinesisConfig::emulator(endpoint, "memstate-unreachable")
        .with_request_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn refused_connection_fails_within_the_request_timeout() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();

    let err = KinesisStream::connect(config(format!("http://127.0.0.1:{port}")))
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            StreamError::Backend { .. } | StreamError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_endpoint_times_out_within_the_request_timeout() {
    // Accepts connections (the kernel completes the handshake) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();

    let err = KinesisStream::connect(config(format!("http://127.0.0.1:{port}")))
        .await
        .unwrap_err();

    assert!(matches!(err, StreamError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}
