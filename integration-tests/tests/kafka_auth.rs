//! The broker the TLS run uses really demands TLS and SCRAM: the properties of
//! `MEMSTATE_KAFKA_PROPERTIES_FILE` get a client in, the same client with a
//! wrong password or without TLS is refused. Without this, a suite run that
//! fell back to plain text would pass as a TLS run.
//!
//! `#[ignore]`d: `make test-kafka-tls` starts a SASL_SSL broker and runs them
//! with `--ignored` (run by hand with `--ignored` and no such broker, they fail
//! with a hint).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use bytes::Bytes;
use memstate_conformance::provision::{
    KAFKA_BOOTSTRAP_ENV, KAFKA_PROPERTIES_FILE_ENV, env_var, unique_name,
};
use memstate_core::Stream;
use memstate_kafka::{KafkaConfig, KafkaStream};

/// The TLS broker's bootstrap and its client configuration for a new topic.
fn sasl_ssl_config() -> KafkaConfig {
    let hint = "start a SASL_SSL broker and export its env: make test-kafka-tls does both";
    let bootstrap = env_var(KAFKA_BOOTSTRAP_ENV)
        .unwrap_or_else(|| panic!("{KAFKA_BOOTSTRAP_ENV} unset; {hint}"));
    let file = env_var(KAFKA_PROPERTIES_FILE_ENV)
        .unwrap_or_else(|| panic!("{KAFKA_PROPERTIES_FILE_ENV} unset; {hint}"));
    let config = KafkaConfig::new(bootstrap, unique_name("memstate-auth"))
        .with_properties_file(file.trim())
        .unwrap()
        .with_topic_creation(1)
        .with_operation_timeout(Duration::from_secs(15));
    assert_eq!(
        config
            .properties
            .get("security.protocol")
            .map(String::as_str),
        Some("SASL_SSL"),
        "this check is about a SASL_SSL broker"
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SASL_SSL broker: make test-kafka-tls"]
async fn the_properties_file_opens_the_sasl_ssl_listener() {
    let stream = KafkaStream::connect(sasl_ssl_config()).await.unwrap();
    let cursors = stream
        .append(vec![Bytes::from_static(b"over TLS")])
        .await
        .unwrap();
    assert_eq!(stream.head().await.unwrap(), cursors.last().cloned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SASL_SSL broker: make test-kafka-tls"]
async fn a_wrong_scram_password_is_refused() {
    let mut config = sasl_ssl_config();
    config
        .properties
        .insert("sasl.password".into(), "not-the-password".into());
    let refused = KafkaStream::connect(config).await;
    assert!(refused.is_err(), "a wrong password was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SASL_SSL broker: make test-kafka-tls"]
async fn a_client_without_tls_is_refused() {
    let mut config = sasl_ssl_config();
    config.properties.clear();
    let refused = KafkaStream::connect(config).await;
    assert!(refused.is_err(), "a plain-text client was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a SASL_SSL broker: make test-kafka-tls"]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let mut config = sasl_ssl_config();
    // The system's trust store does not hold the script's private CA.
    config.properties.remove("ssl.ca.location");
    let refused = KafkaStream::connect(config).await;
    assert!(
        refused.is_err(),
        "an unverified broker certificate was accepted"
    );
}
