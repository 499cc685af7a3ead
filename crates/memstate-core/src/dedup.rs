//! The replicated de-duplication window: recent command ids and what became
//! of each.
//!
//! An id enters the window when its first copy is *decided*: applied (a
//! control message, or a command the model ran, whatever it returned) or
//! deterministically rejected (skipped by the operator's list, panicked in
//! safe mode; undecodable, in windows recorded by builds before version skew
//! halted the engine). A later copy is dropped and
//! its caller learns that first outcome. A command *fenced* in single-leader
//! mode (wrong leader or epoch) is not decided: nothing happened, so its id
//! stays out of the window and a retry on the real leader applies.
//!
//! The window is part of the replicated state that a snapshot copies while
//! applying waits, and it may hold millions of ids: it is built on
//! persistent collections (`imbl`), so that copy shares its structure and
//! costs the same at any size; applying after it copies only the nodes it
//! touches while the snapshot still holds them.

use std::fmt;

use imbl::{HashMap, Vector};

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
    /// The model could not decode it. Recorded by builds before version
    /// skew stopped the engine (a command this build cannot decode now halts
    /// it, see `docs/upgrades.md`); kept so the windows they recorded in
    /// snapshots still restore and answer retries alike.
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
///
/// The accounted size (see [`DedupWindow::max_bytes`]) is not serialized: it
/// follows from the entries, and is recounted when a snapshot is read.
///
/// A clone is O(1): the maps and the queue are persistent (shared nodes,
/// copied on write), which is what keeps a snapshot's pause flat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "DedupRepr")]
pub(crate) struct Dedup {
    seen: HashMap<CommandId, u64>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    rejected: HashMap<CommandId, Rejection>,
    order: Vector<(CommandId, u64)>,
    newest_ts: u64,
    /// The rejection texts' bytes, the variable part of the accounted size.
    #[serde(skip)]
    text_bytes: u64,
}

/// The serialized form of [`Dedup`], from which its accounted size is
/// recounted.
#[derive(Deserialize)]
struct DedupRepr {
    seen: HashMap<CommandId, u64>,
    #[serde(default)]
    rejected: HashMap<CommandId, Rejection>,
    order: Vector<(CommandId, u64)>,
    newest_ts: u64,
}

impl From<DedupRepr> for Dedup {
    fn from(r: DedupRepr) -> Self {
        let text_bytes = r.rejected.values().map(Rejection::text_bytes).sum();
        Self {
            seen: r.seen,
            rejected: r.rejected,
            order: r.order,
            newest_ts: r.newest_ts,
            text_bytes,
        }
    }
}

impl Rejection {
    /// The bytes of text this rejection keeps in the window.
    fn text_bytes(&self) -> u64 {
        match self {
            Self::Skipped => 0,
            Self::Undecodable { reason } => reason.len() as u64,
            Self::Panicked { message } => message.len() as u64,
        }
    }
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
        let replaced = match rejected {
            Some(why) => {
                self.text_bytes += why.text_bytes();
                self.rejected.insert(id, why)
            }
            None => self.rejected.remove(&id),
        };
        self.forget_text(replaced.as_ref());
        let horizon = self.newest_ts.saturating_sub(window.max_age_ms);
        while let Some(&(old, old_ts)) = self.order.front() {
            let too_many = self.order.len() as u64 > window.max_entries;
            let too_big = self.bytes() > window.max_bytes;
            if !(too_many || too_big || old_ts < horizon) {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
            let gone = self.rejected.remove(&old);
            self.forget_text(gone.as_ref());
        }
    }

    /// Takes a rejection's text out of the accounted size.
    fn forget_text(&mut self, gone: Option<&Rejection>) {
        if let Some(why) = gone {
            self.text_bytes = self.text_bytes.saturating_sub(why.text_bytes());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// The window's accounted size (see [`DedupWindow::max_bytes`]).
    pub(crate) fn bytes(&self) -> u64 {
        self.order.len() as u64 * DedupWindow::ENTRY_BYTES + self.text_bytes
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
            ..DedupWindow::default()
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

    /// The boundary is part of the replicated rule: nodes of two builds
    /// that drew it differently would disagree on a retry landing on it.
    #[test]
    fn an_id_exactly_max_age_old_is_still_remembered() {
        let window = DedupWindow {
            max_age_ms: 100,
            max_entries: 10,
            ..DedupWindow::default()
        };
        let mut d = Dedup::default();
        let (old, newer, newest) = (
            CommandId::random(),
            CommandId::random(),
            CommandId::random(),
        );
        d.insert(old, 1, None, 1000, &window);
        d.insert(newer, 2, None, 1100, &window);
        assert_eq!(d.get(&old).map(|s| s.index), Some(1), "age == max_age");
        d.insert(newest, 3, None, 1101, &window);
        assert_eq!(d.get(&old), None, "age == max_age + 1");
    }

    #[test]
    fn a_rejection_says_why() {
        let panicked = Rejection::Panicked {
            message: "boom".into(),
        };
        let undecodable = Rejection::Undecodable {
            reason: "unknown variant".into(),
        };
        assert!(Rejection::Skipped.to_string().contains("skip_commands"));
        assert!(panicked.to_string().contains("boom"));
        assert!(undecodable.to_string().contains("unknown variant"));
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

    #[test]
    fn window_forgets_by_accounted_bytes() {
        let window = DedupWindow {
            max_age_ms: u64::MAX,
            max_entries: u64::MAX,
            max_bytes: 3 * DedupWindow::ENTRY_BYTES + 10,
        };
        let mut d = Dedup::default();
        let ids: Vec<CommandId> = (0..5).map(|_| CommandId::random()).collect();
        for (i, id) in ids.iter().take(3).enumerate() {
            d.insert(*id, i as u64 + 1, None, 1000, &window);
        }
        assert_eq!(d.len(), 3, "three plain ids fit");
        assert_eq!(d.bytes(), 3 * DedupWindow::ENTRY_BYTES);
        let why = Rejection::Undecodable {
            reason: "twenty bytes of text".into(),
        };
        d.insert(ids[3], 4, Some(why.clone()), 1000, &window);
        assert_eq!(d.len(), 2, "an entry and 20 bytes of text push out two");
        assert_eq!(d.get(&ids[1]), None);
        assert_eq!(d.get(&ids[3]).and_then(|s| s.rejected), Some(why));
        assert_eq!(d.bytes(), 2 * DedupWindow::ENTRY_BYTES + 20);
        d.insert(ids[4], 5, None, 1000, &window);
        assert_eq!(d.len(), 2, "while the text stays, three ids do not fit");
        assert_eq!(d.get(&ids[2]), None);
        assert_eq!(d.bytes(), 2 * DedupWindow::ENTRY_BYTES + 20);
        d.insert(ids[0], 6, None, 1000, &window);
        assert_eq!(d.get(&ids[3]), None, "the oldest, rejected, goes");
        assert_eq!(d.bytes(), 2 * DedupWindow::ENTRY_BYTES, "with its text");
    }

    #[test]
    fn accounted_bytes_are_recounted_from_a_snapshot() {
        let window = DedupWindow::default();
        let mut d = Dedup::default();
        let why = Rejection::Panicked {
            message: "boom".into(),
        };
        d.insert(CommandId::random(), 1, Some(why), 10, &window);
        d.insert(CommandId::random(), 2, None, 11, &window);
        let back: Dedup = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(back.bytes(), 2 * DedupWindow::ENTRY_BYTES + 4);
        assert_eq!(back.bytes(), d.bytes());
    }

    #[test]
    fn a_genesis_window_without_a_byte_bound_reads_with_the_default() {
        let old = serde_json::json!({ "max_age_ms": 600000, "max_entries": 1000000 });
        let window: DedupWindow = serde_json::from_value(old).unwrap();
        assert_eq!(window, DedupWindow::default());
    }

    /// A snapshot holds a clone of the window while applying goes on: the
    /// clone must not see what the original does after it, insertions or
    /// expiries, although the two share their structure.
    #[test]
    fn a_clone_keeps_its_window_while_the_original_moves_on() {
        let window = DedupWindow {
            max_age_ms: u64::MAX,
            max_entries: 1000,
            ..DedupWindow::default()
        };
        let mut d = Dedup::default();
        let ids: Vec<CommandId> = (0..2000).map(|_| CommandId::random()).collect();
        for (i, id) in ids.iter().take(1000).enumerate() {
            let why = (i % 100 == 0).then(|| Rejection::Panicked {
                message: format!("boom {i}"),
            });
            d.insert(*id, i as u64 + 1, why, 10, &window);
        }
        let copy = d.clone();
        let before = serde_json::to_value(&copy).unwrap();
        for (i, id) in ids.iter().enumerate().skip(1000) {
            d.insert(*id, i as u64 + 1, None, 11, &window);
        }
        assert_eq!(d.len(), 1000);
        assert_eq!(d.get(&ids[0]), None, "the original expired the oldest");
        assert_eq!(d.get(&ids[1999]).map(|s| s.index), Some(2000));
        assert_eq!(copy.len(), 1000);
        assert_eq!(copy.get(&ids[1999]), None, "the clone saw nothing after it");
        assert_eq!(
            copy.get(&ids[0]),
            Some(Seen {
                index: 1,
                rejected: Some(Rejection::Panicked {
                    message: "boom 0".into()
                })
            })
        );
        assert_eq!(serde_json::to_value(&copy).unwrap(), before);
        let texts: u64 = (0..1000)
            .step_by(100)
            .map(|i| format!("boom {i}").len() as u64)
            .sum();
        assert_eq!(copy.bytes(), 1000 * DedupWindow::ENTRY_BYTES + texts);
    }
}
