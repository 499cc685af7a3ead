//! The model the engine-level cases run: small, and order-sensitive, so that
//! two nodes agree on its hash only if they applied the same commands in the
//! same order.

use std::collections::BTreeMap;

use memstate_core::{CommandContext, EventModel, Model};
use serde::{Deserialize, Serialize};

/// Counters by key, and a hash of everything applied, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Current value per key.
    pub values: BTreeMap<String, i64>,
    /// How many commands succeeded.
    pub applied: u64,
    /// FNV-1a over (index, key, amount) of every applied command, in order.
    pub hash: u64,
}

/// Commands of [`Tally`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TallyCommand {
    /// Add `amount` to `key`.
    Add {
        /// Which counter.
        key: String,
        /// How much.
        amount: i64,
    },
    /// Subtract, refused (domain error) when the counter would go negative.
    Take {
        /// Which counter.
        key: String,
        /// How much.
        amount: i64,
    },
    /// A large opaque payload (for size limits).
    Blob(String),
}

impl TallyCommand {
    /// An `Add`.
    pub fn add(key: impl Into<String>, amount: i64) -> Self {
        Self::Add {
            key: key.into(),
            amount,
        }
    }
}

/// What [`Tally`] emits: one event per command that changes a counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// A counter changed.
    Changed {
        /// Which counter.
        key: String,
        /// By how much.
        delta: i64,
        /// Its new value.
        value: i64,
    },
}

impl EventModel for Tally {
    type Event = TallyEvent;
}

const FNV_PRIME: u64 = 0x100_0000_01b3;

fn mix(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

impl Model for Tally {
    type Command = TallyCommand;
    type Output = i64;
    type Error = String;

    fn apply(
        &mut self,
        command: TallyCommand,
        ctx: &mut CommandContext<'_>,
    ) -> Result<i64, String> {
        let (key, delta) = match command {
            TallyCommand::Add { key, amount } => {
                let value = self.values.get(&key).copied().unwrap_or(0) + amount;
                ctx.emit(TallyEvent::Changed {
                    key: key.clone(),
                    delta: amount,
                    value,
                });
                (key, amount)
            }
            TallyCommand::Take { key, amount } => {
                let have = self.values.get(&key).copied().unwrap_or(0);
                // Emitted before the check on purpose: a refused command's
                // events must be dropped by the engine, not by the model.
                ctx.emit(TallyEvent::Changed {
                    key: key.clone(),
                    delta: -amount,
                    value: have - amount,
                });
                if have < amount {
                    return Err(format!("{key} holds {have}, cannot take {amount}"));
                }
                (key, -amount)
            }
            TallyCommand::Blob(s) => (String::from("blob"), s.len() as i64),
        };
        let value = self.values.entry(key.clone()).or_default();
        *value += delta;
        let out = *value;
        self.applied += 1;
        let h = if self.hash == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.hash
        };
        let h = mix(h, &ctx.index().to_le_bytes());
        let h = mix(h, key.as_bytes());
        self.hash = mix(h, &delta.to_le_bytes());
        Ok(out)
    }
}
