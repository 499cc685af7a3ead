//! Queries while writes run: on one engine over a file journal, writers drive
//! transfers while query clients read balances, at `Local` (this node's state
//! as applied) and at `Linearizable` (learn the journal's head, apply up to
//! it, then read). The writers' rate alone, on the same engine, is measured
//! first so the cost of the queries to the writers shows.

use std::path::Path;
use std::sync::Arc;

use memstate_core::{Consistency, Engine, Stream};
use memstate_file::FileStream;
use serde::Serialize;

use super::Plan;
use super::load::{Measurement, closed_loop};
use super::tiers::start_bank;
use super::workload::{account, execute, mix, transfer};
use crate::bank::Bank;

/// Query clients running at once.
pub(crate) const QUERY_CLIENTS: usize = 4;

/// The figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Queries {
    /// Writer clients.
    pub writers: usize,
    /// Query clients.
    pub query_clients: usize,
    /// Writers with no queries running.
    pub writes_alone: Measurement,
    /// `Local` queries, and the writes meanwhile.
    pub local: Mixed,
    /// `Linearizable` queries, and the writes meanwhile.
    pub linearizable: Mixed,
}

/// Queries and writes measured over the same window.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Mixed {
    pub queries: Measurement,
    pub writes: Measurement,
}

/// Runs the three passes on a journal under `work`.
///
/// # Errors
///
/// Engine failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<Queries, String> {
    let writers = plan.query_writers();
    plan.progress(&format!(
        "query: {writers} writers, {QUERY_CLIENTS} query clients, file journal"
    ));
    let dir = work.join("query");
    let stream: Arc<dyn Stream> = Arc::new(
        FileStream::open(&dir)
            .await
            .map_err(|e| format!("opening {}: {e}", dir.display()))?,
    );
    let engine = start_bank(stream, "bench-query", plan).await?;
    let result = passes(plan, &engine, writers).await;
    engine.shutdown().await;
    result
}

async fn passes(plan: &Plan, engine: &Engine<Bank>, writers: usize) -> Result<Queries, String> {
    let writes_alone = write_load(plan, engine, writers).await?;
    let mut mixed = Vec::new();
    for level in [Consistency::Local, Consistency::Linearizable] {
        let names: Arc<Vec<String>> = Arc::new((0..plan.accounts).map(account).collect());
        let reader = engine.clone();
        let queries = closed_loop(QUERY_CLIENTS, plan.budget, move |client, seq| {
            let (engine, names) = (reader.clone(), Arc::clone(&names));
            async move {
                let i = (mix((client as u64) << 40 ^ seq) % names.len().max(1) as u64) as usize;
                let name = names.get(i).map(String::as_str).unwrap_or_default();
                engine
                    .query(level, |bank| bank.balance(name))
                    .await
                    .map_err(|e| format!("query failed: {e}"))?;
                // A Local query never waits: yield, or a query client would
                // hold its worker thread and starve the engine's own tasks.
                tokio::task::yield_now().await;
                Ok(())
            }
        });
        let (queries, writes) = tokio::join!(queries, write_load(plan, engine, writers));
        let (queries, writes) = (queries?, writes?);
        plan.progress(&format!(
            "query {level:?}: {:>9.0} queries/s while {:>7.0} commands/s (alone {:.0})",
            queries.per_sec, writes.per_sec, writes_alone.per_sec
        ));
        mixed.push(Mixed { queries, writes });
    }
    let mut mixed = mixed.into_iter();
    let (Some(local), Some(linearizable)) = (mixed.next(), mixed.next()) else {
        return Err("two query passes expected".into());
    };
    Ok(Queries {
        writers,
        query_clients: QUERY_CLIENTS,
        writes_alone,
        local,
        linearizable,
    })
}

/// `writers` clients driving transfers on `engine` for one measured window.
pub(super) async fn write_load(
    plan: &Plan,
    engine: &Engine<Bank>,
    writers: usize,
) -> Result<Measurement, String> {
    let (writer, accounts) = (engine.clone(), plan.accounts);
    closed_loop(writers, plan.budget, move |client, seq| {
        let engine = writer.clone();
        async move { execute(&engine, transfer(accounts, client, seq)).await }
    })
    .await
}
