//! Snapshots inside the engine: restore at start, capture at a record
//! boundary, encode and write off the apply loop, and the policy that decides
//! when. The store and its file format are in [`crate::snapshot`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::Node;
use super::apply::check_settings;
use super::replicated::Replicated;
use crate::envelope::NodeId;
use crate::error::Error;
use crate::model::Model;
use crate::settings::Settings;
use crate::snapshot::{BodyWriter, SnapshotError, SnapshotMeta, SnapshotPolicy, SnapshotStore};

/// Serializes the model into a writer (no copy of it in memory).
pub(crate) type Encode<M> = fn(&M, &mut dyn std::io::Write) -> Result<(), serde_json::Error>;
/// Decodes the model from its JSON text (a snapshot of this model version).
type DecodeText<M> = fn(&str) -> Result<M, serde_json::Error>;
/// Decodes the model from a migrated JSON value (an older model version).
type Decode<M> = fn(serde_json::Value) -> Result<M, serde_json::Error>;

/// A store, a policy, and how to (de)serialize the model.
pub(crate) struct SnapshotHooks<M> {
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) policy: SnapshotPolicy,
    encode: Encode<M>,
    decode_text: DecodeText<M>,
    decode: Decode<M>,
}

impl<M> std::fmt::Debug for SnapshotHooks<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotHooks")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<M> SnapshotHooks<M> {
    /// The model's serializer, to run away from the engine's locks.
    pub(crate) fn encoder(&self) -> Encode<M> {
        self.encode
    }
}

impl<M: Model + Serialize + DeserializeOwned> SnapshotHooks<M> {
    pub(crate) fn new(store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self {
        Self {
            store,
            policy,
            encode: |m, w| serde_json::to_writer(w, m),
            decode_text: |text| serde_json::from_str(text),
            decode: serde_json::from_value,
        }
    }
}

/// What this node did with snapshots: for stats and operators.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// The snapshot this node started from, if any.
    pub restored_from: Option<SnapshotMeta>,
    /// Snapshots that could not be used at start, with the reason.
    pub rejected_at_start: Vec<String>,
    /// The newest snapshot this node wrote.
    pub last_taken: Option<SnapshotMeta>,
    /// How long applying paused to copy the state for the last snapshot.
    pub last_pause: Option<Duration>,
    /// Snapshots written since start.
    pub taken: u64,
    /// Snapshot writes that failed since start.
    pub failed: u64,
}

/// Policy bookkeeping.
#[derive(Debug)]
pub(crate) struct SnapshotProgress {
    pub(crate) index_at_last: u64,
    pub(crate) bytes_since: u64,
    /// The runtime's clock (paused in tests), which the timer sleeps on.
    pub(crate) last_at: tokio::time::Instant,
    pub(crate) writing: bool,
    pub(crate) stats: SnapshotStats,
}

impl Default for SnapshotProgress {
    fn default() -> Self {
        Self {
            index_at_last: 0,
            bytes_since: 0,
            last_at: tokio::time::Instant::now(),
            writing: false,
            stats: SnapshotStats::default(),
        }
    }
}

impl SnapshotProgress {
    pub(crate) fn due(&self, policy: &SnapshotPolicy, applied_index: u64) -> bool {
        if self.writing {
            return false;
        }
        let by_count = policy
            .every_envelopes
            .is_some_and(|n| applied_index.saturating_sub(self.index_at_last) >= n);
        let by_bytes = policy.every_bytes.is_some_and(|n| self.bytes_since >= n);
        let by_time = policy
            .interval
            .is_some_and(|d| self.last_at.elapsed() >= d && applied_index > self.index_at_last);
        by_count || by_bytes || by_time
    }
}

/// A snapshot body as read: the model stays JSON text (borrowed from the
/// body) until it is decoded, so no `Value` tree of it is built unless it
/// must be migrated.
#[derive(serde::Deserialize)]
struct BodyIn<'a> {
    meta: SnapshotMeta,
    replicated: Replicated,
    #[serde(borrow)]
    model: &'a RawValue,
}

/// The part of a snapshot body that names the stream's codec; the rest
/// (the model above all) is skipped without being held.
#[derive(serde::Deserialize)]
struct CodecProbe {
    replicated: ReplicatedProbe,
}

#[derive(serde::Deserialize)]
struct ReplicatedProbe {
    genesis: Option<GenesisProbe>,
}

#[derive(serde::Deserialize)]
struct GenesisProbe {
    command_codec: Option<serde_json::Value>,
}

/// The codec a snapshot body's settings name, when this build does not know
/// it. Only a body that failed to decode is probed.
fn unknown_codec(body: &[u8]) -> Option<String> {
    let probe: CodecProbe = serde_json::from_slice(body).ok()?;
    crate::codec::unknown_codec_name(&probe.replicated.genesis?.command_codec?)
}

/// A restored state.
struct Restored<M> {
    pub(crate) model: M,
    pub(crate) replicated: Replicated,
    pub(crate) meta: SnapshotMeta,
}

/// The state a node starts from: the newest usable snapshot's, or `model`
/// with nothing applied; with the snapshot bookkeeping to start with.
pub(super) async fn restore_at_start<M: Model>(
    hooks: Option<&SnapshotHooks<M>>,
    local: &Settings,
    model: M,
) -> Result<(M, Replicated, SnapshotProgress), Error> {
    let mut progress = SnapshotProgress::default();
    let Some(hooks) = hooks else {
        return Ok((model, Replicated::default(), progress));
    };
    match restore(
        hooks,
        local,
        &mut progress.stats.rejected_at_start,
        SnapshotBound::Newest,
    )
    .await?
    {
        Some(restored) => {
            tracing::info!(applied_index = restored.meta.applied_index, cursor = ?restored.meta.cursor, "restored a snapshot; replaying the log after it");
            progress.index_at_last = restored.meta.applied_index;
            progress.stats.restored_from = Some(restored.meta);
            Ok((restored.model, restored.replicated, progress))
        }
        None => {
            tracing::info!("no usable snapshot; replaying the whole log");
            Ok((model, Replicated::default(), progress))
        }
    }
}

/// Which snapshots may be used.
#[derive(Clone, Copy, Debug)]
pub(super) enum SnapshotBound {
    /// Any: the newest.
    Newest,
    /// Only those at or before this applied index.
    Index(u64),
    /// Only those taken at or before this moment (ms since the Unix epoch,
    /// by the clock of the node that took them).
    TakenBy(u64),
}

/// The newest usable snapshot within `bound`, if there is a store and one
/// (time travel: the state to replay from).
pub(super) async fn restore_bounded<M: Model>(
    hooks: Option<&SnapshotHooks<M>>,
    local: &Settings,
    bound: SnapshotBound,
) -> Result<Option<(M, Replicated)>, Error> {
    let Some(hooks) = hooks else { return Ok(None) };
    let restored = restore(hooks, local, &mut Vec::new(), bound).await?;
    Ok(restored.map(|r| (r.model, r.replicated)))
}

/// Finds the newest snapshot within `bound` that loads, verifies, decodes
/// and matches the local settings. Corrupt ones are reported and skipped.
async fn restore<M: Model>(
    hooks: &SnapshotHooks<M>,
    local: &Settings,
    rejected: &mut Vec<String>,
    bound: SnapshotBound,
) -> Result<Option<Restored<M>>, Error> {
    let listed = hooks.store.list().await.map_err(Error::Snapshot)?;
    for stored in listed {
        if matches!(bound, SnapshotBound::Index(i) if stored.applied_index > i) {
            continue;
        }
        let body = match hooks.store.load(&stored).await {
            Ok(body) => body,
            Err(e @ SnapshotError::UnknownVersion { .. }) => return Err(Error::Snapshot(e)),
            Err(e) => {
                tracing::warn!(snapshot = %stored.location, error = %e, "skipping an unusable snapshot");
                rejected.push(e.to_string());
                continue;
            }
        };
        let parsed: BodyIn = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                // A newer build's snapshot is refused, never passed over for
                // an older one as if it were corrupt.
                if let Some(codec) = unknown_codec(&body) {
                    return Err(Error::Snapshot(SnapshotError::UnknownCodec {
                        location: stored.location,
                        codec,
                    }));
                }
                let why = format!("snapshot {} does not decode: {e}", stored.location);
                tracing::warn!(%why, "skipping an unusable snapshot");
                rejected.push(why);
                continue;
            }
        };
        if matches!(bound, SnapshotBound::TakenBy(ms) if parsed.meta.taken_at_ms > ms) {
            continue;
        }
        let model = read_model(
            hooks,
            &stored.location,
            parsed.meta.model_version,
            parsed.model,
        )?;
        if parsed.replicated.versions.active > M::VERSION {
            return Err(Error::Snapshot(SnapshotError::NeedsModelVersion {
                location: stored.location,
                version: parsed.replicated.versions.active,
                reads: M::VERSION,
            }));
        }
        if let Some(genesis) = &parsed.replicated.genesis {
            check_settings(local, genesis).map_err(Error::Halted)?;
        }
        let mut meta = parsed.meta;
        meta.bytes = body.len() as u64;
        return Ok(Some(Restored {
            model,
            replicated: parsed.replicated,
            meta,
        }));
    }
    Ok(None)
}

/// The snapshot's model, migrated from its version to this build's one step
/// at a time and decoded. A snapshot this build cannot read stops the start
/// with the version it needs: it is never passed over for an older one
/// (whose log may be truncated) nor called corrupt.
fn read_model<M: Model>(
    hooks: &SnapshotHooks<M>,
    location: &str,
    version: u32,
    model: &RawValue,
) -> Result<M, Error> {
    let unreadable = |reason: String| {
        Error::Snapshot(SnapshotError::ModelUnreadable {
            location: location.to_owned(),
            version,
            reads: M::VERSION,
            reason,
        })
    };
    if version > M::VERSION {
        return Err(Error::Snapshot(SnapshotError::NeedsModelVersion {
            location: location.to_owned(),
            version,
            reads: M::VERSION,
        }));
    }
    if version == M::VERSION {
        return (hooks.decode_text)(model.get()).map_err(|e| unreadable(e.to_string()));
    }
    let mut value: serde_json::Value =
        serde_json::from_str(model.get()).map_err(|e| unreadable(e.to_string()))?;
    for step in version..M::VERSION {
        value = M::migrate_snapshot(step, value)
            .map_err(|e| unreadable(format!("migrating from model version {step} failed: {e}")))?;
    }
    (hooks.decode)(value).map_err(|e| unreadable(e.to_string()))
}

/// What a snapshot taken now of `replicated` says of itself (its size is
/// known once written).
fn snapshot_meta<M: Model>(node_id: &NodeId, replicated: &Replicated) -> SnapshotMeta {
    SnapshotMeta {
        node_id: node_id.clone(),
        applied_index: replicated.applied_index,
        cursor: replicated.cursor.clone(),
        taken_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        bytes: 0,
        model_version: M::VERSION,
    }
}

/// Serializes a copy of the state into a snapshot body, streamed into `out`
/// (the store's file): `{"meta":…,"replicated":…,"model":…}`. Runs on a
/// blocking thread, away from the engine's locks.
fn write_body<M: Model>(
    encoder: Encode<M>,
    meta: &SnapshotMeta,
    replicated: &Replicated,
    model: &M,
    out: &mut dyn std::io::Write,
) -> Result<(), SnapshotError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        SnapshotError::Encoding(format!("{what} cannot be serialized: {e}"))
    };
    let text = |out: &mut dyn std::io::Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| failed("the snapshot", &e))
    };
    text(out, "{\"meta\":")?;
    serde_json::to_writer(&mut *out, meta).map_err(|e| failed("the snapshot's metadata", &e))?;
    text(out, ",\"replicated\":")?;
    serde_json::to_writer(&mut *out, replicated).map_err(|e| failed("the replicated state", &e))?;
    text(out, ",\"model\":")?;
    encoder(model, &mut *out).map_err(|e| failed("the model", &e))?;
    text(out, "}")
}

/// The snapshot role of a node: its store and policy, and its bookkeeping.
pub(super) struct Snapshots<M> {
    hooks: Option<SnapshotHooks<M>>,
    progress: Mutex<SnapshotProgress>,
}

impl<M> Snapshots<M> {
    pub(super) fn new(hooks: Option<SnapshotHooks<M>>, progress: SnapshotProgress) -> Self {
        Self {
            hooks,
            progress: Mutex::new(progress),
        }
    }

    /// The store, when this node keeps snapshots.
    pub(super) fn store(&self) -> Option<Arc<dyn SnapshotStore>> {
        self.hooks.as_ref().map(|h| Arc::clone(&h.store))
    }

    /// What this node did with snapshots so far.
    pub(super) fn stats(&self) -> SnapshotStats {
        self.progress.lock().stats.clone()
    }

    fn saved(&self, meta: &SnapshotMeta) {
        let mut progress = self.progress.lock();
        progress.writing = false;
        progress.stats.taken += 1;
        if progress
            .stats
            .last_taken
            .as_ref()
            .is_none_or(|l| l.applied_index <= meta.applied_index)
        {
            progress.stats.last_taken = Some(meta.clone());
        }
    }

    /// The policy's time trigger, when this node keeps snapshots.
    pub(super) fn interval(&self) -> Option<Duration> {
        self.hooks.as_ref().and_then(|h| h.policy.interval)
    }

    /// Records a failed write without failing the engine: the log still holds everything.
    fn failed(&self, error: &Error) {
        tracing::error!(%error, "writing a snapshot failed; the log still holds everything");
        let mut p = self.progress.lock();
        p.writing = false;
        p.stats.failed += 1;
    }
}

impl<M: Model> Node<M> {
    /// Takes a snapshot now and waits until it is stored.
    pub(super) async fn snapshot_now(&self) -> Result<SnapshotMeta, Error> {
        self.check_running()?;
        let hooks = self.snapshots.hooks.as_ref().ok_or_else(|| {
            Error::Config("no snapshot store configured (EngineBuilder::snapshots)".into())
        })?;
        let captured = self.capture_snapshot();
        self.write_snapshot(hooks, captured).await
    }

    /// Copies the state at a record boundary: applying waits only for the
    /// copy (a clone of the model), not for serialization or I/O.
    fn capture_snapshot(&self) -> (Replicated, M) {
        let started = Instant::now();
        let captured = {
            let state = self.applied.state.lock();
            let model = self.applied.model.read();
            (state.clone(), model.clone())
        };
        let mut progress = self.snapshots.progress.lock();
        progress.stats.last_pause = Some(started.elapsed());
        progress.index_at_last = captured.0.applied_index;
        progress.bytes_since = 0;
        progress.last_at = tokio::time::Instant::now();
        captured
    }

    /// Serializes a captured state on a blocking thread and stores it.
    async fn write_snapshot(
        &self,
        hooks: &SnapshotHooks<M>,
        (state, model): (Replicated, M),
    ) -> Result<SnapshotMeta, Error> {
        let encoder = hooks.encoder();
        let mut meta = snapshot_meta::<M>(&self.info.node_id, &state);
        let written = async move {
            let header = meta.clone();
            let write: BodyWriter =
                Box::new(move |out| write_body(encoder, &header, &state, &model, out));
            meta.bytes = hooks
                .store
                .save_streamed(&meta, write)
                .await
                .map_err(Error::Snapshot)?;
            Ok(meta)
        };
        match written.await {
            Ok(meta) => {
                self.snapshots.saved(&meta);
                Ok(meta)
            }
            Err(e) => {
                self.snapshots.failed(&e);
                Err(e)
            }
        }
    }

    /// Counts a record applied and takes a snapshot when the policy says so.
    pub(super) fn after_record(self: &Arc<Self>, record_bytes: usize) {
        self.snapshot_if_due(record_bytes as u64);
    }

    /// Takes a snapshot when the policy says so; the write happens in the background.
    fn snapshot_if_due(self: &Arc<Self>, new_bytes: u64) {
        let Some(hooks) = &self.snapshots.hooks else {
            return;
        };
        let applied_index = self.applied.progress.borrow().applied_index;
        {
            let mut progress = self.snapshots.progress.lock();
            progress.bytes_since += new_bytes;
            if !progress.due(&hooks.policy, applied_index) {
                return;
            }
            progress.writing = true;
        }
        let captured = self.capture_snapshot();
        let node = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(hooks) = &node.snapshots.hooks {
                // A failure is counted and logged by write_snapshot.
                let _ = node.write_snapshot(hooks, captured).await;
            }
        });
    }
}

/// Fires the policy's time trigger on a node that receives no more records:
/// records applied since the last snapshot are snapshotted within `interval`
/// even if nothing arrives after them (records arriving later trigger it
/// themselves). On a stream that deletes records by age (Kinesis), an idle
/// node would otherwise keep only a snapshot older than records that expire.
/// Ends with the engine (shutdown or halt).
pub(super) async fn snapshot_timer<M: Model>(node: Arc<Node<M>>, interval: Duration) {
    let mut shutdown = node.submitter.shutdown.subscribe();
    // After a check that found nothing to do, the next one is a whole
    // interval later: a record arriving meanwhile finds the trigger due.
    let mut not_before = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow_and_update() || node.check_running().is_err() {
            return;
        }
        let last = node.snapshots.progress.lock().last_at;
        // An interval beyond the clock's range never comes.
        let Some(wake) = last.checked_add(interval) else {
            return;
        };
        let wake = wake.max(not_before);
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if node.check_running().is_err() {
            return;
        }
        node.snapshot_if_due(0);
        let Some(next) = tokio::time::Instant::now().checked_add(interval) else {
            return;
        };
        not_before = next;
    }
}
