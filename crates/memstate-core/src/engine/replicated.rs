//! The state replicated beside the model, and the log's rules that advance it.
//!
//! Identical on every node at the same applied index, and what a snapshot
//! stores next to the model. The rules here need no model: which records are
//! frames, which envelope is the Genesis, which copies are duplicates, which
//! commands are fenced, what control messages do. The engine's applier and
//! the [`History`](crate::history::History) reader both follow them, so the
//! history shows exactly what every engine applied.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::dedup::{Dedup, Rejection, Seen};
use crate::envelope::{Body, Control, Envelope, FrameError, NodeId, decode_frame_with_codec};
use crate::error::HaltReason;
use crate::settings::{BadRecordPolicy, Settings, WriteMode};
use crate::skip::{RecordSkip, SkipList};
use crate::stream::{Cursor, Record, Stream};

/// Leadership as the log decides it (single-leader mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The current epoch; `0` before any claim.
    pub epoch: u64,
    /// The node whose claim won the current epoch.
    pub leader: Option<NodeId>,
    /// Timestamp (origin clock, from the log) of the leader's last claim or heartbeat.
    pub last_seen_ts: u64,
}

/// The model versions as the log decides them (see `docs/upgrades.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelVersions {
    /// The active model version: writers encode commands at it. Starts at 1;
    /// changes only through an accepted `Activate` control record.
    pub active: u32,
    /// Each node that announced itself (in its Genesis restatement at start)
    /// and has not departed: the newest model version it can read.
    pub nodes: BTreeMap<NodeId, u32>,
}

impl Default for ModelVersions {
    fn default() -> Self {
        Self {
            active: 1,
            nodes: BTreeMap::new(),
        }
    }
}

impl ModelVersions {
    /// The announced nodes that cannot read `version`: an activation of
    /// `version` is refused while this is not empty.
    pub fn blocking(&self, version: u32) -> Vec<(NodeId, u32)> {
        self.nodes
            .iter()
            .filter(|(_, reads)| **reads < version)
            .map(|(node, reads)| (node.clone(), *reads))
            .collect()
    }

    /// Applies an activation; returns whether it was accepted. Never
    /// downwards; re-activating the active version is accepted and changes
    /// nothing.
    fn activate(&mut self, version: u32) -> bool {
        if version < self.active || !self.blocking(version).is_empty() {
            return false;
        }
        self.active = version;
        true
    }
}

/// Everything replicated beside the model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Replicated {
    /// The stream's settings, from its Genesis record.
    pub(crate) genesis: Option<Settings>,
    /// Envelopes applied (every envelope of every frame counts, control
    /// messages and dropped duplicates included).
    pub(crate) applied_index: u64,
    /// The cursor of the last record applied.
    pub(crate) cursor: Option<Cursor>,
    /// Recent command ids and what became of them.
    pub(crate) dedup: Dedup,
    pub(crate) leadership: Leadership,
    /// Absent from snapshots taken before model versions existed: version 1,
    /// no announcements.
    #[serde(default)]
    pub(crate) versions: ModelVersions,
}

/// What a record holds for the apply side.
pub(crate) enum Opened {
    /// Already applied (an at-least-once reader, a resubscription).
    Redelivery,
    /// Not a frame, skipped under the `Skip` bad-record policy, or a record
    /// the operator listed in `skip_records`.
    SkippedBadRecord,
    /// The envelopes to apply, in order.
    Frame(Vec<Envelope>),
}

/// What the log's rules say about one envelope before any model sees it.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A copy of an id decided before: dropped, answered with the first outcome.
    Duplicate(Seen),
    /// A control message, applied to the replicated state. `accepted`: it
    /// took effect; `leader_signal`: it is a claim that won or a heartbeat of
    /// the current leader (a sign of life).
    Control { accepted: bool, leader_signal: bool },
    /// Single-leader mode: not from the current leader in its epoch. Nothing
    /// happened; the id stays free.
    Fenced { leader: Option<NodeId>, epoch: u64 },
    /// A command for the model (its encoded value, taken out of the
    /// envelope); its outcome is recorded with [`Replicated::decide`].
    Command(crate::envelope::EncodedCommand),
}

impl Replicated {
    /// Decodes a record into envelopes, under the stream's bad-record policy
    /// and the operator's `skip_records`.
    ///
    /// # Errors
    ///
    /// A halt: cursors that cannot be compared, a newer frame format, a
    /// first record that is not a frame, bytes that are not a frame under
    /// the `Halt` policy.
    pub(crate) fn open_record(
        &mut self,
        stream: &dyn Stream,
        record: &Record,
        skip: &SkipList,
    ) -> Result<Opened, HaltReason> {
        if let Some(last) = &self.cursor {
            match stream.compare_cursors(&record.cursor, last) {
                Ok(Ordering::Greater) => {}
                Ok(_) => return Ok(Opened::Redelivery),
                Err(e) => return Err(HaltReason::StreamFailed(e.to_string())),
            }
        }
        // Before decoding: a build that can read the record passes over it
        // as well, like the nodes that could not.
        if skip.skips(record) {
            self.cursor = Some(record.cursor.clone());
            return Ok(Opened::SkippedBadRecord);
        }
        match decode_frame_with_codec(&record.payload) {
            Ok((codec, envelopes)) => match self.codec_refusal(codec, &envelopes) {
                None => Ok(Opened::Frame(envelopes)),
                Some(reason) => self.bad_record(record, reason),
            },
            Err(FrameError::UnknownVersion { found, supported }) => {
                Err(HaltReason::UnknownFormat {
                    cursor: record.cursor.clone(),
                    found,
                    supported,
                    skip: RecordSkip::of(record),
                })
            }
            // A newer build's stream (or settings): never skipped by the
            // bad-record policy, a halt on every node of this build alike.
            Err(FrameError::UnknownCodec { codec }) => Err(HaltReason::UnknownCodec {
                cursor: record.cursor.clone(),
                codec,
                skip: self.genesis.as_ref().map(|_| RecordSkip::of(record)),
            }),
            Err(FrameError::NotAFrame(reason)) => self.bad_record(record, reason),
        }
    }

    /// Why a frame written in `codec` does not belong in this stream, if it
    /// does not: a stream never mixes codecs. Its frames are in its Genesis
    /// codec, except Genesis records, which are JSON in every stream (a
    /// stream starts with one).
    fn codec_refusal(&self, codec: Codec, envelopes: &[Envelope]) -> Option<String> {
        let genesis_only = || {
            envelopes
                .iter()
                .all(|e| matches!(e.body, Body::Control(Control::Genesis(_))))
        };
        let stream = match &self.genesis {
            Some(genesis) => genesis.command_codec,
            None if codec.is_json() => return None,
            None => {
                return Some(format!(
                    "a {codec} frame before the stream's Genesis record, which is JSON"
                ));
            }
        };
        if codec == stream || (codec.is_json() && genesis_only()) {
            return None;
        }
        Some(format!(
            "a {codec} frame in a stream whose codec is {stream} (its Genesis record); a stream never mixes codecs"
        ))
    }

    /// A record that is not a frame of this stream: skipped or a halt, by
    /// the bad-record policy; before the Genesis record, a missing history.
    fn bad_record(&mut self, record: &Record, reason: String) -> Result<Opened, HaltReason> {
        let Some(genesis) = &self.genesis else {
            return Err(HaltReason::HistoryMissing {
                first: record.cursor.clone(),
            });
        };
        match genesis.bad_records {
            BadRecordPolicy::Skip => {
                tracing::warn!(cursor = %record.cursor, %reason, "skipping a record that is not a memstate frame");
                self.cursor = Some(record.cursor.clone());
                Ok(Opened::SkippedBadRecord)
            }
            BadRecordPolicy::Halt => Err(HaltReason::BadRecord {
                cursor: record.cursor.clone(),
                reason,
                skip: RecordSkip::of(record),
            }),
        }
    }

    /// Counts one envelope of the record at `cursor` (its applied index is
    /// the new `applied_index`) and admits it: learns the settings from the
    /// first envelope of the log, drops duplicates, applies control messages
    /// and fences commands from anyone but the current leader.
    ///
    /// # Errors
    ///
    /// [`HaltReason::HistoryMissing`] when the log's first envelope is not
    /// a Genesis record.
    pub(crate) fn admit(
        &mut self,
        envelope: &mut Envelope,
        cursor: &Cursor,
    ) -> Result<(Settings, Admission), HaltReason> {
        let genesis = match &self.genesis {
            Some(genesis) => genesis.clone(),
            None => {
                let Body::Control(Control::Genesis(settings)) = &envelope.body else {
                    return Err(HaltReason::HistoryMissing {
                        first: cursor.clone(),
                    });
                };
                self.genesis = Some(settings.clone());
                settings.clone()
            }
        };
        self.applied_index += 1;
        if let Some(seen) = self.dedup.get(&envelope.id) {
            return Ok((genesis, Admission::Duplicate(seen)));
        }
        let admission = match &mut envelope.body {
            Body::Control(control) => {
                let control = control.clone();
                let (accepted, leader_signal) = self.apply_control(&control, envelope);
                self.decide(envelope, None);
                Admission::Control {
                    accepted,
                    leader_signal,
                }
            }
            Body::Command(value) if genesis.write_mode == WriteMode::SingleLeader => {
                let lead = &self.leadership;
                let from_leader = lead.leader.as_ref() == Some(&envelope.origin);
                if from_leader && envelope.epoch == Some(lead.epoch) {
                    Admission::Command(std::mem::take(value))
                } else {
                    Admission::Fenced {
                        leader: lead.leader.clone(),
                        epoch: lead.epoch,
                    }
                }
            }
            Body::Command(value) => Admission::Command(std::mem::take(value)),
        };
        Ok((genesis, admission))
    }

    /// Records how the envelope just admitted was decided: applied (`None`)
    /// or rejected. A later copy of its id is answered with this outcome.
    pub(crate) fn decide(&mut self, envelope: &Envelope, rejected: Option<Rejection>) {
        let window = self.genesis.as_ref().map(|g| g.dedup).unwrap_or_default();
        self.dedup.insert(
            envelope.id,
            self.applied_index,
            rejected,
            envelope.ts,
            &window,
        );
    }

    /// Applies a control message; returns whether it took effect and whether
    /// it is a sign of life of the leader (a claim that won its epoch, a
    /// heartbeat of the current leader in its epoch).
    fn apply_control(&mut self, control: &Control, envelope: &Envelope) -> (bool, bool) {
        let (origin, ts) = (&envelope.origin, envelope.ts);
        let versions = &mut self.versions;
        let lead = &mut self.leadership;
        match control {
            // A node's start record is its announcement of what it reads.
            Control::Genesis(_) => {
                versions.nodes.insert(origin.clone(), envelope.reads);
                (true, false)
            }
            Control::Sync => (true, false),
            Control::Activate { version } => (versions.activate(*version), false),
            Control::Depart { node } => {
                versions.nodes.remove(node);
                (true, false)
            }
            // First claim in log order for the next epoch wins; every node
            // sees the same order, so every node elects the same leader. A
            // claim for an epoch already taken (or not yet reachable) changes
            // nothing.
            Control::AssumeLeadership { epoch } if *epoch == lead.epoch + 1 => {
                lead.epoch = *epoch;
                lead.leader = Some(origin.clone());
                lead.last_seen_ts = ts;
                (true, true)
            }
            // Only the current leader's heartbeat in its own epoch counts: a
            // deposed leader that has not noticed yet is not alive as leader.
            Control::Heartbeat { epoch }
                if *epoch == lead.epoch && lead.leader.as_ref() == Some(origin) =>
            {
                lead.last_seen_ts = lead.last_seen_ts.max(ts);
                (true, true)
            }
            Control::AssumeLeadership { .. } | Control::Heartbeat { .. } => (false, false),
        }
    }
}
