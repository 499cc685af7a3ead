//! Enhanced fan-out against a stubbed SDK client (aws-smithy-mocks): the
//! paths the emulator cannot produce — the five-minute renewal, a consumer
//! taken over, resharding, the per-stream consumer limit — and registration
//! and deregistration. `SubscribeToShard` answers are real event-stream
//! bodies, decoded by the SDK as Kinesis's would be; a body that ends is
//! Kinesis ending the subscription after its five minutes, so renewal is
//! tested without waiting.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::deregister_stream_consumer::DeregisterStreamConsumerOutput;
use aws_sdk_kinesis::operation::describe_stream_consumer::DescribeStreamConsumerOutput;
use aws_sdk_kinesis::operation::list_stream_consumers::ListStreamConsumersOutput;
use aws_sdk_kinesis::operation::register_stream_consumer::RegisterStreamConsumerOutput;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Consumer, ConsumerDescription, ConsumerStatus, ShardIteratorType};
use aws_smithy_mocks::{Rule, mock};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use memstate_core::{Stream, StreamError, Subscription};
use memstate_kinesis::{KinesisStream, MAX_CONSUMERS_PER_STREAM};

mod support;

use support::*;

const CONSUMER: &str = "node-a";
const CONSUMER_ARN: &str =
    "arn:aws:kinesis:us-east-1:000000000000:stream/memstate-stubbed/consumer/node-a:1700000000";

fn fan_out() -> memstate_kinesis::KinesisConfig {
    config().with_enhanced_fan_out(CONSUMER)
}

// ---- event-stream bodies ------------------------------------------------

fn frame(headers: Vec<Header>, payload: String) -> Vec<u8> {
    let mut buf = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(
        &Message::new_from_parts(headers, payload.into_bytes()),
        &mut buf,
    )
    .unwrap();
    buf
}

fn header(name: &'static str, value: &'static str) -> Header {
    Header::new(name, HeaderValue::String(value.into()))
}

fn initial_response() -> Vec<u8> {
    frame(
        vec![
            header(":message-type", "event"),
            header(":event-type", "initial-response"),
            header(":content-type", "application/json"),
        ],
        "{}".into(),
    )
}

/// A `SubscribeToShardEvent` with `records` (sequence number, data).
fn event(records: &[(&str, &str)], continuation: &str, child_shard: Option<&str>) -> Vec<u8> {
    let records: Vec<String> = records
        .iter()
        .map(|(seq, data)| {
            format!(
                r#"{{"SequenceNumber":"{seq}","ApproximateArrivalTimestamp":1700000000.0,"Data":"{}","PartitionKey":"m"}}"#,
                aws_smithy_types::base64::encode(data)
            )
        })
        .collect();
    let children = child_shard
        .map(|id| {
            format!(
                r#","ChildShards":[{{"ShardId":"{id}","ParentShards":["{SHARD}"],"HashKeyRange":{{"StartingHashKey":"0","EndingHashKey":"1"}}}}]"#
            )
        })
        .unwrap_or_default();
    frame(
        vec![
            header(":message-type", "event"),
            header(":event-type", "SubscribeToShardEvent"),
            header(":content-type", "application/json"),
        ],
        format!(
            r#"{{"Records":[{}],"ContinuationSequenceNumber":"{continuation}","MillisBehindLatest":0{children}}}"#,
            records.join(",")
        ),
    )
}

fn exception(code: &'static str, message: &str) -> Vec<u8> {
    frame(
        vec![
            header(":message-type", "exception"),
            header(":exception-type", code),
            header(":content-type", "application/json"),
        ],
        format!(r#"{{"message":"{message}"}}"#),
    )
}

/// A `SubscribeToShard` answer whose event stream carries `frames` and then
/// ends, as Kinesis ends a subscription after five minutes.
fn session(frames: Vec<Vec<u8>>) -> HttpResponse {
    let mut body = initial_response();
    for f in frames {
        body.extend(f);
    }
    HttpResponse::new(StatusCode::try_from(200).unwrap(), SdkBody::from(body))
}

// ---- registration -------------------------------------------------------

fn registered() -> Rule {
    mock!(Client::register_stream_consumer)
        .match_requests(|r| r.consumer_name() == Some(CONSUMER) && r.stream_arn().is_some())
        .then_output(|| {
            RegisterStreamConsumerOutput::builder()
                .consumer(consumer(CONSUMER, ConsumerStatus::Creating))
                .build()
        })
}

fn consumer(name: &str, status: ConsumerStatus) -> Consumer {
    Consumer::builder()
        .consumer_name(name)
        .consumer_arn(if name == CONSUMER {
            CONSUMER_ARN.to_owned()
        } else {
            format!("{CONSUMER_ARN}-{name}")
        })
        .consumer_status(status)
        .consumer_creation_timestamp(DateTime::from_secs(1_700_000_000))
        .build()
        .unwrap()
}

fn description(status: ConsumerStatus) -> DescribeStreamConsumerOutput {
    DescribeStreamConsumerOutput::builder()
        .consumer_description(
            ConsumerDescription::builder()
                .consumer_name(CONSUMER)
                .consumer_arn(CONSUMER_ARN)
                .consumer_status(status)
                .consumer_creation_timestamp(DateTime::from_secs(1_700_000_000))
                .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/memstate-stubbed")
                .build()
                .unwrap(),
        )
        .build()
}

/// CREATING once, then ACTIVE.
fn becomes_active() -> Rule {
    mock!(Client::describe_stream_consumer)
        .sequence()
        .output(|| description(ConsumerStatus::Creating))
        .output(|| description(ConsumerStatus::Active))
        .repeatedly()
        .build()
}

fn subscribe_from(
    kind: ShardIteratorType,
    sequence: Option<&'static str>,
    frames: fn() -> Vec<Vec<u8>>,
) -> Rule {
    mock!(Client::subscribe_to_shard)
        .match_requests(move |r| {
            let position = r.starting_position();
            r.consumer_arn() == Some(CONSUMER_ARN)
                && r.shard_id() == Some(SHARD)
                && position.map(|p| p.r#type()) == Some(&kind)
                && position.and_then(|p| p.sequence_number()) == sequence
        })
        .then_http_response(move || session(frames()))
}

/// A stream in fan-out mode whose consumer registers (CREATING, then
/// ACTIVE), with `rules` for the calls the test is about.
async fn fan_out_stream(rules: &[&Rule]) -> KinesisStream {
    let (describe, list) = (active_stream(), one_open_shard());
    let (register, active) = (registered(), becomes_active());
    let mut all = vec![&describe, &list, &register, &active];
    all.extend_from_slice(rules);
    KinesisStream::with_client(client(&all), fan_out())
        .await
        .unwrap()
}

/// `GetShardIterator` and `GetRecords` answers that yield record one.
fn polling_yields_one() -> (Rule, Rule) {
    (
        mock!(Client::get_shard_iterator).then_output(|| iterator("it-1")),
        mock!(Client::get_records).then_output(|| records(&[(SEQ_1, "one")], Some("it-2"), 0)),
    )
}

fn get_records_unused() -> Rule {
    mock!(Client::get_records).then_output(|| records(&[], Some("it-next"), 0))
}

async fn next(sub: &mut Box<dyn Subscription>) -> Result<Option<(String, String)>, StreamError> {
    let record = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("subscription stalled")?;
    Ok(record.map(|r| {
        (
            r.cursor.to_string(),
            String::from_utf8(r.payload.to_vec()).unwrap(),
        )
    }))
}

// ---- tests --------------------------------------------------------------

#[tokio::test]
async fn connect_registers_the_consumer_and_waits_until_it_is_active() {
    let (describe, list) = (active_stream(), one_open_shard());
    let (register, active) = (registered(), becomes_active());
    let stream =
        KinesisStream::with_client(client(&[&describe, &list, &register, &active]), fan_out())
            .await
            .unwrap();
    assert_eq!(stream.consumer_arn(), Some(CONSUMER_ARN));
    assert_eq!(register.num_calls(), 1);
    assert!(active.num_calls() >= 2, "waited through CREATING to ACTIVE");

    // Polling mode registers nothing.
    let (describe, list, register) = (active_stream(), one_open_shard(), registered());
    let polling = KinesisStream::with_client(client(&[&describe, &list, &register]), config())
        .await
        .unwrap();
    assert_eq!(polling.consumer_arn(), None);
    assert_eq!(register.num_calls(), 0);
}

#[tokio::test]
async fn a_subscription_renews_after_kinesis_ends_it_without_losing_or_repeating_a_record() {
    // First session: two records, an empty event, then Kinesis ends it.
    let first = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        vec![
            event(&[(SEQ_1, "one"), (SEQ_2, "two")], SEQ_2, None),
            event(&[], SEQ_2, None),
        ]
    });
    // The renewal must start after the continuation sequence number. Its
    // first event repeats record two (as an overlapping answer would): the
    // subscription must not yield it twice.
    let renewed = subscribe_from(ShardIteratorType::AfterSequenceNumber, Some(SEQ_2), || {
        vec![event(&[(SEQ_2, "two"), (SEQ_3, "three")], SEQ_3, None)]
    });
    let polled = get_records_unused();
    let stream = fan_out_stream(&[&first, &renewed, &polled]).await;

    let mut sub = stream.subscribe(None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut sub).await.unwrap().expect("open"));
    }

    assert_eq!(
        seen,
        vec![
            (SEQ_1.to_owned(), "one".to_owned()),
            (SEQ_2.to_owned(), "two".to_owned()),
            (SEQ_3.to_owned(), "three".to_owned()),
        ]
    );
    assert_eq!(first.num_calls(), 1);
    assert_eq!(
        renewed.num_calls(),
        1,
        "renewed once, from the continuation"
    );
    assert_eq!(polled.num_calls(), 0, "fan-out mode must not poll");
    let stats = stream.read_stats();
    assert_eq!(stats.push_sessions, 2, "{stats:?}");
    assert_eq!(stats.push_renewals, 1, "{stats:?}");
    assert_eq!(stats.records_polled, 0, "{stats:?}");
}

#[tokio::test]
async fn a_subscription_after_a_cursor_starts_at_it_and_verifies_it_is_still_there() {
    let at = subscribe_from(ShardIteratorType::AtSequenceNumber, Some(SEQ_1), || {
        vec![event(&[(SEQ_1, "one"), (SEQ_2, "two")], SEQ_2, None)]
    });
    let stream = fan_out_stream(&[&at]).await;
    let mut sub = stream
        .subscribe(Some(memstate_core::Cursor::new(SEQ_1)))
        .await
        .unwrap();
    assert_eq!(
        next(&mut sub).await.unwrap(),
        Some((SEQ_2.to_owned(), "two".to_owned()))
    );
}

#[tokio::test]
async fn resharding_seen_by_a_subscription_is_a_clear_error_after_the_last_records() {
    let closing = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        vec![event(
            &[(SEQ_1, "one")],
            SEQ_1,
            Some("shardId-000000000001"),
        )]
    });
    let stream = fan_out_stream(&[&closing]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    assert_eq!(
        next(&mut sub).await.unwrap(),
        Some((SEQ_1.to_owned(), "one".to_owned()))
    );
    let err = next(&mut sub).await.unwrap_err();
    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. } if reason.contains("resharded")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_consumer_taken_over_by_another_subscriber_is_a_clear_error() {
    let taken = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        vec![
            event(&[(SEQ_1, "one")], SEQ_1, None),
            exception("ResourceInUseException", "another subscription took over"),
        ]
    });
    let stream = fan_out_stream(&[&taken]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    assert!(next(&mut sub).await.unwrap().is_some());
    let err = next(&mut sub).await.unwrap_err();
    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. }
            if reason.contains(CONSUMER) && reason.contains("its own consumer name")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_second_subscription_of_one_stream_polls_while_the_first_holds_the_consumer() {
    let pushed = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        vec![event(&[(SEQ_1, "one")], SEQ_1, None)]
    });
    let (iterator_rule, polled) = polling_yields_one();
    let stream = fan_out_stream(&[&pushed, &iterator_rule, &polled]).await;
    let mut first = stream.subscribe(None).await.unwrap();
    let mut second = stream.subscribe(None).await.unwrap();
    assert_eq!(next(&mut first).await.unwrap().unwrap().1, "one");
    assert_eq!(next(&mut second).await.unwrap().unwrap().1, "one");
    assert_eq!(pushed.num_calls(), 1, "one SubscribeToShard: the first's");
    assert!(polled.num_calls() >= 1, "the second polled");
}

#[tokio::test]
async fn close_deregisters_the_consumer_once_and_ends_subscriptions() {
    let pushed = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        vec![event(&[], "0", None)]
    });
    let deregister = mock!(Client::deregister_stream_consumer)
        .match_requests(|r| r.consumer_arn() == Some(CONSUMER_ARN))
        .then_output(|| DeregisterStreamConsumerOutput::builder().build());
    let stream = fan_out_stream(&[&pushed, &deregister]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    stream.clone().close().await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(deregister.num_calls(), 1);
    assert_eq!(next(&mut sub).await.unwrap(), None);
    assert!(matches!(
        stream.subscribe(None).await,
        Err(StreamError::Closed)
    ));
}

#[tokio::test]
async fn a_consumer_of_the_same_name_left_registered_is_used_again() {
    let in_use = mock!(Client::register_stream_consumer)
        .sequence()
        .http_status(
            400,
            error_body("ResourceInUseException", "Consumer node-a already exists"),
        )
        .build();
    let found =
        mock!(Client::describe_stream_consumer).then_output(|| description(ConsumerStatus::Active));
    let (describe, list) = (active_stream(), one_open_shard());
    let stream =
        KinesisStream::with_client(client(&[&describe, &list, &in_use, &found]), fan_out())
            .await
            .unwrap();
    assert_eq!(stream.consumer_arn(), Some(CONSUMER_ARN));
    assert_eq!(in_use.num_calls(), 1);
}

fn consumers(count: usize) -> ListStreamConsumersOutput {
    ListStreamConsumersOutput::builder()
        .set_consumers(Some(
            (0..count)
                .map(|i| consumer(&format!("other-{i}"), ConsumerStatus::Active))
                .collect(),
        ))
        .build()
}

#[tokio::test]
async fn the_per_stream_consumer_limit_is_a_clear_error() {
    let limited = mock!(Client::register_stream_consumer).then_http_response(|| {
        HttpResponse::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from(
                error_body("LimitExceededException", "consumer limit reached")
                    .unwrap()
                    .into_bytes(),
            ),
        )
    });
    let listed =
        mock!(Client::list_stream_consumers).then_output(|| consumers(MAX_CONSUMERS_PER_STREAM));
    let (describe, list) = (active_stream(), one_open_shard());
    let err = KinesisStream::with_client(client(&[&describe, &list, &limited, &listed]), fan_out())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StreamError::Misconfigured { reason, .. }
            if reason.contains("at most 20") && reason.contains("other-19") && reason.contains(CONSUMER)),
        "{err:?}"
    );
    assert_eq!(limited.num_calls(), 1, "no retry against a full stream");
}

#[tokio::test]
async fn a_throttled_registration_below_the_limit_is_retried() {
    let throttled_once = mock!(Client::register_stream_consumer)
        .sequence()
        .http_status(400, error_body("LimitExceededException", "rate exceeded"))
        .output(|| {
            RegisterStreamConsumerOutput::builder()
                .consumer(consumer(CONSUMER, ConsumerStatus::Creating))
                .build()
        })
        .build();
    let listed = mock!(Client::list_stream_consumers).then_output(|| consumers(3));
    let (describe, list, active) = (active_stream(), one_open_shard(), becomes_active());
    let stream = KinesisStream::with_client(
        client(&[&describe, &list, &throttled_once, &listed, &active]),
        fan_out(),
    )
    .await
    .unwrap();
    assert_eq!(stream.consumer_arn(), Some(CONSUMER_ARN));
    assert_eq!(throttled_once.num_calls(), 2);
}

#[tokio::test]
async fn a_subscription_kinesis_still_serves_elsewhere_reads_by_polling_meanwhile() {
    // Within five seconds of an earlier subscription of the consumer (the
    // emulator: until that one's five minutes are up) Kinesis refuses.
    let in_use = mock!(Client::subscribe_to_shard)
        .sequence()
        .http_status(
            400,
            error_body("ResourceInUseException", "consumer is already subscribed"),
        )
        .build();
    let (iterator_rule, polled) = polling_yields_one();
    let stream = fan_out_stream(&[&in_use, &iterator_rule, &polled]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    assert_eq!(
        next(&mut sub).await.unwrap(),
        Some((SEQ_1.to_owned(), "one".to_owned()))
    );
    assert_eq!(in_use.num_calls(), 1, "fan-out is tried again only later");
    assert_eq!(stream.read_stats().records_polled, 1);
    assert_eq!(stream.read_stats().push_sessions, 0);
}

#[tokio::test]
async fn a_broken_session_is_renewed_after_the_last_record_taken() {
    // The connection breaks in the middle of an event frame.
    let broken = subscribe_from(ShardIteratorType::TrimHorizon, None, || {
        let mut cut = event(&[(SEQ_2, "two")], SEQ_2, None);
        cut.truncate(cut.len() / 2);
        vec![event(&[(SEQ_1, "one")], SEQ_1, None), cut]
    });
    let renewed = subscribe_from(ShardIteratorType::AfterSequenceNumber, Some(SEQ_1), || {
        vec![event(&[(SEQ_2, "two")], SEQ_2, None)]
    });
    let stream = fan_out_stream(&[&broken, &renewed]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().unwrap().1, "one");
    assert_eq!(next(&mut sub).await.unwrap().unwrap().1, "two");
    assert_eq!((broken.num_calls(), renewed.num_calls()), (1, 1));
}

/// A body that sends `prefix`, then nothing, without ending: a connection
/// that went silent.
struct SilentAfter(Option<bytes::Bytes>);

impl http_body::Body for SilentAfter {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.take() {
            Some(bytes) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_is_renewed_after_the_silence_limit() {
    let silent = mock!(Client::subscribe_to_shard)
        .match_requests(|r| {
            r.starting_position().map(|p| p.r#type()) == Some(&ShardIteratorType::TrimHorizon)
        })
        .then_http_response(|| {
            let mut body = initial_response();
            body.extend(event(&[(SEQ_1, "one")], SEQ_1, None));
            HttpResponse::new(
                StatusCode::try_from(200).unwrap(),
                SdkBody::from_body_1_x(SilentAfter(Some(body.into()))),
            )
        });
    let renewed = subscribe_from(ShardIteratorType::AfterSequenceNumber, Some(SEQ_1), || {
        vec![event(&[(SEQ_2, "two")], SEQ_2, None)]
    });
    let stream = fan_out_stream(&[&silent, &renewed]).await;
    let mut sub = stream.subscribe(None).await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().unwrap().1, "one");
    // Paused time runs ahead while everything waits: the 30 s silence passes
    // (the helper's own 30 s limit would race it, hence a longer one here).
    let two = tokio::time::timeout(Duration::from_secs(300), sub.next())
        .await
        .expect("renewed within 300 s")
        .unwrap()
        .unwrap();
    assert_eq!(two.payload, bytes::Bytes::from_static(b"two"));
    assert_eq!((silent.num_calls(), renewed.num_calls()), (1, 1));
}
