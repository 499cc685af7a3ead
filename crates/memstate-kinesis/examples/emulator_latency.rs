//! Measures append → subscribe latency against a Kinesis emulator: one record
//! at a time, the time from calling `append` until a subscriber yields it.
//!
//! ```sh
//! integration-tests/scripts/kinesis.sh start
//! eval "$(integration-tests/scripts/kinesis.sh env)"
//! cargo run -p memstate-kinesis --example emulator_latency -- [records] [min_poll_ms] [max_poll_ms] [fanout]
//! ```
//!
//! With `fanout` as the fourth argument the subscriber reads by enhanced
//! fan-out (`SubscribeToShard`) instead of polling.
//!
//! A rough figure for the docs, not a benchmark: `make bench` measures the
//! engine.

use std::time::{Duration, Instant};

use bytes::Bytes;
use memstate_core::Stream;
use memstate_kinesis::{ENDPOINT_ENV, KinesisConfig, KinesisStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> Result<u64, std::num::ParseIntError> {
        args.get(i).map_or(Ok(default), |a| a.parse())
    };
    let records = number(0, 100)?;
    let min_poll = Duration::from_millis(number(1, 50)?);
    let max_poll = Duration::from_millis(number(2, 250)?).max(min_poll);
    let fan_out = args.get(3).is_some_and(|a| a == "fanout");
    let name = format!("memstate-latency-{}", uuid::Uuid::new_v4().simple());
    let mut config = KinesisConfig::emulator_from_env(&name)
        .ok_or_else(|| format!("set {ENDPOINT_ENV} (integration-tests/scripts/kinesis.sh env)"))?
        .with_poll_interval(min_poll, max_poll);
    if fan_out {
        config = config.with_enhanced_fan_out("latency-probe");
    }

    let started = Instant::now();
    let stream = KinesisStream::connect(config).await?;
    println!("create stream + connect: {:?}", started.elapsed());
    let mut sub = stream.subscribe(None).await?;

    let mut appends = Vec::new();
    let mut end_to_end = Vec::new();
    for i in 0..records {
        let t0 = Instant::now();
        let cursors = stream
            .append(vec![Bytes::from(format!("record-{i}"))])
            .await?;
        appends.push(t0.elapsed());
        let record = sub.next().await?.ok_or("subscription ended")?;
        end_to_end.push(t0.elapsed());
        if Some(&record.cursor) != cursors.first() {
            return Err(format!("read {} but appended {:?}", record.cursor, cursors).into());
        }
    }
    let stats = stream.read_stats();
    stream.close().await?;
    stream.delete().await?;

    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    };
    println!(
        "{records} records, {}\n\
         append (PutRecord):          p50 {:?}  p99 {:?}\n\
         append -> subscriber yields: p50 {:?}  p99 {:?}\n\
         {stats:?}",
        if fan_out {
            "enhanced fan-out".to_owned()
        } else {
            format!("poll {min_poll:?}..{max_poll:?}")
        },
        pct(&mut appends, 0.5),
        pct(&mut appends, 0.99),
        pct(&mut end_to_end, 0.5),
        pct(&mut end_to_end, 0.99),
    );
    Ok(())
}
