//! Waiting for a consistency level before a query reads the model.
//!
//! Every level is a condition on this node's applied state; the costly ones
//! first learn where the stream ends ("check the tail", as in Tango) and then
//! wait until the apply loop has played forward to it. One deadline, the
//! node's read timeout, bounds the whole wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use std::sync::atomic::AtomicU64;

use super::apply::Completion;
use super::tail::reached;
use super::{Engine, Progress, Session, Shared};
use crate::consistency::Consistency;
use crate::envelope::{Body, Control};
use crate::error::Error;
use crate::model::Model;

impl<M: Model> Engine<M> {
    /// A session that continues one begun on another node (or another
    /// process): pass the other session's [`Session::last_write`], carried by
    /// the client (a cookie, a header). Its [`Consistency::ReadYourWrites`]
    /// reads then wait here until that write is applied.
    pub fn session_with_token(&self, last_write: u64) -> Session<M> {
        Session {
            engine: self.clone(),
            last_write: AtomicU64::new(last_write),
        }
    }
}

impl<M: Model> Shared<M> {
    /// Returns once `level` holds for this node (`own_last_write` is the
    /// asking handle's last acknowledged write, for `ReadYourWrites`).
    pub(super) async fn wait_for(
        &self,
        level: Consistency,
        own_last_write: u64,
    ) -> Result<(), Error> {
        self.check_running()?;
        let deadline = Instant::now() + self.config.read_timeout;
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
                let caught_up_age = self.tail.lock().caught_up_age();
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
        let applied = self.state.lock().cursor.clone();
        self.tail
            .lock()
            .fresh_within(bound, applied.as_ref(), self.stream.as_ref())
    }

    /// Learns the stream's tail (the exact head, or a sync marker appended
    /// and read back), then waits until this node has applied up to it.
    ///
    /// The instant taken *before* asking is recorded as the catch-up time:
    /// whatever the stream held then lies at or before the tail learned.
    pub(super) async fn catch_up_to_tail(&self, deadline: Instant) -> Result<(), Error> {
        let asked_at = Instant::now();
        if self.exact_head {
            let head = tokio::time::timeout_at(deadline, self.stream.head())
                .await
                .map_err(|_| Error::Timeout {
                    waiting_for: format!("the head of {}", self.stream.describe()),
                    after: deadline.saturating_duration_since(asked_at),
                })??;
            if let Some(head) = head {
                self.tail.lock().learned(head.clone(), asked_at);
                let stream = Arc::clone(&self.stream);
                self.wait_until(
                    move |p| reached(p.cursor.as_ref(), &head, stream.as_ref()),
                    "the stream's head",
                    deadline,
                )
                .await?;
            }
        } else {
            let marker = self.envelope(Body::Control(Control::Sync));
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.submit(marker, remaining).await? {
                Completion::Marker { .. } => {}
                Completion::Failed(e) => return Err(e),
                Completion::Applied { .. } => {
                    return Err(Error::Config("a sync marker resolved as a command".into()));
                }
            }
            // The marker landed after everything the stream held at
            // `asked_at`, and it is applied: so is all of that.
            let applied = self.state.lock().cursor.clone();
            if let Some(cursor) = applied {
                self.tail.lock().learned(cursor, asked_at);
            }
        }
        self.tail.lock().caught_up(asked_at);
        Ok(())
    }

    /// Waits until `done` holds for the applied progress, or `deadline`.
    pub(super) async fn wait_until(
        &self,
        done: impl Fn(&Progress) -> bool,
        what: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut rx = self.progress.subscribe();
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
