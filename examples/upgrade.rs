//! A rolling upgrade of a small model, from build 1 to build 2, on the file
//! journal (see `docs/upgrades.md`).
//!
//! `cargo run -p memstate-examples --example upgrade`
//!
//! Build 2 renames `Add(n)` to `Add { amount }` and adds `Double`. Two nodes
//! start on build 1; node A is redeployed with build 2 while B keeps serving;
//! `Double` is refused until version 2 is active, and activation is refused
//! while B can read only version 1; then B is upgraded and version 2 activated.

use memstate_core::{CommandContext, Consistency, EngineBuilder, Error, ExecuteError, Model};
use memstate_file::FileStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod build1 {
    use super::*;

    #[derive(Clone, Default, Serialize, Deserialize)]
    pub struct Tally {
        pub total: i64,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Cmd {
        Add(i64),
    }

    impl Model for Tally {
        type Command = Cmd;
        type Output = i64;
        type Error = String;
        fn apply(&mut self, cmd: Cmd, _: &mut CommandContext<'_>) -> Result<i64, String> {
            let Cmd::Add(n) = cmd;
            self.total = self.total.checked_add(n).ok_or("overflow")?;
            Ok(self.total)
        }
    }
}

mod build2 {
    use super::*;

    #[derive(Clone, Default, Serialize, Deserialize)]
    pub struct Tally {
        pub total: i64,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Cmd {
        Add { amount: i64 },
        Double,
    }

    impl Model for Tally {
        type Command = Cmd;
        type Output = i64;
        type Error = String;
        const VERSION: u32 = 2;

        fn command_version(cmd: &Cmd) -> u32 {
            match cmd {
                Cmd::Add { .. } => 1,
                Cmd::Double => 2,
            }
        }

        // Version 1 wrote {"Add": n}; version 2 writes {"Add": {"amount": n}}.
        fn upcast(_from: u32, cmd: Value) -> Result<Value, String> {
            match cmd.get("Add") {
                Some(n) if n.is_i64() => Ok(json!({ "Add": { "amount": n } })),
                _ => Ok(cmd),
            }
        }

        fn downcast(_to: u32, cmd: Value) -> Result<Value, String> {
            match cmd.pointer("/Add/amount") {
                Some(n) => Ok(json!({ "Add": n })),
                None => Ok(cmd),
            }
        }

        fn apply(&mut self, cmd: Cmd, _: &mut CommandContext<'_>) -> Result<i64, String> {
            self.total = match cmd {
                Cmd::Add { amount } => self.total.checked_add(amount),
                Cmd::Double => self.total.checked_mul(2),
            }
            .ok_or("overflow")?;
            Ok(self.total)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let journal = std::env::temp_dir().join(format!("memstate-upgrade-{}", uuid::Uuid::new_v4()));
    let stream = std::sync::Arc::new(FileStream::open(&journal).await?);
    let start1 = |id: &'static str| {
        EngineBuilder::new(build1::Tally::default(), std::sync::Arc::clone(&stream))
            .node_id(id)
            .start()
    };
    let start2 = |id: &'static str| {
        EngineBuilder::new(build2::Tally::default(), std::sync::Arc::clone(&stream))
            .node_id(id)
            .start()
    };

    let a = start1("node-a").await?;
    let b = start1("node-b").await?;
    a.execute(build1::Cmd::Add(5)).await?;
    println!("both nodes on build 1; total 5");

    // Redeploy A with build 2; B keeps serving on build 1.
    a.shutdown().await;
    let a = start2("node-a").await?;
    let total = a.execute(build2::Cmd::Add { amount: 1 }).await?.output;
    let on_b = b.query(Consistency::Linearizable, |m| m.total).await?;
    println!("A on build 2 writes at version 1: A says {total}, B says {on_b}");
    match a.execute(build2::Cmd::Double).await {
        Err(ExecuteError::Engine(e @ Error::VersionNotActive { .. })) => println!("refused: {e}"),
        other => return Err(format!("Double should wait for version 2: {other:?}").into()),
    }
    match a.activate_version(2).await {
        Err(e @ Error::ActivationRefused { .. }) => println!("refused: {e}"),
        other => return Err(format!("B reads only version 1: {other:?}").into()),
    }

    // Upgrade B too, then activate version 2.
    b.shutdown().await;
    let b = start2("node-b").await?;
    let index = a.activate_version(2).await?;
    println!("version 2 active at index {index}");
    let doubled = b.execute(build2::Cmd::Double).await?.output;
    let on_a = a.query(Consistency::Linearizable, |m| m.total).await?;
    println!("B doubles: B says {doubled}, A says {on_a}");

    // A fresh build-2 node replays the whole log, upcasting version-1 commands.
    let fresh = start2("node-fresh").await?;
    let replayed = fresh.query(Consistency::Local, |m| m.total).await?;
    println!("a fresh node replays to {replayed}");
    for engine in [a, b, fresh] {
        engine.shutdown().await;
    }
    std::fs::remove_dir_all(&journal)?;
    if replayed != doubled || on_a != doubled {
        return Err("the nodes disagree".into());
    }
    Ok(())
}
