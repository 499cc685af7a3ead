//! The replicated de-duplication window.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::envelope::CommandId;
use crate::settings::DedupWindow;

/// Recent command ids and the applied index at which each was first seen.
///
/// Expiry depends only on envelope timestamps and counts, so every node that
/// applies the same log holds the same window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Dedup {
    seen: HashMap<CommandId, u64>,
    order: VecDeque<(CommandId, u64)>,
    newest_ts: u64,
}

impl Dedup {
    /// The applied index of the first copy, if `id` is in the window.
    pub(crate) fn get(&self, id: &CommandId) -> Option<u64> {
        self.seen.get(id).copied()
    }

    /// Remembers `id`, first applied at `index`, stamped `ts`; then expires.
    pub(crate) fn insert(&mut self, id: CommandId, index: u64, ts: u64, window: &DedupWindow) {
        self.newest_ts = self.newest_ts.max(ts);
        if self.seen.insert(id, index).is_none() {
            self.order.push_back((id, ts));
        }
        let horizon = self.newest_ts.saturating_sub(window.max_age_ms);
        while let Some(&(old, old_ts)) = self.order.front() {
            let too_many = self.order.len() as u64 > window.max_entries;
            if !(too_many || old_ts < horizon) {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
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
        d.insert(ids[0], 1, 1000, &window);
        d.insert(ids[1], 2, 1050, &window);
        assert_eq!(d.get(&ids[0]), Some(1));
        d.insert(ids[2], 3, 1101, &window);
        assert_eq!(
            d.get(&ids[0]),
            None,
            "older than 100 ms before the newest timestamp"
        );
        assert_eq!(d.get(&ids[1]), Some(2));
        d.insert(ids[3], 4, 1102, &window);
        d.insert(ids[4], 5, 1103, &window);
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(&ids[1]), None, "count bound drops the oldest");
    }
}
