//! Wake-ups: how a subscriber learns that the durable watermark moved.
//!
//! Every handle on one journal directory in this process shares one
//! [`Notifier`]. It is bumped when
//! - a handle of this process publishes a watermark (its writer thread),
//! - the file system reports a change of the watermark file (another process
//!   appended; inotify on Linux, kqueue or FSEvents elsewhere, through the
//!   `notify` crate), when file events are on,
//! - a `head()` call of this process reads a watermark newer than the last
//!   one announced, so a `Linearizable` read never waits for a poll to catch
//!   its own subscription up to the head it just read.
//!
//! A bump happens only when the watermark really changed, so the writer's
//! own file event does not wake subscribers a second time. Subscribers still
//! poll at `poll_interval`: the fallback for file systems without events
//! (network file systems above all) and for a watcher that could not start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::format::{WATERMARK_FILE, Watermark};
use crate::fsio::WatermarkFile;

static NOTIFIERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Notifier>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The wake-up channel of one journal in this process.
#[derive(Debug)]
pub(crate) struct Notifier {
    signal: Arc<Signal>,
    /// The file-event watcher, once started; dropping it stops the events.
    watcher: Mutex<Option<RecommendedWatcher>>,
}

/// What both the handles and the watcher's thread touch.
#[derive(Debug)]
struct Signal {
    dir: PathBuf,
    tx: watch::Sender<u64>,
    /// The last watermark announced to subscribers.
    announced: Mutex<Option<Watermark>>,
    /// Opened on the first file event.
    watermark_file: Mutex<Option<WatermarkFile>>,
}

impl Signal {
    fn bump(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes subscribers if `watermark` differs from the last one announced.
    fn saw(&self, watermark: Watermark) {
        {
            let mut announced = self.announced.lock();
            if *announced == Some(watermark) {
                return;
            }
            *announced = Some(watermark);
        }
        self.bump();
    }

    /// A file event on the watermark: read it and announce it if it moved.
    fn on_file_event(&self) {
        let read = {
            let mut file = self.watermark_file.lock();
            if file.is_none() {
                *file = WatermarkFile::open_read(&self.dir).ok().flatten();
            }
            file.as_ref().map(WatermarkFile::read)
        };
        match read {
            Some(Ok(Some(w))) => self.saw(w),
            // Caught mid-rewrite or unreadable: let subscribers look for themselves.
            _ => self.bump(),
        }
    }
}

impl Notifier {
    /// A receiver that changes at every bump.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.signal.tx.subscribe()
    }

    /// Wakes every subscriber of the journal.
    pub(crate) fn bump(&self) {
        self.signal.bump();
    }

    /// A watermark was published or read: wakes subscribers if it is new.
    pub(crate) fn saw(&self, watermark: Watermark) {
        self.signal.saw(watermark);
    }

    /// Whether file events are being watched.
    pub(crate) fn watches_file_events(&self) -> bool {
        self.watcher.lock().is_some()
    }

    /// Starts watching the watermark file for changes made by other
    /// processes, unless already watching. A watcher that cannot start
    /// (no inotify instances left, a file system without events) is
    /// reported in the log and leaves polling as the only way.
    pub(crate) fn watch_file_events(&self) {
        let mut slot = self.watcher.lock();
        if slot.is_some() {
            return;
        }
        let signal = Arc::downgrade(&self.signal);
        let started = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Some(signal) = signal.upgrade() else {
                return;
            };
            match event {
                Ok(event) if event.kind.is_access() => {}
                Ok(_) => signal.on_file_event(),
                // The watcher lost track (e.g. its queue overflowed): look anyway.
                Err(_) => signal.bump(),
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(
                &self.signal.dir.join(WATERMARK_FILE),
                RecursiveMode::NonRecursive,
            )?;
            Ok(watcher)
        });
        match started {
            Ok(watcher) => *slot = Some(watcher),
            Err(e) => tracing::warn!(
                dir = %self.signal.dir.display(),
                error = %e,
                "cannot watch the journal's watermark for file events; subscribers fall back to polling"
            ),
        }
    }
}

/// The notifier shared by every handle on `dir` (a canonical path) in this process.
pub(crate) fn notifier_for(dir: &Path) -> Arc<Notifier> {
    let mut map = NOTIFIERS.lock();
    if let Some(existing) = map.get(dir).and_then(Weak::upgrade) {
        return existing;
    }
    map.retain(|_, weak| weak.strong_count() > 0);
    let (tx, _) = watch::channel(0u64);
    let notifier = Arc::new(Notifier {
        signal: Arc::new(Signal {
            dir: dir.to_path_buf(),
            tx,
            announced: Mutex::new(None),
            watermark_file: Mutex::new(None),
        }),
        watcher: Mutex::new(None),
    });
    map.insert(dir.to_path_buf(), Arc::downgrade(&notifier));
    notifier
}
