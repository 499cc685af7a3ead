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

use super::load::closed_loop;
use super::tiers::{TierPoint, adapter_tier, engine_tier};
use super::workload::{READ_BACK_TIMEOUT, Tag, Waiters, read_back, tagged_payload};
use super::{BackendRun, Plan};

/// Runs the three tiers, each on a fresh stream, and deletes the streams.
///
/// # Errors
///
/// Emulator or engine failures, as text.
pub(crate) async fn run(plan: &Plan, endpoint: &str) -> Result<BackendRun, String> {
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
        format!("emulator {endpoint}, one shard per stream"),
        memstate,
        Some(adapter),
        raw,
    ))
}

type Tiers = (Vec<TierPoint>, Vec<TierPoint>, Vec<TierPoint>);

async fn tiers(plan: &Plan, streams: &[KinesisStream]) -> Result<Tiers, String> {
    let [engine_stream, adapter_stream, raw_stream] = streams else {
        return Err("three streams expected".into());
    };
    plan.progress("kinesis: memstate (Engine::execute on KinesisStream)");
    let stream: Arc<dyn Stream> = Arc::new(engine_stream.clone());
    let memstate = engine_tier(stream, "bench-kinesis", plan).await?;
    plan.progress("kinesis: adapter (KinesisStream::append + subscription read-back)");
    let stream: Arc<dyn Stream> = Arc::new(adapter_stream.clone());
    let adapter = adapter_tier(stream, plan).await?;
    plan.progress("kinesis: raw (PutRecord + GetRecords)");
    let raw = raw_tier(plan, raw_stream).await?;
    Ok((memstate, adapter, raw))
}

async fn raw_tier(plan: &Plan, stream: &KinesisStream) -> Result<Vec<TierPoint>, String> {
    let client = stream.client().clone();
    let name: Arc<str> = Arc::from(stream.stream_name());
    let poll = stream.config().min_poll_interval;
    let waiters = Waiters::default();
    let reader = tokio::spawn(read_loop(
        client.clone(),
        Arc::clone(&name),
        stream.shard_id().to_owned(),
        poll,
        waiters.clone(),
    ));
    let mut points = Vec::new();
    let mut failure = None;
    for &clients in &plan.clients {
        let size = plan.payload_size;
        let (c, w, n) = (client.clone(), waiters.clone(), Arc::clone(&name));
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let (kinesis, waiters, name) = (c.clone(), w.clone(), Arc::clone(&n));
            async move {
                let tag = Tag {
                    client: client as u64,
                    seq,
                };
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
        .await;
        match measured {
            Ok(m) => {
                plan.progress(&format!(
                    "raw      {clients:>3} clients: {:>9.0} records/s",
                    m.per_sec
                ));
                points.push(TierPoint::plain(m));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    reader.abort();
    match failure {
        Some(e) => Err(e),
        None => Ok(points),
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
