//! What the stubbed-client tests share: a mock client, canned Kinesis
//! answers and a helper that reads one record.

// Test helpers fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryOutput;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    HashKeyRange, SequenceNumberRange, Shard, StreamDescriptionSummary, StreamMode,
    StreamModeDetails, StreamStatus,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use memstate_kinesis::KinesisConfig;

pub const STREAM: &str = "memstate-stubbed";
pub const SHARD: &str = "shardId-000000000000";
// Realistic sequence numbers: 56 digits, wider than u128.
pub const SEQ_1: &str = "49651234567890123456789012345678901234567890123456789001";
pub const SEQ_2: &str = "49651234567890123456789012345678901234567890123456789002";
pub const SEQ_3: &str = "49651234567890123456789012345678901234567890123456789003";

pub fn config() -> KinesisConfig {
    KinesisConfig::new(STREAM)
        .with_poll_interval(Duration::from_millis(10), Duration::from_millis(40))
}

/// A client whose every call is answered by `rules`, with the SDK's own
/// retries off so that the adapter's handling of each error is what is tested.
pub fn client(rules: &[&Rule]) -> Client {
    mock_client!(
        aws_sdk_kinesis,
        RuleMode::MatchAny,
        rules.iter().copied(),
        |c| c.retry_config(RetryConfig::disabled())
    )
}

/// A Kinesis error answer as it comes over the wire.
pub fn error_body(code: &str, message: &str) -> Option<String> {
    Some(format!(r#"{{"__type":"{code}","message":"{message}"}}"#))
}

pub fn summary(
    status: StreamStatus,
    mode: StreamMode,
    open_shards: i32,
) -> DescribeStreamSummaryOutput {
    summary_with_retention(status, mode, open_shards, 8760)
}

/// A stream summary with the given retention period in hours.
pub fn summary_with_retention(
    status: StreamStatus,
    mode: StreamMode,
    open_shards: i32,
    retention_hours: i32,
) -> DescribeStreamSummaryOutput {
    DescribeStreamSummaryOutput::builder()
        .stream_description_summary(
            StreamDescriptionSummary::builder()
                .stream_name(STREAM)
                .stream_arn(format!(
                    "arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"
                ))
                .stream_status(status)
                .stream_mode_details(
                    StreamModeDetails::builder()
                        .stream_mode(mode)
                        .build()
                        .unwrap(),
                )
                .retention_period_hours(retention_hours)
                .stream_creation_timestamp(DateTime::from_secs(1_700_000_000))
                .set_enhanced_monitoring(Some(vec![]))
                .open_shard_count(open_shards)
                .build()
                .unwrap(),
        )
        .build()
}

pub fn active_stream() -> Rule {
    mock!(Client::describe_stream_summary)
        .then_output(|| summary(StreamStatus::Active, StreamMode::Provisioned, 1))
}

pub fn shard(id: &str, parent: Option<&str>, ending: Option<&str>) -> Shard {
    Shard::builder()
        .shard_id(id)
        .set_parent_shard_id(parent.map(str::to_owned))
        .hash_key_range(
            HashKeyRange::builder()
                .starting_hash_key("0")
                .ending_hash_key("340282366920938463463374607431768211455")
                .build()
                .unwrap(),
        )
        .sequence_number_range(
            SequenceNumberRange::builder()
                .starting_sequence_number(
                    "49650000000000000000000000000000000000000000000000000000",
                )
                .set_ending_sequence_number(ending.map(str::to_owned))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

pub fn one_open_shard() -> Rule {
    mock!(Client::list_shards).then_output(|| {
        ListShardsOutput::builder()
            .shards(shard(SHARD, None, None))
            .build()
    })
}

pub fn record(sequence: &str, data: &str) -> aws_sdk_kinesis::types::Record {
    aws_sdk_kinesis::types::Record::builder()
        .sequence_number(sequence)
        .data(Blob::new(data))
        .partition_key("m")
        .build()
        .unwrap()
}

pub fn records(batch: &[(&str, &str)], next: Option<&str>, behind: i64) -> GetRecordsOutput {
    GetRecordsOutput::builder()
        .set_records(Some(batch.iter().map(|(s, d)| record(s, d)).collect()))
        .set_next_shard_iterator(next.map(str::to_owned))
        .millis_behind_latest(behind)
        .build()
        .unwrap()
}

pub fn iterator(id: &'static str) -> GetShardIteratorOutput {
    GetShardIteratorOutput::builder().shard_iterator(id).build()
}

pub async fn next_payload(sub: &mut Box<dyn memstate_core::Subscription>) -> (String, String) {
    let record = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("subscription stalled")
        .expect("next failed")
        .expect("subscription ended");
    (
        record.cursor.to_string(),
        String::from_utf8(record.payload.to_vec()).unwrap(),
    )
}

/// A client whose calls are answered by `rules` with the SDK's standard
/// retry policy on (3 attempts, its own backoff), as in production.
pub fn client_with_sdk_retries(rules: &[&Rule]) -> Client {
    mock_client!(
        aws_sdk_kinesis,
        RuleMode::MatchAny,
        rules.iter().copied(),
        |c| c.retry_config(RetryConfig::standard())
    )
}
