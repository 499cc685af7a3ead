//! The cost of events: the same transfers on one engine over a file journal,
//! with no event subscriber and with four subscribers that each read every
//! event (a transfer emits one), alternating passes as the tiers do.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memstate_core::{Engine, EventError, EventsFrom, Stream};
use memstate_file::FileStream;
use serde::Serialize;

use super::Plan;
use super::load::Measurement;
use super::query::write_load;
use super::tiers::start_bank;
use crate::bank::Bank;

/// Subscribers of the measured pass with subscribers.
pub(crate) const SUBSCRIBERS: usize = 4;

/// The figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventCost {
    /// Writer clients.
    pub writers: usize,
    /// Writes with no subscriber.
    pub without_subscribers: Measurement,
    /// Writes while [`SUBSCRIBERS`] subscriptions read every event.
    pub with_subscribers: Measurement,
    pub subscribers: usize,
    /// Events the subscribers received, together, during that pass.
    pub events_received: u64,
    /// Gaps the subscribers were told of (a subscriber overtaken by the window).
    pub gaps: u64,
    /// `with_subscribers.per_sec / without_subscribers.per_sec`.
    pub ratio: f64,
}

/// Runs both passes on a journal under `work`, each `plan.rounds` times, best kept.
///
/// # Errors
///
/// Engine failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<EventCost, String> {
    let writers = plan.query_writers();
    plan.progress(&format!(
        "events: {writers} writers, 0 and {SUBSCRIBERS} event subscribers, file journal"
    ));
    let dir = work.join("events");
    let stream: Arc<dyn Stream> = Arc::new(
        FileStream::open(&dir)
            .await
            .map_err(|e| format!("opening {}: {e}", dir.display()))?,
    );
    let engine = start_bank(stream, "bench-events", plan).await?;
    let result = passes(plan, &engine, writers).await;
    engine.shutdown().await;
    result
}

async fn passes(plan: &Plan, engine: &Engine<Bank>, writers: usize) -> Result<EventCost, String> {
    let mut without: Option<Measurement> = None;
    let mut with: Option<(Measurement, u64, u64)> = None;
    for _ in 0..plan.rounds {
        let alone = write_load(plan, engine, writers).await?;
        if without.as_ref().is_none_or(|b| alone.per_sec > b.per_sec) {
            without = Some(alone);
        }
        let watched = with_subscribers(plan, engine, writers).await?;
        if with
            .as_ref()
            .is_none_or(|b| watched.0.per_sec > b.0.per_sec)
        {
            with = Some(watched);
        }
    }
    let (Some(without), Some((with, received, gaps))) = (without, with) else {
        return Err("no round ran".into());
    };
    plan.progress(&format!(
        "events: {:.0} commands/s without subscribers, {:.0} with {SUBSCRIBERS} ({received} events received, {gaps} gaps)",
        without.per_sec, with.per_sec
    ));
    Ok(EventCost {
        writers,
        ratio: with.per_sec / without.per_sec.max(f64::EPSILON),
        without_subscribers: without,
        with_subscribers: with,
        subscribers: SUBSCRIBERS,
        events_received: received,
        gaps,
    })
}

/// One pass of writes while subscribers read; returns it with the events
/// received and gaps reported.
async fn with_subscribers(
    plan: &Plan,
    engine: &Engine<Bank>,
    writers: usize,
) -> Result<(Measurement, u64, u64), String> {
    let received = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut events = engine.events(EventsFrom::Now);
        let (received, gaps, stop) = (Arc::clone(&received), Arc::clone(&gaps), Arc::clone(&stop));
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match events.next().await {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(EventError::Gap { .. }) => {
                        gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let measured = write_load(plan, engine, writers).await;
    stop.store(true, Ordering::Relaxed);
    // A reader waiting for an event that will not come is simply stopped.
    for reader in readers {
        reader.abort();
        let _ = reader.await;
    }
    Ok((
        measured?,
        received.load(Ordering::Relaxed),
        gaps.load(Ordering::Relaxed),
    ))
}
