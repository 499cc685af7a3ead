//! A broker that does not answer is an error in bounded time, not a hang.

use std::time::{Duration, Instant};

use memstate_core::StreamError;
use memstate_kafka::{KafkaConfig, KafkaStream};

/// A port on 127.0.0.1 that nothing listens on: bound, then released.
#[allow(clippy::unwrap_used)] // test helper: a machine that cannot bind is broken
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails_within_the_operation_timeout() {
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let config =
        KafkaConfig::new(bootstrap, "nobody-home").with_operation_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), KafkaStream::connect(config))
        .await
        .expect("connect must not hang")
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            StreamError::Timeout { .. } | StreamError::Backend { .. }
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_topic_on_a_closed_port_fails_within_the_operation_timeout() {
    let bootstrap = format!("127.0.0.1:{}", closed_port());
    let config =
        KafkaConfig::new(bootstrap, "nobody-home").with_operation_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        KafkaStream::create_topic(&config, 1),
    )
    .await
    .expect("create_topic must not hang")
    .unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Timeout { .. } | StreamError::Backend { .. }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_invalid_configuration_fails_before_any_connection() {
    let config = KafkaConfig::new("127.0.0.1:1", "t").with_property("acks", "0");
    let err = KafkaStream::connect(config).await.unwrap_err();
    assert!(matches!(err, StreamError::Misconfigured { .. }), "{err}");
}
