//! The demo's model: bank accounts with conserved money.

use std::collections::BTreeMap;

use memstate_core::{CommandContext, EventModel, Model};
use serde::{Deserialize, Serialize};

/// Accounts and their balances, in cents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bank {
    accounts: BTreeMap<String, u64>,
}

/// What a bank does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankCommand {
    /// Opens an account with an initial balance.
    Open { account: String, initial: u64 },
    /// Adds money to an account.
    Deposit { account: String, amount: u64 },
    /// Takes money out of an account.
    Withdraw { account: String, amount: u64 },
    /// Moves money between two accounts.
    Transfer {
        from: String,
        to: String,
        amount: u64,
    },
}

/// Why a bank command is refused. The model is unchanged when it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// No account by that name.
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    /// The account exists already.
    #[error("account {0:?} already exists")]
    AccountExists(String),
    /// Not enough money.
    #[error("insufficient funds: {account} holds {balance}, {requested} requested")]
    InsufficientFunds {
        /// The account.
        account: String,
        /// What it holds.
        balance: u64,
        /// What was asked.
        requested: u64,
    },
    /// A transfer to the same account.
    #[error("cannot transfer from {0:?} to itself")]
    SameAccount(String),
    /// A balance would exceed u64.
    #[error("balance of {0:?} would overflow")]
    Overflow(String),
}

/// What the bank tells the world after a command succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankEvent {
    /// Money moved between two accounts.
    Transferred {
        /// The paying account.
        from: String,
        /// The receiving account.
        to: String,
        /// How much.
        amount: u64,
        /// The node that wrote the command.
        by: String,
    },
}

impl EventModel for Bank {
    type Event = BankEvent;
}

impl Bank {
    /// The balance of `account`.
    pub fn balance(&self, account: &str) -> Option<u64> {
        self.accounts.get(account).copied()
    }

    /// How many accounts exist.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// All money in the bank.
    pub fn total(&self) -> u128 {
        self.accounts.values().map(|v| u128::from(*v)).sum()
    }

    /// FNV-1a over every account and balance: equal banks, equal hashes.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.accounts {
            for b in k.bytes().chain([0]).chain(v.to_le_bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }

    fn get(&self, account: &str) -> Result<u64, BankError> {
        self.balance(account)
            .ok_or_else(|| BankError::NoSuchAccount(account.to_owned()))
    }
}

impl Model for Bank {
    type Command = BankCommand;
    type Output = u64;
    type Error = BankError;

    /// Every branch checks before it mutates, so a refused command leaves
    /// the bank unchanged (the engine's error contract).
    fn apply(
        &mut self,
        command: BankCommand,
        ctx: &mut CommandContext<'_>,
    ) -> Result<u64, BankError> {
        match command {
            BankCommand::Open { account, initial } => {
                if self.accounts.contains_key(&account) {
                    return Err(BankError::AccountExists(account));
                }
                self.accounts.insert(account, initial);
                Ok(initial)
            }
            BankCommand::Deposit { account, amount } => {
                let new = self
                    .get(&account)?
                    .checked_add(amount)
                    .ok_or_else(|| BankError::Overflow(account.clone()))?;
                self.accounts.insert(account, new);
                Ok(new)
            }
            BankCommand::Withdraw { account, amount } => {
                let balance = self.get(&account)?;
                if balance < amount {
                    return Err(BankError::InsufficientFunds {
                        account,
                        balance,
                        requested: amount,
                    });
                }
                self.accounts.insert(account, balance - amount);
                Ok(balance - amount)
            }
            BankCommand::Transfer { from, to, amount } => {
                if from == to {
                    return Err(BankError::SameAccount(from));
                }
                let source = self.get(&from)?;
                let target = self.get(&to)?;
                if source < amount {
                    return Err(BankError::InsufficientFunds {
                        account: from,
                        balance: source,
                        requested: amount,
                    });
                }
                let credited = target
                    .checked_add(amount)
                    .ok_or_else(|| BankError::Overflow(to.clone()))?;
                ctx.emit(BankEvent::Transferred {
                    from: from.clone(),
                    to: to.clone(),
                    amount,
                    by: ctx.origin().to_string(),
                });
                self.accounts.insert(from, source - amount);
                self.accounts.insert(to, credited);
                Ok(source - amount)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use memstate_core::{CommandId, NodeId};

    use super::*;

    fn apply(bank: &mut Bank, cmd: BankCommand) -> Result<u64, BankError> {
        let node = NodeId::new("t");
        bank.apply(
            cmd,
            &mut CommandContext::new(CommandId::random(), &node, 0, 1),
        )
    }

    #[test]
    fn transfers_conserve_money_and_refusals_change_nothing() {
        let mut bank = Bank::default();
        apply(
            &mut bank,
            BankCommand::Open {
                account: "a".into(),
                initial: 100,
            },
        )
        .unwrap();
        apply(
            &mut bank,
            BankCommand::Open {
                account: "b".into(),
                initial: 5,
            },
        )
        .unwrap();
        apply(
            &mut bank,
            BankCommand::Transfer {
                from: "a".into(),
                to: "b".into(),
                amount: 40,
            },
        )
        .unwrap();
        assert_eq!((bank.balance("a"), bank.balance("b")), (Some(60), Some(45)));
        let before = bank.clone();
        let err = apply(
            &mut bank,
            BankCommand::Transfer {
                from: "b".into(),
                to: "a".into(),
                amount: 46,
            },
        )
        .unwrap_err();
        assert!(matches!(
            err,
            BankError::InsufficientFunds {
                balance: 45,
                requested: 46,
                ..
            }
        ));
        assert!(
            apply(
                &mut bank,
                BankCommand::Transfer {
                    from: "a".into(),
                    to: "zz".into(),
                    amount: 1
                }
            )
            .is_err()
        );
        assert!(
            apply(
                &mut bank,
                BankCommand::Open {
                    account: "a".into(),
                    initial: 1
                }
            )
            .is_err()
        );
        assert_eq!(bank, before);
        assert_eq!(bank.total(), 105);
    }

    #[test]
    fn a_transfer_emits_one_event_naming_its_writer_and_a_refusal_none() {
        let mut bank = Bank::default();
        for (account, initial) in [("a", 10), ("b", 0)] {
            apply(
                &mut bank,
                BankCommand::Open {
                    account: account.into(),
                    initial,
                },
            )
            .unwrap();
        }
        let node = NodeId::new("node-7");
        let mut ctx = CommandContext::new(CommandId::random(), &node, 0, 3);
        let transfer = |amount| BankCommand::Transfer {
            from: "a".into(),
            to: "b".into(),
            amount,
        };
        bank.apply(transfer(4), &mut ctx).unwrap();
        let events: Vec<BankEvent> = ctx
            .emitted()
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect();
        assert_eq!(
            events,
            vec![BankEvent::Transferred {
                from: "a".into(),
                to: "b".into(),
                amount: 4,
                by: "node-7".into(),
            }]
        );
        let mut refused = CommandContext::new(CommandId::random(), &node, 0, 4);
        assert!(bank.apply(transfer(100), &mut refused).is_err());
        assert!(refused.emitted().is_empty());
    }

    #[test]
    fn state_hash_tells_states_apart() {
        let mut a = Bank::default();
        let mut b = Bank::default();
        apply(
            &mut a,
            BankCommand::Open {
                account: "x".into(),
                initial: 1,
            },
        )
        .unwrap();
        apply(
            &mut b,
            BankCommand::Open {
                account: "x".into(),
                initial: 2,
            },
        )
        .unwrap();
        assert_ne!(a.state_hash(), b.state_hash());
        apply(
            &mut b,
            BankCommand::Withdraw {
                account: "x".into(),
                amount: 1,
            },
        )
        .unwrap();
        assert_eq!(a.state_hash(), b.state_hash());
    }
}
