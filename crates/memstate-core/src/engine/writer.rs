//! The writer: group commit of waiting envelopes into frames.
//!
//! Whatever is queued when an append slot frees up goes into one frame, up to
//! the frame limit, so a burst of commands costs one append (one fsync, one
//! Kafka produce, one Kinesis record). Several appends may be in flight, as
//! many as the window allows (`window.rs`: sized to the stream's latency);
//! the stream alone orders them.
//!
//! The appends in flight are driven by the writer task itself (a
//! `FuturesUnordered`), not by a task each: handing a frame to the adapter
//! and learning that a slot is free again cost no hop between tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::submit::Submission;
use super::window::InFlightWindow;
use crate::envelope::{CommandId, FRAME_OVERHEAD, encode_frame_as};
use crate::error::Error;
use crate::stream::Stream;

/// What the writer publishes about its window (read by `Stats`).
#[derive(Debug, Default)]
pub(crate) struct WriterGauge {
    /// Appends allowed in flight now.
    pub(crate) limit: AtomicUsize,
    /// Appends in flight now.
    pub(crate) in_flight: AtomicUsize,
}

pub(crate) struct WriterContext {
    pub(crate) stream: Arc<dyn Stream>,
    pub(crate) frame_limit: usize,
    pub(crate) window: InFlightWindow,
    pub(crate) gauge: Arc<WriterGauge>,
    pub(crate) append_timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// One append that finished: its commands, when it started, how it ended.
struct Done {
    ids: Vec<CommandId>,
    started: Instant,
    error: Option<Error>,
}

/// Appends one frame, bounded by `append_timeout`.
async fn append_frame(
    stream: Arc<dyn Stream>,
    frame: Vec<u8>,
    ids: Vec<CommandId>,
    append_timeout: Duration,
) -> Done {
    let started = Instant::now();
    let result =
        tokio::time::timeout(append_timeout, stream.append(vec![Bytes::from(frame)])).await;
    let error = match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(Error::Stream(e)),
        Err(_) => Some(Error::Timeout {
            waiting_for: format!("an append to {}", stream.describe()),
            after: append_timeout,
        }),
    };
    Done {
        ids,
        started,
        error,
    }
}

/// The next submission: one carried over from a full frame, else the queue's.
async fn next_submission(
    carried: &mut Option<Submission>,
    queue: &mut mpsc::Receiver<Submission>,
) -> Option<Submission> {
    match carried.take() {
        Some(s) => Some(s),
        None => queue.recv().await,
    }
}

/// Packs `first` and whatever else is queued into one frame, up to the frame
/// limit; the submission that does not fit is carried to the next frame.
fn pack(
    first: Submission,
    queue: &mut mpsc::Receiver<Submission>,
    carried: &mut Option<Submission>,
    frame_limit: usize,
) -> (Vec<u8>, Vec<CommandId>) {
    let mut size = FRAME_OVERHEAD + first.bytes.len();
    // A frame holds one codec (a Genesis record is JSON in every stream).
    let codec = first.codec;
    let mut batch = vec![first];
    while let Ok(next) = queue.try_recv() {
        if next.codec != codec || size + next.bytes.len() + 1 > frame_limit {
            *carried = Some(next);
            break;
        }
        size += next.bytes.len() + 1;
        batch.push(next);
    }
    let frame = encode_frame_as(codec, batch.iter().map(|s| s.bytes.as_slice()));
    (frame, batch.into_iter().map(|s| s.id).collect())
}

fn report_failure<F: Fn(Vec<CommandId>, Error)>(on_failure: &F, ids: Vec<CommandId>, error: Error) {
    tracing::warn!(%error, commands = ids.len(), "append failed; its commands may or may not have been written");
    on_failure(ids, error);
}

pub(crate) async fn writer_loop<F>(
    mut ctx: WriterContext,
    mut queue: mpsc::Receiver<Submission>,
    on_failure: F,
) where
    F: Fn(Vec<CommandId>, Error) + Send + Sync + 'static,
{
    let mut in_flight = FuturesUnordered::new();
    let mut carried: Option<Submission> = None;
    loop {
        let limit = ctx.window.limit();
        ctx.gauge.limit.store(limit, Ordering::Relaxed);
        ctx.gauge
            .in_flight
            .store(in_flight.len(), Ordering::Relaxed);
        // While every slot is busy, submissions queue up and the next frame
        // carries them all.
        let slot_free = in_flight.len() < limit;
        tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => break,
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let Done { ids, started, error } = done;
                match error {
                    None => {
                        // The window was full and work is waiting for this slot.
                        let waited = in_flight.len() + 1 >= limit
                            && (carried.is_some() || !queue.is_empty());
                        ctx.window.completed(started.elapsed(), waited);
                    }
                    Some(error) => {
                        ctx.window.failed();
                        report_failure(&on_failure, ids, error);
                    }
                }
            }
            next = next_submission(&mut carried, &mut queue), if slot_free => {
                let Some(first) = next else { break };
                let (frame, ids) = pack(first, &mut queue, &mut carried, ctx.frame_limit);
                in_flight.push(append_frame(
                    Arc::clone(&ctx.stream),
                    frame,
                    ids,
                    ctx.append_timeout,
                ));
            }
        }
    }
    ctx.gauge.in_flight.store(0, Ordering::Relaxed);
    queue.close();
    if let Some(s) = carried {
        on_failure(vec![s.id], Error::ShutDown);
    }
    while let Ok(s) = queue.try_recv() {
        on_failure(vec![s.id], Error::ShutDown);
    }
    // Appends already handed to the stream run to their end, as they would
    // have on their own tasks: a record that lands is still applied by every
    // node that reads it.
    if !in_flight.is_empty() {
        tokio::spawn(async move {
            while let Some(done) = in_flight.next().await {
                if let Some(error) = done.error {
                    report_failure(&on_failure, done.ids, error);
                }
            }
        });
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
