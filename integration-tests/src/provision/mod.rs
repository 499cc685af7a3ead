//! Backend provisioning, in the brief's order: an endpoint variable
//! (`MEMSTATE_KAFKA_BOOTSTRAP`, `MEMSTATE_KINESIS_ENDPOINT`,
//! `MEMSTATE_EVENTSTORE_URL`) wins; else a testcontainers container where a
//! Docker engine answers; else the backend is skipped with a line that says
//! how to enable it. `MEMSTATE_REQUIRE=file,kafka,...` turns a skip into a
//! failure.

mod containers;
mod eventstore;
mod file;
mod kafka;
mod kinesis;
mod memory;

use std::sync::Arc;

pub use eventstore::{EventStoreBackend, URL_ENV as EVENTSTORE_URL_ENV, eventstore};
pub use file::FileBackend;
pub use kafka::{
    BOOTSTRAP_ENV as KAFKA_BOOTSTRAP_ENV, KafkaBackend,
    PROPERTIES_FILE_ENV as KAFKA_PROPERTIES_FILE_ENV, kafka,
};
pub use kinesis::{ENDPOINT_ENV as KINESIS_ENDPOINT_ENV, KinesisBackend, kinesis, kinesis_fan_out};
pub use memory::MemoryBackend;

use crate::fixture::Backend;

/// A provisioned backend, or why there is none.
pub enum Provision {
    /// Ready to run cases.
    Ready(Arc<dyn Backend>),
    /// Not available here; the reason says how to enable it.
    Skipped(String),
}

impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(b) => write!(f, "Ready({} at {})", b.name(), b.location()),
            Self::Skipped(why) => write!(f, "Skipped({why})"),
        }
    }
}

/// Whether `MEMSTATE_REQUIRE` (comma-separated backend names) names `backend`.
pub fn is_required(backend: &str) -> bool {
    // A mode of a backend ("kinesis-fanout") is required with the backend.
    let base = backend.split('-').next().unwrap_or(backend);
    std::env::var("MEMSTATE_REQUIRE")
        .map(|v| {
            v.split(',').any(|b| {
                let b = b.trim();
                b.eq_ignore_ascii_case(backend) || b.eq_ignore_ascii_case(base)
            })
        })
        .unwrap_or(false)
}

/// A non-empty environment variable.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A unique name for one case's stream or topic.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The in-memory reference stream.
pub async fn memory() -> Provision {
    Provision::Ready(Arc::new(MemoryBackend))
}

/// The file journal, in temporary directories.
pub async fn file() -> Provision {
    Provision::Ready(Arc::new(FileBackend))
}
