//! The writer: group commit of waiting envelopes into frames.
//!
//! Whatever is queued when an append slot frees up goes into one frame, up to
//! the frame limit, so a burst of commands costs one append (one fsync, one
//! Kafka produce, one Kinesis record). Several appends may be in flight; the
//! stream alone orders them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, watch};

use super::submit::Submission;
use crate::envelope::{CommandId, FRAME_OVERHEAD, encode_frame};
use crate::error::Error;
use crate::stream::Stream;

pub(crate) struct WriterContext {
    pub(crate) stream: Arc<dyn Stream>,
    pub(crate) frame_limit: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) append_timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
}

pub(crate) async fn writer_loop<F>(
    mut ctx: WriterContext,
    mut queue: mpsc::Receiver<Submission>,
    on_failure: F,
) where
    F: Fn(Vec<CommandId>, Error) + Send + Sync + 'static,
{
    let on_failure = Arc::new(on_failure);
    let slots = Arc::new(Semaphore::new(ctx.max_in_flight));
    let mut carried: Option<Submission> = None;
    loop {
        let first = match carried.take() {
            Some(s) => s,
            None => tokio::select! {
                biased;
                _ = ctx.shutdown.changed() => break,
                next = queue.recv() => match next {
                    Some(s) => s,
                    None => break,
                },
            },
        };
        // Wait for a free slot before packing: while every slot is busy, more
        // submissions queue up and the next frame carries them all.
        let permit = tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => {
                on_failure(vec![first.id], Error::ShutDown);
                break;
            }
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut size = FRAME_OVERHEAD + first.bytes.len();
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            if size + next.bytes.len() + 1 > ctx.frame_limit {
                carried = Some(next);
                break;
            }
            size += next.bytes.len() + 1;
            batch.push(next);
        }
        let frame = encode_frame(batch.iter().map(|s| s.bytes.as_slice()));
        let ids: Vec<CommandId> = batch.into_iter().map(|s| s.id).collect();
        let stream = Arc::clone(&ctx.stream);
        let on_failure = Arc::clone(&on_failure);
        let append_timeout = ctx.append_timeout;
        tokio::spawn(async move {
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
            if let Some(error) = error {
                tracing::warn!(%error, commands = ids.len(), "append failed; its commands may or may not have been written");
                on_failure(ids, error);
            }
            drop(permit);
        });
    }
    queue.close();
    if let Some(s) = carried {
        on_failure(vec![s.id], Error::ShutDown);
    }
    while let Ok(s) = queue.try_recv() {
        on_failure(vec![s.id], Error::ShutDown);
    }
}
