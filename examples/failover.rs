//! Single-leader mode: one node writes, the others follow; when the leader
//! stops, a follower claims the next epoch and takes over.
//!
//! `cargo run -p memstate-examples --example failover` (three nodes on one
//! file journal in a temporary directory; the same code runs on any stream).
//!
//! Leadership travels through the log itself: claims and heartbeats are
//! records, the first claim of an epoch in log order wins on every node alike,
//! and a command written under an old epoch is refused at apply time
//! (fencing), so a deposed leader cannot change the state.

use std::time::Duration;

use memstate_core::{
    CommandContext, Consistency, Engine, EngineBuilder, Error, ExecuteError, LeadershipConfig,
    Model, Settings, WriteMode,
};
use memstate_file::FileStream;

#[derive(Clone, Default)]
struct Log(Vec<String>);

impl Model for Log {
    type Command = String;
    /// Commands that return nothing use `()`.
    type Output = ();
    type Error = String;

    fn apply(&mut self, line: String, _ctx: &mut CommandContext<'_>) -> Result<(), String> {
        self.0.push(line);
        Ok(())
    }
}

async fn node(
    journal: &std::path::Path,
    name: &str,
) -> Result<Engine<Log>, Box<dyn std::error::Error>> {
    let mut settings = Settings::default();
    // Replicated in the log's first record: every node must agree on it.
    settings.write_mode = WriteMode::SingleLeader;
    Ok(
        EngineBuilder::new(Log::default(), FileStream::open(journal).await?)
            .node_id(name)
            .settings(settings)
            // Heartbeat every 200 ms; a follower claims after 1 s of silence.
            .leadership(LeadershipConfig::new(
                Duration::from_millis(200),
                Duration::from_secs(1),
            ))
            .start()
            .await?,
    )
}

/// Waits until one of `nodes` leads, as all of them see it.
async fn leader(nodes: &[Engine<Log>]) -> Result<Engine<Log>, Box<dyn std::error::Error>> {
    for _ in 0..600 {
        let views: Vec<_> = nodes.iter().map(|n| n.stats().leadership).collect();
        let agreed = views
            .iter()
            .all(|v| v.epoch == views[0].epoch && v.leader == views[0].leader);
        if let (true, Some(id)) = (agreed, &views[0].leader)
            && let Some(found) = nodes.iter().find(|n| n.node_id() == id)
        {
            return Ok(found.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no leader agreed on within 30 s".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("memstate-failover-{}", std::process::id()));
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        nodes.push(node(&dir, name).await?);
    }

    let first = leader(&nodes).await?;
    println!(
        "{} leads epoch {}",
        first.node_id(),
        first.stats().leadership.epoch
    );
    first.execute("written by the first leader".into()).await?;

    // A follower's command is refused, naming the leader to send it to.
    let follower = nodes
        .iter()
        .find(|n| n.node_id() != first.node_id())
        .ok_or("no follower")?;
    match follower.execute("from a follower".into()).await {
        Err(ExecuteError::Engine(Error::NotLeader { leader, epoch, .. })) => {
            println!("a follower's command was refused: leader is {leader:?} in epoch {epoch}");
        }
        other => return Err(format!("a follower's command gave {other:?}").into()),
    }

    // The leader stops; the others notice its silence and elect a successor.
    first.shutdown().await;
    let rest: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.node_id() != first.node_id())
        .collect();
    // (`leader` only answers once the agreed leader is one of `rest`.)
    let second = leader(&rest).await?;
    println!(
        "{} took over in epoch {}",
        second.node_id(),
        second.stats().leadership.epoch
    );
    second
        .execute("written by the second leader".into())
        .await?;

    for n in &rest {
        let lines = n
            .query(Consistency::Linearizable, |log| log.0.clone())
            .await?;
        println!("{}: {lines:?}", n.node_id());
        n.shutdown().await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
