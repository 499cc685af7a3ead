//! KinesisStream against a stubbed SDK client (aws-smithy-mocks): the paths a
//! real emulator cannot produce — throttling, iterator expiry, resharding,
//! retention — and the mapping of Kinesis answers to `StreamError`.
//!
//! No test here opens a network connection: every call is answered by the
//! mock interceptor, the client carries static test credentials and a region,
//! so no credential or region provider (and no instance-metadata address) is
//! ever consulted.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::create_stream::CreateStreamOutput;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::put_record::PutRecordOutput;
use aws_sdk_kinesis::types::{
    ChildShard, HashKeyRange, ShardIteratorType, StreamMode, StreamStatus,
};
use aws_smithy_mocks::mock;
use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};
use memstate_kinesis::{KinesisStream, MAX_RECORD_SIZE};

mod support;

use support::*;

#[tokio::test]
async fn put_record_success_returns_the_sequence_number_as_the_cursor() {
    let put = mock!(Client::put_record)
        .match_requests(|req| {
            req.stream_name() == Some(STREAM)
                && req.partition_key() == Some("m")
                && req.data().map(|d| d.as_ref()) == Some(b"frame-1".as_slice())
                && req.sequence_number_for_ordering().is_none()
        })
        .then_output(|| {
            PutRecordOutput::builder()
                .shard_id(SHARD)
                .sequence_number(SEQ_1)
                .build()
                .unwrap()
        });
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list, &put]), config())
        .await
        .unwrap();

    let cursors = stream
        .append(vec![Bytes::from_static(b"frame-1")])
        .await
        .unwrap();

    assert_eq!(cursors, vec![Cursor::new(SEQ_1)]);
    assert_eq!(put.num_calls(), 1);
    assert_eq!(stream.shard_id(), SHARD);
}

#[tokio::test]
async fn multi_record_appends_are_refused_before_any_call() {
    let put = mock!(Client::put_record).then_output(|| {
        PutRecordOutput::builder()
            .shard_id(SHARD)
            .sequence_number(SEQ_1)
            .build()
            .unwrap()
    });
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list, &put]), config())
        .await
        .unwrap();

    let err = stream
        .append(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        .await
        .unwrap_err();

    assert!(matches!(err, StreamError::Unsupported(_)), "{err:?}");
    assert_eq!(put.num_calls(), 0, "nothing may be sent");
    let empty = stream.append(Vec::new()).await.unwrap();
    assert!(empty.is_empty(), "{empty:?}");
    assert_eq!(put.num_calls(), 0, "an empty append sends nothing");
}

#[tokio::test]
async fn oversized_record_is_refused_before_any_call() {
    let put = mock!(Client::put_record).then_output(|| {
        PutRecordOutput::builder()
            .shard_id(SHARD)
            .sequence_number(SEQ_1)
            .build()
            .unwrap()
    });
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list, &put]), config())
        .await
        .unwrap();

    let err = stream
        .append(vec![Bytes::from(vec![0u8; MAX_RECORD_SIZE + 1])])
        .await
        .unwrap_err();

    assert!(
        matches!(err, StreamError::RecordTooLarge { size, limit } if size == MAX_RECORD_SIZE + 1 && limit == MAX_RECORD_SIZE),
        "{err:?}"
    );
    assert_eq!(
        put.num_calls(),
        0,
        "nothing may be sent, not even the small record"
    );
    assert_eq!(stream.capabilities().max_record_size, 1024 * 1024 - 1);
    assert!(!stream.capabilities().exact_head);
}

#[tokio::test]
async fn put_record_internal_failure_is_ambiguous() {
    let put = mock!(Client::put_record)
        .sequence()
        .http_status(
            500,
            error_body("InternalFailureException", "Internal service failure."),
        )
        .build();
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list, &put]), config())
        .await
        .unwrap();

    let err = stream
        .append(vec![Bytes::from_static(b"x")])
        .await
        .unwrap_err();

    assert!(matches!(err, StreamError::Ambiguous { .. }), "{err:?}");
}

#[tokio::test]
async fn put_record_landing_in_another_shard_reports_resharding() {
    let put = mock!(Client::put_record).then_output(|| {
        PutRecordOutput::builder()
            .shard_id("shardId-000000000001")
            .sequence_number(SEQ_1)
            .build()
            .unwrap()
    });
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list, &put]), config())
        .await
        .unwrap();

    let err = stream
        .append(vec![Bytes::from_static(b"x")])
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("resharded")),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_stream_is_not_found() {
    let describe = mock!(Client::describe_stream_summary)
        .sequence()
        .http_status(
            400,
            error_body(
                "ResourceNotFoundException",
                "Stream memstate-stubbed under account 000000000000 not found.",
            ),
        )
        .build();

    let err = KinesisStream::with_client(client(&[&describe]), config())
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::NotFound { name, reason } if name == STREAM && reason.contains("not found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_stream_is_created_with_one_provisioned_shard_and_awaited() {
    let describe = mock!(Client::describe_stream_summary)
        .sequence()
        .http_status(400, error_body("ResourceNotFoundException", "not found"))
        .output(|| summary(StreamStatus::Creating, StreamMode::Provisioned, 0))
        .output(|| summary(StreamStatus::Active, StreamMode::Provisioned, 1))
        .build();
    let create = mock!(Client::create_stream)
        .match_requests(|req| {
            req.stream_name() == Some(STREAM)
                && req.shard_count() == Some(1)
                && req.stream_mode_details().map(|m| m.stream_mode())
                    == Some(&StreamMode::Provisioned)
        })
        .then_output(|| CreateStreamOutput::builder().build());
    let list = one_open_shard();

    let stream = KinesisStream::with_client(
        client(&[&describe, &create, &list]),
        config().with_create_if_missing(true),
    )
    .await
    .unwrap();

    assert_eq!(create.num_calls(), 1);
    assert_eq!(describe.num_calls(), 3);
    assert_eq!(stream.stream_name(), STREAM);
}

#[tokio::test]
async fn on_demand_stream_is_refused() {
    let describe = mock!(Client::describe_stream_summary)
        .then_output(|| summary(StreamStatus::Active, StreamMode::OnDemand, 4));

    let err = KinesisStream::with_client(client(&[&describe]), config())
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("on-demand")),
        "{err:?}"
    );
}

#[tokio::test]
async fn stream_with_two_shards_is_refused_as_resharded() {
    let describe = active_stream();
    let list = mock!(Client::list_shards).then_output(|| {
        ListShardsOutput::builder()
            .shards(shard(SHARD, None, Some(SEQ_3)))
            .shards(shard("shardId-000000000001", Some(SHARD), None))
            .build()
    });

    let err = KinesisStream::with_client(client(&[&describe, &list]), config())
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("exactly one shard")),
        "{err:?}"
    );
}

#[tokio::test]
async fn child_shard_whose_parent_expired_is_refused() {
    let describe = active_stream();
    let list = mock!(Client::list_shards).then_output(|| {
        ListShardsOutput::builder()
            .shards(shard("shardId-000000000002", Some(SHARD), None))
            .build()
    });

    let err = KinesisStream::with_client(client(&[&describe, &list]), config())
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("child of shard")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_reads_back_off_then_deliver_every_record_in_order() {
    let (describe, list) = (active_stream(), one_open_shard());
    let get_iterator = mock!(Client::get_shard_iterator)
        .match_requests(|req| req.shard_iterator_type() == Some(&ShardIteratorType::TrimHorizon))
        .then_output(|| iterator("it-1"));
    let get_records = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-1"))
        .sequence()
        .http_status(
            400,
            error_body(
                "ProvisionedThroughputExceededException",
                "Rate exceeded for shard",
            ),
        )
        .times(2)
        .output(|| records(&[(SEQ_1, "a"), (SEQ_2, "b")], Some("it-2"), 0))
        .build();
    let stream = KinesisStream::with_client(
        client(&[&describe, &list, &get_iterator, &get_records]),
        config(),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();

    let mut sub = stream.subscribe(None).await.unwrap();
    let first = next_payload(&mut sub).await;
    let second = next_payload(&mut sub).await;

    assert_eq!(first, (SEQ_1.to_owned(), "a".to_owned()));
    assert_eq!(second, (SEQ_2.to_owned(), "b".to_owned()));
    assert_eq!(
        get_records.num_calls(),
        3,
        "two throttled calls, then one that succeeds"
    );
    assert_eq!(get_iterator.num_calls(), 1, "throttling keeps the iterator");
    // Backoff after throttling: at least 100 ms, then at least 200 ms (jittered halves of 200 and 400).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_is_reacquired_after_the_last_record_without_gap_or_duplicate() {
    let (describe, list) = (active_stream(), one_open_shard());
    let from_start = mock!(Client::get_shard_iterator)
        .match_requests(|req| req.shard_iterator_type() == Some(&ShardIteratorType::TrimHorizon))
        .then_output(|| iterator("it-1"));
    let after_second = mock!(Client::get_shard_iterator)
        .match_requests(|req| {
            req.shard_iterator_type() == Some(&ShardIteratorType::AfterSequenceNumber)
                && req.starting_sequence_number() == Some(SEQ_2)
        })
        .then_output(|| iterator("it-3"));
    let first_batch = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-1"))
        .then_output(|| records(&[(SEQ_1, "a"), (SEQ_2, "b")], Some("it-2"), 0));
    let expired = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-2"))
        .sequence()
        .http_status(
            400,
            error_body(
                "ExpiredIteratorException",
                "Iterator expired. The iterator was created at time X",
            ),
        )
        .build();
    // The fresh iterator's batch repeats SEQ_2, as a careless resume would: it must be dropped.
    let after_expiry = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-3"))
        .then_output(|| records(&[(SEQ_2, "b"), (SEQ_3, "c")], Some("it-4"), 0));
    let stream = KinesisStream::with_client(
        client(&[
            &describe,
            &list,
            &from_start,
            &after_second,
            &first_batch,
            &expired,
            &after_expiry,
        ]),
        config(),
    )
    .await
    .unwrap();

    let mut sub = stream.subscribe(None).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_payload(&mut sub).await);
    }

    assert_eq!(
        got,
        vec![
            (SEQ_1.to_owned(), "a".to_owned()),
            (SEQ_2.to_owned(), "b".to_owned()),
            (SEQ_3.to_owned(), "c".to_owned()),
        ]
    );
    assert_eq!(expired.num_calls(), 1);
    assert_eq!(
        after_second.num_calls(),
        1,
        "re-acquired AFTER_SEQUENCE_NUMBER the last record seen"
    );
}

#[tokio::test(start_paused = true)]
async fn closed_shard_delivers_its_records_then_reports_resharding() {
    let (describe, list) = (active_stream(), one_open_shard());
    let get_iterator = mock!(Client::get_shard_iterator).then_output(|| iterator("it-1"));
    let last_batch = mock!(Client::get_records).then_output(|| {
        GetRecordsOutput::builder()
            .records(record(SEQ_1, "a"))
            .millis_behind_latest(0)
            .child_shards(
                ChildShard::builder()
                    .shard_id("shardId-000000000001")
                    .parent_shards(SHARD)
                    .hash_key_range(
                        HashKeyRange::builder()
                            .starting_hash_key("0")
                            .ending_hash_key("1")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    });
    let stream = KinesisStream::with_client(
        client(&[&describe, &list, &get_iterator, &last_batch]),
        config(),
    )
    .await
    .unwrap();

    let mut sub = stream.subscribe(None).await.unwrap();
    let first = next_payload(&mut sub).await;
    let end = sub.next().await.unwrap_err();

    assert_eq!(first, (SEQ_1.to_owned(), "a".to_owned()));
    assert!(
        matches!(&end, StreamError::Misconfigured { reason, .. } if reason.contains("closed")),
        "{end:?}"
    );
    assert_eq!(last_batch.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn subscribe_after_cursor_skips_the_cursor_record() {
    let (describe, list) = (active_stream(), one_open_shard());
    let at_cursor = mock!(Client::get_shard_iterator)
        .match_requests(|req| {
            req.shard_iterator_type() == Some(&ShardIteratorType::AtSequenceNumber)
                && req.starting_sequence_number() == Some(SEQ_1)
        })
        .then_output(|| iterator("it-1"));
    let batch = mock!(Client::get_records)
        .then_output(|| records(&[(SEQ_1, "a"), (SEQ_2, "b"), (SEQ_3, "c")], Some("it-2"), 0));
    let stream =
        KinesisStream::with_client(client(&[&describe, &list, &at_cursor, &batch]), config())
            .await
            .unwrap();

    let mut sub = stream.subscribe(Some(Cursor::new(SEQ_1))).await.unwrap();
    let first = next_payload(&mut sub).await;
    let second = next_payload(&mut sub).await;

    assert_eq!(first, (SEQ_2.to_owned(), "b".to_owned()));
    assert_eq!(second, (SEQ_3.to_owned(), "c".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn subscribe_after_an_expired_cursor_reports_truncated_history() {
    let (describe, list) = (active_stream(), one_open_shard());
    let at_cursor = mock!(Client::get_shard_iterator).then_output(|| iterator("it-1"));
    // Retention dropped SEQ_1: Kinesis starts at the oldest record it still has.
    let batch =
        mock!(Client::get_records).then_output(|| records(&[(SEQ_3, "c")], Some("it-2"), 0));
    let stream =
        KinesisStream::with_client(client(&[&describe, &list, &at_cursor, &batch]), config())
            .await
            .unwrap();

    let mut sub = stream.subscribe(Some(Cursor::new(SEQ_1))).await.unwrap();
    let err = sub.next().await.unwrap_err();

    assert!(
        matches!(&err, StreamError::HistoryTruncated { name, reason } if name == STREAM && reason.contains(SEQ_1)),
        "{err:?}"
    );
}

#[tokio::test]
async fn subscribe_with_a_malformed_cursor_is_invalid_cursor() {
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list]), config())
        .await
        .unwrap();

    let err = stream
        .subscribe(Some(Cursor::new("12ab")))
        .await
        .unwrap_err();

    assert!(matches!(err, StreamError::InvalidCursor { .. }), "{err:?}");
    assert!(matches!(
        stream.compare_cursors(&Cursor::new(SEQ_1), &Cursor::new("x")),
        Err(StreamError::InvalidCursor { .. })
    ));
}

#[tokio::test]
async fn head_is_unsupported_and_declared_inexact() {
    let (describe, list) = (active_stream(), one_open_shard());
    let stream = KinesisStream::with_client(client(&[&describe, &list]), config())
        .await
        .unwrap();

    assert!(matches!(
        stream.head().await,
        Err(StreamError::Unsupported(_))
    ));
    assert!(!stream.capabilities().exact_head);
}

#[tokio::test(start_paused = true)]
async fn deleted_stream_under_a_subscription_is_not_found() {
    let (describe, list) = (active_stream(), one_open_shard());
    let get_iterator = mock!(Client::get_shard_iterator).then_output(|| iterator("it-1"));
    let gone = mock!(Client::get_records)
        .sequence()
        .http_status(
            400,
            error_body("ResourceNotFoundException", "Stream not found"),
        )
        .build();
    let stream =
        KinesisStream::with_client(client(&[&describe, &list, &get_iterator, &gone]), config())
            .await
            .unwrap();

    let mut sub = stream.subscribe(None).await.unwrap();
    let err = sub.next().await.unwrap_err();

    assert!(matches!(err, StreamError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn cursor_refused_by_kinesis_is_invalid_cursor_at_subscribe() {
    let (describe, list) = (active_stream(), one_open_shard());
    let refused = mock!(Client::get_shard_iterator)
        .sequence()
        .http_status(
            400,
            error_body(
                "InvalidArgumentException",
                "StartingSequenceNumber 7 used in GetShardIterator on shard shardId-000000000000 \
                 in stream memstate-stubbed under account 000000000000 is invalid.",
            ),
        )
        .build();
    let stream = KinesisStream::with_client(client(&[&describe, &list, &refused]), config())
        .await
        .unwrap();

    let err = stream.subscribe(Some(Cursor::new("7"))).await.unwrap_err();

    assert!(
        matches!(&err, StreamError::InvalidCursor { cursor, .. } if cursor == "7"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_iterator_request_after_expiry_backs_off_and_resumes() {
    let (describe, list) = (active_stream(), one_open_shard());
    let from_start = mock!(Client::get_shard_iterator)
        .match_requests(|req| req.shard_iterator_type() == Some(&ShardIteratorType::TrimHorizon))
        .then_output(|| iterator("it-1"));
    let after_first = mock!(Client::get_shard_iterator)
        .match_requests(|req| {
            req.shard_iterator_type() == Some(&ShardIteratorType::AfterSequenceNumber)
                && req.starting_sequence_number() == Some(SEQ_1)
        })
        .sequence()
        .http_status(
            400,
            error_body(
                "ProvisionedThroughputExceededException",
                "Rate exceeded for shard",
            ),
        )
        .output(|| iterator("it-3"))
        .build();
    let first_batch = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-1"))
        .then_output(|| records(&[(SEQ_1, "a")], Some("it-2"), 0));
    let expired = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-2"))
        .sequence()
        .http_status(
            400,
            error_body("ExpiredIteratorException", "Iterator expired."),
        )
        .build();
    let after_expiry = mock!(Client::get_records)
        .match_requests(|req| req.shard_iterator() == Some("it-3"))
        .then_output(|| records(&[(SEQ_2, "b")], Some("it-4"), 0));
    let stream = KinesisStream::with_client(
        client(&[
            &describe,
            &list,
            &from_start,
            &after_first,
            &first_batch,
            &expired,
            &after_expiry,
        ]),
        config(),
    )
    .await
    .unwrap();

    let mut sub = stream.subscribe(None).await.unwrap();
    let first = next_payload(&mut sub).await;
    let second = next_payload(&mut sub).await;

    assert_eq!(first, (SEQ_1.to_owned(), "a".to_owned()));
    assert_eq!(second, (SEQ_2.to_owned(), "b".to_owned()));
    assert_eq!(
        after_first.num_calls(),
        2,
        "one throttled request, then one that succeeds"
    );
}

#[tokio::test]
async fn cursor_whose_record_is_gone_is_truncated_history_at_subscribe() {
    let (describe, list) = (active_stream(), one_open_shard());
    // kinesis-mock's answer for a sequence number it has no record for.
    let missing = mock!(Client::get_shard_iterator)
        .sequence()
        .http_status(
            400,
            error_body(
                "ResourceNotFoundException",
                "Unable to find record with provided SequenceNumber",
            ),
        )
        .build();
    let stream = KinesisStream::with_client(client(&[&describe, &list, &missing]), config())
        .await
        .unwrap();

    let err = stream
        .subscribe(Some(Cursor::new(SEQ_1)))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::HistoryTruncated { reason, .. } if reason.contains(SEQ_1)),
        "{err:?}"
    );
}
