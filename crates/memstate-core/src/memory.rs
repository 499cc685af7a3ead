//! [`MemoryStream`]: the in-process reference implementation of [`Stream`].
//!
//! It keeps records in a vector and is the stream the engine's own tests run
//! on. For tests it can inject faults into subscriptions: a delay before every
//! delivery (a lagging node) and duplicate delivery of every record (a
//! subscriber that replays what it already yielded, as at-least-once
//! consumers do after a reconnect).

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::stream::{Capabilities, Cursor, Record, Stream, StreamError, Subscription};

/// Faults injected into subscriptions opened after they are set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberFaults {
    /// Sleep this long before yielding each record.
    pub delay: Duration,
    /// Yield every record twice.
    pub duplicate_delivery: bool,
}

impl SubscriberFaults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Delay every delivery by `delay`.
    pub fn delayed(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Deliver every record twice.
    pub fn duplicated() -> Self {
        Self {
            duplicate_delivery: true,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct Shared {
    records: Mutex<Vec<Bytes>>,
    len: watch::Sender<usize>,
    faults: Mutex<SubscriberFaults>,
    max_record_size: usize,
    closed: Mutex<bool>,
}

/// An in-memory stream shared by clones of the handle.
///
/// Cursors are decimal record indexes starting at `0`.
#[derive(Clone, Debug)]
pub struct MemoryStream {
    shared: Arc<Shared>,
}

impl Default for MemoryStream {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStream {
    /// The default record-size limit: 4 MiB.
    pub const DEFAULT_MAX_RECORD_SIZE: usize = 4 * 1024 * 1024;

    /// An empty stream with the default record-size limit.
    pub fn new() -> Self {
        Self::with_max_record_size(Self::DEFAULT_MAX_RECORD_SIZE)
    }

    /// An empty stream refusing records over `max_record_size` bytes.
    pub fn with_max_record_size(max_record_size: usize) -> Self {
        let (len, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                records: Mutex::new(Vec::new()),
                len,
                faults: Mutex::new(SubscriberFaults::default()),
                max_record_size,
                closed: Mutex::new(false),
            }),
        }
    }

    /// Faults applied to subscriptions opened from now on.
    pub fn set_subscriber_faults(&self, faults: SubscriberFaults) {
        *self.shared.faults.lock() = faults;
    }

    /// How many records the stream holds.
    pub fn len(&self) -> usize {
        self.shared.records.lock().len()
    }

    /// Whether the stream holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies of all payloads, in order.
    pub fn payloads(&self) -> Vec<Bytes> {
        self.shared.records.lock().clone()
    }

    /// Ends every subscription (they return `Ok(None)`) and refuses appends.
    pub fn close(&self) {
        *self.shared.closed.lock() = true;
        self.shared.len.send_modify(|_| {});
    }

    fn parse(cursor: &Cursor) -> Result<usize, StreamError> {
        let index = crate::cursor::from_cursor(cursor, "memory stream cursors are record indexes")?;
        usize::try_from(index).map_err(|_| StreamError::InvalidCursor {
            cursor: cursor.as_str().to_owned(),
            reason: "memory stream cursors are record indexes: too large".into(),
        })
    }
}

#[async_trait]
impl Stream for MemoryStream {
    fn describe(&self) -> String {
        "memory stream".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.shared.max_record_size)
            .with_optimistic_append(true)
            .with_multi_record_append(true)
    }

    async fn append(&self, records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        self.capabilities().check_append(&records)?;
        if *self.shared.closed.lock() {
            return Err(StreamError::Closed);
        }
        let cursors = {
            let mut log = self.shared.records.lock();
            let first = log.len();
            log.extend(records);
            let cursors = (first..log.len())
                .map(|i| crate::cursor::to_cursor(i as u64))
                .collect();
            self.shared.len.send_replace(log.len());
            cursors
        };
        Ok(cursors)
    }

    async fn append_expecting(
        &self,
        records: Vec<Bytes>,
        expected: Option<Cursor>,
    ) -> Result<Vec<Cursor>, StreamError> {
        self.capabilities().check_sizes(&records)?;
        let expected_len = match &expected {
            None => 0,
            Some(c) => Self::parse(c)? + 1,
        };
        let mut log = self.shared.records.lock();
        if log.len() != expected_len {
            let actual = log
                .len()
                .checked_sub(1)
                .map(|i| crate::cursor::to_cursor(i as u64));
            return Err(StreamError::WrongExpectedPosition { expected, actual });
        }
        let first = log.len();
        log.extend(records);
        let cursors = (first..log.len())
            .map(|i| crate::cursor::to_cursor(i as u64))
            .collect();
        self.shared.len.send_replace(log.len());
        Ok(cursors)
    }

    async fn subscribe(&self, after: Option<Cursor>) -> Result<Box<dyn Subscription>, StreamError> {
        let next = match &after {
            None => 0,
            Some(c) => Self::parse(c)? + 1,
        };
        let faults = self.shared.faults.lock().clone();
        Ok(Box::new(MemorySubscription {
            shared: Arc::clone(&self.shared),
            len: self.shared.len.subscribe(),
            next,
            faults,
            pending_duplicate: None,
        }))
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        let len = self.shared.records.lock().len();
        Ok(len
            .checked_sub(1)
            .map(|i| crate::cursor::to_cursor(i as u64)))
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
        Ok(Self::parse(a)?.cmp(&Self::parse(b)?))
    }
}

#[derive(Debug)]
struct MemorySubscription {
    shared: Arc<Shared>,
    len: watch::Receiver<usize>,
    next: usize,
    faults: SubscriberFaults,
    pending_duplicate: Option<Record>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Option<Record>, StreamError> {
        if let Some(dup) = self.pending_duplicate.take() {
            return Ok(Some(dup));
        }
        loop {
            if *self.shared.closed.lock() {
                return Ok(None);
            }
            let found = {
                let log = self.shared.records.lock();
                log.get(self.next).cloned()
            };
            if let Some(payload) = found {
                if !self.faults.delay.is_zero() {
                    tokio::time::sleep(self.faults.delay).await;
                }
                let record = Record {
                    cursor: crate::cursor::to_cursor(self.next as u64),
                    payload,
                };
                self.next += 1;
                if self.faults.duplicate_delivery {
                    self.pending_duplicate = Some(record.clone());
                }
                return Ok(Some(record));
            }
            if self.len.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribe_after_cursor_sees_only_the_suffix() {
        let s = MemoryStream::new();
        let cursors = s
            .append(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c"),
            ])
            .await
            .unwrap();
        let mut sub = s.subscribe(Some(cursors[0].clone())).await.unwrap();
        assert_eq!(
            sub.next().await.unwrap().unwrap().payload,
            Bytes::from_static(b"b")
        );
        assert_eq!(
            sub.next().await.unwrap().unwrap().payload,
            Bytes::from_static(b"c")
        );
        assert_eq!(s.head().await.unwrap(), Some(cursors[2].clone()));
    }

    #[tokio::test]
    async fn oversized_record_is_refused_and_nothing_is_written() {
        let s = MemoryStream::with_max_record_size(4);
        let err = s
            .append(vec![Bytes::from_static(b"12345")])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StreamError::RecordTooLarge { size: 5, limit: 4 }
        ));
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn optimistic_append_detects_a_moved_stream() {
        let s = MemoryStream::new();
        s.append_expecting(vec![Bytes::from_static(b"a")], None)
            .await
            .unwrap();
        let err = s
            .append_expecting(vec![Bytes::from_static(b"b")], None)
            .await
            .unwrap_err();
        assert!(matches!(err, StreamError::WrongExpectedPosition { .. }));
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn duplicate_delivery_fault_yields_each_record_twice() {
        let s = MemoryStream::new();
        s.set_subscriber_faults(SubscriberFaults::duplicated());
        s.append(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
            .await
            .unwrap();
        let mut sub = s.subscribe(None).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(sub.next().await.unwrap().unwrap().cursor.to_string());
        }
        assert_eq!(got, ["0", "0", "1", "1"]);
    }
}
