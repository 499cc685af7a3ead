//! Opt-in, conservative journal truncation.
//!
//! A journal may drop only what lies before the oldest retained snapshot of
//! every node that reads it: a node restarting from its oldest (fallback)
//! snapshot must still find the log after it. This module removes whole
//! segments that end before a given cursor and nothing else; deciding the
//! cursor is the caller's job (`memstate truncate` takes the minimum over the
//! snapshot directories of every node). Nothing here runs by default.

use std::path::{Path, PathBuf};

use memstate_core::Cursor;

use crate::error::FileStreamError;
use crate::format::segment_path;
use crate::position::Position;
use crate::recovery::list_segments;

/// What a truncation removed (or would remove, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncateReport {
    /// Segment numbers removed (or to remove), ascending.
    pub segments: Vec<u64>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Whether files were actually deleted.
    pub applied: bool,
}

/// Removes every segment numbered below the segment holding `keep_from`, so
/// that subscribing after `keep_from` (or after any later cursor) still works.
/// With `apply == false` only reports what it would remove.
///
/// # Errors
///
/// [`FileStreamError::InvalidCursor`] when `keep_from` is not a cursor of this
/// journal or its segment does not exist; I/O failures.
pub fn remove_segments_before(
    dir: impl AsRef<Path>,
    keep_from: &Cursor,
    apply: bool,
) -> Result<TruncateReport, FileStreamError> {
    let dir = dir.as_ref();
    let position = Position::from_cursor(keep_from)?;
    let segments = list_segments(dir)?;
    if !segments.contains(&position.segment) {
        return Err(FileStreamError::InvalidCursor {
            cursor: keep_from.to_string(),
            reason: format!(
                "segment {} is not in {}: the journal holds segments {segments:?}",
                position.segment,
                dir.display()
            ),
        });
    }
    let doomed: Vec<u64> = segments
        .into_iter()
        .filter(|s| *s < position.segment)
        .collect();
    let mut bytes = 0;
    let paths: Vec<PathBuf> = doomed.iter().map(|s| segment_path(dir, *s)).collect();
    for path in &paths {
        bytes += std::fs::metadata(path)
            .map_err(|e| FileStreamError::io("reading the size of", path, e))?
            .len();
    }
    if apply {
        // Oldest first: a crash part-way leaves a journal that still starts
        // at a segment boundary, which readers report as truncated history.
        for path in &paths {
            std::fs::remove_file(path).map_err(|e| FileStreamError::io("removing", path, e))?;
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FileStreamError::io("syncing", dir, e))?;
    }
    Ok(TruncateReport {
        segments: doomed,
        bytes,
        applied: apply,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use memstate_core::Stream;

    use super::*;
    use crate::{FileStream, FileStreamConfig};

    #[tokio::test]
    async fn removes_only_whole_segments_before_the_cursor_and_the_suffix_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileStreamConfig::new(dir.path())
            .with_max_record_size(64)
            .with_segment_size(FileStreamConfig::min_segment_size_for(64));
        let stream = FileStream::open_with(config.clone()).await.unwrap();
        let mut cursors = Vec::new();
        for i in 0..200u32 {
            cursors.extend(
                stream
                    .append(vec![Bytes::from(format!("record-{i:04}"))])
                    .await
                    .unwrap(),
            );
        }
        let keep = cursors[150].clone();
        let keep_segment = Position::from_cursor(&keep).unwrap().segment;
        assert!(keep_segment > 1, "the test needs several segments");

        let dry = remove_segments_before(dir.path(), &keep, false).unwrap();
        assert_eq!(dry.segments, (0..keep_segment).collect::<Vec<_>>());
        assert!(!dry.applied);
        assert!(
            segment_path(dir.path(), 0).exists(),
            "a dry run deletes nothing"
        );

        let done = remove_segments_before(dir.path(), &keep, true).unwrap();
        assert_eq!(done.segments, dry.segments);
        assert!(!segment_path(dir.path(), 0).exists());

        let mut sub = stream.subscribe(Some(keep.clone())).await.unwrap();
        let next = sub.next().await.unwrap().unwrap();
        assert_eq!(next.payload, Bytes::from("record-0151"));
        let from_start = stream.subscribe(None).await;
        assert!(
            from_start.is_err(),
            "the beginning is gone and must be reported"
        );
        drop(stream);
        let reopened = FileStream::open_with(config).await.unwrap();
        let mut sub = reopened.subscribe(Some(keep)).await.unwrap();
        assert_eq!(
            sub.next().await.unwrap().unwrap().payload,
            Bytes::from("record-0151")
        );
    }

    #[tokio::test]
    async fn a_cursor_from_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stream = FileStream::open(dir.path()).await.unwrap();
        stream.append(vec![Bytes::from_static(b"x")]).await.unwrap();
        let err = remove_segments_before(dir.path(), &Cursor::new("00000009:000000000032"), true)
            .unwrap_err();
        assert!(
            matches!(err, FileStreamError::InvalidCursor { .. }),
            "{err}"
        );
        assert!(remove_segments_before(dir.path(), &Cursor::new("garbage"), true).is_err());
    }
}
