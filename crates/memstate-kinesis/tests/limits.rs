//! Retention and throttling against a stubbed SDK client (aws-smithy-mocks):
//! the emulator enforces neither, so these answers are canned as real Kinesis
//! gives them. The throttling tests keep the SDK's standard retry policy on,
//! as in production, so the adapter's retries are tested on top of the SDK's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::create_stream::CreateStreamOutput;
use aws_sdk_kinesis::operation::increase_stream_retention_period::IncreaseStreamRetentionPeriodOutput;
use aws_sdk_kinesis::operation::put_record::PutRecordOutput;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamMode, StreamStatus};
use aws_smithy_mocks::{Rule, mock};
use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};
use memstate_kinesis::{KinesisStream, KinesisStreamError};
use support::*;

const HOUR: Duration = Duration::from_secs(3600);

/// Every error Kinesis answers when a call exceeds a rate limit.
const THROTTLING: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "KMSThrottlingException",
];

fn stream_with_retention(hours: i32) -> Rule {
    mock!(Client::describe_stream_summary).then_output(move || {
        summary_with_retention(StreamStatus::Active, StreamMode::Provisioned, 1, hours)
    })
}

fn put_ok() -> PutRecordOutput {
    PutRecordOutput::builder()
        .shard_id(SHARD)
        .sequence_number(SEQ_1)
        .build()
        .unwrap()
}

fn adapter_source(err: &StreamError) -> Option<&KinesisStreamError> {
    std::error::Error::source(err).and_then(|s| s.downcast_ref::<KinesisStreamError>())
}

#[tokio::test]
async fn a_stream_keeping_records_a_day_is_refused_by_default_naming_the_retention() {
    let (describe, list) = (stream_with_retention(24), one_open_shard());

    let err = KinesisStream::with_client(client(&[&describe, &list]), config())
        .await
        .unwrap_err();

    match &err {
        StreamError::Misconfigured { name, reason } => {
            assert_eq!(name, STREAM);
            assert!(reason.contains("retention period is 24 h"), "{reason}");
            assert!(reason.contains("minimum of 8760 h"), "{reason}");
            assert!(
                reason.contains("increase-stream-retention-period"),
                "{reason}"
            );
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

#[tokio::test]
async fn a_short_retention_is_accepted_when_asked_and_reported_to_the_engine() {
    let (describe, list) = (stream_with_retention(48), one_open_shard());

    let lowered = KinesisStream::with_client(
        client(&[&describe, &list]),
        config().with_min_retention(48 * HOUR),
    )
    .await
    .unwrap();
    let accepted = KinesisStream::with_client(
        client(&[&describe, &list]),
        config().with_short_retention_accepted(true),
    )
    .await
    .unwrap();

    assert_eq!(lowered.retention(), 48 * HOUR);
    assert_eq!(Stream::retention(&accepted), Some(48 * HOUR));
    let below = KinesisStream::with_client(
        client(&[&describe, &list]),
        config().with_min_retention(49 * HOUR),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(below, StreamError::Misconfigured { .. }),
        "{below:?}"
    );
}

#[tokio::test]
async fn a_created_stream_gets_the_configured_retention_before_connect_returns() {
    let describe = mock!(Client::describe_stream_summary)
        .sequence()
        .http_status(400, error_body("ResourceNotFoundException", "not found"))
        .output(|| summary_with_retention(StreamStatus::Active, StreamMode::Provisioned, 1, 24))
        .output(|| summary_with_retention(StreamStatus::Updating, StreamMode::Provisioned, 1, 8760))
        .output(|| summary_with_retention(StreamStatus::Active, StreamMode::Provisioned, 1, 8760))
        .build();
    let create = mock!(Client::create_stream).then_output(|| CreateStreamOutput::builder().build());
    let raise = mock!(Client::increase_stream_retention_period)
        .match_requests(|req| {
            req.stream_name() == Some(STREAM) && req.retention_period_hours() == Some(8760)
        })
        .then_output(|| IncreaseStreamRetentionPeriodOutput::builder().build());
    let list = one_open_shard();

    let stream = KinesisStream::with_client(
        client(&[&describe, &create, &raise, &list]),
        config().with_create_if_missing(true),
    )
    .await
    .unwrap();

    assert_eq!(create.num_calls(), 1);
    assert_eq!(raise.num_calls(), 1);
    assert_eq!(stream.retention(), 8760 * HOUR);
}

#[tokio::test]
async fn an_existing_stream_is_never_changed_only_checked() {
    let (describe, list) = (stream_with_retention(24), one_open_shard());
    let raise = mock!(Client::increase_stream_retention_period)
        .then_output(|| IncreaseStreamRetentionPeriodOutput::builder().build());

    let _ = KinesisStream::with_client(
        client(&[&describe, &list, &raise]),
        config().with_create_if_missing(true),
    )
    .await
    .unwrap_err();

    assert_eq!(raise.num_calls(), 0);
}

#[tokio::test]
async fn a_position_older_than_the_trim_horizon_is_truncated_history_naming_retention() {
    let (describe, list) = (stream_with_retention(168), one_open_shard());
    // Real Kinesis's answer for a sequence number it no longer holds.
    let expired = mock!(Client::get_shard_iterator)
        .sequence()
        .http_status(
            400,
            error_body(
                "InvalidArgumentException",
                &format!(
                    "StartingSequenceNumber {SEQ_1} used in GetShardIterator on shard {SHARD} in \
                     stream {STREAM} under account 000000000000 is invalid."
                ),
            ),
        )
        .build();
    let stream = KinesisStream::with_client(
        client(&[&describe, &list, &expired]),
        config().with_min_retention(168 * HOUR),
    )
    .await
    .unwrap();

    let err = stream
        .subscribe(Some(Cursor::new(SEQ_1)))
        .await
        .unwrap_err();

    match &err {
        StreamError::HistoryTruncated { name, reason } => {
            assert_eq!(name, STREAM);
            assert!(reason.contains("retention period (168 h)"), "{reason}");
            assert!(reason.contains(SEQ_1), "{reason}");
        }
        other => panic!("expected HistoryTruncated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_position_of_another_shard_is_an_invalid_cursor() {
    let (describe, list) = (active_stream(), one_open_shard());
    let foreign = mock!(Client::get_shard_iterator)
        .sequence()
        .http_status(
            400,
            error_body(
                "InvalidArgumentException",
                &format!(
                    "Invalid StartingSequenceNumber. It encodes shardId-000000000007, while it was \
                     used in a call to {SHARD}"
                ),
            ),
        )
        .build();
    let stream = KinesisStream::with_client(client(&[&describe, &list, &foreign]), config())
        .await
        .unwrap();

    let err = stream
        .subscribe(Some(Cursor::new(SEQ_1)))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::InvalidCursor { cursor, .. } if cursor == SEQ_1),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_put_record_is_sent_again_with_the_sdk_retries_on() {
    for code in THROTTLING {
        let put = mock!(Client::put_record)
            .sequence()
            .http_status(400, error_body(code, "Rate exceeded"))
            .times(4)
            .output(put_ok)
            .build();
        let (describe, list) = (active_stream(), one_open_shard());
        let stream = KinesisStream::with_client(
            client_with_sdk_retries(&[&describe, &list, &put]),
            config(),
        )
        .await
        .unwrap();

        let cursors = stream
            .append(vec![Bytes::from_static(b"frame")])
            .await
            .unwrap_or_else(|e| panic!("{code}: {e:?}"));

        assert_eq!(cursors, vec![Cursor::new(SEQ_1)], "{code}");
        assert_eq!(
            put.num_calls(),
            5,
            "{code}: four throttled answers, then success"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn put_record_throttled_past_the_budget_fails_as_not_written() {
    for code in THROTTLING {
        let put = mock!(Client::put_record)
            .sequence()
            .http_status(400, error_body(code, "Rate exceeded"))
            .repeatedly()
            .build();
        let (describe, list) = (active_stream(), one_open_shard());
        let stream = KinesisStream::with_client(
            client_with_sdk_retries(&[&describe, &list, &put]),
            config().with_throttle_budget(Duration::from_secs(3)),
        )
        .await
        .unwrap();
        let started = tokio::time::Instant::now();

        let err = stream
            .append(vec![Bytes::from_static(b"frame")])
            .await
            .unwrap_err();

        // Throttled means refused: not Ambiguous, so the caller knows nothing was written.
        assert!(
            matches!(err, StreamError::Backend { .. }),
            "{code}: {err:?}"
        );
        assert!(
            matches!(
                adapter_source(&err),
                Some(KinesisStreamError::Throttled { .. })
            ),
            "{code}: {err:?}"
        );
        assert!(put.num_calls() > 2, "{code}: sent again before giving up");
        assert!(
            started.elapsed() <= Duration::from_secs(3) + Duration::from_secs(60),
            "{code}: gave up after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn throttled_reads_are_retried_with_the_sdk_retries_on() {
    for code in THROTTLING {
        let (describe, list) = (active_stream(), one_open_shard());
        let get_iterator = mock!(Client::get_shard_iterator)
            .match_requests(|req| {
                req.shard_iterator_type() == Some(&ShardIteratorType::TrimHorizon)
            })
            .then_output(|| iterator("it-1"));
        let get_records = mock!(Client::get_records)
            .match_requests(|req| req.shard_iterator() == Some("it-1"))
            .sequence()
            .http_status(400, error_body(code, "Rate exceeded"))
            .times(4)
            .output(|| records(&[(SEQ_1, "a"), (SEQ_2, "b")], Some("it-2"), 0))
            .build();
        let stream = KinesisStream::with_client(
            client_with_sdk_retries(&[&describe, &list, &get_iterator, &get_records]),
            config(),
        )
        .await
        .unwrap();

        let mut sub = stream.subscribe(None).await.unwrap();
        let first = next_payload(&mut sub).await;
        let second = next_payload(&mut sub).await;

        assert_eq!(first, (SEQ_1.to_owned(), "a".to_owned()), "{code}");
        assert_eq!(second, (SEQ_2.to_owned(), "b".to_owned()), "{code}");
        assert_eq!(get_records.num_calls(), 5, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn reads_throttled_past_the_budget_report_it() {
    for code in THROTTLING {
        let (describe, list) = (active_stream(), one_open_shard());
        let get_iterator = mock!(Client::get_shard_iterator).then_output(|| iterator("it-1"));
        let get_records = mock!(Client::get_records)
            .sequence()
            .http_status(400, error_body(code, "Rate exceeded"))
            .repeatedly()
            .build();
        let stream = KinesisStream::with_client(
            client_with_sdk_retries(&[&describe, &list, &get_iterator, &get_records]),
            config().with_throttle_budget(Duration::from_secs(3)),
        )
        .await
        .unwrap();

        let mut sub = stream.subscribe(None).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(600), sub.next())
            .await
            .expect("the budget ends the wait")
            .unwrap_err();

        assert!(err.to_string().contains("throttle_budget"), "{code}: {err}");
        assert!(
            matches!(
                adapter_source(&err),
                Some(KinesisStreamError::Throttled { .. })
            ),
            "{code}: {err:?}"
        );
    }
}
