//! The writer's window against streams whose latency the test controls
//! (tokio's paused clock: no test here depends on the machine's speed).

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Mutex, mpsc, watch};

use super::{WriterContext, WriterGauge, writer_loop};
use crate::engine::submit::Submission;
use crate::engine::window::InFlightWindow;
use crate::envelope::{CommandId, FRAME_OVERHEAD};
use crate::stream::{Capabilities, Cursor, Stream, StreamError, Subscription};

/// How the fake stream answers an append.
#[derive(Debug, Clone, Copy)]
enum Latency {
    /// Every append takes this long, however many are in flight (a backend
    /// that pipelines, as Kafka's producer batching frames in flight).
    Pipelined(Duration),
    /// Appends are served one at a time, each taking this long (a backend
    /// that serialises them: latency grows with the appends in flight).
    Serial(Duration),
}

#[derive(Debug)]
struct FakeStream {
    latency: Latency,
    serial: Mutex<()>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    appends: AtomicUsize,
    fail: AtomicBool,
}

impl FakeStream {
    fn new(latency: Latency) -> Arc<Self> {
        Arc::new(Self {
            latency,
            serial: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Stream for FakeStream {
    fn describe(&self) -> String {
        "a fake stream".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(1 << 20)
    }

    async fn append(&self, _records: Vec<Bytes>) -> Result<Vec<Cursor>, StreamError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        match self.latency {
            Latency::Pipelined(d) => tokio::time::sleep(d).await,
            Latency::Serial(d) => {
                let _turn = self.serial.lock().await;
                tokio::time::sleep(d).await;
            }
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StreamError::Ambiguous {
                reason: "the test fails this append".into(),
                source: None,
            });
        }
        Ok(vec![Cursor::new(n.to_string())])
    }

    async fn subscribe(
        &self,
        _after: Option<Cursor>,
    ) -> Result<Box<dyn Subscription>, StreamError> {
        Err(StreamError::Closed)
    }

    async fn head(&self) -> Result<Option<Cursor>, StreamError> {
        Ok(None)
    }

    fn compare_cursors(&self, a: &Cursor, b: &Cursor) -> Result<CmpOrdering, StreamError> {
        Ok(a.as_str().cmp(b.as_str()))
    }
}

const ENVELOPE: &[u8] = b"{}";

/// A writer over `stream` whose queue a feeder keeps full (one envelope per
/// frame), so commands always wait for a slot.
struct Rig {
    gauge: Arc<WriterGauge>,
    failures: Arc<AtomicUsize>,
    shutdown: watch::Sender<bool>,
    feeder: tokio::task::JoinHandle<()>,
}

fn start(stream: &Arc<FakeStream>, window: InFlightWindow) -> Rig {
    let (tx, rx) = mpsc::channel(1024);
    let gauge = Arc::new(WriterGauge::default());
    let failures = Arc::new(AtomicUsize::new(0));
    let shutdown = watch::channel(false).0;
    let counted = Arc::clone(&failures);
    tokio::spawn(writer_loop(
        WriterContext {
            stream: Arc::clone(stream) as Arc<dyn Stream>,
            frame_limit: FRAME_OVERHEAD + ENVELOPE.len(),
            window,
            gauge: Arc::clone(&gauge),
            append_timeout: Duration::from_secs(60),
            shutdown: shutdown.subscribe(),
        },
        rx,
        move |ids: Vec<CommandId>, _| {
            counted.fetch_add(ids.len(), Ordering::SeqCst);
        },
    ));
    let feeder = tokio::spawn(async move {
        loop {
            let s = Submission {
                id: CommandId::random(),
                codec: crate::codec::Codec::Json,
                bytes: ENVELOPE.to_vec(),
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Rig {
        gauge,
        failures,
        shutdown,
        feeder,
    }
}

impl Rig {
    fn stop(self) {
        self.shutdown.send_replace(true);
        self.feeder.abort();
    }
}

async fn until(what: impl Fn() -> bool) {
    while !what() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_window_grows_to_the_cap_on_a_backend_that_pipelines() {
    let stream = FakeStream::new(Latency::Pipelined(Duration::from_millis(5)));
    let rig = start(&stream, InFlightWindow::new(4, 64, true));
    until(|| stream.appends.load(Ordering::SeqCst) >= 3000).await;
    assert_eq!(
        stream.most_in_flight.load(Ordering::SeqCst),
        64,
        "the window reached the cap and never passed it"
    );
    assert_eq!(rig.gauge.limit.load(Ordering::SeqCst), 64);
    rig.stop();
}

#[tokio::test(start_paused = true)]
async fn the_window_stays_small_on_a_backend_that_serialises_appends() {
    let stream = FakeStream::new(Latency::Serial(Duration::from_millis(1)));
    let rig = start(&stream, InFlightWindow::new(4, 64, true));
    until(|| stream.appends.load(Ordering::SeqCst) >= 1000).await;
    stream.most_in_flight.store(0, Ordering::SeqCst);
    until(|| stream.appends.load(Ordering::SeqCst) >= 3000).await;
    let most = stream.most_in_flight.load(Ordering::SeqCst);
    // Work always waits, so the window grows past its minimum; the latency
    // measured at the minimum (4 in flight, 4 ms) doubles with about 8 in
    // flight, and the window turns back there, far below its cap.
    assert!(
        (5..=12).contains(&most),
        "{most} appends in flight on a serial backend"
    );
    let limit = rig.gauge.limit.load(Ordering::SeqCst);
    assert!((4..=12).contains(&limit), "window {limit}");
    rig.stop();
}

#[tokio::test(start_paused = true)]
async fn failures_halve_the_window_down_to_its_minimum() {
    let stream = FakeStream::new(Latency::Pipelined(Duration::from_millis(5)));
    let rig = start(&stream, InFlightWindow::new(4, 64, true));
    until(|| rig.gauge.limit.load(Ordering::SeqCst) == 64).await;
    stream.fail.store(true, Ordering::SeqCst);
    until(|| rig.failures.load(Ordering::SeqCst) >= 100).await;
    assert_eq!(rig.gauge.limit.load(Ordering::SeqCst), 4);
    stream.most_in_flight.store(0, Ordering::SeqCst);
    let failed = rig.failures.load(Ordering::SeqCst);
    until(|| rig.failures.load(Ordering::SeqCst) >= failed + 100).await;
    assert!(
        stream.most_in_flight.load(Ordering::SeqCst) <= 4,
        "no more than the minimum in flight while appends fail"
    );
    rig.stop();
}

#[tokio::test(start_paused = true)]
async fn a_fixed_window_keeps_its_size() {
    let stream = FakeStream::new(Latency::Serial(Duration::from_millis(1)));
    let rig = start(&stream, InFlightWindow::new(4, 32, false));
    until(|| stream.appends.load(Ordering::SeqCst) >= 500).await;
    assert_eq!(stream.most_in_flight.load(Ordering::SeqCst), 32);
    assert_eq!(rig.gauge.limit.load(Ordering::SeqCst), 32);
    rig.stop();
}
