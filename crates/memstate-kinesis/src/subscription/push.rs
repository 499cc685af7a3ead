//! One `SubscribeToShard` session: the event stream Kinesis pushes records
//! on for up to five minutes, after which the subscription must be renewed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ShardIteratorType, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use memstate_core::StreamError;
use memstate_core::cursor::compare_digits;
use tokio::time::Instant;

use super::{KinesisSubscription, Position};
use crate::consumer::{Consumer, Lease};
use crate::error::{BACKEND, KinesisStreamError};

/// How long a session may stay silent before it is taken for dead and
/// renewed. Kinesis sends an event at least every few seconds, with or
/// without records.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// How long a subscription reads by polling after fan-out was unavailable
/// (the consumer held by another subscription of this process, or Kinesis
/// still serving an earlier subscription of it) before it tries again; it
/// doubles up to [`FALLBACK_MAX`].
const FALLBACK_FIRST: Duration = Duration::from_secs(5);
const FALLBACK_MAX: Duration = Duration::from_secs(60);

/// How many sessions in a row may fail on the connection before the
/// failure is reported.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// A subscription's fan-out state.
#[derive(Debug)]
pub(super) struct PushState {
    consumer: Arc<Consumer>,
    lease: Option<Lease>,
    session: Option<Session>,
    /// The continuation sequence number of the last event: where a renewed
    /// session starts (after it), once records have been taken.
    continuation: Option<String>,
    /// Reading by polling until then.
    poll_until: Option<Instant>,
    fallback: Duration,
    failures: u32,
}

impl PushState {
    pub(super) fn new(consumer: Arc<Consumer>) -> Self {
        Self {
            consumer,
            lease: None,
            session: None,
            continuation: None,
            poll_until: None,
            fallback: FALLBACK_FIRST,
            failures: 0,
        }
    }

    /// Whether the subscription reads by polling for now.
    pub(super) fn polling(&self) -> bool {
        self.session.is_none() && self.poll_until.is_some()
    }

    /// Reads by polling for a while; fan-out is tried again after.
    fn fall_back(&mut self, stream: &str, why: &str) {
        tracing::debug!(stream, consumer = %self.consumer.name, pause = ?self.fallback, why, "enhanced fan-out unavailable; polling meanwhile");
        self.poll_until = Some(Instant::now() + self.fallback);
        self.fallback = (self.fallback * 2).min(FALLBACK_MAX);
    }
}

impl KinesisSubscription {
    /// Whether the next step reads from a fan-out session.
    pub(super) fn push_now(&self) -> bool {
        self.push
            .as_ref()
            .is_some_and(|p| p.poll_until.is_none_or(|until| Instant::now() >= until))
    }

    /// Opens a session when there is none, then (unless `open_only`) takes
    /// the next event's records into the buffer. The session is taken out
    /// while it is read, so a cancelled call only costs a renewal.
    pub(super) async fn push_step(&mut self, open_only: bool) -> Result<(), StreamError> {
        let stream = self.config.stream_name.clone();
        let Some(push) = self.push.as_mut() else {
            return Ok(());
        };
        push.poll_until = None;
        if push.session.is_none() {
            if push.lease.is_none() {
                push.lease = push.consumer.try_lease();
            }
            if push.lease.is_none() {
                push.fall_back(
                    &stream,
                    "another subscription of this stream reads through the consumer",
                );
                return Ok(());
            }
            if !self.open_session().await? {
                return Ok(());
            }
        }
        if open_only {
            return Ok(());
        }
        let Some(push) = self.push.as_mut() else {
            return Ok(());
        };
        let consumer = Arc::clone(&push.consumer);
        let Some(mut session) = push.session.take() else {
            return Ok(());
        };
        let pushed = session.next().await;
        let session = Some(session);
        match pushed {
            Ok(Pushed::Event(event)) => {
                let count = event.records.len();
                self.take_records(event.records)?;
                self.shared.count_pushed(count);
                if count > 0 {
                    // A polling fallback must start from the new position.
                    self.iterator = None;
                }
                let resharded = event.child_shards.is_some_and(|c| !c.is_empty());
                if resharded {
                    // The shard was split or merged; its last records are delivered first.
                    self.shard_closed = true;
                }
                if let Some(push) = self.push.as_mut() {
                    push.failures = 0;
                    push.continuation = Some(event.continuation_sequence_number);
                    push.session = if resharded { None } else { session };
                }
            }
            Ok(Pushed::Ended) => {
                tracing::debug!(stream, consumer = %consumer.name, "SubscribeToShard session ended; renewing from the continuation");
                self.shared.count_renewal();
            }
            Ok(Pushed::Silent) => {
                tracing::warn!(stream, consumer = %consumer.name, "SubscribeToShard session silent for {SILENCE_LIMIT:?}; renewing");
            }
            Err(err) => match err.code() {
                Some("ResourceInUseException") => {
                    return Err(taken_over(&stream, &consumer.name, err));
                }
                Some("ResourceNotFoundException") if self.shared.is_closed() => {}
                Some("ResourceNotFoundException") => {
                    return Err(consumer_gone(&stream, &consumer.name, err));
                }
                _ => {
                    let Some(push) = self.push.as_mut() else {
                        return Ok(());
                    };
                    push.failures += 1;
                    if push.failures > MAX_CONSECUTIVE_FAILURES {
                        return Err(err.into_read_error(&stream));
                    }
                    tracing::debug!(stream, error = %err, "SubscribeToShard session failed; renewing");
                }
            },
        }
        Ok(())
    }

    /// Calls `SubscribeToShard` from the subscription's position (after the
    /// continuation sequence number once records have been taken). `false`
    /// when fan-out is unavailable for now and the subscription polls.
    async fn open_session(&mut self) -> Result<bool, StreamError> {
        let Some(push) = self.push.as_ref() else {
            return Ok(false);
        };
        let consumer = Arc::clone(&push.consumer);
        let origin = match (&self.position, push.continuation.as_deref()) {
            (Position::TrimHorizon, _) => Origin::TrimHorizon,
            (Position::VerifyAt(sequence), _) => Origin::At(sequence),
            (Position::After(last), Some(c)) if compare_digits(c, last).is_gt() => Origin::After(c),
            (Position::After(last), _) => Origin::After(last),
        };
        let opened = Session::open(
            &self.client,
            &consumer.arn,
            &self.shard_id,
            origin,
            self.config.request_timeout,
        )
        .await;
        let err = match opened {
            Ok(session) => {
                self.shared.count_session();
                self.throttled_since = None;
                if let Some(push) = self.push.as_mut() {
                    push.session = Some(session);
                    push.fallback = FALLBACK_FIRST;
                }
                return Ok(true);
            }
            Err(err) => err,
        };
        let stream = self.config.stream_name.clone();
        match err.code() {
            // Within five seconds of an earlier subscription of this consumer (kinesis-mock:
            // until that one's five minutes are up), or the consumer is not ACTIVE.
            Some("ResourceInUseException") => {
                if let Some(push) = self.push.as_mut() {
                    push.fall_back(&stream, &err.to_string());
                }
                self.iterator = None;
                Ok(false)
            }
            _ if matches!(err, KinesisStreamError::Throttled { .. }) => {
                // One SubscribeToShard per second per consumer and shard.
                let err = self.throttle_budget_spent(err)?;
                let pause = self.pacer.after_throttle();
                tracing::debug!(stream, ?pause, error = %err, "SubscribeToShard throttled; backing off");
                tokio::time::sleep(pause).await;
                Ok(false)
            }
            // Closed meanwhile: `next` ends the subscription.
            _ if self.shared.is_closed() => Ok(false),
            // kinesis-mock names the SequenceNumber it has no record for: see iterator_error.
            Some("ResourceNotFoundException") if !err.to_string().contains("SequenceNumber") => {
                Err(consumer_gone(&stream, &consumer.name, err))
            }
            _ => Err(self.iterator_error(err)),
        }
    }
}

/// Where a session starts.
pub(super) enum Origin<'a> {
    TrimHorizon,
    At(&'a str),
    After(&'a str),
}

/// An open subscription of one consumer to one shard.
pub(super) struct Session {
    events: EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session")
    }
}

/// What a session yielded.
pub(super) enum Pushed {
    /// An event: records (possibly none) and the continuation.
    Event(SubscribeToShardEvent),
    /// Kinesis ended the subscription (its five minutes are up): renew it
    /// from the continuation sequence number.
    Ended,
    /// Nothing came for [`SILENCE_LIMIT`]: the connection is taken for dead.
    Silent,
}

impl Session {
    /// Calls `SubscribeToShard` for `consumer_arn` on `shard_id`.
    pub(super) async fn open(
        client: &Client,
        consumer_arn: &str,
        shard_id: &str,
        from: Origin<'_>,
        timeout: Duration,
    ) -> Result<Self, KinesisStreamError> {
        let (kind, sequence) = match from {
            Origin::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Origin::At(s) => (ShardIteratorType::AtSequenceNumber, Some(s)),
            Origin::After(s) => (ShardIteratorType::AfterSequenceNumber, Some(s)),
        };
        let position = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(sequence.map(str::to_owned))
            .build()
            .map_err(|e| KinesisStreamError::NotSent {
                operation: "SubscribeToShard",
                message: e.to_string(),
                source: Box::new(e),
            })?;
        let call = client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(position)
            .send();
        // The SDK waits for the first message after the response headers;
        // bound the whole opening.
        let output = match tokio::time::timeout(timeout, call).await {
            Ok(result) => {
                result.map_err(|e| KinesisStreamError::from_sdk("SubscribeToShard", timeout, e))?
            }
            Err(_) => {
                return Err(KinesisStreamError::TimedOut {
                    operation: "SubscribeToShard",
                    after: timeout,
                    source: "no answer to SubscribeToShard".into(),
                });
            }
        };
        Ok(Self {
            events: output.event_stream,
        })
    }

    /// The next thing the session yields.
    pub(super) async fn next(&mut self) -> Result<Pushed, KinesisStreamError> {
        loop {
            let received = match tokio::time::timeout(SILENCE_LIMIT, self.events.recv()).await {
                Err(_) => return Ok(Pushed::Silent),
                Ok(received) => received,
            };
            match received {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                    return Ok(Pushed::Event(event));
                }
                Ok(Some(other)) => {
                    tracing::debug!(?other, "ignoring an unknown SubscribeToShard event");
                }
                Ok(None) => return Ok(Pushed::Ended),
                Err(e) => return Err(event_stream_error(e)),
            }
        }
    }
}

/// Classifies an error event. The SDK leaves the error code of an
/// exception event unset, so the modeled variant names it here.
fn event_stream_error<R>(err: SdkError<SubscribeToShardEventStreamError, R>) -> KinesisStreamError
where
    R: fmt::Debug + Send + Sync + 'static,
{
    let code = match err.as_service_error() {
        Some(SubscribeToShardEventStreamError::ResourceInUseException(_)) => {
            "ResourceInUseException"
        }
        Some(SubscribeToShardEventStreamError::ResourceNotFoundException(_)) => {
            "ResourceNotFoundException"
        }
        _ => return KinesisStreamError::from_sdk("SubscribeToShard", SILENCE_LIMIT, err),
    };
    KinesisStreamError::Refused {
        operation: "SubscribeToShard",
        code: code.to_owned(),
        message: err.message().unwrap_or_default().to_owned(),
        source: Box::new(err),
    }
}

/// The error for a consumer another subscriber took over.
fn taken_over(stream: &str, consumer: &str, err: KinesisStreamError) -> StreamError {
    crate::error::misconfigured(
        stream,
        format!(
            "another subscriber took over the enhanced fan-out consumer {consumer:?} ({err}): Kinesis \
             serves one subscription per consumer and shard, so every node needs its own consumer name"
        ),
    )
}

/// The error for a consumer that disappeared under a subscription.
fn consumer_gone(stream: &str, consumer: &str, err: KinesisStreamError) -> StreamError {
    StreamError::backend(
        BACKEND,
        format!(
            "reading stream {stream:?} through enhanced fan-out consumer {consumer:?}: the consumer or \
             the stream no longer exists (deregistered by another process?)"
        ),
        err,
    )
}
