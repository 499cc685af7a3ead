//! The replicated de-duplication window: recent command ids and what became
//! of each.
//!
//! An id enters the window when its first copy is *decided*: applied (a
//! control message, or a command the model ran, whatever it returned) or
//! deterministically rejected (skipped by the operator's list, undecodable
//! under the skip policy, panicked in safe mode). A later copy is dropped and
//! its caller learns that first outcome. A command *fenced* in single-leader
//! mode (wrong leader or epoch) is not decided: nothing happened, so its id
//! stays out of the window and a retry on the real leader applies.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::CommandId;
use crate::settings::DedupWindow;

/// Why a command was deterministically rejected, the same on every node: the
/// outcome a retry under the same id is answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    /// Listed in `skip_commands`.
    Skipped,
    /// The model could not decode it (under the `Skip` bad-record policy).
    Undecodable {
        /// The decoder's message.
        reason: String,
    },
    /// It panicked in safe mode and was rolled back.
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skipped => f.write_str("skipped: listed in skip_commands"),
            Self::Undecodable { reason } => write!(f, "undecodable by this model: {reason}"),
            Self::Panicked { message } => write!(f, "panicked and was rolled back: {message}"),
        }
    }
}

/// What the window knows of an id: where its first copy was decided and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The applied index of the first copy.
    pub(crate) index: u64,
    /// `None`: applied. `Some`: rejected, and why.
    pub(crate) rejected: Option<Rejection>,
}

/// Recent command ids, the applied index at which each was decided, and the
/// rejections among them.
///
/// Expiry depends only on envelope timestamps and counts, so every node that
/// applies the same log holds the same window. The serialized form keeps the
/// shape of snapshots written before outcomes were recorded (`seen` maps an id
/// to its index); `rejected` is added beside it and defaults to empty, so an
/// old snapshot restores with every id counted as applied, as it was then.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Dedup {
    seen: HashMap<CommandId, u64>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    rejected: HashMap<CommandId, Rejection>,
    order: VecDeque<(CommandId, u64)>,
    newest_ts: u64,
}

impl Dedup {
    /// Where and how `id` was decided, if it is in the window.
    pub(crate) fn get(&self, id: &CommandId) -> Option<Seen> {
        self.seen.get(id).map(|&index| Seen {
            index,
            rejected: self.rejected.get(id).cloned(),
        })
    }

    /// Remembers `id`, decided at `index` (rejected when `rejected` is
    /// `Some`), stamped `ts`; then expires.
    pub(crate) fn insert(
        &mut self,
        id: CommandId,
        index: u64,
        rejected: Option<Rejection>,
        ts: u64,
        window: &DedupWindow,
    ) {
        self.newest_ts = self.newest_ts.max(ts);
        if self.seen.insert(id, index).is_none() {
            self.order.push_back((id, ts));
        }
        match rejected {
            Some(why) => {
                self.rejected.insert(id, why);
            }
            None => {
                self.rejected.remove(&id);
            }
        }
        let horizon = self.newest_ts.saturating_sub(window.max_age_ms);
        while let Some(&(old, old_ts)) = self.order.front() {
            let too_many = self.order.len() as u64 > window.max_entries;
            if !(too_many || old_ts < horizon) {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
            self.rejected.remove(&old);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_by_timestamp_and_by_count() {
        let window = DedupWindow {
            max_age_ms: 100,
            max_entries: 3,
        };
        let mut d = Dedup::default();
        let ids: Vec<CommandId> = (0..5).map(|_| CommandId::random()).collect();
        d.insert(ids[0], 1, None, 1000, &window);
        d.insert(ids[1], 2, Some(Rejection::Skipped), 1050, &window);
        assert_eq!(d.get(&ids[0]).map(|s| s.index), Some(1));
        d.insert(ids[2], 3, None, 1101, &window);
        assert_eq!(
            d.get(&ids[0]),
            None,
            "older than 100 ms before the newest timestamp"
        );
        assert_eq!(
            d.get(&ids[1]),
            Some(Seen {
                index: 2,
                rejected: Some(Rejection::Skipped)
            })
        );
        d.insert(ids[3], 4, None, 1102, &window);
        d.insert(ids[4], 5, None, 1103, &window);
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(&ids[1]), None, "count bound drops the oldest");
        assert!(
            d.rejected.is_empty(),
            "an expired rejection goes with its id"
        );
    }

    #[test]
    fn a_window_serialized_before_outcomes_existed_still_reads() {
        let id = CommandId::random();
        let old = serde_json::json!({
            "seen": { id.to_string(): 7 },
            "order": [[id.to_string(), 1000]],
            "newest_ts": 1000,
        });
        let d: Dedup = serde_json::from_value(old).unwrap();
        assert_eq!(
            d.get(&id),
            Some(Seen {
                index: 7,
                rejected: None
            })
        );
    }

    #[test]
    fn the_outcome_kind_survives_serialization() {
        let window = DedupWindow::default();
        let mut d = Dedup::default();
        let id = CommandId::random();
        let why = Rejection::Panicked {
            message: "boom".into(),
        };
        d.insert(id, 3, Some(why.clone()), 10, &window);
        let back: Dedup = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(
            back.get(&id),
            Some(Seen {
                index: 3,
                rejected: Some(why)
            })
        );
    }
}
