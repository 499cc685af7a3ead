//! Shared handling of testcontainers outcomes.

use testcontainers_modules::testcontainers::TestcontainersError;

/// Explains why a container could not be started, with how to enable the backend.
pub(crate) fn explain(backend: &str, variable: &str, error: &TestcontainersError) -> String {
    match error {
        TestcontainersError::Client(e) => format!(
            "no {variable} and no Docker engine for testcontainers ({e}); \
             set {variable}, or run `make backends-up` (Kafka, Kinesis) and source .backends/env"
        ),
        other => format!("no {variable}, and starting a {backend} container failed: {other}"),
    }
}
