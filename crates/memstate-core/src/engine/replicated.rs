//! The state replicated beside the model: identical on every node at the
//! same applied index, and what a snapshot stores next to the model.

use serde::{Deserialize, Serialize};

use crate::dedup::Dedup;
use crate::envelope::NodeId;
use crate::settings::Settings;
use crate::stream::Cursor;

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
}
