//! Waiting for a consistency level before a query reads the model.
//!
//! Every level is a condition on this node's applied state; the costly ones
//! first learn where the stream ends ("check the tail", as in Tango) and then
//! wait until the apply loop has played forward to it. One deadline, the
//! node's read timeout, bounds the whole wait.
//!
//! Every read is cooperative: it spends one unit of tokio's task budget
//! before it checks its level, so a read whose level is already met (a
//! `Local` read, or any level on a node that is caught up) still yields to
//! the runtime once the task's budget is spent. Without that, a task looping
//! over such reads never returns to the scheduler, and on a small runtime the
//! writer, the apply loop and every caller waiting for a write starve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::Node;
use super::apply_loop::Progress;
use super::tail::{TailKnowledge, reached};
use crate::consistency::Consistency;
use crate::envelope::Control;
use crate::error::Error;
use crate::model::Model;

/// What reads wait on besides the applied progress.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// What this node knows of the stream's tail.
    pub(super) tail: Mutex<TailKnowledge>,
    /// The applied index of the latest write acknowledged through any
    /// [`Engine`](super::Engine) handle: their read-your-writes token.
    last_write: AtomicU64,
}

impl Reads {
    /// The engine handles' read-your-writes token.
    pub(super) fn last_write(&self) -> u64 {
        self.last_write.load(AtomicOrdering::Acquire)
    }

    /// Records an acknowledged write through an engine handle.
    pub(super) fn wrote(&self, index: u64) {
        self.last_write.fetch_max(index, AtomicOrdering::AcqRel);
    }
}

impl<M: Model> Node<M> {
    /// Runs `f` over the model once `level` is met, `own_last_write` being
    /// the caller's read-your-writes token.
    pub(super) async fn query<R>(
        &self,
        level: Consistency,
        own_last_write: u64,
        f: impl FnOnce(&M) -> R,
    ) -> Result<R, Error> {
        self.wait_for(level, own_last_write).await?;
        self.check_running()?;
        Ok(f(&self.applied.model.read()))
    }

    /// Returns once `level` holds for this node (`own_last_write` is the
    /// asking handle's last acknowledged write, for `ReadYourWrites`).
    pub(super) async fn wait_for(
        &self,
        level: Consistency,
        own_last_write: u64,
    ) -> Result<(), Error> {
        tokio::task::coop::consume_budget().await;
        self.check_running()?;
        if level == Consistency::Local {
            return Ok(());
        }
        let deadline = Instant::now() + self.info.config.read_timeout;
        match level {
            Consistency::Local => Ok(()),
            Consistency::ReadYourWrites => {
                self.wait_until(
                    |p| p.applied_index >= own_last_write,
                    "this handle's writes",
                    deadline,
                )
                .await
            }
            Consistency::AtLeast(index) => {
                self.wait_until(
                    |p| p.applied_index >= index,
                    &format!("applied index {index}"),
                    deadline,
                )
                .await
            }
            Consistency::Linearizable => self.catch_up_to_tail(deadline).await,
            Consistency::BoundedStaleness(bound) => {
                if self.fresh_within(bound) {
                    return Ok(());
                }
                let caught_up_age = self.reads.tail.lock().caught_up_age();
                match self.catch_up_to_tail(deadline).await {
                    Ok(()) => Ok(()),
                    Err(e @ (Error::Halted(_) | Error::ShutDown)) => Err(e),
                    Err(source) => Err(Error::TooStale {
                        bound,
                        caught_up_age,
                        source: Box::new(source),
                    }),
                }
            }
        }
    }

    /// Whether this node has applied everything the stream held `bound` ago,
    /// by its own clock.
    pub(super) fn fresh_within(&self, bound: Duration) -> bool {
        let applied = self.applied.cursor();
        self.reads
            .tail
            .lock()
            .fresh_within(bound, applied.as_ref(), self.info.stream.as_ref())
    }

    /// Learns the stream's tail (the exact head, or a sync marker appended
    /// and read back), then waits until this node has applied up to it.
    ///
    /// The instant taken *before* asking is recorded as the catch-up time:
    /// whatever the stream held then lies at or before the tail learned.
    pub(super) async fn catch_up_to_tail(&self, deadline: Instant) -> Result<(), Error> {
        let asked_at = Instant::now();
        let stream = &self.info.stream;
        if self.info.exact_head {
            let head = tokio::time::timeout_at(deadline, stream.head())
                .await
                .map_err(|_| Error::Timeout {
                    waiting_for: format!("the head of {}", stream.describe()),
                    after: deadline.saturating_duration_since(asked_at),
                })??;
            if let Some(head) = head {
                self.reads.tail.lock().learned(head.clone(), asked_at);
                let stream = Arc::clone(stream);
                self.wait_until(
                    move |p| reached(p.cursor.as_ref(), &head, stream.as_ref()),
                    "the stream's head",
                    deadline,
                )
                .await?;
            }
        } else {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.round_trip(Control::Sync, remaining).await?;
            // The marker landed after everything the stream held at
            // `asked_at`, and it is applied: so is all of that.
            if let Some(cursor) = self.applied.cursor() {
                self.reads.tail.lock().learned(cursor, asked_at);
            }
        }
        self.reads.tail.lock().caught_up(asked_at);
        Ok(())
    }

    /// Waits until `done` holds for the applied progress, or `deadline`.
    pub(super) async fn wait_until(
        &self,
        done: impl Fn(&Progress) -> bool,
        what: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut rx = self.applied.progress.subscribe();
        let started = Instant::now();
        let wait = async {
            loop {
                self.check_running()?;
                if done(&rx.borrow_and_update()) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(Error::ShutDown);
                }
            }
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .map_err(|_| Error::Timeout {
                waiting_for: what.to_owned(),
                after: deadline.saturating_duration_since(started),
            })?
    }
}
