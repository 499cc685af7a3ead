//! A stream wrapper that holds appends back on command, so that a leader's
//! writes are still in flight when it is deposed and land after the next
//! leader's claim: the late old-epoch record, made to happen on every
//! failover instead of by luck.

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memstate_core::{Capabilities, Cursor, Stream, StreamError, Subscription};
use tokio::sync::watch;

/// Called with the records of each append as it is held; returns whether
/// the append is one [`HoldBack::wait_held`] waits for.
pub type OnHold = Box<dyn Fn(&[Bytes]) -> bool + Send + Sync>;

/// Wraps a stream; between [`HoldBack::hold`] and [`HoldBack::release`]
/// every append waits before it reaches the inner stream.
pub struct HoldBack {
    inner: Arc<dyn Stream>,
    holding: watch::Sender<bool>,
    /// Appends inside the inner stream now.
    in_inner: AtomicUsize,
    /// Appends held, or released and not yet returned from the inner stream.
    held: AtomicUsize,
    /// Held appends `on_hold` counted, since the wrapper was made.
    counted: AtomicUsize,
    on_hold: OnHold,
}

impl std::fmt::Debug for HoldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldBack")
            .field("inner", &self.inner.describe())
            .field("holding", &*self.holding.borrow())
            .field("held", &self.held.load(AtomicOrdering::SeqCst))
            .finish()
    }
}

impl HoldBack {
    pub fn new(inner: Arc<dyn Stream>, on_hold: OnHold) -> Self {
        Self {
            inner,
            holding: watch::channel(false).0,
            in_inner: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            counted: AtomicUsize::new(0),
            on_hold,
        }
    }

    /// Holds every append from now on; returns how many counted appends
    /// were held before (for [`HoldBack::wait_held`]).
    pub fn hold(&self) -> usize {
        let before = self.counted.load(AtomicOrdering::SeqCst);
        self.holding.send_replace(true);
        before
    }

    /// Lets the held appends (and later ones) through.
    pub fn release(&self) {
        self.holding.send_replace(false);
    }

    /// Waits until an append `on_hold` counts is held (after `counted_before`
    /// of them) and, with `quiet`, none is inside the inner stream any more:
    /// the process may then be stopped without holding the stream's writer
    /// lock, and every write it has in flight is held here. Returns the
    /// appends held.
    pub async fn wait_held(&self, counted_before: usize, quiet: bool) -> usize {
        loop {
            let held = self.held.load(AtomicOrdering::SeqCst);
            if self.counted.load(AtomicOrdering::SeqCst) > counted_before
                && (!quiet || self.in_inner.load(AtomicOrdering::SeqCst) == 0)
            {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until every released append has returned from the inner stream
    /// (it is durable there, or failed).
    pub async fn wait_landed(&self) {
        while self.held.load(AtomicOrdering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn inner_append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        let result = self.inner.append(records).await;
        self.in_inner.fetch_sub(1, AtomicOrdering::SeqCst);
        result
    }
}

#[async_trait]
impl Stream for HoldBack {
    fn describe(&self) -> String {
        format!("{} (appends held back on command)", self.inner.describe())
    }

    fn capabilities(&self) -> Capabilities {
        // `append_expecting` is not passed through.
        self.inner.capabilities().with_optimistic_append(false)
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        // Counted as inside before looking at the flag, so that `wait_held`
        // never sees zero while an append is on its way in.
        self.in_inner.fetch_add(1, AtomicOrdering::SeqCst);
        if !*self.holding.borrow() {
            return self.inner_append(records).await;
        }
        self.in_inner.fetch_sub(1, AtomicOrdering::SeqCst);
        self.held.fetch_add(1, AtomicOrdering::SeqCst);
        if (self.on_hold)(&records) {
            self.counted.fetch_add(1, AtomicOrdering::SeqCst);
        }
        let mut holding = self.holding.subscribe();
        let _ = holding.wait_for(|h| !*h).await;
        self.in_inner.fetch_add(1, AtomicOrdering::SeqCst);
        let result = self.inner_append(records).await;
        self.held.fetch_sub(1, AtomicOrdering::SeqCst);
        result
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        self.inner.subscribe(after).await
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        self.inner.head().await
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        self.inner.compare_cursors(a, b)
    }

    fn retention(&self) -> Option<Duration> {
        self.inner.retention()
    }
}
