//! Three nodes on one Kafka topic: each writes concurrently, all converge.
//!
//! ```sh
//! MEMSTATE_KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo run -p memstate-examples --example kafka_cluster
//! ```
//!
//! The example creates a fresh single-partition topic with unlimited
//! retention (what a memstate log needs), runs three engines on it — each with
//! its own Kafka client, as three processes would — and deletes the topic at
//! the end.

use std::collections::BTreeMap;

use memstate_core::{CommandContext, Consistency, EngineBuilder, Model};
use memstate_kafka::{KafkaConfig, KafkaStream};
use serde::{Deserialize, Serialize};

/// Stock per item.
#[derive(Clone, Default)]
struct Inventory(BTreeMap<String, u64>);

#[derive(Serialize, Deserialize)]
enum Change {
    Receive { item: String, count: u64 },
    Ship { item: String, count: u64 },
}

impl Model for Inventory {
    type Command = Change;
    /// The item's stock after the change.
    type Output = u64;
    type Error = String;

    fn apply(&mut self, change: Change, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        match change {
            Change::Receive { item, count } => {
                let stock = self.0.entry(item).or_default();
                *stock += count;
                Ok(*stock)
            }
            Change::Ship { item, count } => {
                // Check first, then change: a rejected command leaves the model as it was.
                let stock = self.0.get_mut(&item).ok_or(format!("no {item} in stock"))?;
                if *stock < count {
                    return Err(format!("only {stock} {item} in stock"));
                }
                *stock -= count;
                Ok(*stock)
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("MEMSTATE_KAFKA_BOOTSTRAP")
        .map_err(|_| "set MEMSTATE_KAFKA_BOOTSTRAP to a Kafka broker, e.g. 127.0.0.1:9092")?;
    let topic = format!("memstate-example-{}", uuid::Uuid::new_v4().simple());
    let config = KafkaConfig::new(bootstrap.clone(), topic.clone());
    KafkaStream::create_topic(&config, 1).await?;
    println!("topic {topic} on {bootstrap}");

    let result = run(&config).await;
    KafkaStream::delete_topic(&config).await?;
    result
}

async fn run(config: &KafkaConfig) -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"] {
        let stream = KafkaStream::connect(config.clone()).await?;
        nodes.push(
            EngineBuilder::new(Inventory::default(), stream)
                .node_id(name)
                .start()
                .await?,
        );
    }

    // Every node writes at once; the topic orders the commands.
    let mut writers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..20 {
                let item = format!("item-{}", (i + round) % 3);
                node.execute(Change::Receive { item, count: 1 }).await?;
            }
            Ok::<_, memstate_core::ExecuteError<String>>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }

    // A domain error comes back to its caller and changes nothing.
    match nodes[0]
        .execute(Change::Ship {
            item: "item-0".into(),
            count: 1_000,
        })
        .await
    {
        Err(rejected) => println!("rejected as expected: {rejected}"),
        Ok(_) => return Err("shipping more than the stock was accepted".into()),
    }

    // Linearizable reads: each node first catches up with the topic's end.
    let mut views = Vec::new();
    for node in &nodes {
        let stock = node
            .query(Consistency::Linearizable, |inv| inv.0.clone())
            .await?;
        println!("{}: {stock:?}", node.node_id());
        views.push(stock);
    }
    if views.iter().any(|v| v != &views[0]) {
        return Err("the nodes disagree".into());
    }
    println!(
        "all three nodes agree on {} units",
        views[0].values().sum::<u64>()
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
