//! Mounting memstate-server in your own binary: a to-do list model over the
//! file journal, with two named queries.
//!
//! ```text
//! cargo run -p memstate-examples --example todo_server -- ./todo-data 127.0.0.1:8080
//! curl -XPOST localhost:8080/commands/add -d '{"title": "write docs"}'
//! curl -XPOST localhost:8080/commands/done -d '{"id": 1}'
//! curl 'localhost:8080/queries/open?consistency=linearizable'
//! ```
//!
//! Start it twice on the same directory (two ports) and the two processes are
//! two nodes of one cluster.

use std::collections::BTreeMap;

use memstate_core::{CommandContext, EngineBuilder, Model};
use memstate_file::FileStream;
use memstate_server::ServerBuilder;
use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Todos {
    next: u64,
    items: BTreeMap<u64, Item>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Item {
    title: String,
    done: bool,
}

// Externally tagged: `POST /commands/add` with `{"title": ...}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TodoCommand {
    Add { title: String },
    Done { id: u64 },
}

impl Model for Todos {
    type Command = TodoCommand;
    type Output = u64;
    type Error = String;

    fn apply(
        &mut self,
        command: TodoCommand,
        _ctx: &mut CommandContext<'_>,
    ) -> Result<u64, String> {
        match command {
            TodoCommand::Add { title } if title.trim().is_empty() => {
                Err("a to-do needs a title".into())
            }
            TodoCommand::Add { title } => {
                self.next += 1;
                self.items.insert(self.next, Item { title, done: false });
                Ok(self.next)
            }
            TodoCommand::Done { id } => {
                let item = self.items.get_mut(&id).ok_or(format!("no to-do {id}"))?;
                item.done = true;
                Ok(id)
            }
        }
    }
}

#[derive(Deserialize)]
struct ById {
    id: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "todo-data".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());

    let stream = FileStream::open(&dir).await?;
    let engine = EngineBuilder::new(Todos::default(), stream).start().await?;
    let server = ServerBuilder::new(engine)
        .query("open", |t: &Todos, (): ()| {
            t.items
                .iter()
                .filter(|(_, i)| !i.done)
                .map(|(id, i)| (*id, i.title.clone()))
                .collect::<Vec<_>>()
        })
        .query("item", |t: &Todos, p: ById| t.items.get(&p.id).cloned())
        .build();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "to-do node on {dir}, listening on http://{}",
        listener.local_addr()?
    );
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
