//! [`FileSnapshotStore`]: snapshots as files, written atomically, the body
//! streamed through a checksumming writer (the format is described in
//! [`crate::snapshot`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{
    BodyWriter, MAGIC, SNAPSHOT_FORMAT_VERSION, SnapshotError, SnapshotMeta, SnapshotStore,
    StoredSnapshot, join_error,
};

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

    /// Writes a snapshot file atomically: `fill` writes header and body
    /// into a temporary file, which is fsynced and renamed; then the
    /// directory is fsynced and old snapshots are pruned. A failed write
    /// leaves no temporary file behind.
    fn write_atomically<T>(
        &self,
        meta: &SnapshotMeta,
        fill: impl FnOnce(&mut std::fs::File, &Path) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        let name = format!("snapshot-{:020}.snap", meta.applied_index);
        let path = self.dir.join(&name);
        // Unique per write: two writes of the same snapshot (by policy and
        // on demand at once) never share a temporary file.
        let tmp = self.dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp)
            .map_err(|e| Self::io(&tmp, e))
            .and_then(|mut f| {
                let out = fill(&mut f, &tmp)?;
                f.sync_all().map_err(|e| Self::io(&tmp, e))?;
                Ok(out)
            });
        let out = match written {
            Ok(out) => out,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
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
        Ok(out)
    }

    fn save_blocking(&self, meta: &SnapshotMeta, body: &[u8]) -> Result<(), SnapshotError> {
        use std::io::Write;
        self.write_atomically(meta, |f, tmp| {
            let header = format!(
                "{MAGIC} v{SNAPSHOT_FORMAT_VERSION} crc32c={:08x} len={}\n",
                crc32c::crc32c(body),
                body.len()
            );
            f.write_all(header.as_bytes())
                .and_then(|()| f.write_all(body))
                .map_err(|e| Self::io(tmp, e))
        })
    }

    /// Streams the body into the file through a checksumming writer, then
    /// rewrites the fixed-width header with its checksum and length.
    fn save_streamed_blocking(
        &self,
        meta: &SnapshotMeta,
        write: BodyWriter,
    ) -> Result<u64, SnapshotError> {
        use std::io::{Seek, SeekFrom, Write};
        self.write_atomically(meta, |f, tmp| {
            let io = |e| Self::io(tmp, e);
            f.write_all(streamed_header(0, 0).as_bytes()).map_err(io)?;
            let mut out = Checksummed::new(std::io::BufWriter::with_capacity(1 << 20, &mut *f));
            let written = write(&mut out).and_then(|()| out.flush().map_err(io));
            if let Some(e) = out.error.take() {
                return Err(io(e));
            }
            written?;
            let (crc, len) = (out.crc, out.len);
            drop(out);
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            f.write_all(streamed_header(crc, len).as_bytes())
                .map_err(io)?;
            Ok(len)
        })
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

/// Snapshot writes started by this process: part of the temporary file's name.
static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The header of a streamed snapshot: fixed width, so that it can be
/// written before the body and rewritten after it.
fn streamed_header(crc: u32, len: u64) -> String {
    format!("{MAGIC} v{SNAPSHOT_FORMAT_VERSION} crc32c={crc:08x} len={len:020}\n")
}

/// A writer that checksums and counts what passes through it, and keeps
/// the first I/O error (serializers report their own error instead).
struct Checksummed<W> {
    inner: W,
    crc: u32,
    len: u64,
    error: Option<std::io::Error>,
}

impl<W> Checksummed<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            crc: 0,
            len: 0,
            error: None,
        }
    }

    fn keep<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r
            && self.error.is_none()
        {
            self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        r
    }
}

impl<W: std::io::Write> std::io::Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf);
        let n = self.keep(written)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.inner.flush();
        self.keep(flushed)
    }
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

    async fn save_streamed(
        &self,
        meta: &SnapshotMeta,
        write: BodyWriter,
    ) -> Result<u64, SnapshotError> {
        let store = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || store.save_streamed_blocking(&meta, write))
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
    use crate::envelope::NodeId;
    use crate::stream::Cursor;

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

    #[tokio::test]
    async fn a_streamed_body_loads_whole_under_a_fixed_width_header() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path());
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = body.clone();
        let len = store
            .save_streamed(
                &meta(7),
                Box::new(move |out| {
                    // In pieces, as a serializer writes.
                    for piece in body.chunks(4097) {
                        out.write_all(piece)
                            .map_err(|e| SnapshotError::Encoding(e.to_string()))?;
                    }
                    Ok(())
                }),
            )
            .await
            .unwrap();
        assert_eq!(len, expected.len() as u64);
        let listed = store.list().await.unwrap();
        assert_eq!(store.load(&listed[0]).await.unwrap(), expected);
        let file = std::fs::read(&listed[0].location).unwrap();
        let header = std::str::from_utf8(&file[..file.iter().position(|b| *b == b'\n').unwrap()])
            .unwrap()
            .to_owned();
        assert_eq!(
            header,
            format!(
                "memstate-snapshot v1 crc32c={:08x} len=00000000000003000000",
                crc32c::crc32c(&expected)
            )
        );
        assert_eq!(header.len() + 1, streamed_header(0, 0).len());
    }

    #[tokio::test]
    async fn a_failed_streamed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::new(dir.path());
        store.save(&meta(1), b"older".to_vec()).await.unwrap();
        let err = store
            .save_streamed(
                &meta(2),
                Box::new(|out| {
                    out.write_all(b"half a body")
                        .map_err(|e| SnapshotError::Encoding(e.to_string()))?;
                    Err(SnapshotError::Encoding("the model refused".into()))
                }),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the model refused"), "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["snapshot-00000000000000000001.snap"],
            "no temporary file, no new snapshot"
        );
    }
}
