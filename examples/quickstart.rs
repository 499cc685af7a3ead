//! Quickstart: a counter kept by one node on the file journal.
//!
//! `cargo run -p memstate-examples --example quickstart` (the README shows the
//! same program). Run it twice: the second run restores the counter from the
//! journal before it adds.

use memstate_core::{CommandContext, Consistency, EngineBuilder, Model};
use memstate_file::FileStream;

#[derive(Clone, Default)]
struct Counter(u64);

impl Model for Counter {
    type Command = u64; // any serde type
    type Output = u64;
    type Error = String; // a domain error leaves the model unchanged
    fn apply(&mut self, add: u64, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        self.0 = self.0.checked_add(add).ok_or("overflow")?;
        Ok(self.0)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let journal = std::env::temp_dir().join("memstate-quickstart");
    let stream = FileStream::open(&journal).await?;
    let engine = EngineBuilder::new(Counter::default(), stream)
        .node_id("node-a")
        .start()
        .await?;
    // Returns once the command is durable in the journal and applied here.
    let done = engine.execute(5).await?;
    let now = engine.query(Consistency::Linearizable, |c| c.0).await?;
    println!(
        "counter = {now} (this command returned {} at applied index {}); journal in {}",
        done.output,
        done.index,
        journal.display()
    );
    engine.shutdown().await;
    Ok(())
}
