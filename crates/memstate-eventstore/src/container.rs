//! How to run a throw-away KurrentDB server in a container for tests.
//!
//! These are plain constants so that a test harness can build a
//! testcontainers `GenericImage` from them without this crate depending on
//! testcontainers:
//!
//! ```text
//! use testcontainers::{core::{IntoContainerPort, WaitFor}, runners::AsyncRunner, GenericImage, ImageExt};
//! use memstate_eventstore::container;
//!
//! let image = GenericImage::new(container::IMAGE, container::TAG)
//!     .with_exposed_port(container::PORT.tcp())
//!     .with_wait_for(WaitFor::message_on_stdout(container::READY_LOG_LINE));
//! let mut request = image.with_startup_timeout(container::STARTUP_TIMEOUT);
//! for (key, value) in container::ENV {
//!     request = request.with_env_var(*key, *value);
//! }
//! let node = request.start().await?;
//! let port = node.get_host_port_ipv4(container::PORT).await?;
//! let url = container::connection_string("127.0.0.1", port);
//! ```
//!
//! (Written as text: this crate does not depend on testcontainers, so the
//! snippet is not compiled here; `GenericImage::with_wait_for` must be called
//! before the `ImageExt` methods turn the image into a request.)

use std::time::Duration;

/// The image: KurrentDB from Kurrent's own registry. The same release is on
/// Docker Hub as `kurrentplatform/kurrentdb` (e.g. `kurrentplatform/kurrentdb:25.1.3`).
pub const IMAGE: &str = "docker.kurrent.io/kurrent-latest/kurrentdb";

/// The pinned tag (a 25.1 release).
pub const TAG: &str = "25.1.4";

/// The gRPC and HTTP port inside the container.
pub const PORT: u16 = 2113;

/// An insecure (no TLS, no authentication), in-memory, single node without
/// projections: nothing but the test's own writes, and nothing left behind.
pub const ENV: &[(&str, &str)] = &[
    ("KURRENTDB_CLUSTER_SIZE", "1"),
    ("KURRENTDB_INSECURE", "true"),
    ("KURRENTDB_MEM_DB", "true"),
    ("KURRENTDB_RUN_PROJECTIONS", "None"),
    ("KURRENTDB_START_STANDARD_PROJECTIONS", "false"),
    ("KURRENTDB_TELEMETRY_OPTOUT", "true"),
];

/// Logged on stdout when the single node has become leader and serves
/// clients (`========== ["…:2113"] IS LEADER... SPARTA!`).
pub const READY_LOG_LINE: &str = "IS LEADER... SPARTA!";

/// An HTTP alternative to the log line: answers `204 No Content` once the
/// node is live.
pub const HEALTH_PATH: &str = "/health/live";

/// A generous start-up wait for a busy 2-core machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The connection string for a node started with [`ENV`] (insecure, so
/// `tls=false`).
///
/// # Examples
///
/// ```
/// assert_eq!(
///     memstate_eventstore::container::connection_string("127.0.0.1", 32768),
///     "kurrentdb://127.0.0.1:32768?tls=false"
/// );
/// ```
pub fn connection_string(host: &str, port: u16) -> String {
    format!("kurrentdb://{host}:{port}?tls=false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_connection_string_is_accepted_by_the_client_parser() {
        let url = connection_string("localhost", 49153);
        let settings = crate::connection::parse(&url).ok();
        assert_eq!(settings.map(|s| s.is_secure_mode_enabled()), Some(false));
    }

    #[test]
    fn the_node_is_insecure_in_memory_and_single() {
        let get = |key: &str| ENV.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        assert_eq!(get("KURRENTDB_INSECURE"), Some("true"));
        assert_eq!(get("KURRENTDB_MEM_DB"), Some("true"));
        assert_eq!(get("KURRENTDB_CLUSTER_SIZE"), Some("1"));
        assert!(!TAG.is_empty() && TAG != "latest");
    }
}
