//! Three builds of one model, as a team would ship them:
//!
//! - v1: a running total; `Add(n)`.
//! - v2: adds `Double` (needs version 2: v1 builds cannot decode it).
//! - v3: renames the state field `total` to `value` (snapshots migrate) and
//!   `Add(n)` to `Add { amount }` (commands upcast), adds `Negate` (needs 3).
//!
//! Every build of the same log reaches the same number.

#![allow(dead_code)]

use memstate_core::{CommandContext, Model};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub mod v1 {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Calc {
        pub total: i64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Cmd {
        Add(i64),
    }

    impl Model for Calc {
        type Command = Cmd;
        type Output = i64;
        type Error = String;

        fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
            let Cmd::Add(n) = cmd;
            self.total = self.total.checked_add(n).ok_or("overflow")?;
            Ok(self.total)
        }
    }
}

pub mod v2 {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Calc {
        pub total: i64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Cmd {
        Add(i64),
        Double,
    }

    impl Model for Calc {
        type Command = Cmd;
        type Output = i64;
        type Error = String;
        const VERSION: u32 = 2;

        fn command_version(cmd: &Cmd) -> u32 {
            match cmd {
                Cmd::Add(_) => 1,
                Cmd::Double => 2,
            }
        }

        fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
            self.total = match cmd {
                Cmd::Add(n) => self.total.checked_add(n),
                Cmd::Double => self.total.checked_mul(2),
            }
            .ok_or("overflow")?;
            Ok(self.total)
        }
    }
}

pub mod v3 {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Calc {
        pub value: i64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Cmd {
        Add { amount: i64 },
        Double,
        Negate,
    }

    impl Model for Calc {
        type Command = Cmd;
        type Output = i64;
        type Error = String;
        const VERSION: u32 = 3;

        fn command_version(cmd: &Cmd) -> u32 {
            match cmd {
                Cmd::Add { .. } => 1,
                Cmd::Double => 2,
                Cmd::Negate => 3,
            }
        }

        /// 2 -> 3: `{"Add": n}` becomes `{"Add": {"amount": n}}`.
        fn upcast(from: u32, cmd: Value) -> Result<Value, String> {
            match (from, cmd) {
                (2, Value::Object(map)) if map.contains_key("Add") => {
                    Ok(json!({ "Add": { "amount": map["Add"] } }))
                }
                (_, cmd) => Ok(cmd),
            }
        }

        /// 3 -> 2: the reverse, while version 3 is not active yet.
        fn downcast(to: u32, cmd: Value) -> Result<Value, String> {
            match (to, cmd) {
                (2, Value::Object(map)) if map.contains_key("Add") => {
                    Ok(json!({ "Add": map["Add"]["amount"] }))
                }
                (_, cmd) => Ok(cmd),
            }
        }

        /// 2 -> 3: the field `total` is now `value`.
        fn migrate_snapshot(from: u32, model: Value) -> Result<Value, String> {
            match (from, model) {
                (2, Value::Object(map)) => {
                    let total = map.get("total").ok_or("no total in a version 2 model")?;
                    Ok(json!({ "value": total }))
                }
                (_, model) => Ok(model),
            }
        }

        fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
            self.value = match cmd {
                Cmd::Add { amount } => self.value.checked_add(amount),
                Cmd::Double => self.value.checked_mul(2),
                Cmd::Negate => self.value.checked_neg(),
            }
            .ok_or("overflow")?;
            Ok(self.value)
        }
    }
}
