//! A rolling model upgrade over a real stream: three builds of one model
//! (v1 -> v2 -> v3), three nodes upgraded one at a time with writes between
//! steps and an activation at each version (`docs/upgrades.md`).

use std::sync::Arc;
use std::time::Duration;

use memstate_core::{CommandContext, Consistency, Engine, EngineBuilder, Model, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CaseResult, Outcome, ensure};
use crate::fixture::{Backend, BoxError};

/// The state every build keeps (a running total).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Total(i64);

/// v1: `Add(n)`; v2 adds `Double`; v3 renames `Add(n)` to `Add { amount }`
/// and adds `Negate`. One command type serves the three builds: each build
/// refuses what it does not know through its `command_version`.
#[derive(Debug, Serialize, Deserialize)]
enum V2Cmd {
    Add(i64),
    Double,
}

#[derive(Debug, Serialize, Deserialize)]
enum V3Cmd {
    Add { amount: i64 },
    Double,
    Negate,
}

#[derive(Clone, Debug, Default)]
struct V1(Total);
#[derive(Clone, Debug, Default)]
struct V2(Total);
#[derive(Clone, Debug, Default)]
struct V3(Total);

fn step(total: &mut Total, next: Option<i64>) -> Result<i64, String> {
    total.0 = next.ok_or("overflow")?;
    Ok(total.0)
}

impl Model for V1 {
    type Command = V2Cmd;
    type Output = i64;
    type Error = String;
    fn apply(&mut self, cmd: V2Cmd, _: &mut CommandContext<'_>) -> Result<i64, String> {
        match cmd {
            V2Cmd::Add(n) => {
                let next = self.0.0.checked_add(n);
                step(&mut self.0, next)
            }
            // A v1 build never decodes `Double`: it is not in v1's log.
            V2Cmd::Double => Err("v1 has no Double".into()),
        }
    }
}

impl Model for V2 {
    type Command = V2Cmd;
    type Output = i64;
    type Error = String;
    const VERSION: u32 = 2;
    fn command_version(cmd: &V2Cmd) -> u32 {
        if matches!(cmd, V2Cmd::Double) { 2 } else { 1 }
    }
    fn apply(&mut self, cmd: V2Cmd, _: &mut CommandContext<'_>) -> Result<i64, String> {
        let next = match cmd {
            V2Cmd::Add(n) => self.0.0.checked_add(n),
            V2Cmd::Double => self.0.0.checked_mul(2),
        };
        step(&mut self.0, next)
    }
}

impl Model for V3 {
    type Command = V3Cmd;
    type Output = i64;
    type Error = String;
    const VERSION: u32 = 3;
    fn command_version(cmd: &V3Cmd) -> u32 {
        match cmd {
            V3Cmd::Add { .. } => 1,
            V3Cmd::Double => 2,
            V3Cmd::Negate => 3,
        }
    }
    fn upcast(from: u32, cmd: Value) -> Result<Value, String> {
        match cmd.get("Add") {
            Some(n) if from == 2 => Ok(json!({ "Add": { "amount": n } })),
            _ => Ok(cmd),
        }
    }
    fn downcast(to: u32, cmd: Value) -> Result<Value, String> {
        match cmd.pointer("/Add/amount") {
            Some(n) if to == 2 => Ok(json!({ "Add": n })),
            _ => Ok(cmd),
        }
    }
    fn apply(&mut self, cmd: V3Cmd, _: &mut CommandContext<'_>) -> Result<i64, String> {
        let next = match cmd {
            V3Cmd::Add { amount } => self.0.0.checked_add(amount),
            V3Cmd::Double => self.0.0.checked_mul(2),
            V3Cmd::Negate => self.0.0.checked_neg(),
        };
        step(&mut self.0, next)
    }
}

/// One node and the build it runs.
enum Node {
    V1(Engine<V1>),
    V2(Engine<V2>),
    V3(Engine<V3>),
}

async fn start<M: Model>(
    model: M,
    stream: Arc<dyn Stream>,
    id: &str,
) -> Result<Engine<M>, BoxError> {
    Ok(EngineBuilder::with_shared_stream(model, stream)
        .node_id(id)
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60))
        .startup_timeout(Duration::from_secs(120))
        .start()
        .await?)
}

impl Node {
    async fn start(version: u32, stream: Arc<dyn Stream>, id: &str) -> Result<Self, BoxError> {
        Ok(match version {
            1 => Self::V1(start(V1::default(), stream, id).await?),
            2 => Self::V2(start(V2::default(), stream, id).await?),
            _ => Self::V3(start(V3::default(), stream, id).await?),
        })
    }

    async fn add(&self, n: i64) -> Result<(), BoxError> {
        match self {
            Self::V1(e) => {
                e.execute(V2Cmd::Add(n)).await?;
            }
            Self::V2(e) => {
                e.execute(V2Cmd::Add(n)).await?;
            }
            Self::V3(e) => {
                e.execute(V3Cmd::Add { amount: n }).await?;
            }
        }
        Ok(())
    }

    async fn total(&self) -> Result<i64, BoxError> {
        let level = Consistency::Linearizable;
        Ok(match self {
            Self::V1(e) => e.query(level, |m| m.0.0).await?,
            Self::V2(e) => e.query(level, |m| m.0.0).await?,
            Self::V3(e) => e.query(level, |m| m.0.0).await?,
        })
    }

    async fn activate(&self, version: u32) -> Result<u64, memstate_core::Error> {
        match self {
            Self::V1(e) => e.activate_version(version).await,
            Self::V2(e) => e.activate_version(version).await,
            Self::V3(e) => e.activate_version(version).await,
        }
    }

    async fn shutdown(self) {
        match self {
            Self::V1(e) => e.shutdown().await,
            Self::V2(e) => e.shutdown().await,
            Self::V3(e) => e.shutdown().await,
        }
    }
}

async fn all_equal(nodes: &[Node], step: &str) -> Result<i64, BoxError> {
    let first = nodes[0].total().await?;
    for (i, node) in nodes.iter().enumerate() {
        let total = node.total().await?;
        ensure(total == first, || {
            format!("{step}: node {i} has {total}, node 0 {first}")
        })?;
    }
    Ok(first)
}

pub(super) async fn a_rolling_upgrade_through_three_versions_keeps_every_node_equal(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let ids = ["up-a", "up-b", "up-c"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(Node::start(1, f.new_client().await?, id).await?);
    }
    for node in &nodes {
        node.add(1).await?;
    }
    all_equal(&nodes, "all on v1").await?;
    for version in [2, 3] {
        for (i, id) in ids.iter().enumerate() {
            let old = nodes.remove(i);
            old.shutdown().await;
            nodes.insert(i, Node::start(version, f.new_client().await?, id).await?);
            if i < 2 {
                ensure(nodes[i].activate(version).await.is_err(), || {
                    format!("version {version} activated while a node could not read it")
                })?;
            }
            for node in &nodes {
                node.add(2).await?;
            }
            all_equal(&nodes, &format!("{} of 3 on v{version}", i + 1)).await?;
        }
        let activated = nodes[0].activate(version).await?;
        // Another node writes at the version it has applied: let it read the activation.
        match &nodes[1] {
            Node::V2(e) => {
                e.wait_for_index(activated).await?;
                e.execute(V2Cmd::Double).await?;
            }
            Node::V3(e) => {
                e.wait_for_index(activated).await?;
                e.execute(V3Cmd::Negate).await?;
            }
            Node::V1(_) => return Err("node 1 should run a newer build".into()),
        }
        all_equal(&nodes, &format!("v{version} active")).await?;
    }
    let live = nodes[0].total().await?;
    let fresh = Node::start(3, f.new_client().await?, "up-fresh").await?;
    let replayed = fresh.total().await?;
    ensure(replayed == live, || {
        format!("a fresh v3 node replayed to {replayed}, the live nodes hold {live}")
    })?;
    fresh.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(Outcome::Passed)
}
