//! Snapshots: the model plus everything replicated beside it, so a node
//! restarts in time proportional to the tail of the log, not its history.
//!
//! A snapshot holds the model, the cursor of the last record applied, the
//! applied index, the de-duplication window, leadership state and the Genesis
//! settings, under a format version and a checksum. Each node keeps its own,
//! through a [`SnapshotStore`]; [`FileSnapshotStore`] is the default.
//!
//! File format: one header line, then the body.
//!
//! ```text
//! memstate-snapshot v1 crc32c=<8 hex digits> len=<body bytes>\n
//! <body: JSON {"meta": {...}, "replicated": {...}, "model": ...}>
//! ```
//!
//! The engine streams the body straight into the file
//! ([`SnapshotStore::save_streamed`]): no copy of the body is held in memory.
//! Its header is first written with a zero checksum and length, both of fixed
//! width (`len=` has 20 digits, zero-padded), and rewritten in place once the
//! body is written; readers parse `len=00000000000000001234` and `len=1234`
//! alike, so the format (version 1) is the same either way and files written
//! by earlier builds still load.
//!
//! Files are written atomically: a temporary file, fsync, rename, fsync of the
//! directory. A file whose header, length or checksum does not match is
//! reported as corrupt and skipped in favour of an older one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::envelope::NodeId;
use crate::stream::Cursor;

mod file;
pub use file::FileSnapshotStore;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

const MAGIC: &str = "memstate-snapshot";

/// What a snapshot is, without its body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotMeta {
    /// The node that took it.
    pub node_id: NodeId,
    /// Envelopes applied when it was taken.
    pub applied_index: u64,
    /// The cursor of the last record applied (`None`: nothing applied).
    pub cursor: Option<Cursor>,
    /// Milliseconds since the Unix epoch when it was taken (host clock; informative only).
    pub taken_at_ms: u64,
    /// Size of the stored body in bytes.
    pub bytes: u64,
    /// The model version of the build that took it (1 when absent: taken
    /// before model versions existed).
    #[serde(default = "first_version")]
    pub model_version: u32,
}

fn first_version() -> u32 {
    1
}

/// Errors of snapshot stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// I/O on the store failed.
    #[error("snapshot I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A stored snapshot fails its checks.
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The model or state could not be encoded or decoded.
    #[error("snapshot encoding: {0}")]
    Encoding(String),
    /// Holds a model of a newer model version than this build reads.
    #[error(
        "snapshot {location} holds model version {version} and this build reads up to model version {reads}: run a build of model version {version} or newer, or remove the snapshots that build wrote (the log must still hold everything after the older ones)"
    )]
    NeedsModelVersion {
        /// Where it is.
        location: String,
        /// The model version it holds.
        version: u32,
        /// The newest model version this build reads.
        reads: u32,
    },
    /// Holds a model this build reads by its version, but it does not
    /// migrate or decode: the model's serialized form changed without a new
    /// version, or a migration step fails.
    #[error(
        "snapshot {location} holds model version {version}, which this build (model version {reads}) should read, but it does not decode: {reason}. Declare a new Model::VERSION with a migrate_snapshot step (docs/upgrades.md), or remove the snapshot if the log still holds everything before it"
    )]
    ModelUnreadable {
        /// Where it is.
        location: String,
        /// The model version it holds.
        version: u32,
        /// The newest model version this build reads.
        reads: u32,
        /// The migration's or the decoder's message.
        reason: String,
    },
    /// Records the settings of a stream whose command codec this build does
    /// not know: a newer build took it.
    #[error(
        "snapshot {location} is of a stream whose command codec is {codec:?}, which this build does not know (it reads {known}): a newer build took it. Upgrade this node, or remove the snapshots that build wrote (the log must still hold everything after the older ones)",
        known = crate::envelope::known_codecs()
    )]
    UnknownCodec {
        /// Where it is.
        location: String,
        /// The codec as the snapshot's settings name it.
        codec: String,
    },
    /// Written by a newer format.
    #[error(
        "snapshot {path} has format version {found}, newer than this build reads ({supported})"
    )]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
}

/// Stores one node's snapshots.
#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a snapshot body atomically; afterwards keeps only the newest
    /// retained ones (by the store's policy).
    ///
    /// # Errors
    ///
    /// I/O failures; nothing partial is ever visible.
    async fn save(&self, meta: &SnapshotMeta, body: Vec<u8>) -> Result<(), SnapshotError>;

    /// Stores a snapshot whose body `write` produces, atomically like
    /// [`save`](SnapshotStore::save); returns the body's size in bytes.
    /// `write` runs on a blocking thread. The default collects the body in
    /// memory and calls `save`; [`FileSnapshotStore`] streams it into the
    /// file, so a large model's snapshot never holds its body in memory.
    ///
    /// # Errors
    ///
    /// What `write` returns, or I/O failures; nothing partial is ever visible.
    async fn save_streamed(
        &self,
        meta: &SnapshotMeta,
        write: BodyWriter,
    ) -> Result<u64, SnapshotError> {
        let body = tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            write(&mut body).map(|()| body)
        })
        .await
        .map_err(join_error)??;
        let len = body.len() as u64;
        self.save(meta, body).await?;
        Ok(len)
    }

    /// Stored snapshots, newest (highest applied index) first. Files that
    /// cannot even be listed properly are returned as errors in the list so
    /// the caller can report them.
    ///
    /// # Errors
    ///
    /// When the store itself cannot be read.
    async fn list(&self) -> Result<Vec<StoredSnapshot>, SnapshotError>;

    /// Loads and verifies one snapshot's body.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Corrupt`] when its checks fail; I/O errors.
    async fn load(&self, snapshot: &StoredSnapshot) -> Result<Vec<u8>, SnapshotError>;
}

/// Produces a snapshot body into a writer (see [`SnapshotStore::save_streamed`]).
pub type BodyWriter =
    Box<dyn FnOnce(&mut dyn std::io::Write) -> Result<(), SnapshotError> + Send + 'static>;

/// A snapshot as listed by a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Applied index it was taken at.
    pub applied_index: u64,
    /// Where it is (a path for the file store).
    pub location: String,
}

/// Loads, verifies and reads the metadata of a stored snapshot, without
/// decoding its model (for tools such as `memstate truncate`).
///
/// # Errors
///
/// As [`SnapshotStore::load`], or [`SnapshotError::Encoding`] when the body
/// holds no metadata.
pub async fn load_meta(
    store: &dyn SnapshotStore,
    stored: &StoredSnapshot,
) -> Result<SnapshotMeta, SnapshotError> {
    #[derive(Deserialize)]
    struct MetaOnly {
        meta: SnapshotMeta,
    }
    let body = store.load(stored).await?;
    let parsed: MetaOnly = serde_json::from_slice(&body).map_err(|e| {
        SnapshotError::Encoding(format!(
            "snapshot {} has no readable metadata: {e}",
            stored.location
        ))
    })?;
    let mut meta = parsed.meta;
    meta.bytes = body.len() as u64;
    Ok(meta)
}

/// When snapshots are taken automatically. All triggers are optional; any
/// one that fires takes a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotPolicy {
    /// After this many envelopes applied since the last snapshot.
    pub every_envelopes: Option<u64>,
    /// After this many record bytes read since the last snapshot.
    pub every_bytes: Option<u64>,
    /// After this much time since the last snapshot, when anything was
    /// applied since: checked as records arrive and, on a node that receives
    /// none, by a timer, so what a node applied is snapshotted within this
    /// interval even if nothing follows it.
    pub interval: Option<Duration>,
}

impl SnapshotPolicy {
    /// Only on demand ([`Engine::snapshot`](crate::Engine::snapshot)).
    pub fn on_demand() -> Self {
        Self::default()
    }

    /// Every `n` envelopes applied.
    pub fn every_envelopes(n: u64) -> Self {
        Self {
            every_envelopes: Some(n.max(1)),
            ..Self::default()
        }
    }

    /// Adds a byte trigger.
    pub fn with_bytes(mut self, bytes: u64) -> Self {
        self.every_bytes = Some(bytes.max(1));
        self
    }

    /// Adds a time trigger.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Makes sure a snapshot is taken within a quarter of `retention` (the
    /// stream's [`Stream::retention`](crate::Stream::retention)), keeping a
    /// shorter interval already set; `None` (a stream that keeps everything)
    /// leaves the policy as it is.
    ///
    /// A backend that deletes records by age (Kinesis) lets a node start only
    /// from a snapshot newer than the oldest record kept, so on such a stream
    /// every node must snapshot within the retention window. The time trigger
    /// also fires on a node that receives nothing more, so the records it
    /// applied before going idle are in a snapshot within a quarter of the
    /// retention.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use memstate_core::SnapshotPolicy;
    ///
    /// let day = Duration::from_secs(24 * 3600);
    /// let policy = SnapshotPolicy::every_envelopes(10_000).covering_retention(Some(day));
    /// assert_eq!(policy.interval, Some(day / 4));
    /// assert_eq!(SnapshotPolicy::on_demand().covering_retention(None).interval, None);
    /// ```
    pub fn covering_retention(mut self, retention: Option<Duration>) -> Self {
        if let Some(retention) = retention {
            let within = retention / 4;
            self.interval = Some(self.interval.map_or(within, |set| set.min(within)));
        }
        self
    }
}

fn join_error(e: tokio::task::JoinError) -> SnapshotError {
    SnapshotError::Encoding(format!("snapshot task failed: {e}"))
}
