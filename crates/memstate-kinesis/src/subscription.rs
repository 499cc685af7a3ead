//! [`KinesisSubscription`]: reads the stream's only shard, by a `GetRecords`
//! polling loop or, in enhanced fan-out mode, from `SubscribeToShard`
//! sessions (falling back to polling while the consumer is unavailable).

mod push;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use bytes::Bytes;
use memstate_core::{Cursor, Record, StreamError, Subscription};
use tokio::time::Instant;

use crate::config::KinesisConfig;
use crate::consumer::Consumer;
use crate::error::{BACKEND, KinesisStreamError, misconfigured};
use crate::pacing::Pacer;
use crate::stats::Shared;
use memstate_core::cursor::compare_digits;

#[cfg(test)]
#[path = "fuzz.rs"]
mod fuzz;

/// How many times in a row a fresh iterator may expire before the
/// subscription gives up (a fresh iterator lives five minutes, so more than
/// one in a row means something else is wrong).
const MAX_CONSECUTIVE_EXPIRIES: u32 = 3;

/// Where a new subscription starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the oldest retained record.
    TrimHorizon,
    /// After the record with this sequence number, which must still be
    /// retained.
    VerifyAt(String),
}

/// Where the subscription is, i.e. where a new shard iterator must start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// Nothing read yet, from the oldest retained record (`TRIM_HORIZON`).
    TrimHorizon,
    /// Nothing read yet, after the given cursor. The iterator starts *at* the
    /// cursor (`AT_SEQUENCE_NUMBER`) so that the cursor's own record comes
    /// back first: that proves it is still retained, and so is everything
    /// after it. If a later record comes first, the cursor's record was
    /// trimmed by retention and records after it may have been trimmed too.
    VerifyAt(String),
    /// After the last record taken from Kinesis (`AFTER_SEQUENCE_NUMBER`).
    After(String),
}

/// A subscription to the only shard of a Kinesis stream.
///
/// After an error, calling [`Subscription::next`] again resumes where it
/// left off: the position only moves when records are taken.
pub(crate) struct KinesisSubscription {
    client: Client,
    config: KinesisConfig,
    shard_id: String,
    /// The first sequence number the shard could hold; older cursors never
    /// belonged to it.
    shard_start: Option<String>,
    position: Position,
    iterator: Option<String>,
    buffer: VecDeque<Record>,
    pacer: Pacer,
    next_call: Option<Instant>,
    shard_closed: bool,
    consecutive_expiries: u32,
    /// The stream's retention period as read at connect, for error messages.
    retention: Duration,
    /// When the current run of throttled calls began.
    throttled_since: Option<Instant>,
    /// Closing and counters, shared with the stream.
    shared: Arc<Shared>,
    /// In enhanced fan-out mode: the consumer and its session.
    push: Option<push::PushState>,
}

impl fmt::Debug for KinesisSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisSubscription")
            .field("stream_name", &self.config.stream_name)
            .field("shard_id", &self.shard_id)
            .field("position", &self.position)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl KinesisSubscription {
    pub(crate) fn new(
        client: Client,
        config: KinesisConfig,
        shard: &Shard,
        start: Start,
        retention: Duration,
        shared: Arc<Shared>,
        consumer: Option<Arc<Consumer>>,
    ) -> Self {
        let pacer = Pacer::new(config.min_poll_interval, config.max_poll_interval);
        Self {
            client,
            shard_id: shard.shard_id().to_owned(),
            shard_start: shard
                .sequence_number_range()
                .map(|range| range.starting_sequence_number().to_owned()),
            position: match start {
                Start::TrimHorizon => Position::TrimHorizon,
                Start::VerifyAt(sequence) => Position::VerifyAt(sequence),
            },
            config,
            iterator: None,
            buffer: VecDeque::new(),
            pacer,
            next_call: None,
            shard_closed: false,
            consecutive_expiries: 0,
            retention,
            throttled_since: None,
            shared,
            push: consumer.map(push::PushState::new),
        }
    }

    /// Checks the start position now rather than on the first `next`, so
    /// that a cursor Kinesis refuses is reported by `subscribe`: opens the
    /// first fan-out session, or gets the first shard iterator.
    pub(crate) async fn start(&mut self) -> Result<(), StreamError> {
        if self.push_now() {
            self.push_step(true).await?;
        }
        if self.push.as_ref().is_none_or(push::PushState::polling) {
            self.acquire_iterator().await?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.config.stream_name
    }

    /// Gets a shard iterator for the current position into `self.iterator`;
    /// when Kinesis throttles the call, leaves it empty and sets a pause.
    pub(crate) async fn acquire_iterator(&mut self) -> Result<(), StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(self.name())
            .shard_id(&self.shard_id);
        let request = match &self.position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::VerifyAt(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
            Position::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
        };
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) => {
                let err = KinesisStreamError::from_sdk(
                    "GetShardIterator",
                    self.config.request_timeout,
                    e,
                );
                if let KinesisStreamError::Throttled { .. } = err {
                    // GetShardIterator has its own limit of 5 calls per second per shard.
                    let err = self.throttle_budget_spent(err)?;
                    let pause = self.pacer.after_throttle();
                    tracing::debug!(stream = %self.name(), ?pause, error = %err, "GetShardIterator throttled; backing off");
                    self.next_call = Some(Instant::now() + pause);
                    return Ok(());
                }
                return Err(self.iterator_error(err));
            }
        };
        let iterator = output.shard_iterator().map(str::to_owned).ok_or_else(|| {
            // Kinesis answers without an iterator only for a closed shard read past its end.
            self.shard_closed_error()
        })?;
        self.iterator = Some(iterator);
        self.throttled_since = None;
        Ok(())
    }

    /// Starts or continues a run of throttled calls; once it has lasted
    /// [`KinesisConfig::throttle_budget`], the throttling is the error.
    fn throttle_budget_spent(
        &mut self,
        err: KinesisStreamError,
    ) -> Result<KinesisStreamError, StreamError> {
        let since = *self.throttled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.config.throttle_budget {
            self.throttled_since = None;
            return Err(StreamError::backend(
                BACKEND,
                format!(
                    "reading stream {:?}: Kinesis kept throttling for {:?} (throttle_budget); other \
                     consumers of the shard share its 5 GetRecords calls per second",
                    self.name(),
                    self.config.throttle_budget
                ),
                err,
            ));
        }
        Ok(err)
    }

    fn iterator_error(&self, err: KinesisStreamError) -> StreamError {
        let sequence = match &self.position {
            Position::TrimHorizon => return err.into_read_error(self.name()),
            Position::VerifyAt(sequence) | Position::After(sequence) => sequence,
        };
        // Kinesis refuses a sequence number it holds no record for: one older
        // than the trim horizon (expired with the retention period) is
        // `InvalidArgumentException` on AWS, kinesis-mock says
        // `ResourceNotFoundException` naming the SequenceNumber.
        let record_missing = match &err {
            KinesisStreamError::StreamNotFound { message, .. } => {
                message.contains("SequenceNumber")
            }
            KinesisStreamError::Refused { code, .. } => code == "InvalidArgumentException",
            _ => false,
        };
        if !record_missing {
            return err.into_read_error(self.name());
        }
        let before_shard = self
            .shard_start
            .as_deref()
            .is_some_and(|start| compare_digits(sequence, start).is_lt());
        let foreign = match &err {
            KinesisStreamError::Refused { message, .. } => names_another_stream(message),
            _ => false,
        };
        if before_shard || foreign {
            return StreamError::InvalidCursor {
                cursor: sequence.clone(),
                reason: format!(
                    "not a position in shard {} of stream {:?} (a cursor of another stream?): {err}",
                    self.shard_id,
                    self.name()
                ),
            };
        }
        StreamError::HistoryTruncated {
            name: self.name().to_owned(),
            reason: format!(
                "Kinesis has no record with sequence number {sequence} in shard {} any more: records \
                 older than the stream's retention period ({}) are deleted, and this position is \
                 older than the oldest record kept (records after it may be gone too). Start from a \
                 snapshot newer than that, and snapshot every node within the retention period: {err}",
                self.shard_id,
                hours_text(self.retention)
            ),
        }
    }

    /// Takes fetched records into the buffer: checks the cursor's record is
    /// still there, drops anything at or before the position (a re-acquired
    /// iterator must never repeat a record), and moves the position.
    fn take_records(
        &mut self,
        records: Vec<aws_sdk_kinesis::types::Record>,
    ) -> Result<(), StreamError> {
        for record in records {
            let sequence = record.sequence_number;
            match &self.position {
                Position::VerifyAt(cursor) => match compare_digits(&sequence, cursor) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => {
                        self.position = Position::After(sequence);
                        continue;
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(self.truncated_error(cursor, &sequence));
                    }
                },
                Position::After(last) if compare_digits(&sequence, last).is_le() => {
                    continue;
                }
                _ => {}
            }
            self.position = Position::After(sequence.clone());
            self.buffer.push_back(Record {
                cursor: Cursor::new(sequence),
                payload: Bytes::from(record.data.into_inner()),
            });
        }
        Ok(())
    }

    fn truncated_error(&self, cursor: &str, first: &str) -> StreamError {
        StreamError::HistoryTruncated {
            name: self.name().to_owned(),
            reason: format!(
                "the record at cursor {cursor} is no longer in shard {} (the oldest record from there on is \
                 {first}): Kinesis deleted records older than the stream's retention period ({}), and \
                 records after the cursor may be gone too. Restore from a newer snapshot, snapshot every \
                 node within the retention period, or raise the retention period",
                self.shard_id,
                hours_text(self.retention)
            ),
        }
    }

    fn shard_closed_error(&self) -> StreamError {
        misconfigured(
            self.name(),
            format!(
                "shard {} was closed (Kinesis returned no next shard iterator): the stream was resharded, and \
                 Kinesis orders records only within one shard, so it can no longer hold a memstate log",
                self.shard_id
            ),
        )
    }
}

/// Whether Kinesis's refusal of a sequence number says it belongs to another
/// shard or stream ("It encodes shardId-…, while it was used in a call to
/// shardId-…", "… did not come from this stream").
fn names_another_stream(message: &str) -> bool {
    message.contains("encodes") || message.contains("did not come from this stream")
}

/// A retention period for messages: "24 h".
fn hours_text(retention: Duration) -> String {
    format!("{} h", retention.as_secs() / 3600)
}

#[async_trait]
impl Subscription for KinesisSubscription {
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        loop {
            if let Some(record) = self.buffer.pop_front() {
                return Ok(Some(record));
            }
            if self.shard_closed {
                return Err(self.shard_closed_error());
            }
            if self.shared.is_closed() {
                return Ok(None);
            }
            if self.push_now() {
                self.push_step(false).await?;
            } else {
                self.poll_step().await?;
            }
        }
    }
}

impl KinesisSubscription {
    /// One `GetRecords` call (after the pause the pacer set), its records
    /// into the buffer.
    async fn poll_step(&mut self) -> Result<(), StreamError> {
        if let Some(at) = self.next_call {
            tokio::time::sleep_until(at).await;
        }
        // Taken out, so that a cancelled call leaves no half-used iterator:
        // the next call re-acquires one from the position.
        if self.iterator.is_none() {
            self.acquire_iterator().await?;
        }
        let Some(iterator) = self.iterator.take() else {
            return Ok(()); // Throttled: wait as the pacer said.
        };
        let result = self
            .client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.consecutive_expiries = 0;
                self.throttled_since = None;
                let behind = output.millis_behind_latest;
                let count = output.records.len();
                self.iterator = output.next_shard_iterator;
                self.take_records(output.records)?;
                self.shared.count_polled(count);
                if self.iterator.is_none() {
                    // The records of a closed shard are still delivered first.
                    self.shard_closed = true;
                }
                self.next_call = Some(Instant::now() + self.pacer.after_records(count, behind));
            }
            Err(err) => {
                match KinesisStreamError::from_sdk("GetRecords", self.config.request_timeout, err) {
                    KinesisStreamError::IteratorExpired { source, .. } => {
                        self.consecutive_expiries += 1;
                        if self.consecutive_expiries > MAX_CONSECUTIVE_EXPIRIES {
                            return Err(StreamError::backend(
                                BACKEND,
                                format!(
                                    "reading stream {:?}: fresh shard iterators kept expiring (is the clock \
                                     right?)",
                                    self.name()
                                ),
                                source,
                            ));
                        }
                        tracing::debug!(stream = %self.name(), position = ?self.position, "shard iterator expired; re-acquiring");
                        self.next_call = None;
                    }
                    err @ KinesisStreamError::Throttled { .. } => {
                        self.iterator = Some(iterator.clone());
                        let err = self.throttle_budget_spent(err)?;
                        let pause = self.pacer.after_throttle();
                        tracing::debug!(stream = %self.name(), ?pause, error = %err, "GetRecords throttled; backing off");
                        self.iterator = Some(iterator);
                        self.next_call = Some(Instant::now() + pause);
                    }
                    err => {
                        self.iterator = Some(iterator);
                        self.next_call = Some(Instant::now() + self.config.min_poll_interval);
                        return Err(err.into_read_error(self.name()));
                    }
                }
            }
        }
        Ok(())
    }
}
