//! Where a shared log may be cut: the truncation safety rule.
//!
//! A node restarts from its newest valid snapshot and, should that one be
//! damaged, from an older one; each snapshot needs the log after its own
//! cursor. So a log read by several nodes may drop only what lies before the
//! **oldest valid snapshot of every node** that reads it. A node with no valid
//! snapshot, or whose oldest valid snapshot was taken before the first record,
//! needs the whole log: then nothing may go. A snapshot that fails its checks
//! cannot be restored, so it holds nothing back and is reported as skipped.
//!
//! The rule is the same for every backend, so it lives here; removing the
//! records is the backend's business (for the file journal,
//! `memstate_file::truncate::remove_segments_before`, which `memstate
//! truncate` runs with the cursor [`plan`] returns). A node that is not
//! named, or joins later, cannot rebuild from the log alone after a cut: give
//! it a copy of another node's snapshot.

use std::cmp::Ordering;

use crate::snapshot::{SnapshotError, SnapshotMeta, SnapshotStore, load_meta};
use crate::stream::{Cursor, StreamError};

/// One node reading the log, named by where its snapshots are.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    /// How the node is named in reports (its snapshot directory, say).
    pub name: &'a str,
    /// Its snapshots.
    pub store: &'a dyn SnapshotStore,
}

/// What one node's snapshots allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldestSnapshot {
    /// The node, as named in its [`Reader`].
    pub name: String,
    /// Its oldest snapshot that passes its checks, if any.
    pub oldest_valid: Option<SnapshotMeta>,
    /// Snapshots older than that one which fail their checks: where, and why.
    pub skipped: Vec<(String, String)>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Truncation {
    /// No node needs a record before `cursor` (the record at `cursor` itself
    /// is still needed).
    Before {
        /// The earliest of the nodes' oldest valid snapshot cursors.
        cursor: Cursor,
        /// The node whose snapshot sets it.
        set_by: String,
    },
    /// A node needs the whole log: nothing may be removed.
    Nothing {
        /// That node.
        node: String,
        /// Why.
        reason: WholeLog,
    },
}

/// Why a node needs the whole log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WholeLog {
    /// It has no snapshot that passes its checks.
    NoValidSnapshot,
    /// Its oldest valid snapshot was taken before the first record.
    SnapshotBeforeTheFirstRecord,
}

/// The verdict, with what each node's snapshots allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncationPlan {
    /// Per node, in the order given.
    pub readers: Vec<OldestSnapshot>,
    /// What may be removed.
    pub truncation: Truncation,
}

/// Why no verdict could be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TruncationError {
    /// No reader was named: a cut would be safe for nobody in particular.
    #[error("name the snapshots of every node that reads the log; none were named")]
    NoReaders,
    /// A node's snapshots could not be listed.
    #[error("cannot list the snapshots of {node}: {source}")]
    Snapshots {
        /// The node.
        node: String,
        /// The store's error.
        #[source]
        source: SnapshotError,
    },
    /// A snapshot's cursor is not one of this log's.
    #[error("the snapshot cursor of {node} does not belong to this log: {source}")]
    Cursor {
        /// The node.
        node: String,
        /// What the log's cursor order said.
        #[source]
        source: StreamError,
    },
}

/// Applies the rule: the minimum, over every reader, of its oldest valid
/// snapshot's cursor, ordered by `order` (the log's cursor order, such as
/// [`crate::Stream::compare_cursors`]).
///
/// # Errors
///
/// [`TruncationError::NoReaders`] for an empty list; a store that cannot list
/// its snapshots; a cursor `order` refuses.
///
/// # Examples
///
/// ```
/// # async fn demo(a: &dyn memstate_core::SnapshotStore, b: &dyn memstate_core::SnapshotStore)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use memstate_core::truncation::{Reader, Truncation, plan};
///
/// let readers = [Reader { name: "node-a", store: a }, Reader { name: "node-b", store: b }];
/// let numeric = |x: &memstate_core::Cursor, y: &memstate_core::Cursor| {
///     Ok(memstate_core::cursor::from_cursor(x, "index")?
///         .cmp(&memstate_core::cursor::from_cursor(y, "index")?))
/// };
/// match plan(&readers, numeric).await?.truncation {
///     Truncation::Before { cursor, set_by } => println!("drop before {cursor} ({set_by})"),
///     other => println!("keep everything: {other:?}"),
/// }
/// # Ok(()) }
/// ```
pub async fn plan(
    readers: &[Reader<'_>],
    order: impl Fn(&Cursor, &Cursor) -> Result<Ordering, StreamError>,
) -> Result<TruncationPlan, TruncationError> {
    if readers.is_empty() {
        return Err(TruncationError::NoReaders);
    }
    let mut found = Vec::with_capacity(readers.len());
    for reader in readers {
        found.push(oldest_valid(reader).await?);
    }
    let mut cut: Option<(Cursor, String)> = None;
    for node in &found {
        let Some(meta) = &node.oldest_valid else {
            return Ok(verdict(
                found.clone(),
                &node.name,
                WholeLog::NoValidSnapshot,
            ));
        };
        let Some(cursor) = &meta.cursor else {
            return Ok(verdict(
                found.clone(),
                &node.name,
                WholeLog::SnapshotBeforeTheFirstRecord,
            ));
        };
        let earlier = match &cut {
            None => true,
            Some((current, _)) => {
                order(cursor, current).map_err(|source| TruncationError::Cursor {
                    node: node.name.clone(),
                    source,
                })? == Ordering::Less
            }
        };
        if earlier {
            cut = Some((cursor.clone(), node.name.clone()));
        }
    }
    let truncation = match cut {
        Some((cursor, set_by)) => Truncation::Before { cursor, set_by },
        None => return Err(TruncationError::NoReaders),
    };
    Ok(TruncationPlan {
        readers: found,
        truncation,
    })
}

fn verdict(readers: Vec<OldestSnapshot>, node: &str, reason: WholeLog) -> TruncationPlan {
    TruncationPlan {
        readers,
        truncation: Truncation::Nothing {
            node: node.to_owned(),
            reason,
        },
    }
}

/// The oldest snapshot of one reader that passes its checks.
async fn oldest_valid(reader: &Reader<'_>) -> Result<OldestSnapshot, TruncationError> {
    let mut listed = reader
        .store
        .list()
        .await
        .map_err(|source| TruncationError::Snapshots {
            node: reader.name.to_owned(),
            source,
        })?;
    // Listed newest first; the oldest valid one is the first to load from the end.
    listed.reverse();
    let mut skipped = Vec::new();
    for stored in &listed {
        match load_meta(reader.store, stored).await {
            Ok(meta) => {
                return Ok(OldestSnapshot {
                    name: reader.name.to_owned(),
                    oldest_valid: Some(meta),
                    skipped,
                });
            }
            Err(e) => skipped.push((stored.location.clone(), e.to_string())),
        }
    }
    Ok(OldestSnapshot {
        name: reader.name.to_owned(),
        oldest_valid: None,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use parking_lot::Mutex;

    use super::*;
    use crate::snapshot::StoredSnapshot;

    /// Snapshots in memory, keyed by applied index; `None` bodies fail their checks.
    #[derive(Debug, Default)]
    struct Store {
        snapshots: Mutex<BTreeMap<u64, Option<Vec<u8>>>>,
        unreadable: bool,
    }

    impl Store {
        fn with(snapshots: &[(u64, Option<u64>, bool)]) -> Self {
            let store = Self::default();
            for &(index, cursor, valid) in snapshots {
                let meta = SnapshotMeta {
                    node_id: crate::NodeId::new("n"),
                    applied_index: index,
                    cursor: cursor.map(|c| Cursor::new(c.to_string())),
                    taken_at_ms: 0,
                    bytes: 0,
                    model_version: 1,
                };
                let body =
                    serde_json::to_vec(&serde_json::json!({ "meta": meta })).unwrap_or_default();
                store.snapshots.lock().insert(index, valid.then_some(body));
            }
            store
        }
    }

    #[async_trait]
    impl SnapshotStore for Store {
        async fn save(&self, meta: &SnapshotMeta, body: Vec<u8>) -> Result<(), SnapshotError> {
            self.snapshots.lock().insert(meta.applied_index, Some(body));
            Ok(())
        }

        async fn list(&self) -> Result<Vec<StoredSnapshot>, SnapshotError> {
            if self.unreadable {
                return Err(SnapshotError::Encoding(
                    "the directory is unreadable".into(),
                ));
            }
            Ok(self
                .snapshots
                .lock()
                .keys()
                .rev()
                .map(|&applied_index| StoredSnapshot {
                    applied_index,
                    location: format!("snapshot-{applied_index}"),
                })
                .collect())
        }

        async fn load(&self, snapshot: &StoredSnapshot) -> Result<Vec<u8>, SnapshotError> {
            self.snapshots
                .lock()
                .get(&snapshot.applied_index)
                .cloned()
                .flatten()
                .ok_or_else(|| SnapshotError::Encoding("checksum mismatch".into()))
        }
    }

    fn numeric(a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        Ok(crate::cursor::from_cursor(a, "test index")?
            .cmp(&crate::cursor::from_cursor(b, "test index")?))
    }

    async fn run(stores: &[(&str, &Store)]) -> Result<TruncationPlan, TruncationError> {
        let readers: Vec<Reader<'_>> = stores
            .iter()
            .map(|(name, store)| Reader {
                name,
                store: *store as &dyn SnapshotStore,
            })
            .collect();
        plan(&readers, numeric).await
    }

    fn before(cursor: u64, set_by: &str) -> Truncation {
        Truncation::Before {
            cursor: Cursor::new(cursor.to_string()),
            set_by: set_by.into(),
        }
    }

    #[tokio::test]
    async fn the_cut_is_the_minimum_over_every_nodes_oldest_snapshot() {
        let a = Store::with(&[(50, Some(50), true), (90, Some(90), true)]);
        let b = Store::with(&[(30, Some(30), true), (100, Some(100), true)]);
        let plan = run(&[("a", &a), ("b", &b)]).await.unwrap();
        assert_eq!(plan.truncation, before(30, "b"));
    }

    #[tokio::test]
    async fn a_nodes_fallback_snapshot_holds_the_cut_back_not_its_newest() {
        let a = Store::with(&[(10, Some(10), true), (900, Some(900), true)]);
        let plan = run(&[("a", &a)]).await.unwrap();
        assert_eq!(plan.truncation, before(10, "a"));
    }

    #[tokio::test]
    async fn numeric_order_decides_not_text_order() {
        let a = Store::with(&[(9, Some(9), true)]);
        let b = Store::with(&[(10, Some(10), true)]);
        let plan = run(&[("b", &b), ("a", &a)]).await.unwrap();
        assert_eq!(plan.truncation, before(9, "a"));
    }

    #[tokio::test]
    async fn a_damaged_old_snapshot_is_skipped_and_reported() {
        let a = Store::with(&[
            (5, Some(5), false),
            (60, Some(60), true),
            (80, Some(80), true),
        ]);
        let b = Store::with(&[(70, Some(70), true)]);
        let plan = run(&[("a", &a), ("b", &b)]).await.unwrap();
        assert_eq!(plan.truncation, before(60, "a"));
        assert_eq!(plan.readers[0].skipped.len(), 1);
        assert_eq!(plan.readers[0].skipped[0].0, "snapshot-5");
        assert!(plan.readers[1].skipped.is_empty());
    }

    #[tokio::test]
    async fn a_node_without_a_valid_snapshot_keeps_the_whole_log() {
        let a = Store::with(&[(60, Some(60), true)]);
        let b = Store::with(&[(70, Some(70), false)]);
        let empty = Store::default();
        for (name, store) in [("b", &b), ("empty", &empty)] {
            let plan = run(&[("a", &a), (name, store)]).await.unwrap();
            assert_eq!(
                plan.truncation,
                Truncation::Nothing {
                    node: name.into(),
                    reason: WholeLog::NoValidSnapshot
                }
            );
        }
    }

    #[tokio::test]
    async fn a_snapshot_from_before_the_first_record_keeps_the_whole_log() {
        let a = Store::with(&[(0, None, true), (60, Some(60), true)]);
        let plan = run(&[("a", &a)]).await.unwrap();
        assert_eq!(
            plan.truncation,
            Truncation::Nothing {
                node: "a".into(),
                reason: WholeLog::SnapshotBeforeTheFirstRecord
            }
        );
    }

    #[tokio::test]
    async fn no_readers_named_is_an_error_not_a_cut() {
        let err = plan(&[], numeric).await.unwrap_err();
        assert!(matches!(err, TruncationError::NoReaders), "{err}");
    }

    #[tokio::test]
    async fn an_unlistable_store_and_a_foreign_cursor_are_errors() {
        let unreadable = Store {
            unreadable: true,
            ..Store::default()
        };
        let err = run(&[("u", &unreadable)]).await.unwrap_err();
        assert!(
            matches!(&err, TruncationError::Snapshots { node, .. } if node == "u"),
            "{err}"
        );
        let a = Store::with(&[(6, Some(6), true)]);
        let b = Store::default();
        b.snapshots.lock().insert(
            7,
            serde_json::to_vec(&serde_json::json!({ "meta": SnapshotMeta {
                node_id: crate::NodeId::new("n"),
                applied_index: 7,
                cursor: Some(Cursor::new("00000000:000000000032")),
                taken_at_ms: 0,
                bytes: 0,
                model_version: 1,
            }}))
            .ok(),
        );
        let err = run(&[("a", &a), ("b", &b)]).await.unwrap_err();
        assert!(
            matches!(&err, TruncationError::Cursor { node, .. } if node == "b"),
            "{err}"
        );
    }
}
