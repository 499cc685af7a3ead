//! Kinesis: the engine and the adapter on `KinesisStream`, against the SDK
//! itself: `PutRecord` of one command-sized record per operation and a
//! `GetRecords` loop reading them back, paced as the adapter paces its own
//! (read again at once while behind the tip, else after the minimum poll
//! interval).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use memstate_core::Stream;
use memstate_kinesis::{KinesisConfig, KinesisStream};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::load::closed_loop;
use super::tiers::{AdapterTier, EngineTier, Tier, TierPoint, interleave_three};
use super::workload::{READ_BACK_TIMEOUT, Tag, Waiters, next_point, read_back, tagged_payload};
use super::{BackendRun, Plan};

/// Runs the three tiers, each on a fresh stream, and deletes the streams.
///
/// # Errors
///
/// Emulator or engine failures, as text.
pub(crate) async fn run(plan: &Plan, endpoint: &str) -> Result<BackendRun, String> {
    let (plan, beyond) = within_emulator_reach(plan);
    let plan = &plan;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut streams = Vec::new();
    for tier in ["engine", "adapter", "raw"] {
        let config = KinesisConfig::emulator(endpoint, format!("memstate-bench-{tier}-{run_id}"));
        let stream = KinesisStream::connect(config.clone())
            .await
            .map_err(|e| format!("creating Kinesis stream {}: {e}", config.stream_name))?;
        streams.push(stream);
    }
    let result = tiers(plan, &streams).await;
    for stream in &streams {
        if let Err(e) = stream.delete().await {
            tracing::warn!(stream = %stream.stream_name(), error = %e, "could not delete a benchmark stream");
        }
    }
    let (memstate, adapter, raw) = result?;
    Ok(BackendRun::new(
        "kinesis",
        format!("emulator {endpoint}, one shard per stream{beyond}"),
        memstate,
        Some(adapter),
        raw,
    ))
}

/// The most concurrent clients the Kinesis part runs. With 1024 clients each
/// putting one record at a time, the emulator (one Node.js process) answered
/// none of them within the SDK's timeouts (raw and adapter tiers, 2026-12-03),
/// and one failed point loses the whole part's report.
const MAX_EMULATOR_CLIENTS: usize = 256;

/// `plan` without the client counts past [`MAX_EMULATOR_CLIENTS`], and the
/// note the report prints about them (empty when none were dropped).
fn within_emulator_reach(plan: &Plan) -> (Plan, String) {
    let mut plan = plan.clone();
    let beyond: Vec<String> = plan
        .clients
        .iter()
        .filter(|&&c| c > MAX_EMULATOR_CLIENTS)
        .map(ToString::to_string)
        .collect();
    plan.clients.retain(|&c| c <= MAX_EMULATOR_CLIENTS);
    if beyond.is_empty() {
        return (plan, String::new());
    }
    let why = format!(
        "not run at {} clients (the emulator serves at most {MAX_EMULATOR_CLIENTS} single-record writers at once)",
        beyond.join(", ")
    );
    plan.progress(&format!("kinesis: {why}"));
    (plan, format!("; {why}"))
}

type Tiers = (Vec<TierPoint>, Vec<TierPoint>, Vec<TierPoint>);

async fn tiers(plan: &Plan, streams: &[KinesisStream]) -> Result<Tiers, String> {
    let [engine_stream, adapter_stream, raw_stream] = streams else {
        return Err("three streams expected".into());
    };
    plan.progress("kinesis: memstate = Engine::execute on KinesisStream; adapter = KinesisStream::append + subscription read-back; raw = PutRecord + GetRecords");
    let stream: Arc<dyn Stream> = Arc::new(engine_stream.clone());
    let engine = EngineTier::start(stream, "bench-kinesis", plan).await?;
    let stream: Arc<dyn Stream> = Arc::new(adapter_stream.clone());
    let adapter = match AdapterTier::start(stream).await {
        Ok(a) => a,
        Err(e) => {
            engine.close().await;
            return Err(e);
        }
    };
    let raw = RawKinesis::start(raw_stream);
    interleave_three(plan, "kinesis", &engine, &adapter, &raw).await
}

/// The raw client: `PutRecord` per operation, one `GetRecords` loop reading back.
struct RawKinesis {
    client: Client,
    name: Arc<str>,
    waiters: Waiters,
    reader: JoinHandle<()>,
}

impl RawKinesis {
    fn start(stream: &KinesisStream) -> Self {
        let client = stream.client().clone();
        let name: Arc<str> = Arc::from(stream.stream_name());
        let waiters = Waiters::default();
        let reader = tokio::spawn(read_loop(
            client.clone(),
            Arc::clone(&name),
            stream.shard_id().to_owned(),
            stream.config().min_poll_interval,
            waiters.clone(),
        ));
        Self {
            client,
            name,
            waiters,
            reader,
        }
    }
}

#[async_trait]
impl Tier for RawKinesis {
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String> {
        let size = plan.payload_size;
        let point = next_point();
        let (c, w, n) = (
            self.client.clone(),
            self.waiters.clone(),
            Arc::clone(&self.name),
        );
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let (kinesis, waiters, name) = (c.clone(), w.clone(), Arc::clone(&n));
            async move {
                let tag = Tag::new(point, client, seq);
                let rx = waiters.register(tag);
                let put = kinesis
                    .put_record()
                    .stream_name(name.as_ref())
                    .partition_key("memstate")
                    .data(Blob::new(tagged_payload(tag, size)))
                    .send()
                    .await;
                if let Err(e) = put {
                    waiters.forget(tag);
                    return Err(format!("PutRecord failed: {e}"));
                }
                read_back(&waiters, tag, rx, READ_BACK_TIMEOUT).await
            }
        })
        .await?;
        Ok(TierPoint::plain(measured))
    }

    async fn close(&self) {
        self.reader.abort();
    }
}

/// Reads the shard from its start, waking the writers of what it reads.
async fn read_loop(
    client: Client,
    name: Arc<str>,
    shard: String,
    poll: Duration,
    waiters: Waiters,
) {
    let mut iterator = None;
    loop {
        let current = match iterator.take() {
            Some(i) => i,
            None => {
                let got = client
                    .get_shard_iterator()
                    .stream_name(name.as_ref())
                    .shard_id(&shard)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await;
                match got.ok().and_then(|o| o.shard_iterator) {
                    Some(i) => i,
                    None => {
                        tokio::time::sleep(poll).await;
                        continue;
                    }
                }
            }
        };
        match client.get_records().shard_iterator(&current).send().await {
            Ok(output) => {
                for record in output.records() {
                    waiters.seen(record.data().as_ref());
                }
                iterator = output.next_shard_iterator;
                if output.millis_behind_latest.is_none_or(|behind| behind <= 0) {
                    tokio::time::sleep(poll).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "raw GetRecords failed");
                // Restarting from the horizon re-reads: waking a caller twice is harmless.
                tokio::time::sleep(poll).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clients: Vec<usize>) -> Plan {
        Plan::for_tests(clients, 1, 1)
    }

    #[test]
    fn client_counts_past_the_emulators_reach_are_dropped_and_named() {
        let (kept, note) = within_emulator_reach(&plan(vec![1, 16, 256, 1024, 4096]));
        assert_eq!(kept.clients, vec![1, 16, 256]);
        assert!(note.contains("not run at 1024, 4096 clients"), "{note}");
        let (kept, note) = within_emulator_reach(&plan(vec![1, 64]));
        assert_eq!(kept.clients, vec![1, 64]);
        assert_eq!(note, "");
    }
}
