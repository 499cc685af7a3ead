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
//! Files are written atomically: a temporary file, fsync, rename, fsync of the
//! directory. A file whose header, length or checksum does not match is
//! reported as corrupt and skipped in favour of an older one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::envelope::NodeId;
use crate::stream::Cursor;

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

/// Snapshots as files in one directory, per node:
/// `<dir>/snapshot-<applied index, 20 digits>.snap`.
#[derive(Clone, Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl FileSnapshotStore {
    /// A store in `dir` (created when missing) keeping the 3 newest snapshots.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            keep: 3,
        }
    }

    /// Keeps the `keep` newest snapshots (at least 1); older ones are deleted after each save.
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn save_blocking(&self, meta: &SnapshotMeta, body: &[u8]) -> Result<(), SnapshotError> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        let name = format!("snapshot-{:020}.snap", meta.applied_index);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let header = format!(
            "{MAGIC} v{SNAPSHOT_FORMAT_VERSION} crc32c={:08x} len={}\n",
            crc32c::crc32c(body),
            body.len()
        );
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| Self::io(&tmp, e))?;
            f.write_all(header.as_bytes())
                .map_err(|e| Self::io(&tmp, e))?;
            f.write_all(body).map_err(|e| Self::io(&tmp, e))?;
            f.sync_all().map_err(|e| Self::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Self::io(&path, e))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Self::io(&self.dir, e))?;
        let listed = self.list_blocking()?;
        for old in listed.iter().skip(self.keep) {
            if let Err(e) = std::fs::remove_file(&old.location) {
                tracing::warn!(path = %old.location, error = %e, "could not delete an old snapshot");
            }
        }
        Ok(())
    }

    fn list_blocking(&self) -> Result<Vec<StoredSnapshot>, SnapshotError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Self::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(index) = name
                .strip_prefix("snapshot-")
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(StoredSnapshot {
                applied_index: index,
                location: entry.path().display().to_string(),
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.applied_index));
        Ok(out)
    }

    fn load_blocking(path: &Path) -> Result<Vec<u8>, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|e| Self::io(path, e))?;
        let corrupt = |reason: String| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no header line".into()))?;
        let header = std::str::from_utf8(&bytes[..newline])
            .map_err(|_| corrupt("header is not text".into()))?;
        let mut parts = header.split(' ');
        if parts.next() != Some(MAGIC) {
            return Err(corrupt(format!(
                "not a memstate snapshot (header {header:?})"
            )));
        }
        let version: u32 = parts
            .next()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt("no format version".into()))?;
        if version > SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion {
                path: path.to_path_buf(),
                found: version,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let crc = parts
            .next()
            .and_then(|v| v.strip_prefix("crc32c="))
            .and_then(|v| u32::from_str_radix(v, 16).ok())
            .ok_or_else(|| corrupt("no checksum".into()))?;
        let len: usize = parts
            .next()
            .and_then(|v| v.strip_prefix("len="))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt("no length".into()))?;
        let body = &bytes[newline + 1..];
        if body.len() != len {
            return Err(corrupt(format!(
                "body is {} bytes, header says {len}",
                body.len()
            )));
        }
        let actual = crc32c::crc32c(body);
        if actual != crc {
            return Err(corrupt(format!(
                "checksum {actual:08x} does not match {crc:08x}"
            )));
        }
        Ok(body.to_vec())
    }
}

fn join_error(e: tokio::task::JoinError) -> SnapshotError {
    SnapshotError::Encoding(format!("snapshot task failed: {e}"))
}

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    async fn save(&self, meta: &SnapshotMeta, body: Vec<u8>) -> Result<(), SnapshotError> {
        let store = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || store.save_blocking(&meta, &body))
            .await
            .map_err(join_error)?
    }

    async fn list(&self) -> Result<Vec<StoredSnapshot>, SnapshotError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.list_blocking())
            .await
            .map_err(join_error)?
    }

    async fn load(&self, snapshot: &StoredSnapshot) -> Result<Vec<u8>, SnapshotError> {
        let path = PathBuf::from(&snapshot.location);
        tokio::task::spawn_blocking(move || Self::load_blocking(&path))
            .await
            .map_err(join_error)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            node_id: NodeId::new("n"),
            applied_index: index,
            cursor: Some(Cursor::new(index.to_string())),
            taken_at_ms: 0,
            bytes: 0,
            model_version: 1,
        }
    }

    #[tokio::test]
    async fn saved_snapshots_list_newest_first_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path()).keep(2);
        for i in [5, 10, 15] {
            store
                .save(&meta(i), format!("body {i}").into_bytes())
                .await
                .unwrap();
        }
        let listed = store.list().await.unwrap();
        assert_eq!(
            listed.iter().map(|s| s.applied_index).collect::<Vec<_>>(),
            vec![15, 10]
        );
        assert_eq!(store.load(&listed[0]).await.unwrap(), b"body 15");
    }

    #[tokio::test]
    async fn a_flipped_byte_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path());
        store
            .save(&meta(1), b"{\"model\":1}".to_vec())
            .await
            .unwrap();
        let listed = store.list().await.unwrap();
        let path = PathBuf::from(&listed[0].location);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = store.load(&listed[0]).await.unwrap_err();
        assert!(
            matches!(err, SnapshotError::Corrupt { ref reason, .. } if reason.contains("checksum")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_truncated_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path());
        store.save(&meta(1), vec![b'x'; 100]).await.unwrap();
        let listed = store.list().await.unwrap();
        let path = PathBuf::from(&listed[0].location);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            store.load(&listed[0]).await,
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn an_empty_or_missing_directory_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path().join("absent"));
        assert!(store.list().await.unwrap().is_empty());
    }
}
