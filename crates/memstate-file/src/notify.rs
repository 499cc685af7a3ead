//! In-process wake-ups: every handle on one journal directory in this
//! process shares one channel, bumped after each durable append, so
//! subscribers of any handle wake at once instead of waiting for their poll.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Bumped after every published watermark of one journal.
pub(crate) type Notifier = watch::Sender<u64>;

static NOTIFIERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Notifier>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The notifier shared by every handle on `dir` (a canonical path) in this process.
pub(crate) fn notifier_for(dir: &Path) -> Arc<Notifier> {
    let mut map = NOTIFIERS.lock();
    if let Some(existing) = map.get(dir).and_then(Weak::upgrade) {
        return existing;
    }
    map.retain(|_, weak| weak.strong_count() > 0);
    let (tx, _) = watch::channel(0u64);
    let notifier = Arc::new(tx);
    map.insert(dir.to_path_buf(), Arc::downgrade(&notifier));
    notifier
}

/// Wakes every subscriber of the journal.
pub(crate) fn bump(notifier: &Notifier) {
    notifier.send_modify(|n| *n = n.wrapping_add(1));
}
