//! The journal's writer lock, fair across processes and handles.
//!
//! Mutual exclusion is an exclusive `flock` on `journal.lock`, held by an
//! open file description (so two handles of one process exclude each other
//! as two processes do; per-process `fcntl` locks would not).
//!
//! A bare `flock` is not fair: when it is released the kernel wakes every
//! waiter and lets them race, and the process that just released it, with
//! its next batch already queued, usually wins again. So waiters queue:
//!
//! - An appender that finds the queue empty and the lock free takes it at
//!   once (the common case of one writer: no extra files touched).
//! - Otherwise it takes a ticket: a file `journal.queue/<n>` numbered after
//!   the highest ticket present, created already holding an exclusive `flock`
//!   on it (created under a temporary name, locked, then hard-linked into
//!   place, so no one ever sees an unlocked ticket).
//! - It waits, with a blocking shared `flock`, on the ticket just before its
//!   own, until that one is gone; then it takes `journal.lock` (blocking).
//! - Leaving, it releases `journal.lock`, removes its ticket, and only then
//!   unlocks the ticket. So a ticket still in place when its `flock` becomes
//!   free belongs to a process that died: the successor removes it and goes
//!   on. Nothing is ever left waiting on a dead process.
//!
//! An appender that finds tickets queued takes one too, so a releasing
//! writer always lines up behind the waiters: no appender waits behind more
//! than one turn of each other appender. The blocking waits run on a
//! dedicated thread per lock; the appender waits for it at most
//! `lock_timeout`, and a turn that arrives after the appender gave up is
//! handed straight back.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::FileStreamError;
use crate::format::LOCK_FILE;

/// The directory of tickets, beside `journal.lock`.
pub(crate) const QUEUE_DIR: &str = "journal.queue";

/// Distinguishes the temporary names of tickets created by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The journal's writer lock. See the module documentation.
#[derive(Debug)]
pub(crate) struct WriterLock {
    files: Arc<LockFiles>,
    /// The thread that waits in the queue, started on first need.
    waiter: Mutex<Option<mpsc::Sender<Arc<Attempt>>>>,
}

#[derive(Debug)]
struct LockFiles {
    main: File,
    main_path: PathBuf,
    queue: PathBuf,
}

/// One queued wait for the lock.
#[derive(Debug)]
struct Attempt {
    state: Mutex<AttemptState>,
    done: Condvar,
}

#[derive(Debug)]
enum AttemptState {
    Waiting,
    /// The appender stopped waiting: a turn that arrives now is released.
    Abandoned,
    Done(Result<LockGuard, FileStreamError>),
}

impl WriterLock {
    /// Opens (creating them if needed) the lock file and the ticket
    /// directory of the journal in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, FileStreamError> {
        let main_path = dir.join(LOCK_FILE);
        let main = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&main_path)
            .map_err(|e| FileStreamError::io("opening the lock file", &main_path, e))?;
        let queue = dir.join(QUEUE_DIR);
        fs::create_dir_all(&queue)
            .map_err(|e| FileStreamError::io("creating the lock queue", &queue, e))?;
        Ok(Self {
            files: Arc::new(LockFiles {
                main,
                main_path,
                queue,
            }),
            waiter: Mutex::new(None),
        })
    }

    /// Takes the exclusive lock, in turn, waiting at most `timeout`.
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<LockGuard, FileStreamError> {
        if self.files.queue_is_empty()? {
            match self.files.main.try_lock() {
                Ok(()) => {
                    return Ok(LockGuard {
                        files: Arc::clone(&self.files),
                        ticket: None,
                    });
                }
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => {
                    return Err(FileStreamError::io("locking", &self.files.main_path, e));
                }
            }
        }
        let attempt = Arc::new(Attempt {
            state: Mutex::new(AttemptState::Waiting),
            done: Condvar::new(),
        });
        self.waiter()?
            .send(Arc::clone(&attempt))
            .map_err(|_| FileStreamError::Task("the journal lock thread has stopped".to_owned()))?;
        let deadline = Instant::now() + timeout;
        let mut state = attempt.state.lock();
        while matches!(*state, AttemptState::Waiting) {
            if attempt.done.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        match std::mem::replace(&mut *state, AttemptState::Abandoned) {
            AttemptState::Done(result) => result,
            AttemptState::Waiting => Err(FileStreamError::LockTimeout {
                path: self.files.main_path.clone(),
                after: timeout,
            }),
            AttemptState::Abandoned => Err(FileStreamError::Task(
                "a journal lock attempt was answered twice".to_owned(),
            )),
        }
    }

    /// The queue thread's sender, starting the thread on first use.
    fn waiter(&self) -> Result<mpsc::Sender<Arc<Attempt>>, FileStreamError> {
        let mut slot = self.waiter.lock();
        if let Some(tx) = slot.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Arc<Attempt>>();
        let files = Arc::clone(&self.files);
        std::thread::Builder::new()
            .name("memstate-file-lock".to_owned())
            .spawn(move || wait_in_turn(&files, &rx))
            .map_err(|e| {
                FileStreamError::Task(format!("cannot start the journal lock thread: {e}"))
            })?;
        *slot = Some(tx.clone());
        Ok(tx)
    }
}

/// The queue thread: takes each attempt's turn (blocking) and hands it over,
/// or straight back when the appender stopped waiting.
fn wait_in_turn(files: &Arc<LockFiles>, rx: &mpsc::Receiver<Arc<Attempt>>) {
    while let Ok(attempt) = rx.recv() {
        if matches!(*attempt.state.lock(), AttemptState::Abandoned) {
            continue;
        }
        let result = files.take_turn(files);
        let mut state = attempt.state.lock();
        if matches!(*state, AttemptState::Waiting) {
            *state = AttemptState::Done(result);
            attempt.done.notify_all();
        }
        // Abandoned: dropping `result` here releases a turn that came too late.
    }
}

impl LockFiles {
    fn queue_is_empty(&self) -> Result<bool, FileStreamError> {
        Ok(self.tickets()?.is_empty())
    }

    /// The numbers of the tickets present.
    fn tickets(&self) -> Result<Vec<u64>, FileStreamError> {
        let entries = fs::read_dir(&self.queue)
            .map_err(|e| FileStreamError::io("listing the lock queue", &self.queue, e))?;
        let mut numbers = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| FileStreamError::io("listing the lock queue", &self.queue, e))?;
            if let Some(n) = entry.file_name().to_str().and_then(parse_ticket) {
                numbers.push(n);
            }
        }
        Ok(numbers)
    }

    /// The ticket just before `number`, if any.
    fn predecessor(&self, number: u64) -> Result<Option<u64>, FileStreamError> {
        Ok(self.tickets()?.into_iter().filter(|n| *n < number).max())
    }

    fn ticket_path(&self, number: u64) -> PathBuf {
        self.queue.join(format!("{number:020}"))
    }

    /// Queues, waits for the tickets before this one to leave, then takes the lock.
    fn take_turn(&self, files: &Arc<LockFiles>) -> Result<LockGuard, FileStreamError> {
        let ticket = self.enqueue()?;
        while let Some(before) = self.predecessor(ticket.number)? {
            self.wait_for_ticket(&self.ticket_path(before))?;
        }
        self.main
            .lock()
            .map_err(|e| FileStreamError::io("locking", &self.main_path, e))?;
        Ok(LockGuard {
            files: Arc::clone(files),
            ticket: Some(ticket),
        })
    }

    /// A new ticket after every one present, created locked.
    fn enqueue(&self) -> Result<Ticket, FileStreamError> {
        let temp = self.queue.join(format!(
            ".new-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io_err =
            |what: &'static str, path: &Path, e: io::Error| FileStreamError::io(what, path, e);
        // A leftover of a dead process that had this process id.
        if let Err(e) = fs::remove_file(&temp)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err("removing", &temp, e));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_err("creating a lock ticket", &temp, e))?;
        let linked = file
            .lock()
            .map_err(|e| io_err("locking a lock ticket", &temp, e))
            .and_then(|()| {
                let mut number = self.tickets()?.into_iter().max().map_or(1, |n| n + 1);
                loop {
                    let path = self.ticket_path(number);
                    match fs::hard_link(&temp, &path) {
                        Ok(()) => return Ok((number, path)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => number += 1,
                        Err(e) => return Err(io_err("placing a lock ticket", &path, e)),
                    }
                }
            });
        let removed = fs::remove_file(&temp);
        let (number, path) = linked?;
        let ticket = Ticket {
            number,
            path,
            _locked: file,
        };
        removed.map_err(|e| io_err("removing", &temp, e))?;
        Ok(ticket)
    }

    /// Blocks until the ticket at `path` is gone (its holder left, or died:
    /// then its ticket is removed here).
    fn wait_for_ticket(&self, path: &Path) -> Result<(), FileStreamError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FileStreamError::io("opening a lock ticket", path, e)),
        };
        file.lock_shared()
            .map_err(|e| FileStreamError::io("waiting on a lock ticket", path, e))?;
        // Holders remove their ticket before unlocking it: one still in
        // place belongs to a process that died.
        match fs::remove_file(path) {
            Ok(()) => {
                tracing::warn!(ticket = %path.display(), "removed the journal lock ticket of a process that died while waiting");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FileStreamError::io("removing a dead lock ticket", path, e)),
        }
    }
}

fn parse_ticket(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// A place in the queue: the ticket file, locked while it is in place.
#[derive(Debug)]
struct Ticket {
    number: u64,
    path: PathBuf,
    /// Holds the exclusive `flock`; closing it (after the removal) unlocks.
    _locked: File,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(ticket = %self.path.display(), error = %e, "failed to remove a journal lock ticket; the next appender will wait until this handle closes");
        }
        // `_locked` closes after this, releasing the ticket's flock.
    }
}

/// Proof that the writer lock is held; releases it (and leaves the queue) on drop.
#[derive(Debug)]
pub(crate) struct LockGuard {
    files: Arc<LockFiles>,
    ticket: Option<Ticket>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.files.main.unlock() {
            // Closing the file would release it too; the handle lives on, so
            // say so loudly.
            tracing::error!(path = %self.files.main_path.display(), error = %e, "failed to release the journal writer lock");
        }
        // The successor wakes when the ticket goes.
        self.ticket.take();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn the_ticket_of_a_dead_process_is_removed_and_the_lock_taken() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::open(dir.path()).unwrap();
        // What a process that died while queued leaves: a ticket nobody locks.
        let stale = dir.path().join(QUEUE_DIR).join(format!("{:020}", 7));
        File::create(&stale).unwrap();
        let guard = lock.acquire(Duration::from_secs(60)).unwrap();
        assert!(!stale.exists(), "the dead ticket was removed");
        assert!(guard.ticket.is_some(), "the appender queued behind it");
        drop(guard);
        let left = fs::read_dir(dir.path().join(QUEUE_DIR)).unwrap().count();
        assert_eq!(left, 0, "leaving removes the ticket");
    }

    #[test]
    fn a_lone_appender_takes_the_free_lock_without_a_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::open(dir.path()).unwrap();
        let guard = lock.acquire(Duration::from_secs(60)).unwrap();
        assert!(guard.ticket.is_none());
        let other = File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(guard);
        other.try_lock().unwrap();
    }
}
